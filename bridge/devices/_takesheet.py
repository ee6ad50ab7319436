"""The open session's take sheet as the devices that show it keep it (the web console; MQTT
converts the records the same way): the session's records, from the session log at start and then
from the durable records the hub sends (``LogEntry``), folded into a take sheet by
:func:`bridge.log.takesheet.build_take_sheet`.

:class:`SessionSheet` is the web console's copy: it rebuilds the sheet when a record that changes
it arrives and says what changed since the last build (the WebSocket protocol sends only that).
The session log and the export module are imported when first needed (start-up stays fast).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.vocab import LogEntry

if TYPE_CHECKING:
    from bridge.log.records import Record
    from bridge.log.takesheet import TakeSheet

log = logging.getLogger(__name__)

#: record kinds that change what the take sheet shows
SHEET_KINDS = frozenset(
    {
        "session_start",
        "session_end",
        "take_marker",
        "take_flag",
        "take_rename",
        "daw_marker",
        "note",
        "transport",
        "talkback_start",
        "talkback_end",
        "talkback_audio",
        "song",
    }
)
#: the sheet's lists, whose items (by ``seq``) never go away within a session
SHEET_LISTS = ("takes", "talkback", "notes")


def record_from_entry(entry: LogEntry) -> Record | None:
    """A LogEntry (``Record.to_json()``) back into a Record; None if it is not one (a field
    missing or of the wrong type, a kind this bridge does not know)."""
    from bridge.log.records import Record

    return Record.from_json({**entry.record, "seq": entry.seq})


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON text, as every console message is sent."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _fields(item: Any) -> dict[str, Any]:
    return {name: getattr(item, name) for name in item.__slots__}


def sheet_json(sheet: TakeSheet) -> dict[str, Any]:
    """``export.sheet_to_json`` without ``dataclasses.asdict`` (10x faster; tuples dump as lists)."""
    from bridge.log.takesheet import FORMAT

    return {
        "format": FORMAT,
        "version": 1,
        "session": {"id": sheet.session, "name": sheet.name, "started": sheet.started, "ended": sheet.ended},
        "takes": [_fields(t) for t in sheet.takes],
        "talkback": [_fields(c) for c in sheet.talkback],
        "notes": [_fields(n) for n in sheet.notes],
    }


class SessionSheet:
    """The records of the open session and the take sheet built from them."""

    def __init__(self) -> None:
        self.records: dict[int, Record] = {}
        self.session: int | None = None
        self.last_seq = 0
        self.log_ok: bool | None = None
        self.log_detail = ""
        #: the last sheet built, as JSON text ("null" before the first build)
        self.text = "null"
        self._seen: dict[str, Any] | None = None

    async def load(self, path: Path, after: int = 0) -> None:
        """The records in the session log (those after ``after``), in a worker thread; a log
        that cannot be read is shown on the page as failed."""
        from bridge.log.reader import read_records

        if not path.exists():  # noqa: ASYNC240 - one stat
            self.log_ok, self.log_detail = True, "no log yet"
            return
        try:
            records = await asyncio.to_thread(read_records, path)
        except Exception as exc:  # the console still runs; the page shows the log as failed
            self.log_ok, self.log_detail = False, str(exc)
            log.error("web console: cannot read the session log: %s", exc)
            return
        self.log_ok, self.log_detail = True, ""
        for record in records:
            if record.seq > after:
                self.add(record)

    def add(self, record: Record) -> bool:
        """Take a record in (a newer session replaces the records); whether the sheet changed."""
        if record.seq in self.records:
            return False
        if record.kind == "session_start" and record.session != self.session:
            self.records = {}
            self.session = record.session
        elif self.session is None:
            self.session = record.session
        elif record.session != self.session:
            if record.session < self.session:
                return False
            self.records = {}
            self.session = record.session
        self.records[record.seq] = record
        self.last_seq = max(self.last_seq, record.seq)
        return record.kind in SHEET_KINDS

    def build(self) -> dict[str, Any]:
        from bridge.log import takesheet as export

        records = sorted(self.records.values(), key=lambda r: r.seq)
        sheet = sheet_json(export.build_take_sheet(records))
        songs: list[str] = []
        for record in records:
            if record.song and record.song not in songs:
                songs.append(record.song)
        sheet["songs"] = songs
        sheet["log"] = {"ok": self.log_ok, "detail": self.log_detail, "last_seq": self.last_seq}
        return sheet

    def rebuild(self) -> str:
        """Rebuild the take sheet; returns the message for open consoles: only the takes, cues
        and notes that changed (by seq; they never go away within a session), or the whole
        sheet when the session changed."""
        sheet = self.build()
        self.text = dumps(sheet)
        previous = self._seen
        seen: dict[str, Any] = {kind: {item["seq"]: item for item in sheet[kind]} for kind in SHEET_LISTS}
        seen["session"] = sheet["session"]
        self._seen = seen
        if previous is None or previous["session"] != sheet["session"]:
            return '{"t":"sheet","sheet":' + self.text + "}"
        delta: dict[str, Any] = {"t": "delta"}
        for kind in SHEET_LISTS:
            old = previous[kind]
            delta[kind] = [item for seq, item in seen[kind].items() if old.get(seq) != item]
        for key in ("songs", "log", "session"):
            delta[key] = sheet[key]
        return dumps(delta)
