"""``audacity``: an Audacity label track, ``t0<TAB>t1<TAB><Song> T<take>`` per take with a DAW
position; a region label (t1 = t0 + duration) when the duration is known, else a point label
(t1 = t0)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TextIO

from bridge.log.formats import ExportFormat, register
from bridge.log.records import Record
from bridge.log.takesheet import TakeSheet, take_name


def to_audacity_labels(sheet: TakeSheet, file: TextIO) -> None:
    for t in sheet.takes:
        if t.daw_seconds is None:
            continue
        end = t.daw_seconds + t.duration if t.duration is not None else t.daw_seconds
        title = take_name(t).replace("\t", " ").replace("\n", " ")
        file.write(f"{t.daw_seconds:.6f}\t{end:.6f}\t{title}\n")


def render(sheet: TakeSheet, *, records: Sequence[Record] = (), room: str = "") -> str:
    out = io.StringIO()
    to_audacity_labels(sheet, out)
    return out.getvalue()


FORMAT = register(ExportFormat("audacity", ".txt", "Audacity label track", "text/plain", render, rank=40))
