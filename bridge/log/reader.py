"""Reading the session log: read-only connections that can run while a daemon writes (WAL).

Records of a kind this studio-bridge does not know are skipped, counted and warned about
(:func:`bridge.log.records.rows_to_records`); they stay in the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from bridge.errors import SessionLogDamaged, SessionLogError
from bridge.log.kinds import RecordKind
from bridge.log.records import COLUMNS, Record, SessionSummary, damaged_message, rows_to_records
from bridge.log.schema import SCHEMA_VERSION

#: the kinds :func:`read_take_records` reads: what a take's state is folded from
TAKE_KINDS = (RecordKind.TAKE_MARKER, RecordKind.TAKE_FLAG, RecordKind.TAKE_RENAME)


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
            "(SELECT ts FROM records r WHERE r.session = s.id AND r.kind = ? ORDER BY seq LIMIT 1), "
            "(SELECT COUNT(*) FROM records r WHERE r.session = s.id AND r.kind = ?) "
            "FROM sessions s ORDER BY s.id",
            (RecordKind.SESSION_END.value, RecordKind.TAKE_MARKER.value),
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
        rows = conn.execute(f"SELECT {COLUMNS} FROM records WHERE {where} ORDER BY seq", params)
        return rows_to_records(rows, path)


def read_take_records(path: Path) -> list[Record]:
    """Every take's records in the whole log (``TAKE_KINDS``), in seq order: take numbers are
    log-wide, so a later session may circle or rename an earlier session's take."""
    with _reading(path) as conn:
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM records WHERE kind IN (?, ?, ?) ORDER BY seq",
            [kind.value for kind in TAKE_KINDS],
        )
        return rows_to_records(rows, path)
