"""The session log's SQLite file: tables, triggers, connection settings, and the small
transactions the writer and recovery share.

Storage (schema version 1, ``PRAGMA user_version = 1``, ``PRAGMA application_id = 0x53424C47``):

``sessions(id INTEGER PRIMARY KEY, name, started)``
    One row per session, inserted when the session starts and never changed. Whether and when a
    session ended is *derived* from its ``session_end`` record (``SessionSummary.ended``), so the
    file stays append-only: a session without ``session_end`` is still running or crashed.
``records(seq INTEGER PRIMARY KEY, session, ts, kind, song, take, daw_seconds, source, text, amends, data)``
    ``seq`` is global to the file, monotonic and gap-free (after a failed write the loop's seq
    counter is rewound to the first seq that was not committed). ``ts`` is UTC ISO 8601 with
    milliseconds and ``Z``; ``kind`` is a :class:`~bridge.log.kinds.RecordKind` value; ``data`` is a
    JSON object. Corrections are new records whose ``amends`` is the seq they correct. Triggers make
    UPDATE and DELETE fail on both tables. Indexes: ``(session, kind)``, ``(kind, song, take)``,
    ``(amends)``.

There are no migrations yet: a file of version 0 (new, or empty) gets the schema; a newer version
is refused with "upgrade studio-bridge".
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
from pathlib import Path
from typing import Any

from bridge.errors import SessionLogDamaged, SessionLogError
from bridge.log.kinds import RecordKind
from bridge.log.records import COLUMNS, SessionInfo, damaged_message

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53424C47  # "SBLG"
INSERT = f"INSERT INTO records ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_CHUNK = 64  # rows per multi-row INSERT: one sqlite3_step (GIL released) per chunk, not per row

SCHEMA = """
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


@functools.lru_cache(maxsize=_CHUNK)
def _insert_many(n: int) -> str:
    return f"INSERT INTO records ({COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * n)


def insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    for i in range(0, len(rows), _CHUNK):
        chunk = rows[i : i + _CHUNK]
        conn.execute(_insert_many(len(chunk)), list(itertools.chain.from_iterable(chunk)))


def insert_session(conn: sqlite3.Connection, start_row: tuple[Any, ...]) -> None:
    """Insert a session row and its session_start record (row = the record's 11 column values)."""
    conn.execute(
        "INSERT INTO sessions (id, name, started) VALUES (?, ?, ?)",
        (start_row[1], start_row[8], start_row[2]),
    )
    conn.execute(INSERT, start_row)


def configure(conn: sqlite3.Connection, path: Path) -> None:
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
        if is_unwritable(exc):  # opening in WAL mode writes (the -wal header): a full disk, EIO
            raise SessionLogError(f"{path}: the session log cannot be written: {reason(exc)}") from exc
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
        for statement in SCHEMA.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")


def connect_writer(path: Path) -> sqlite3.Connection:
    """The writer's connection, configured and checked (see :func:`configure`)."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
    except sqlite3.Error as exc:
        raise SessionLogError(f"{path}: cannot open the session log: {exc}") from exc
    try:
        configure(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def reconnect(path: Path) -> sqlite3.Connection:
    """A new writer connection to a log that was already checked (no integrity scan)."""
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.Error as exc:
        raise SessionLogError(f"cannot reopen: {exc}") from exc
    return conn


def probe(conn: sqlite3.Connection) -> None:
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


def bury(conn: sqlite3.Connection) -> None:
    """After an I/O error on sync: the refused transaction's frames were handed to the kernel and
    may be in the WAL file, past the WAL's valid end. A crash now would let the next opener's WAL
    recovery take them as committed: a record answered "not written" would come back. Write one
    frame over them at once (a probe): its write lands where they start and breaks their checksum
    chain, so they can never be recovered; if its own sync fails it is a harmless no-op frame."""
    with contextlib.suppress(sqlite3.Error):
        probe(conn)


def reclaim(conn: sqlite3.Connection) -> None:
    """Best effort, while failing: move the WAL into the database file and truncate it. Every
    synced commit appends whole pages to the WAL, and SQLite checkpoints only at 1000 pages (4 MB),
    so on a small or full disk the WAL is most of what is used; the database file grows only by the
    distinct pages. This frees that space, and lets the log go on even on a disk that stays full."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def take_counters(conn: sqlite3.Connection) -> dict[str, int]:
    """The last take number per song over the whole file (take numbers never repeat in a file)."""
    rows = conn.execute(
        "SELECT song, MAX(take) FROM records WHERE kind = ? AND take IS NOT NULL GROUP BY song",
        (RecordKind.TAKE_MARKER.value,),
    ).fetchall()
    last: dict[str, int] = {}
    for song, take in rows:
        key = song or ""
        last[key] = max(last.get(key, 0), int(take))
    return last


def session_info(
    conn: sqlite3.Connection, session: int, name: str, resumed: bool, song: str, last_seq: int
) -> SessionInfo:
    last_take = take_counters(conn)
    next_take = {song_: n + 1 for song_, n in last_take.items()}
    return SessionInfo(session, name, resumed, song, next_take, last_take, last_seq)


def reason(exc: BaseException) -> str:
    """The one-line cause of a write failure (SQLite's message, e.g. "database or disk is full")."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def is_unwritable(exc: BaseException) -> bool:
    """SQLite could read but not write: an I/O error, a full disk, a read-only file or mount."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    return (
        is_io_error(exc)
        or name.startswith(("SQLITE_FULL", "SQLITE_READONLY"))
        or "disk is full" in text
        or "readonly" in text
    )


def is_io_error(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_IOERR") or "disk I/O error" in str(exc)
