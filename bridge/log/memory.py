"""An in-memory session log (``SessionLogLike``) for the hub and ledger tests.

Nothing is durable until the test says so: ``flush()`` makes the pending records durable, in
order, and then the ones their follow-ups append (``flush(1)``: only the oldest);
``fail_next(reason)`` makes the next appended record fail when it is flushed, ``fail_kinds``
fails every record of those kinds, and ``refuse(reason)`` puts the log in the failing state
(appends refused at once with SessionLogUnavailable, as the SQLite log does while it cannot
write) until ``recover()``. ``auto_flush=True`` makes every record durable as it is appended.

No thread, no sleep, no clock but ``wall`` (the records' timestamps). Without a running event
loop (a plain test function), a settled future calls its callbacks at once: ``flush()``
returns with every follow-up done. With a running loop the futures are the loop's own.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from bridge.errors import SessionLogClosed, SessionLogError, SessionLogUnavailable
from bridge.log.kinds import RecordKind
from bridge.log.records import LogStatus, Record, SessionInfo, format_ts

_Callback = Callable[["_Future"], object]


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Future(asyncio.Future[Any]):
    """An asyncio future whose callbacks run at once when no loop runs (see the module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._now: list[_Callback] = []

    def add_done_callback(self, fn: _Callback, *, context: contextvars.Context | None = None) -> None:
        if _loop_running():
            super().add_done_callback(fn, context=context)
        elif self.done():
            fn(self)
        else:
            self._now.append(fn)

    def _run_now(self) -> None:
        callbacks, self._now = self._now, []
        for fn in callbacks:
            fn(self)

    def set_result(self, result: Any) -> None:
        super().set_result(result)
        self._run_now()

    def set_exception(self, exception: type | BaseException) -> None:
        super().set_exception(exception)
        self._run_now()

    def cancel(self, msg: Any | None = None) -> bool:
        cancelled = super().cancel(msg)
        self._run_now()
        return cancelled


class MemoryLog:
    def __init__(
        self,
        records: Iterable[Record] = (),
        *,
        auto_flush: bool = False,
        wall: Callable[[], float] = time.time,
    ) -> None:
        #: the durable records, in seq order (``records=`` seeds an earlier run's log)
        self.records: list[Record] = list(records)
        self.auto_flush = auto_flush
        self.wall = wall
        #: records of these kinds fail when flushed (with ``fail_reason``)
        self.fail_kinds: set[str] = set()
        self.fail_reason = "simulated disk full"
        self.opened = False
        self.closed = False
        self._pending: deque[tuple[Record, asyncio.Future[Any], str | None]] = deque()
        self._fail_next: deque[str] = deque()
        self._refusing: str | None = None
        self._unwritten = 0
        self._since: float | None = None
        self._durable: list[Callable[[Record], None]] = []
        self._status: list[Callable[[LogStatus], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_seq = max((r.seq for r in self.records), default=0) + 1
        self._session = max((r.session for r in self.records), default=0)

    # ------------------------------------------------------------------ what a test drives

    @property
    def pending(self) -> list[Record]:
        """The records appended and not yet flushed (nor failed)."""
        return [record for record, _fut, _fail in self._pending]

    def flush(self, count: int | None = None) -> list[Record]:
        """Settle the oldest ``count`` pending records: durable, or failed when
        ``fail_next``/``fail_kinds`` said so. By default every pending record, and again the
        ones appended meanwhile (a follow-up's), until none is pending. Returns the records
        made durable."""
        if count is None:
            done: list[Record] = []
            while self._pending:
                done += self.flush(len(self._pending))
            return done
        durable: list[Record] = []
        settled: list[tuple[Record, asyncio.Future[Any], str | None]] = []
        while self._pending and len(settled) < count:
            record, fut, fail = self._pending.popleft()
            settled.append((record, fut, fail))
            if fail is None:
                self.records.append(record)
                durable.append(record)
        for record, fut, fail in settled:  # as the SQLite log: futures first, then on_durable
            if fut.done():
                continue
            if fail is None:
                fut.set_result(record)
            else:
                fut.set_exception(SessionLogError(fail))
        for record in durable:
            for callback in self._durable:
                callback(record)
        return durable

    def fail_next(self, reason: str = "simulated disk full") -> None:
        """The next appended record fails (not written) when it is flushed."""
        self._fail_next.append(reason)

    def refuse(self, reason: str = "disk I/O error") -> None:
        """The log cannot write: appends are refused at once until ``recover()``."""
        self._refusing = reason
        self._since = self.wall()
        self._notify()

    def recover(self) -> None:
        self._refusing = None
        self._since = None
        self._notify()

    def of_kind(self, *kinds: str) -> list[Record]:
        """The durable records of these kinds."""
        return [r for r in self.records if r.kind in kinds]

    # ------------------------------------------------------------------ SessionLogLike

    @property
    def status(self) -> LogStatus:
        if self._refusing is not None:
            return LogStatus("failing", self._refusing, self._unwritten, self._since)
        return LogStatus("ok", "", self._unwritten, None)

    async def open(self, session_name: str | None = None, new_session: bool = False) -> SessionInfo:
        if self.opened and not self.closed:
            raise SessionLogError("memory log: the session log is already open")
        self.opened, self.closed = True, False
        last = self._session
        ended = any(r.session == last and r.kind == RecordKind.SESSION_END for r in self.records)
        if last and not ended and not new_session:
            name = next(
                (r.text for r in self.records if r.session == last and r.kind == RecordKind.SESSION_START), ""
            )
            return self._info(last, name, resumed=True)
        return self._start(session_name)

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
        if not self.opened or self.closed:
            raise SessionLogClosed("memory log: the session log is not open")
        if type(kind) is not RecordKind:
            raise TypeError(f"session log: kind must be a RecordKind member (bridge.log.kinds), not {kind!r}")
        if type(text) is not str or type(source) is not str:
            raise TypeError("session log: text and source must be str")
        fut = self._future()
        if self._refusing is not None:
            self._unwritten += 1
            fut.set_exception(
                SessionLogUnavailable(f"not written: the session log cannot write ({self._refusing})")
            )
            self._notify()
            return fut
        stamp = format_ts(ts if ts is not None else self.wall())
        seq = self._next_seq
        self._next_seq += 1
        record = Record(
            seq, self._session, stamp, kind, song, take, daw_seconds, source, text, amends, dict(data or {})
        )
        fail = self._fail_next.popleft() if self._fail_next else None
        if fail is None and kind in self.fail_kinds:
            fail = self.fail_reason
        self._pending.append((record, fut, fail))
        if self.auto_flush:
            self.flush()
        return fut

    def next_seq(self) -> int:
        return self._next_seq

    def on_durable(self, callback: Callable[[Record], None]) -> None:
        self._durable.append(callback)

    def on_status(self, callback: Callable[[LogStatus], None]) -> None:
        self._status.append(callback)

    async def new_session(self, name: str | None = None) -> SessionInfo:
        if self._refusing is not None:
            raise SessionLogUnavailable(f"not written: the session log cannot write ({self._refusing})")
        self.flush()
        self._write(RecordKind.SESSION_END, "")
        return self._start(name)

    async def close(self) -> None:
        if self.closed or not self.opened:
            return
        self.flush()
        self._write(RecordKind.SESSION_END, "")
        self.closed = True

    async def take_records(self) -> list[Record]:
        kinds = (RecordKind.TAKE_MARKER, RecordKind.TAKE_FLAG, RecordKind.TAKE_RENAME)
        return [r for r in self.records if r.kind in kinds]

    async def session_records(self, session_id: int) -> list[Record]:
        return [r for r in self.records if r.session == session_id]

    # ------------------------------------------------------------------ inside

    def _future(self) -> asyncio.Future[Any]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()  # only to make futures with: never run
            loop = self._loop
        return _Future(loop)

    def dispose(self) -> None:
        """Close the private loop the futures were made with (tests without a running loop)."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _notify(self) -> None:
        status = self.status
        for callback in self._status:
            callback(status)

    def _write(self, kind: RecordKind, text: str) -> Record:
        record = Record(
            self._next_seq,
            self._session,
            format_ts(self.wall()),
            kind,
            None,
            None,
            None,
            "",
            text,
            None,
            {},
        )
        self._next_seq += 1
        self.records.append(record)
        for callback in self._durable:
            callback(record)
        return record

    def _start(self, name: str | None) -> SessionInfo:
        self._session += 1
        name = name or f"session {self._session}"
        self._write(RecordKind.SESSION_START, name)
        return self._info(self._session, name, resumed=False)

    def _info(self, session: int, name: str, resumed: bool) -> SessionInfo:
        last_take: dict[str, int] = {}
        for r in self.records:
            if r.kind == RecordKind.TAKE_MARKER and r.take is not None:
                last_take[r.song or ""] = max(last_take.get(r.song or "", 0), r.take)
        song = ""
        if resumed:
            kinds = (RecordKind.SONG, RecordKind.TAKE_MARKER)
            songs = [r.song for r in self.records if r.session == session and r.kind in kinds and r.song]
            song = songs[-1] if songs else ""
        next_take = {s: n + 1 for s, n in last_take.items()}
        return SessionInfo(session, name, resumed, song, next_take, last_take, self._next_seq - 1)
