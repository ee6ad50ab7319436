"""The durable session log: an append-only SQLite file (see :mod:`bridge.log.schema`) written by
one thread (:mod:`bridge.log._writer_thread`); this is the event-loop side.

Writing: ``SessionLog.append`` runs on the event loop and never touches the disk: it assigns the seq
(and the session id: ``new_session`` numbers sessions itself), formats the timestamp and puts the row
on a ``queue.SimpleQueue`` (a few µs; ``data`` is JSON-encoded by the writer). The writer thread owns the only
connection (``journal_mode=WAL``, ``synchronous=FULL``, ``busy_timeout`` 5 s). It takes everything
queued (up to ``max_batch`` records, optionally after waiting ``commit_window`` seconds), inserts it
in one transaction with multi-row INSERTs (one GIL release per 64 rows), commits, and only then hands
the batch back with one ``call_soon_threadsafe`` (group commit). The loop resolves the futures and runs
the ``on_durable`` callbacks in seq order, 32 per loop callback, so a big batch never stalls the loop.
WAL checkpoints (SQLite's automatic ones and a ``TRUNCATE`` checkpoint on close) happen in the writer
thread.

Write failures (disk full, I/O error on sync, read-only): SQLite rolls the failed transaction back, so
nothing is half-written and nothing committed before is touched. The batch's futures fail with
``SessionLogUnavailable`` ("not written"); the writer tells the loop (``_writer_failed``: the seq and
session to resume at), and the loop refuses every ``append`` at once with the reason until told
otherwise. Records queued before the loop knew are refused by the writer, which recognises them
because they precede the loop's ``ACK``. After the ACK the writer retries on its own, without a busy
loop (``queue.get`` with a timeout, 50 ms doubling to ``RETRY_MAX``): it checkpoints and truncates the
WAL (``reclaim``: on a small disk the WAL is most of the used space) and makes one synced no-op write
(``probe``: page 1 rewritten). When that works the loop accepts records again; the first is a
``log_fault`` note (what was refused, since when, why), and ``status`` is ``ok`` once it is durable.
``on_status`` callbacks (the hub's ``log/status`` state keys) hear every change. After an I/O error
the refused transaction's frames are overwritten at once (``bury``) so a crash cannot resurrect them.
``close()`` while failing retries ``session_end`` for a bounded time and raises if it cannot.

Take numbers: ``SessionInfo.last_take``/``next_take`` are computed per song over the whole file
(all sessions), so a song's take numbers never repeat within one log file.

Opening proves the file can be written: a resumed session gets one probe before ``open``
returns (a new session writes its ``session_start``); otherwise ``open`` raises with one line.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bridge.errors import SessionLogClosed, SessionLogError, SessionLogUnavailable
from bridge.log._writer_thread import (
    ACK,
    APPEND,
    NEW_SESSION,
    STOP,
    Item,
    Stop,
    WriterThread,
    default_name,
    session_start_row,
)
from bridge.log.kinds import RecordKind
from bridge.log.reader import read_records, read_take_records
from bridge.log.records import LogStatus, Record, SessionInfo, format_now, format_ts, record

log = logging.getLogger(__name__)

_RESOLVE_CHUNK = 32  # futures resolved per loop callback (a 256-record batch would stall the loop)
#: How long ``close()`` keeps trying to write ``session_end`` while the log is failing (seconds).
CLOSE_RETRY = 0.6


class SessionLog:
    """The append-only session log. See the module docstring for the write model."""

    def __init__(self, path: Path, *, max_batch: int = 256, commit_window: float = 0.0) -> None:
        self.path = Path(path)
        self.max_batch = max_batch
        self.commit_window = commit_window  # seconds to wait for more records before a commit
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._next_seq = 1
        self._session_id = 0  # the session new records belong to (assigned on the loop)
        self._max_session = 0
        self._open = False
        self._closing: asyncio.Future[None] | None = None
        self._callbacks: list[Callable[[Record], None]] = []
        self._status_callbacks: list[Callable[[LogStatus], None]] = []
        self._broken: SessionLogError | None = None  # set when the writer thread died
        self._pending: collections.deque[tuple[Item, SessionLogError | None, SessionInfo | None]] = (
            collections.deque()
        )
        self._draining = False
        self._dead = False  # the writer thread ended unexpectedly
        # Failure handling (loop side): while _failing is set, append() refuses at once.
        self._failing: str | None = None
        self._last_reason = ""  # shown while the log_fault note is on its way (still "failing")
        self._since: float | None = None  # wall time the current failure episode started
        self._episode_refused: collections.Counter[str] = collections.Counter()  # by kind
        self._unwritten = 0
        self._fault_seq: int | None = None  # seq of the queued log_fault note (episode ends when durable)
        self.end_written = False  # close() wrote session_end (or it was already the last record)
        self.close_error: str | None = None  # why close() could not write session_end

    # ---------------------------------------------------------------- loop side
    async def open(self, session_name: str | None = None, new_session: bool = False) -> SessionInfo:
        """Open or create the file, prove it can be written (a synced write) and start the writer
        thread (all disk work happens there).

        Resumes the last session when it has no ``session_end`` (a crash) unless ``new_session``;
        ``session_name`` only names a new session. Raises SessionLogDamaged (integrity check failed,
        with the recovery command) or SessionLogError (one line: the file and the cause)."""
        if self._open or self._thread is not None:
            raise SessionLogError(f"{self.path}: the session log is already open")
        self._loop = asyncio.get_running_loop()
        self._closing = None
        self._broken = None
        self._dead = False
        self._failing = None
        self._since = None
        self._fault_seq = None
        self.end_written = False
        self.close_error = None
        started: concurrent.futures.Future[tuple[SessionInfo, int]] = concurrent.futures.Future()
        writer = WriterThread(
            self.path,
            self._queue,
            self._loop,
            self,
            max_batch=self.max_batch,
            commit_window=self.commit_window,
        )
        self._thread = threading.Thread(
            target=writer.run,
            args=(session_name, new_session, started),
            name="sessionlog-writer",
            daemon=True,
        )
        self._thread.start()
        try:
            info, max_session = await asyncio.wrap_future(started)
        except BaseException:
            await asyncio.to_thread(self._thread.join, 5)
            self._thread = None
            raise
        self._next_seq = info.last_seq + 1
        self._session_id = info.session_id
        self._max_session = max_session
        self._open = True
        log.info(
            "session log %s: %s session %d %r (last seq %d)",
            self.path,
            "resumed" if info.resumed else "started",
            info.session_id,
            info.name,
            info.last_seq,
        )
        return info

    @property
    def status(self) -> LogStatus:
        if self._failing is not None or self._fault_seq is not None:
            return LogStatus("failing", self._failing or self._last_reason, self._unwritten, self._since)
        return LogStatus("ok", "", self._unwritten, None)

    def on_status(self, callback: Callable[[LogStatus], None]) -> None:
        """``callback(LogStatus)`` on the loop whenever the status or the unwritten count changes."""
        self._status_callbacks.append(callback)

    def _notify(self) -> None:
        status = self.status
        for callback in self._status_callbacks:
            try:
                callback(status)
            except Exception:
                log.exception("session log on_status callback failed")

    def _refusal(self, kind: str) -> SessionLogUnavailable:
        self._episode_refused[kind] += 1
        self._unwritten += 1
        since = time.strftime("%H:%M:%S", time.gmtime(self._since or time.time()))
        return SessionLogUnavailable(
            f"not written: the session log cannot write since {since} UTC ({self._failing}); retrying"
        )

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
        """Queue a record; the future resolves once it is committed. Raises SessionLogError if closed,
        TypeError for a kind that is not a RecordKind member, a non-str text/source or a non-datetime
        ts. ``data`` is copied one level deep here and encoded later by the writer: do not mutate
        nested values after the call.

        While the log cannot write (``status`` is failing) the future is failed at once with
        SessionLogUnavailable: the record is refused, not written, and counted."""
        if not self._open or self._loop is None:
            raise SessionLogClosed(f"{self.path}: the session log is not open")
        if self._dead:
            raise self._broken or SessionLogError(f"{self.path}: the session log writer stopped")
        if type(kind) is not RecordKind:
            raise TypeError(
                f"session log: kind must be a RecordKind member (bridge.log.kinds), not {kind!r}"
                + (f"; use RecordKind({kind!r})" if isinstance(kind, str) else "")
            )
        if type(text) is not str or type(source) is not str:
            raise TypeError("session log: text and source must be str")
        if ts is None:
            stamp = format_now(time.time())
        elif isinstance(ts, datetime):
            stamp = format_ts(ts)
        else:
            raise TypeError("session log: ts must be a datetime")
        fut: asyncio.Future[Record] = self._loop.create_future()
        if self._failing is not None:
            fut.set_exception(self._refusal(kind))
            self._notify()
            return fut
        # data is JSON-encoded by the writer (measured: encoding on the loop tripled the append p99).
        data_obj: dict[str, object] = dict(data) if data else {}
        seq = self._next_seq
        self._next_seq = seq + 1
        row = (seq, self._session_id, stamp, kind, song, take, daw_seconds, source, text, amends, data_obj)
        self._queue.put((APPEND, row, fut, data_obj))
        return fut

    def next_seq(self) -> int:
        return self._next_seq

    def on_durable(self, callback: Callable[[Record], None]) -> None:
        self._callbacks.append(callback)

    async def take_records(self) -> list[Record]:
        """Every take's records in the whole log (see :func:`read_take_records`), off the loop."""
        return await asyncio.to_thread(read_take_records, self.path)

    async def session_records(self, session_id: int) -> list[Record]:
        """All records of one session in seq order (see :func:`read_records`), off the loop."""
        return await asyncio.to_thread(read_records, self.path, session_id)

    async def new_session(self, name: str | None = None) -> SessionInfo:
        """End the current session (``session_end``) and start another (``session_start``)."""
        if self._failing is not None:
            raise self._refusal(RecordKind.SESSION_END)
        end = self.append(RecordKind.SESSION_END)
        assert self._loop is not None
        fut: asyncio.Future[SessionInfo] = self._loop.create_future()
        name = name or default_name()
        seq = self._next_seq
        self._next_seq = seq + 1
        self._max_session += 1
        self._session_id = self._max_session
        self._queue.put((NEW_SESSION, session_start_row(seq, self._session_id, name), fut, name))
        ended, started = await asyncio.gather(end, fut, return_exceptions=True)
        for result in (ended, started):
            if isinstance(result, BaseException):
                raise result
        assert isinstance(started, SessionInfo)
        return started

    async def close(self, retry: float = CLOSE_RETRY) -> None:
        """Append ``session_end``, flush, stop the writer and close the file. Idempotent.

        While the log is failing the writer keeps trying to write ``session_end`` for up to
        ``retry`` seconds; if it cannot, close() still completes: ``end_written`` stays False and
        ``close_error`` says why (the next open resumes the session)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        if not self._open or self._loop is None:
            return
        self._closing = self._loop.create_future()
        try:
            if not self._dead:
                fault = self._fault_note() if self._episode_refused or self._failing else None
                end = None if self._failing is not None else self.append(RecordKind.SESSION_END)
                self._open = False
                stopped: asyncio.Future[bool | str] = self._loop.create_future()
                stop = Stop(want_end=True, fault=fault, deadline=time.monotonic() + retry)
                self._queue.put((STOP, None, stopped, stop))
                if end is not None:
                    with contextlib.suppress(SessionLogError):
                        await end
                outcome = await stopped
                if outcome is True:
                    self.end_written = True
                else:
                    self.close_error = (
                        f"{self.path}: session_end was not written ({outcome}); the next start resumes "
                        "this session"
                    )
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
        finally:
            self._open = False
            self._closing.set_result(None)

    # ------------------------------------------------------------- failure, loop side
    def _fault_note(self) -> dict[str, object]:
        return {
            "refused": sum(self._episode_refused.values()),
            "by_kind": {str(kind): n for kind, n in sorted(self._episode_refused.items())},
            "since": format_ts(self._since or time.time()),
            "reason": self._failing or self._last_reason,
        }

    def _writer_crashed(self, error: SessionLogError) -> None:
        """From the writer thread itself: it is ending; every append fails with ``error`` from now on."""
        self._broken = error
        self._dead = True

    def _writer_failed(self, reason: str, resume_seq: int, session: int, max_session: int) -> None:
        """On the loop: the writer could not commit. Refuse appends until its probe succeeds."""
        first = self._since is None
        if first:
            self._since = time.time()
            log.error(
                "session log %s: cannot write (%s). Records are refused (answered as not written) "
                "until the disk accepts writes again; retrying by itself. Nothing acknowledged is lost.",
                self.path,
                reason,
            )
        else:
            log.debug("session log %s: still cannot write (%s)", self.path, reason)
        self._failing = self._last_reason = reason
        self._fault_seq = None
        self._next_seq = resume_seq
        self._session_id = session
        self._max_session = max_session
        self._queue.put((ACK, None, None, None))
        self._notify()

    def _writer_probe_ok(self) -> None:
        """On the loop: a synced probe write worked. Accept records again; the first one is the
        ``log_fault`` note saying what was refused; the episode ends when it is durable."""
        if not self._open:
            return
        self._failing = None
        note = self._fault_note()
        fut = self.append(RecordKind.LOG_FAULT, text=str(note["reason"]), data=note)
        self._fault_seq = self._next_seq - 1
        fut.add_done_callback(self._fault_written)
        self._notify()

    def _writer_reason(self, reason: str) -> None:
        if self._failing is not None and reason != self._failing:
            log.debug("session log %s: now failing with: %s", self.path, reason)
            self._failing = self._last_reason = reason
            self._notify()

    def _fault_written(self, fut: asyncio.Future[Record]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # the writer failed again: _writer_failed has taken over
        written = fut.result()
        if self._fault_seq != written.seq:
            return
        since = self._since or time.time()
        log.warning(
            "session log %s: writing again after %.1f s; %d record(s) were refused and not written "
            "(%s); noted as record %d (log_fault)",
            self.path,
            time.time() - since,
            sum(self._episode_refused.values()),
            ", ".join(f"{k} {n}" for k, n in sorted(self._episode_refused.items())) or "none",
            written.seq,
        )
        self._episode_refused.clear()
        self._since = None
        self._fault_seq = None
        self._notify()

    def _deliver(self, items: list[Item], error: SessionLogError | None, infos: list[SessionInfo]) -> None:
        """On the loop: queue a committed (or failed) batch for resolution, in order."""
        info_iter = iter(infos)
        for item in items:
            info = next(info_iter) if item[0] == NEW_SESSION and error is None else None
            self._pending.append((item, error, info))
        if not self._draining:
            self._draining = True
            self._resolve_some()

    def _resolve_some(self) -> None:
        """Resolve up to _RESOLVE_CHUNK futures, then let the loop run timers and I/O before the rest."""
        pending = self._pending
        durable: list[Record] = []
        refused = False
        for _ in range(min(_RESOLVE_CHUNK, len(pending))):
            (tag, row, fut, extra), error, info = pending.popleft()
            value: object
            if tag == STOP:
                value = extra
            elif error is not None:
                value = error
                if isinstance(error, SessionLogUnavailable) and row[3] != RecordKind.LOG_FAULT:
                    self._episode_refused[row[3]] += 1
                    self._unwritten += 1
                    refused = True
            elif tag == APPEND:
                value = record(row, extra)
                durable.append(value)
            else:  # NEW_SESSION
                durable.append(record(row, {}))
                value = info
            if fut is None or fut.done():
                continue
            if isinstance(value, BaseException):
                fut.set_exception(value)
            else:
                fut.set_result(value)
        for rec in durable:
            for callback in self._callbacks:
                try:
                    callback(rec)
                except Exception:
                    log.exception("session log on_durable callback failed for seq %d", rec.seq)
        if refused:
            self._notify()
        if pending:
            assert self._loop is not None
            self._loop.call_soon(self._resolve_some)
        else:
            self._draining = False
