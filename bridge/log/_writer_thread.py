"""The session log's writer thread: the only connection to the file, group commits, and the
failure handling on the thread's side (refusing stale records, probing, the final rows at close).

The loop side (:class:`bridge.log.writer.SessionLog`) puts items on a ``queue.SimpleQueue``;
this thread hands results back with ``call_soon_threadsafe`` to the ``_LoopSide`` methods.

Queue items are tuples built on the loop, with everything already formatted, so this thread runs
almost no Python (which would hold the GIL and stall the loop):

* ``(APPEND, row, future, data)``: row = the 11 column values (the last is the data dict,
  JSON-encoded here), data = the Record's dict
* ``(NEW_SESSION, row, future, name)``: row = the session_start record (its session id is new)
* ``(ACK, None, None, None)``: the loop knows the writer is failing: every append queued before
  this is stale (refused); none come after it until the writer reports a good probe
* ``(STOP, None, future, Stop)``

A batch goes back to the loop as ``(items, error, infos)``; the loop builds the Records.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bridge.errors import SessionLogError, SessionLogUnavailable
from bridge.log import schema
from bridge.log.kinds import RecordKind
from bridge.log.records import ENCODER, SessionInfo, encode_data, format_now

log = logging.getLogger(__name__)

APPEND = 0
NEW_SESSION = 1
STOP = 2
ACK = 3
Item = tuple[int, Any, "asyncio.Future[Any] | None", Any]

#: Writer retry after a failed write: first probe after this many seconds, doubling up to the cap.
RETRY_FIRST = 0.05
RETRY_MAX = 0.25
#: Consecutive failed probes after which the writer reopens its connection (not after an I/O error:
#: see ``WriterThread.probe``).
REOPEN_AFTER = 8


@dataclass(slots=True)
class Stop:
    """What close() tells the writer: write session_end (and the log_fault note) if the last
    committed record is not session_end, trying until ``deadline`` (time.monotonic)."""

    want_end: bool
    fault: dict[str, object] | None
    deadline: float


@dataclass(slots=True)
class _State:
    """The writer thread's own bookkeeping (only that thread touches it)."""

    conn: sqlite3.Connection | None
    next_seq: int
    session: int
    max_session: int
    last_kind: str = ""
    failing: str | None = None  # reason
    acked: bool = False  # the loop has seen the failure (see ACK)
    delay: float = RETRY_FIRST
    next_probe: float = 0.0
    probes: int = 0  # failed probes in a row
    io_error: bool = False  # an I/O error happened in this failure: never reopen (see probe)


class _LoopSide(Protocol):
    """What the writer thread calls on the loop (through ``call_soon_threadsafe``), and
    ``_writer_crashed`` directly from the thread."""

    def _deliver(
        self, items: list[Item], error: SessionLogError | None, infos: list[SessionInfo]
    ) -> None: ...

    def _writer_failed(self, reason: str, resume_seq: int, session: int, max_session: int) -> None: ...

    def _writer_probe_ok(self) -> None: ...

    def _writer_reason(self, reason: str) -> None: ...

    def _writer_crashed(self, error: SessionLogError) -> None: ...


def default_name() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")


def session_start_row(seq: int, session: int, name: str) -> tuple[Any, ...]:
    """The 11 column values of a session_start record."""
    return (
        seq,
        session,
        format_now(time.time()),
        RecordKind.SESSION_START,
        None,
        None,
        None,
        "",
        name,
        None,
        "{}",
    )


