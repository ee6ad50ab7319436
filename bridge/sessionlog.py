"""The durable session log: an append-only SQLite database written by one thread.

Storage (schema version 1, ``PRAGMA user_version = 1``, ``PRAGMA application_id = 0x53424C47``):

``sessions(id INTEGER PRIMARY KEY, name, started)``
    One row per session, inserted when the session starts and never changed. Whether and when a
    session ended is *derived* from its ``session_end`` record (``SessionSummary.ended``), so the
    file stays append-only: a session without ``session_end`` is still running or crashed.
``records(seq INTEGER PRIMARY KEY, session, ts, kind, song, take, daw_seconds, source, text, amends, data)``
    ``seq`` is global to the file, monotonic and gap-free (after a failed write the loop's seq
    counter is rewound to the first seq that was not committed). ``ts`` is
    UTC ISO 8601 with milliseconds and ``Z``; ``data`` is a JSON object. Corrections are new
    records whose ``amends`` is the seq they correct. Triggers make UPDATE and DELETE fail on
    both tables. Indexes: ``(session, kind)``, ``(kind, song, take)``, ``(amends)``.

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
because they precede the loop's ``_ACK``. After the ACK the writer retries on its own, without a busy
loop (``queue.get`` with a timeout, 50 ms doubling to ``RETRY_MAX``): it checkpoints and truncates the
WAL (``_reclaim``: on a small disk the WAL is most of the used space) and makes one synced no-op write
(``_probe``: page 1 rewritten). When that works the loop accepts records again; the first is a
``log_fault`` note (what was refused, since when, why), and ``status`` is ``ok`` once it is durable.
``on_status`` callbacks (the hub's ``log/status`` state keys) hear every change. After an I/O error
the refused transaction's frames are overwritten at once (``_bury``) so a crash cannot resurrect them.
``close()`` while failing retries ``session_end`` for a bounded time and raises if it cannot.

Take numbers: ``SessionInfo.last_take``/``next_take`` are computed per song over the whole file
(all sessions), so a song's take numbers never repeat within one log file.

Opening proves the file can be written: a resumed session gets one ``_probe`` before ``open``
returns (a new session writes its ``session_start``); otherwise ``open`` raises with one line.

Reading: ``open_readonly``, ``list_sessions`` and ``read_records`` open the file read-only and
can run while a daemon writes (WAL). ``recover`` moves a damaged file aside and salvages records.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import itertools
import json
import logging
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.errors import SessionLogDamaged, SessionLogError, SessionLogUnavailable

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53424C47  # "SBLG"
_COLUMNS = "seq, session, ts, kind, song, take, daw_seconds, source, text, amends, data"
_INSERT = f"INSERT INTO records ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_CHUNK = 64  # rows per multi-row INSERT: one sqlite3_step (GIL released) per chunk, not per row


@functools.lru_cache(maxsize=_CHUNK)
def _insert_many(n: int) -> str:
    return f"INSERT INTO records ({_COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * n)


def _insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    for i in range(0, len(rows), _CHUNK):
        chunk = rows[i : i + _CHUNK]
        conn.execute(_insert_many(len(chunk)), list(itertools.chain.from_iterable(chunk)))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    started TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    session INTEGER NOT NULL REFERENCES sessions(id),
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    song TEXT,
    take INTEGER,
    daw_seconds REAL,
    source TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL DEFAULT '',
    amends INTEGER,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS records_session_kind ON records(session, kind);
CREATE INDEX IF NOT EXISTS records_kind_song_take ON records(kind, song, take);
CREATE INDEX IF NOT EXISTS records_amends ON records(amends);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'the session log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'the session log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS sessions_no_update BEFORE UPDATE ON sessions
    BEGIN SELECT RAISE(ABORT, 'the session log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS sessions_no_delete BEFORE DELETE ON sessions
    BEGIN SELECT RAISE(ABORT, 'the session log is append-only'); END;
"""


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    session: int
    ts: str
    kind: str
    song: str | None
    take: int | None
    daw_seconds: float | None
    source: str
    text: str
    amends: int | None
    data: dict[str, object]

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "session": self.session,
            "ts": self.ts,
            "kind": self.kind,
            "song": self.song,
            "take": self.take,
            "daw_seconds": self.daw_seconds,
            "source": self.source,
            "text": self.text,
            "amends": self.amends,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: int
    name: str
    resumed: bool
    song: str
    next_take: dict[str, int]
    last_take: dict[str, int]
    last_seq: int


