"""``csv``: the take sheet as CSV, one row per take, talkback cue and session note, in seq order
(UTF-8, ``,``-separated, header row). Columns:

``type`` (take | talkback | note), ``seq``, ``song``, ``take``, ``label``, ``circled`` and
``false_start`` (true/false for takes, empty otherwise), ``start_utc`` and ``end_utc`` (ISO 8601
``...Z``), ``duration_s`` (seconds, 3 decimals), ``daw_seconds`` (DAW position in seconds, 3
decimals), ``daw_source`` (daw | bridge), ``marker_id``, ``source``, ``notes`` (a take's notes
joined with `` | ``; a note row's text), ``audio`` (a talkback cue's WAV file, when a talkback
recorder saved one). Empty cell = unknown / not applicable.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TextIO

from bridge.log.formats import ExportFormat, register
from bridge.log.records import Record
from bridge.log.takesheet import TakeSheet

CSV_COLUMNS = (
    "type",
    "seq",
    "song",
    "take",
    "label",
    "circled",
    "false_start",
    "start_utc",
    "end_utc",
    "duration_s",
    "daw_seconds",
    "daw_source",
    "marker_id",
    "source",
    "notes",
    "audio",
)


def num(value: float | None, places: int = 3) -> str:
    return "" if value is None else f"{value:.{places}f}"


def to_csv(sheet: TakeSheet, file: TextIO) -> None:
    rows: list[dict[str, object]] = []
    for t in sheet.takes:
        rows.append(
            {
                "type": "take",
                "seq": t.seq,
                "song": t.song,
                "take": t.take,
                "label": t.label,
                "circled": str(t.circled).lower(),
                "false_start": str(t.false_start).lower(),
                "start_utc": t.start,
                "end_utc": t.end,
                "duration_s": num(t.duration),
                "daw_seconds": num(t.daw_seconds),
                "daw_source": t.daw_source,
                "marker_id": t.marker_id,
                "source": t.source,
                "notes": " | ".join(t.notes),
            }
        )
    for c in sheet.talkback:
        rows.append(
            {
                "type": "talkback",
                "seq": c.seq,
                "song": c.song,
                "take": c.take,
                "start_utc": c.start,
                "end_utc": c.end,
                "duration_s": num(c.duration),
                "daw_seconds": num(c.daw_seconds),
                "daw_source": "bridge" if c.daw_seconds is not None else "",
                "source": c.source,
                "audio": c.audio,
            }
        )
    for n in sheet.notes:
        rows.append(
            {
                "type": "note",
                "seq": n.seq,
                "song": n.song,
                "take": n.take,
                "start_utc": n.ts,
                "source": n.source,
                "notes": n.text,
            }
        )
    rows.sort(key=lambda row: int(str(row["seq"])))
    writer = csv.DictWriter(file, CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})


def render(sheet: TakeSheet, *, records: Sequence[Record] = (), room: str = "") -> str:
    out = io.StringIO()
    to_csv(sheet, out)
    return out.getvalue()


FORMAT = register(
    ExportFormat("csv", ".csv", "the take sheet and talkback cues, one row each", "text/csv", render, rank=10)
)