class WriterThread:
    def __init__(
        self,
        path: Path,
        q: queue.SimpleQueue[Item],
        loop: asyncio.AbstractEventLoop,
        owner: _LoopSide,
        *,
        max_batch: int,
        commit_window: float,
    ) -> None:
        self.path = path
        self.queue = q
        self.loop = loop
        self.owner = owner
        self.max_batch = max_batch
        self.commit_window = commit_window

    def post(self, items: list[Item], error: SessionLogError | None, infos: list[SessionInfo]) -> None:
        self.call(self.owner._deliver, items, error, infos)

    def call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.debug("session log: event loop closed; %s dropped", getattr(callback, "__name__", callback))

    def run(
        self,
        session_name: str | None,
        new_session: bool,
        started: concurrent.futures.Future[tuple[SessionInfo, int]],
    ) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = schema.connect_writer(self.path)
            info = self.start(conn, session_name, new_session)
            if info.resumed:  # nothing was written yet: prove that we can (append + sync)
                schema.probe(conn)
            max_session = int(conn.execute("SELECT MAX(id) FROM sessions").fetchone()[0])
            last_kind = conn.execute("SELECT kind FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if not isinstance(exc, SessionLogError):
                exc = SessionLogError(f"{self.path}: the session log cannot be written: {schema.reason(exc)}")
            started.set_exception(exc)
            return
        w = _State(conn, info.last_seq + 1, info.session_id, max_session, last_kind[0] if last_kind else "")
        started.set_result((info, max_session))
        try:
            self.serve(w)
        except BaseException as exc:
            log.exception("session log writer crashed")
            broken = SessionLogError(f"{self.path}: the session log writer stopped: {exc!r}")
            self.owner._writer_crashed(broken)
            rest = drain(self.queue)  # fail what is queued; a pending close() still completes
            self.post([item for item in rest if item[0] not in (STOP, ACK)], broken, [])
            self.post([(STOP, None, it[2], "the writer stopped") for it in rest if it[0] == STOP], None, [])
        finally:
            if w.conn is not None:
                w.conn.close()

    def start(self, conn: sqlite3.Connection, name: str | None, new_session: bool) -> SessionInfo:
        last = conn.execute("SELECT id, name FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
        last_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]
        if last is not None and not new_session:
            ended = conn.execute(
                "SELECT 1 FROM records WHERE session = ? AND kind = ? LIMIT 1",
                (last[0], RecordKind.SESSION_END.value),
            ).fetchone()
            if ended is None:
                song = conn.execute(
                    "SELECT song FROM records WHERE session = ? AND kind IN (?, ?) "
                    "AND song IS NOT NULL ORDER BY seq DESC LIMIT 1",
                    (last[0], RecordKind.SONG.value, RecordKind.TAKE_MARKER.value),
                ).fetchone()
                return schema.session_info(conn, last[0], last[1], True, song[0] if song else "", last_seq)
        name = name or default_name()
        session = (last[0] if last is not None else 0) + 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            schema.insert_session(conn, session_start_row(last_seq + 1, session, name))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return schema.session_info(conn, session, name, False, "", last_seq + 1)

    def serve(self, w: _State) -> None:
        q = self.queue
        while True:
            if w.failing is not None and w.acked:
                try:
                    first = q.get(timeout=max(0.0, w.next_probe - time.monotonic()))
                except queue.Empty:
                    self.probe(w)
                    continue
            else:
                first = q.get()
            batch = [first]
            if self.commit_window > 0 and first[0] == APPEND and w.failing is None:
                time.sleep(self.commit_window)
            while len(batch) < self.max_batch:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            stop: Item | None = None
            work: list[Item] = []
            for item in batch:
                if item[0] == ACK:
                    w.acked = True
                elif item[0] == STOP:
                    stop = item
                else:
                    work.append(item)
            if work:
                if w.failing is not None:  # queued before the loop knew: refused, never written
                    self.post(work, SessionLogUnavailable(f"not written: {w.failing}"), [])
                else:
                    self.write(w, work)
            if stop is not None:
                self.finish(w, stop)
                return

    def write(self, w: _State, batch: list[Item]) -> None:
        rows: list[tuple[Any, ...]] = []
        infos: list[SessionInfo] = []
        conn = w.conn
        try:
            if conn is None:
                conn = w.conn = schema.reconnect(self.path)
            if batch[0][1][0] != w.next_seq:  # never commit a gap (cannot happen: the loop rewinds)
                raise SessionLogError(f"seq {batch[0][1][0]} queued where {w.next_seq} was expected")
            conn.execute("BEGIN IMMEDIATE")
            for i, (tag, row, fut, data) in enumerate(batch):
                if tag == APPEND:
                    if not data:
                        rows.append((*row[:10], "{}"))
                        continue
                    try:
                        rows.append((*row[:10], ENCODER.encode(data)))
                    except (TypeError, ValueError):  # not plain JSON: str() values / an 'unencodable' note
                        data_text, stored = encode_data(data)
                        rows.append((*row[:10], data_text))
                        batch[i] = (tag, row, fut, stored)
                    continue
                if rows:  # NEW_SESSION: keep the order of the inserts
                    schema.insert_rows(conn, rows)
                    rows = []
                schema.insert_session(conn, row)
                infos.append(schema.session_info(conn, row[1], data, False, "", row[0]))  # data = the name
            if rows:
                schema.insert_rows(conn, rows)
            conn.execute("COMMIT")
        except (sqlite3.Error, ValueError, TypeError, OverflowError, SessionLogError) as exc:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if schema.is_io_error(exc):
                    schema.bury(conn)
            self.fail(w, exc)
            self.post(
                batch,
                SessionLogUnavailable(f"not written: the session log could not write ({w.failing})"),
                [],
            )
            return
        last = batch[-1][1]
        w.next_seq = last[0] + 1
        w.session = last[1]
        w.last_kind = last[3]
        if infos:
            w.max_session = max(w.max_session, *(info.session_id for info in infos))
        self.post(batch, None, infos)

    def fail(self, w: _State, exc: BaseException) -> None:
        """Enter (or stay in) the failing state and tell the loop where to resume."""
        w.failing = schema.reason(exc)
        w.acked = False
        w.delay = RETRY_FIRST
        w.next_probe = time.monotonic() + w.delay
        w.probes = 0
        if schema.is_io_error(exc):
            w.io_error = True
        self.call(self.owner._writer_failed, w.failing, w.next_seq, w.session, w.max_session)

    def probe(self, w: _State) -> None:
        """While failing: one synced write. On success the loop accepts records again.

        The same connection is kept across failures: after an I/O error on sync, frames of the
        refused transaction may sit in the WAL past its valid end; our next commit overwrites them,
        while a fresh connection (the only one, so it rebuilds the WAL index) could take them as
        committed. So the connection is reopened only after ``REOPEN_AFTER`` failed probes in an
        episode without I/O errors (disk full, read-only: nothing was written)."""
        try:
            if w.conn is None or (
                w.probes >= REOPEN_AFTER and not w.io_error and w.probes % REOPEN_AFTER == 0
            ):
                if w.conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        w.conn.close()
                    w.conn = None
                w.conn = schema.reconnect(self.path)
            schema.reclaim(w.conn)
            schema.probe(w.conn)
        except (sqlite3.Error, SessionLogError) as exc:
            w.probes += 1
            if schema.is_io_error(exc):
                w.io_error = True
            reason = schema.reason(exc)
            if reason != w.failing:
                w.failing = reason
                self.call(self.owner._writer_reason, reason)
            w.delay = min(RETRY_MAX, w.delay * 2)
            w.next_probe = time.monotonic() + w.delay
            return
        log.debug("session log %s: probe write succeeded after %d failed probe(s)", self.path, w.probes)
        w.failing = None
        w.acked = False
        w.probes = 0
        w.io_error = False
        self.call(self.owner._writer_probe_ok)

    def finish(self, w: _State, stop: Item) -> None:
        """The STOP item. Write session_end if it is not the last record (bounded retries while
        failing), checkpoint, then answer close() with True or the reason."""
        spec: Stop = stop[3]
        outcome: bool | str = True
        if spec.want_end and w.last_kind != RecordKind.SESSION_END:
            outcome = self.final_rows(w, spec)
        if outcome is True and w.conn is not None:
            try:
                w.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("session log %s: final checkpoint failed: %s", self.path, exc)
        # Anything queued after the stop (a race with close()) is refused, never lost silently.
        rest = [item for item in drain(self.queue) if item[0] in (APPEND, NEW_SESSION)]
        if rest:
            self.post(rest, SessionLogError(f"{self.path}: the session log was closed"), [])
        self.post([(STOP, None, stop[2], outcome)], None, [])

    def final_rows(self, w: _State, spec: Stop) -> bool | str:
        delay = RETRY_FIRST
        reason = w.failing or "not attempted"
        while True:
            rows: list[tuple[Any, ...]] = []
            stamp = format_now(time.time())
            if spec.fault is not None:
                note = (RecordKind.LOG_FAULT, None, None, None, "", str(spec.fault.get("reason", "")), None)
                rows.append((w.next_seq, w.session, stamp, *note, ENCODER.encode(spec.fault)))
            end = (RecordKind.SESSION_END, None, None, None, "", "", None, "{}")
            rows.append((w.next_seq + len(rows), w.session, stamp, *end))
            try:
                if w.conn is None:
                    w.conn = schema.reconnect(self.path)
                if w.failing is not None:
                    schema.reclaim(w.conn)
                w.conn.execute("BEGIN IMMEDIATE")
                schema.insert_rows(w.conn, rows)
                w.conn.execute("COMMIT")
            except (sqlite3.Error, SessionLogError) as exc:
                if w.conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        w.conn.execute("ROLLBACK")
                reason = schema.reason(exc)
                if time.monotonic() + delay > spec.deadline:
                    return reason
                time.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            w.next_seq += len(rows)
            w.last_kind = RecordKind.SESSION_END
            if w.failing is not None:
                log.info("session log %s: session_end written at stop after the failure", self.path)
            w.failing = None
            return True


def drain(q: queue.SimpleQueue[Item]) -> list[Item]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items
