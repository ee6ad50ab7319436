"""Recovering a damaged session log: move it aside (never deleted) and salvage every readable row
into a fresh log. Rows are copied as stored, whatever their kind."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.errors import SessionLogError
from bridge.log.kinds import RecordKind
from bridge.log.records import COLUMNS
from bridge.log.schema import INSERT, connect_writer

log = logging.getLogger(__name__)


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
        sessions, records = salvage(copy)
    conn = connect_writer(path)
    try:
        known = {sid for sid, _, _ in sessions}
        for rec in records:  # sessions whose row was lost: rebuild from their records
            if rec[1] not in known:
                known.add(rec[1])
                name = rec[8] if rec[3] == RecordKind.SESSION_START else f"recovered session {rec[1]}"
                sessions.append((rec[1], name, rec[2]))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO sessions (id, name, started) VALUES (?,?,?)", sorted(sessions))
        conn.executemany(INSERT, records)
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


def salvage(path: Path) -> tuple[list[tuple[int, str, str]], list[tuple[Any, ...]]]:
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
        found = {r[0]: r for r in _scan(conn, f"SELECT {COLUMNS} FROM records", "seq")}
        if found:
            lo, hi = min(found), max(found)
            for seq in range(lo, hi + 1):
                if seq not in found:
                    with contextlib.suppress(sqlite3.Error):
                        row = conn.execute(f"SELECT {COLUMNS} FROM records WHERE seq = ?", (seq,)).fetchone()
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