@dataclass(frozen=True, slots=True)
class SessionSummary:
    id: int
    name: str
    started: str
    ended: str | None  # ts of its session_end record; None while running or after a crash
    takes: int
    songs: tuple[str, ...]  # in order of first appearance


def format_ts(when: datetime | float) -> str:
    """UTC ISO 8601 with milliseconds and ``Z``; a naive datetime is taken as UTC."""
    if isinstance(when, datetime):
        dt = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    else:
        dt = datetime.fromtimestamp(when, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def damaged_message(path: Path, detail: str) -> str:
    return (
        f"{path}: the session log is damaged ({detail}). Nothing was changed. "
        f"Run `studio-bridge log recover --data-dir {path.parent}` to move the file aside "
        "(it is kept, never deleted) and copy every readable record into a fresh log."
    )


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # built once: json.dumps with
# options builds a new encoder per call


def _encode_data(data: dict[str, object]) -> tuple[str, dict[str, object]]:
    """JSON text to store and the dict a Record carries (equal to what a reader decodes)."""
    try:
        return _ENCODER.encode(data), data
    except TypeError:  # a value JSON does not know (datetime, Path...): stored as str()
        try:
            text = json.dumps(data, default=str, separators=(",", ":"), ensure_ascii=False)
        except (ValueError, TypeError) as exc:
            text = json.dumps({"unencodable": repr(data)[:1000], "error": str(exc)})
    except ValueError as exc:  # circular structure
        text = json.dumps({"unencodable": repr(data)[:1000], "error": str(exc)})
    return text, _decode_data(text)


_second_cache: tuple[int, str] = (-1, "")


def _format_now(now: float) -> str:
    """format_ts for time.time() values, caching the part that changes once a second."""
    global _second_cache
    sec = int(now)
    cached_sec, prefix = _second_cache
    if sec != cached_sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second_cache = (sec, prefix)  # one atomic rebinding: safe from any thread
    return f"{prefix}.{int((now - sec) * 1000):03d}Z"


def _decode_data(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"undecodable": text}
    return value if isinstance(value, dict) else {"value": value}


def _record(row: tuple[Any, ...], data: dict[str, object]) -> Record:
    seq, session, ts, kind, song, take, daw, source, text, amends, _ = row
    return Record(seq, session, ts, kind, song, take, daw, source, text, amends, data)


def _row_to_record(row: tuple[Any, ...]) -> Record:
    seq, session, ts, kind, song, take, daw, source, text, amends, data = row
    return Record(
        seq, session, ts, kind, song, take, daw, source or "", text or "", amends, _decode_data(data)
    )


# Queue items are tuples built on the loop, with everything already formatted, so the writer thread
# runs almost no Python (which would hold the GIL and stall the loop):
#   (_APPEND, row, future, data)           row = the 11 column values (the last is the data dict,
#                                          JSON-encoded by the writer), data = the Record's dict
#   (_NEW_SESSION, row, future, name)      row = the session_start record (its session id is new)
#   (_ACK, None, None, None)               the loop knows the writer is failing: every append queued
#                                          before this is stale (refused); none come after it until
#                                          the writer reports a good probe
#   (_STOP, None, future, _Stop)
# The writer hands a batch back to the loop as (items, error, infos); the loop builds the Records.
_RESOLVE_CHUNK = 32  # futures resolved per loop callback (a 256-record batch would stall the loop)
_APPEND = 0
_NEW_SESSION = 1
_STOP = 2
_ACK = 3
_Item = tuple[int, Any, "asyncio.Future[Any] | None", Any]

#: Writer retry after a failed write: first probe after this many seconds, doubling up to the cap.
RETRY_FIRST = 0.05
RETRY_MAX = 0.25
#: Consecutive failed probes after which the writer reopens its connection (not after an I/O error:
#: see ``_Writer.probe``).
REOPEN_AFTER = 8
#: How long ``close()`` keeps trying to write ``session_end`` while the log is failing (seconds).
CLOSE_RETRY = 0.6


@dataclass(frozen=True, slots=True)
class LogStatus:
    """What ``on_status`` callbacks get: ``ok`` or ``failing`` (with the reason)."""

    status: str  # "ok" | "failing"
    reason: str  # "" when ok
    unwritten: int  # records refused since the log was opened
    since: float | None  # wall-clock time the failure started (None when ok)


@dataclass(slots=True)
class _Stop:
    """What close() tells the writer: write session_end (and the log_fault note) if the last
    committed record is not session_end, trying until ``deadline`` (time.monotonic)."""

    want_end: bool
    fault: dict[str, object] | None
    deadline: float


@dataclass(slots=True)
class _Writer:
    """The writer thread's own bookkeeping (only that thread touches it)."""

    conn: sqlite3.Connection | None
    next_seq: int
    session: int
    max_session: int
    last_kind: str = ""
    failing: str | None = None  # reason
    acked: bool = False  # the loop has seen the failure (see _ACK)
    delay: float = RETRY_FIRST
    next_probe: float = 0.0
    probes: int = 0  # failed probes in a row
    io_error: bool = False  # an I/O error happened in this failure: never reopen (see probe)


def _take_counters(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT song, MAX(take) FROM records WHERE kind = 'take_marker' AND take IS NOT NULL GROUP BY song"
    ).fetchall()
    last: dict[str, int] = {}
    for song, take in rows:
        key = song or ""
        last[key] = max(last.get(key, 0), int(take))
    return last


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    """WAL + FULL, integrity and schema checks. Raises SessionLogDamaged / SessionLogError."""
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        check = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            raise SessionLogDamaged(damaged_message(path, "quick_check: " + "; ".join(check[:3])))
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError as exc:
        raise SessionLogError(f"{path}: cannot open the session log: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise SessionLogDamaged(damaged_message(path, str(exc))) from exc
    if mode.lower() != "wal":
        raise SessionLogError(f"{path}: cannot switch the session log to WAL mode (got {mode!r})")
    if version > SCHEMA_VERSION:
        raise SessionLogError(
            f"{path}: the session log has schema version {version}; this studio-bridge reads up to "
            f"{SCHEMA_VERSION}. Upgrade studio-bridge."
        )
    if version == 0:
        if tables - {"sessions", "records"}:
            raise SessionLogError(f"{path}: this SQLite file is not a studio-bridge session log")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")


def _connect_writer(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
    except sqlite3.Error as exc:
        raise SessionLogError(f"{path}: cannot open the session log: {exc}") from exc
    try:
        _configure(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


class SessionLog:
    """The append-only session log. See the module docstring for the storage model."""

    def __init__(self, path: Path, *, max_batch: int = 256, commit_window: float = 0.0) -> None:
        self.path = Path(path)
        self.max_batch = max_batch
        self.commit_window = commit_window  # seconds to wait for more records before a commit
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
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
        self._pending: collections.deque[tuple[_Item, SessionLogError | None, SessionInfo | None]] = (
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
        self._thread = threading.Thread(
            target=self._run, args=(session_name, new_session, started), name="sessionlog-writer", daemon=True
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
        kind: str,
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
        TypeError for a non-str kind/text/source or a non-datetime ts. ``data`` is copied one level
        deep here and encoded later by the writer: do not mutate nested values after the call.

        While the log cannot write (``status`` is failing) the future is failed at once with
        SessionLogUnavailable: the record is refused, not written, and counted."""
        if not self._open or self._loop is None:
            raise SessionLogError(f"{self.path}: the session log is not open")
        if self._dead:
            raise self._broken or SessionLogError(f"{self.path}: the session log writer stopped")
        if type(kind) is not str or type(text) is not str or type(source) is not str:
            raise TypeError("session log: kind, text and source must be str")
        if ts is None:
            stamp = _format_now(time.time())
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
        self._queue.put((_APPEND, row, fut, data_obj))
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
            raise self._refusal("session_end")
        end = self.append("session_end")
        assert self._loop is not None
        fut: asyncio.Future[SessionInfo] = self._loop.create_future()
        name = name or _default_name()
        seq = self._next_seq
        self._next_seq = seq + 1
        self._max_session += 1
        self._session_id = self._max_session
        row = (
            seq,
            self._session_id,
            _format_now(time.time()),
            "session_start",
            None,
            None,
            None,
            "",
            name,
            None,
        )
        self._queue.put((_NEW_SESSION, (*row, "{}"), fut, name))
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
                end = None if self._failing is not None else self.append("session_end")
                self._open = False
                stopped: asyncio.Future[bool | str] = self._loop.create_future()
                stop = _Stop(want_end=True, fault=fault, deadline=time.monotonic() + retry)
                self._queue.put((_STOP, None, stopped, stop))
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
            "by_kind": dict(sorted(self._episode_refused.items())),
            "since": format_ts(self._since or time.time()),
            "reason": self._failing or self._last_reason,
        }

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
        self._queue.put((_ACK, None, None, None))
        self._notify()

    def _writer_probe_ok(self) -> None:
        """On the loop: a synced probe write worked. Accept records again; the first one is the
        ``log_fault`` note saying what was refused; the episode ends when it is durable."""
        if not self._open:
            return
        self._failing = None
        note = self._fault_note()
        fut = self.append("log_fault", text=str(note["reason"]), data=note)
        self._fault_seq = self._next_seq - 1
        fut.add_done_callback(self._fault_written)
        self._notify()

    def _fault_written(self, fut: asyncio.Future[Record]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # the writer failed again: _writer_failed has taken over
        record = fut.result()
        if self._fault_seq != record.seq:
            return
        since = self._since or time.time()
        log.warning(
            "session log %s: writing again after %.1f s; %d record(s) were refused and not written "
            "(%s); noted as record %d (log_fault)",
            self.path,
            time.time() - since,
            sum(self._episode_refused.values()),
            ", ".join(f"{k} {n}" for k, n in sorted(self._episode_refused.items())) or "none",
            record.seq,
        )
        self._episode_refused.clear()
        self._since = None
        self._fault_seq = None
        self._notify()

    def _deliver(self, items: list[_Item], error: SessionLogError | None, infos: list[SessionInfo]) -> None:
        """On the loop: queue a committed (or failed) batch for resolution, in order."""
        info_iter = iter(infos)
        for item in items:
            info = next(info_iter) if item[0] == _NEW_SESSION and error is None else None
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
            if tag == _STOP:
                value = extra
            elif error is not None:
                value = error
                if isinstance(error, SessionLogUnavailable) and row[3] != "log_fault":
                    self._episode_refused[row[3]] += 1
                    self._unwritten += 1
                    refused = True
            elif tag == _APPEND:
                value = _record(row, extra)
                durable.append(value)
            else:  # _NEW_SESSION
                durable.append(_record(row, {}))
                value = info
            if fut is None or fut.done():
                continue
            if isinstance(value, BaseException):
                fut.set_exception(value)
            else:
                fut.set_result(value)
        for record in durable:
            for callback in self._callbacks:
                try:
                    callback(record)
                except Exception:
                    log.exception("session log on_durable callback failed for seq %d", record.seq)
        if refused:
            self._notify()
        if pending:
            assert self._loop is not None
            self._loop.call_soon(self._resolve_some)
        else:
            self._draining = False

    # ------------------------------------------------------------- writer thread
    def _post(self, items: list[_Item], error: SessionLogError | None, infos: list[SessionInfo]) -> None:
        self._call(self._deliver, items, error, infos)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.debug("session log: event loop closed; %s dropped", getattr(callback, "__name__", callback))

    def _run(
        self,
        session_name: str | None,
        new_session: bool,
        started: concurrent.futures.Future[tuple[SessionInfo, int]],
    ) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect_writer(self.path)
            info = self._start(conn, session_name, new_session)
            if info.resumed:  # nothing was written yet: prove that we can (append + sync)
                _probe(conn)
            max_session = int(conn.execute("SELECT MAX(id) FROM sessions").fetchone()[0])
            last_kind = conn.execute("SELECT kind FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if not isinstance(exc, SessionLogError):
                exc = SessionLogError(f"{self.path}: the session log cannot be written: {_reason(exc)}")
            started.set_exception(exc)
            return
        w = _Writer(conn, info.last_seq + 1, info.session_id, max_session, last_kind[0] if last_kind else "")
        started.set_result((info, max_session))
        try:
            self._serve(w)
        except BaseException as exc:
            log.exception("session log writer crashed")
            self._broken = SessionLogError(f"{self.path}: the session log writer stopped: {exc!r}")
            self._dead = True
            rest = _drain(self._queue)  # fail what is queued; a pending close() still completes
            self._post([item for item in rest if item[0] not in (_STOP, _ACK)], self._broken, [])
            self._post(
                [(_STOP, None, it[2], "the writer stopped") for it in rest if it[0] == _STOP], None, []
            )
        finally:
            if w.conn is not None:
                w.conn.close()

    def _start(self, conn: sqlite3.Connection, name: str | None, new_session: bool) -> SessionInfo:
        last = conn.execute("SELECT id, name FROM sessions ORDER BY id DESC LIMIT 1").fetchone()
        last_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]
        if last is not None and not new_session:
            ended = conn.execute(
                "SELECT 1 FROM records WHERE session = ? AND kind = 'session_end' LIMIT 1", (last[0],)
            ).fetchone()
            if ended is None:
                song = conn.execute(
                    "SELECT song FROM records WHERE session = ? AND kind IN ('song', 'take_marker') "
                    "AND song IS NOT NULL ORDER BY seq DESC LIMIT 1",
                    (last[0],),
                ).fetchone()
                return _info(conn, last[0], last[1], True, song[0] if song else "", last_seq)
        name = name or _default_name()
        session = (last[0] if last is not None else 0) + 1
        start = (
            last_seq + 1,
            session,
            _format_now(time.time()),
            "session_start",
            None,
            None,
            None,
            "",
            name,
            None,
        )
        conn.execute("BEGIN IMMEDIATE")
        try:
            _insert_session(conn, (*start, "{}"))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return _info(conn, session, name, False, "", last_seq + 1)

    def _serve(self, w: _Writer) -> None:
        q = self._queue
        while True:
            if w.failing is not None and w.acked:
                try:
                    first = q.get(timeout=max(0.0, w.next_probe - time.monotonic()))
                except queue.Empty:
                    self._probe(w)
                    continue
            else:
                first = q.get()
            batch = [first]
            if self.commit_window > 0 and first[0] == _APPEND and w.failing is None:
                time.sleep(self.commit_window)
            while len(batch) < self.max_batch:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            stop: _Item | None = None
            work: list[_Item] = []
            for item in batch:
                if item[0] == _ACK:
                    w.acked = True
                elif item[0] == _STOP:
                    stop = item
                else:
                    work.append(item)
            if work:
                if w.failing is not None:  # queued before the loop knew: refused, never written
                    self._post(work, SessionLogUnavailable(f"not written: {w.failing}"), [])
                else:
                    self._write(w, work)
            if stop is not None:
                self._finish(w, stop)
                return

    def _write(self, w: _Writer, batch: list[_Item]) -> None:
        rows: list[tuple[Any, ...]] = []
        infos: list[SessionInfo] = []
        conn = w.conn
        try:
            if conn is None:
                conn = w.conn = _reconnect(self.path)
            if batch[0][1][0] != w.next_seq:  # never commit a gap (cannot happen: the loop rewinds)
                raise SessionLogError(f"seq {batch[0][1][0]} queued where {w.next_seq} was expected")
            conn.execute("BEGIN IMMEDIATE")
            for i, (tag, row, fut, data) in enumerate(batch):
                if tag == _APPEND:
                    if not data:
                        rows.append((*row[:10], "{}"))
                        continue
                    try:
                        rows.append((*row[:10], _ENCODER.encode(data)))
                    except (TypeError, ValueError):  # not plain JSON: str() values / an 'unencodable' note
                        data_text, stored = _encode_data(data)
                        rows.append((*row[:10], data_text))
                        batch[i] = (tag, row, fut, stored)
                    continue
                if rows:  # _NEW_SESSION: keep the order of the inserts
                    _insert_rows(conn, rows)
                    rows = []
                _insert_session(conn, row)
                infos.append(_info(conn, row[1], data, False, "", row[0]))  # data = the session name
            if rows:
                _insert_rows(conn, rows)
            conn.execute("COMMIT")
        except (sqlite3.Error, ValueError, TypeError, OverflowError, SessionLogError) as exc:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if _is_io_error(exc):
                    _bury(conn)
            self._fail(w, exc)
            self._post(
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
        self._post(batch, None, infos)

    def _fail(self, w: _Writer, exc: BaseException) -> None:
        """Writer thread: enter (or stay in) the failing state and tell the loop where to resume."""
        w.failing = _reason(exc)
        w.acked = False
        w.delay = RETRY_FIRST
        w.next_probe = time.monotonic() + w.delay
        w.probes = 0
        if _is_io_error(exc):
            w.io_error = True
        self._call(self._writer_failed, w.failing, w.next_seq, w.session, w.max_session)

    def _probe(self, w: _Writer) -> None:
        """Writer thread, while failing: one synced write. On success the loop accepts records again.

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
                w.conn = _reconnect(self.path)
            _reclaim(w.conn)
            _probe(w.conn)
        except (sqlite3.Error, SessionLogError) as exc:
            w.probes += 1
            if _is_io_error(exc):
                w.io_error = True
            reason = _reason(exc)
            if reason != w.failing:
                w.failing = reason
                self._call(self._writer_reason, reason)
            w.delay = min(RETRY_MAX, w.delay * 2)
            w.next_probe = time.monotonic() + w.delay
            return
        log.debug("session log %s: probe write succeeded after %d failed probe(s)", self.path, w.probes)
        w.failing = None
        w.acked = False
        w.probes = 0
        w.io_error = False
        self._call(self._writer_probe_ok)

    def _writer_reason(self, reason: str) -> None:
        if self._failing is not None and reason != self._failing:
            log.debug("session log %s: now failing with: %s", self.path, reason)
            self._failing = self._last_reason = reason
            self._notify()

    def _finish(self, w: _Writer, stop: _Item) -> None:
        """Writer thread: the STOP item. Write session_end if it is not the last record (bounded
        retries while failing), checkpoint, then answer close() with True or the reason."""
        spec: _Stop = stop[3]
        outcome: bool | str = True
        if spec.want_end and w.last_kind != "session_end":
            outcome = self._final_rows(w, spec)
        if outcome is True and w.conn is not None:
            try:
                w.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("session log %s: final checkpoint failed: %s", self.path, exc)
        # Anything queued after the stop (a race with close()) is refused, never lost silently.
        rest = [item for item in _drain(self._queue) if item[0] in (_APPEND, _NEW_SESSION)]
        if rest:
            self._post(rest, SessionLogError(f"{self.path}: the session log was closed"), [])
        self._post([(_STOP, None, stop[2], outcome)], None, [])

    def _final_rows(self, w: _Writer, spec: _Stop) -> bool | str:
        delay = RETRY_FIRST
        reason = w.failing or "not attempted"
        while True:
            rows = []
            stamp = _format_now(time.time())
            if spec.fault is not None:
                rows.append(
                    (
                        w.next_seq,
                        w.session,
                        stamp,
                        "log_fault",
                        None,
                        None,
                        None,
                        "",
                        str(spec.fault.get("reason", "")),
                        None,
                        _ENCODER.encode(spec.fault),
                    )
                )
            rows.append(
                (
                    w.next_seq + len(rows),
                    w.session,
                    stamp,
                    "session_end",
                    None,
                    None,
                    None,
                    "",
                    "",
                    None,
                    "{}",
                )
            )
            try:
                if w.conn is None:
                    w.conn = _reconnect(self.path)
                if w.failing is not None:
                    _reclaim(w.conn)
                w.conn.execute("BEGIN IMMEDIATE")
                _insert_rows(w.conn, rows)
                w.conn.execute("COMMIT")
            except (sqlite3.Error, SessionLogError) as exc:
                if w.conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        w.conn.execute("ROLLBACK")
                reason = _reason(exc)
                if time.monotonic() + delay > spec.deadline:
                    return reason
                time.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            w.next_seq += len(rows)
            w.last_kind = "session_end"
            if w.failing is not None:
                log.info("session log %s: session_end written at stop after the failure", self.path)
            w.failing = None
            return True


def _reason(exc: BaseException) -> str:
    """The one-line cause of a write failure (SQLite's message, e.g. "database or disk is full")."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_io_error(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_IOERR") or "disk I/O error" in str(exc)


def _probe(conn: sqlite3.Connection) -> None:
    """One write transaction that appends a WAL frame and syncs it (``synchronous=FULL``), changing
    nothing: rewriting the schema version rewrites page 1. Raises sqlite3.Error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _bury(conn: sqlite3.Connection) -> None:
    """After an I/O error on sync: the refused transaction's frames were handed to the kernel and
    may be in the WAL file, past the WAL's valid end. A crash now would let the next opener's WAL
    recovery take them as committed: a record answered "not written" would come back. Write one
    frame over them at once (a probe): its write lands where they start and breaks their checksum
    chain, so they can never be recovered; if its own sync fails it is a harmless no-op frame."""
    with contextlib.suppress(sqlite3.Error):
        _probe(conn)


def _reclaim(conn: sqlite3.Connection) -> None:
    """Best effort, while failing: move the WAL into the database file and truncate it. Every
    synced commit appends whole pages to the WAL, and SQLite checkpoints only at 1000 pages (4 MB),
    so on a small or full disk the WAL is most of what is used; the database file grows only by the
    distinct pages. This frees that space, and lets the log go on even on a disk that stays full."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def _reconnect(path: Path) -> sqlite3.Connection:
    """A new writer connection to a log that was already checked (no integrity scan)."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.Error as exc:
        raise SessionLogError(f"cannot reopen: {exc}") from exc
    return conn


def _insert_session(conn: sqlite3.Connection, start_row: tuple[Any, ...]) -> None:
    """Insert a session row and its session_start record (row = the record's 11 column values)."""
    conn.execute(
        "INSERT INTO sessions (id, name, started) VALUES (?, ?, ?)",
        (start_row[1], start_row[8], start_row[2]),
    )
    conn.execute(_INSERT, start_row)


def _info(
    conn: sqlite3.Connection, session: int, name: str, resumed: bool, song: str, last_seq: int
) -> SessionInfo:
    last_take = _take_counters(conn)
    next_take = {song_: n + 1 for song_, n in last_take.items()}
    return SessionInfo(session, name, resumed, song, next_take, last_take, last_seq)


def _drain(q: queue.SimpleQueue[_Item]) -> list[_Item]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def _default_name() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------- readers
def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection, safe while a daemon writes. Raises SessionLogError / SessionLogDamaged."""
    path = Path(path)
    if not path.is_file():
        raise SessionLogError(f"{path}: no session log here")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SessionLogError(f"{path}: cannot open the session log: {exc}") from exc
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SessionLogError(f"{path}: schema version {version} is newer than this studio-bridge")
        if version == 0:
            raise SessionLogError(f"{path}: not a studio-bridge session log (or still empty)")
    except sqlite3.OperationalError as exc:
        conn.close()
        raise SessionLogError(f"{path}: cannot read the session log: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise SessionLogDamaged(damaged_message(path, str(exc))) from exc
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_readonly(path)
    try:
        yield conn
    except sqlite3.OperationalError as exc:
        raise SessionLogError(f"{path}: cannot read the session log: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise SessionLogDamaged(damaged_message(Path(path), str(exc))) from exc
    finally:
        conn.close()


def list_sessions(path: Path) -> list[SessionSummary]:
    with _reading(path) as conn:
        rows = conn.execute(
            "SELECT s.id, s.name, s.started, "
            "(SELECT ts FROM records r WHERE r.session = s.id AND r.kind = 'session_end' "
            "ORDER BY seq LIMIT 1), "
            "(SELECT COUNT(*) FROM records r WHERE r.session = s.id AND r.kind = 'take_marker') "
            "FROM sessions s ORDER BY s.id"
        ).fetchall()
        result = []
        for sid, name, started, ended, takes in rows:
            songs = conn.execute(
                "SELECT song FROM records WHERE session = ? AND song IS NOT NULL AND song != '' "
                "GROUP BY song ORDER BY MIN(seq)",
                (sid,),
            ).fetchall()
            result.append(SessionSummary(sid, name, started, ended, takes, tuple(s[0] for s in songs)))
        return result


def read_records(path: Path, session_id: int | None = None, amending: bool = False) -> list[Record]:
    """All records of one session (default: the latest) in seq order. ``amending``: also the
    records of later sessions that amend one of its records (a take circled, renamed or noted
    after its session ended: they belong on that session's take sheet)."""
    with _reading(path) as conn:
        if session_id is None:
            row = conn.execute("SELECT MAX(id) FROM sessions").fetchone()
            if row is None or row[0] is None:
                return []
            session_id = int(row[0])
        where, params = "session = ?", [session_id]
        if amending:
            where = "session = ? OR (session > ? AND amends IN (SELECT seq FROM records WHERE session = ?))"
            params = [session_id, session_id, session_id]
        rows = conn.execute(f"SELECT {_COLUMNS} FROM records WHERE {where} ORDER BY seq", params)
        return [_row_to_record(r) for r in rows]


def read_take_records(path: Path) -> list[Record]:
    """Every take's records in the whole log (markers, flags, renames), in seq order: take
    numbers are log-wide, so a later session may circle or rename an earlier session's take."""
    with _reading(path) as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM records WHERE kind IN ('take_marker', 'take_flag', 'take_rename')"
            " ORDER BY seq"
        )
        return [_row_to_record(r) for r in rows]


# -------------------------------------------------------------------- recovery
def recover(path: Path) -> Path:
    """Move a damaged log aside (``<name>.damaged-<UTC>``, never deleted, with its -wal/-shm) and copy
    every readable record and session into a fresh log at ``path``. Returns the backup path."""
    path = Path(path)
    if not path.exists():
        raise SessionLogError(f"{path}: no session log to recover")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    path.rename(backup)
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        if side.exists():
            side.rename(Path(str(backup) + suffix))
    with tempfile.TemporaryDirectory(prefix="sessionlog-recover-") as scratch:
        # Read a copy so the backup stays byte-for-byte what was found.
        copy = Path(scratch) / "damaged.db"
        shutil.copy2(backup, copy)
        if Path(str(backup) + "-wal").exists():
            shutil.copy2(Path(str(backup) + "-wal"), Path(str(copy) + "-wal"))
        sessions, records = _salvage(copy)
    conn = _connect_writer(path)
    try:
        known = {sid for sid, _, _ in sessions}
        for rec in records:  # sessions whose row was lost: rebuild from their records
            if rec[1] not in known:
                known.add(rec[1])
                name = rec[8] if rec[3] == "session_start" else f"recovered session {rec[1]}"
                sessions.append((rec[1], name, rec[2]))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO sessions (id, name, started) VALUES (?,?,?)", sorted(sessions))
        conn.executemany(_INSERT, records)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    log.warning(
        "session log %s recovered: %d record(s) in %d session(s) copied; damaged file kept as %s",
        path,
        len(records),
        len(sessions),
        backup,
    )
    return backup


def _salvage(path: Path) -> tuple[list[tuple[int, str, str]], list[tuple[Any, ...]]]:
    """Read whatever rows are readable: a forward scan, a backward scan, then point lookups in between."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None)
        conn.execute("PRAGMA writable_schema=ON")  # tolerate a schema that references lost pages
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        log.error("session log %s: nothing readable (%s)", path, exc)
        return [], []
    try:
        sessions = {r[0]: r for r in _scan(conn, "SELECT id, name, started FROM sessions", "id")}
        found = {r[0]: r for r in _scan(conn, f"SELECT {_COLUMNS} FROM records", "seq")}
        if found:
            lo, hi = min(found), max(found)
            for seq in range(lo, hi + 1):
                if seq not in found:
                    with contextlib.suppress(sqlite3.Error):
                        row = conn.execute(f"SELECT {_COLUMNS} FROM records WHERE seq = ?", (seq,)).fetchone()
                        if row is not None:
                            found[seq] = row
        good = []
        for seq in sorted(found):
            row = found[seq]
            if isinstance(row[1], int) and isinstance(row[2], str) and isinstance(row[3], str):
                good.append(row)
        return list(sessions.values()), good
    finally:
        conn.close()


def _scan(conn: sqlite3.Connection, select: str, key: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for order in ("ASC", "DESC"):
        try:
            for row in conn.execute(f"{select} ORDER BY {key} {order}"):
                rows.append(row)
        except sqlite3.Error as exc:
            log.warning("session log salvage: %s scan stopped: %s", order, exc)
    return rows
