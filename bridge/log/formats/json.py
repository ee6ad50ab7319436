"""``json``: the take sheet as one JSON document, :func:`bridge.log.takesheet.sheet_to_json`
indented (the MQTT ``takesheet`` topic carries the same object, compact)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from bridge.log.formats import ExportFormat, register
from bridge.log.records import Record
from bridge.log.takesheet import TakeSheet, sheet_to_json


def to_json(sheet: TakeSheet, file: TextIO) -> None:
    json.dump(sheet_to_json(sheet), file, indent=2, ensure_ascii=False)
    file.write("\n")


def render(sheet: TakeSheet, *, records: Sequence[Record] = (), room: str = "") -> str:
    return json.dumps(sheet_to_json(sheet), indent=2, ensure_ascii=False) + "\n"


FORMAT = register(
    ExportFormat(
        "json",
        ".json",
        "the take sheet and talkback cues as one JSON document",
        "application/json",
        render,
        rank=20,
    )
)
