"""The MQTT bridge's retained ``<root>/takesheet``: the current session's take sheet as
``log export --format json`` builds it, rebuilt off the event loop from the log at each connect
and then from the records the hub sends, published at most every :data:`TAKESHEET_INTERVAL`
seconds and only when it changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from bridge.devices._mqtt_publish import Pub, to_json
from bridge.devices._takesheet import record_from_entry
from bridge.devices.base import DeviceContext
from bridge.errors import SessionLogError
from bridge.vocab import LogEntry

if TYPE_CHECKING:
    from bridge.log.records import Record

log = logging.getLogger("bridge.devices.mqtt")  # the bridge's messages, under its name

#: Seconds between two take-sheet publishes at most (records in between go into one).
TAKESHEET_INTERVAL = 0.5


class TakeSheetFeed:
    """The records of the current session, and the task that publishes their take sheet."""

    def __init__(
        self, topic: str, ctx: DeviceContext, enqueue: Callable[[Pub], None], stats: dict[str, int]
    ) -> None:
        self.topic = topic
        self.ctx = ctx
        self.enqueue = enqueue
        self.stats = stats
        self.records: dict[int, Record] = {}  # seq -> record of the current session
        self.session: int | None = None
        self.changed = asyncio.Event()

    def add(self, entry: LogEntry) -> None:
        record = record_from_entry(entry)
        if record is None:
            return
        if self.session is None or record.session > self.session:
            self.records = {}  # a new session: a new sheet
            self.session = record.session
        elif record.session < self.session:
            return
        self.records[record.seq] = record
        self.changed.set()

    async def run(self) -> None:
        """Publish the take sheet after each connect, then again (coalesced) when records came."""
        from bridge.log import takesheet as export

        await self._load()
        last = b""
        while True:
            self.changed.clear()
            records = list(self.records.values())
            payload = await asyncio.to_thread(_takesheet_json, export, records)
            if payload != last:
                self.stats["takesheets"] += 1
                self.enqueue(Pub(self.topic, payload, 1, True, key=self.topic))
                last = payload
            await self.changed.wait()
            await asyncio.sleep(TAKESHEET_INTERVAL)  # what comes meanwhile goes into the next one

    async def _load(self) -> None:
        """The current session's records from the log (records from before this process
        started, or that the hub could not replay after a long outage)."""
        from bridge.app import LOG_FILE

        try:
            records = await asyncio.to_thread(_session_records, self.ctx.data_dir / LOG_FILE)
        except SessionLogError as exc:
            log.info("mqtt: take sheet from the records since start only: %s", exc)
            return
        if not records:
            return
        session = records[-1].session
        if self.session is None or session > self.session:
            self.records, self.session = {}, session
        if session == self.session:
            for record in records:
                self.records.setdefault(record.seq, record)


def _takesheet_json(export: ModuleType, records: list[Record]) -> bytes:
    """The take sheet as ``log export --format json`` builds it, compact (a worker thread)."""
    return to_json(export.sheet_to_json(export.build_take_sheet(records)))


def _session_records(path: Path) -> list[Record]:
    """The latest session's records, [] without a log (a worker thread)."""
    from bridge.log.reader import read_records

    return read_records(path) if path.exists() else []
