"""``reaper``: REAPER's region/marker manager CSV ``#,Name,Start,End,Length`` with one marker
``M<n>,<Song> T<take>,<daw seconds>,,`` per take that has a DAW position. Set REAPER's ruler to
seconds (or minutes:seconds) before importing."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TextIO

from bridge.log.formats import ExportFormat, register
from bridge.log.formats.csv import num
from bridge.log.records import Record
from bridge.log.takesheet import TakeSheet, take_name


def to_reaper_csv(sheet: TakeSheet, file: TextIO) -> None:
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(["#", "Name", "Start", "End", "Length"])
    n = 0
    for t in sheet.takes:
        if t.daw_seconds is None:
            continue
        n += 1
        writer.writerow([f"M{n}", take_name(t), num(t.daw_seconds), "", ""])


def render(sheet: TakeSheet, *, records: Sequence[Record] = (), room: str = "") -> str:
    out = io.StringIO()
    to_reaper_csv(sheet, out)
    return out.getvalue()


FORMAT = register(ExportFormat("reaper", ".csv", "REAPER region/marker CSV", "text/csv", render, rank=30))
