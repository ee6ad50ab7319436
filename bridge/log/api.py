"""What the hub needs of a session log: the SQLite log (``bridge.log.writer.SessionLog``) and
the in-memory one the hub and ledger tests use both provide it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bridge.log.kinds import RecordKind
    from bridge.log.records import LogStatus, Record, SessionInfo


class SessionLogLike(Protocol):
    @property
    def status(self) -> LogStatus: ...

    async def open(self, session_name: str | None = None, new_session: bool = False) -> SessionInfo:
        """Open (or resume) the session; the log is writable when it returns."""

    def append(
        self,
        kind: RecordKind,
        *,
        song: str | None = None,
        take: int | None = None,
        daw_seconds: float | None = None,
        source: str = "",
        text: str = "",
        amends: int | None = None,
        data: dict[str, object] | None = None,
        ts: datetime | None = None,
    ) -> asyncio.Future[Record]:
        """Queue one record; the future resolves once it is durable (or fails: not written)."""

    def next_seq(self) -> int:
        """The seq the next appended record will get."""

    def on_durable(self, callback: Callable[[Record], None]) -> None: ...

    def on_status(self, callback: Callable[[LogStatus], None]) -> None: ...

    async def new_session(self, name: str | None = None) -> SessionInfo:
        """End the current session and start another."""

    async def close(self) -> None: ...

    async def take_records(self) -> list[Record]:
        """Every take's records in the whole log (markers, flags, renames), in seq order."""

    async def session_records(self, session_id: int) -> list[Record]:
        """All records of one session, in seq order."""
