"""The values the session log hands out (``Record``, ``SessionInfo``, ``SessionSummary``,
``LogStatus``), timestamps, and the encoding of a record's ``data`` and of its database row.

A stored row whose ``kind`` is not a :class:`~bridge.log.kinds.RecordKind` (a newer
studio-bridge wrote it) never becomes a ``Record``: :func:`rows_to_records` skips it, counts it
and logs one warning per read; the row itself stays in the file (``log recover`` copies it too).
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.log.kinds import RecordKind

log = logging.getLogger(__name__)

#: the columns of the ``records`` table, in storage order
COLUMNS = "seq, session, ts, kind, song, take, daw_seconds, source, text, amends, data"
_KINDS: dict[str, RecordKind] = {kind.value: kind for kind in RecordKind}


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    session: int
    ts: str
    kind: RecordKind
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
            "kind": str(self.kind),  # plain text (a StrEnum member is its value)
            "song": self.song,
            "take": self.take,
            "daw_seconds": self.daw_seconds,
            "source": self.source,
            "text": self.text,
            "amends": self.amends,
            "data": self.data,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Record | None:
        """``to_json()`` back into a Record (a ``LogEntry`` a device received); None when a field
        is missing or of the wrong type, or the kind is not a RecordKind."""

        def text(key: str) -> str | None:
            value = d.get(key)
            return value if isinstance(value, str) else None

        def integer(key: str) -> int | None:
            value = d.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        seq, session, ts, kind = (
            integer("seq"),
            integer("session"),
            text("ts"),
            _KINDS.get(text("kind") or ""),
        )
        if seq is None or session is None or ts is None or kind is None:
            return None
        seconds = d.get("daw_seconds")
        data = d.get("data")
        return cls(
            seq,
            session,
            ts,
            kind,
            text("song"),
            integer("take"),
            float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None,
            text("source") or "",
            text("text") or "",
            integer("amends"),
            dict(data) if isinstance(data, dict) else {},
        )


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


@dataclass(frozen=True, slots=True)
class LogStatus:
    """What ``on_status`` callbacks get: ``ok`` or ``failing`` (with the reason)."""

    status: str  # "ok" | "failing"
    reason: str  # "" when ok
    unwritten: int  # records refused since the log was opened
    since: float | None  # wall-clock time the failure started (None when ok)


def format_ts(when: datetime | float) -> str:
    """UTC ISO 8601 with milliseconds and ``Z``; a naive datetime is taken as UTC."""
    if isinstance(when, datetime):
        dt = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    else:
        dt = datetime.fromtimestamp(when, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


_second_cache: tuple[int, str] = (-1, "")


def format_now(now: float) -> str:
    """format_ts for time.time() values, caching the part that changes once a second."""
    global _second_cache
    sec = int(now)
    cached_sec, prefix = _second_cache
    if sec != cached_sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second_cache = (sec, prefix)  # one atomic rebinding: safe from any thread
    return f"{prefix}.{int((now - sec) * 1000):03d}Z"


def damaged_message(path: Path, detail: str) -> str:
    return (
        f"{path}: the session log is damaged ({detail}). Nothing was changed. "
        f"Run `studio-bridge log recover --data-dir {path.parent}` to move the file aside "
        "(it is kept, never deleted) and copy every readable record into a fresh log."
    )


ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # built once: json.dumps with
# options builds a new encoder per call


def encode_data(data: dict[str, object]) -> tuple[str, dict[str, object]]:
    """JSON text to store and the dict a Record carries (equal to what a reader decodes)."""
    try:
        return ENCODER.encode(data), data
    except TypeError:  # a value JSON does not know (datetime, Path...): stored as str()
        try:
            text = json.dumps(data, default=str, separators=(",", ":"), ensure_ascii=False)
        except (ValueError, TypeError) as exc:
            text = json.dumps({"unencodable": repr(data)[:1000], "error": str(exc)})
    except ValueError as exc:  # circular structure
        text = json.dumps({"unencodable": repr(data)[:1000], "error": str(exc)})
    return text, decode_data(text)


def decode_data(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"undecodable": text}
    return value if isinstance(value, dict) else {"value": value}


def record(row: tuple[Any, ...], data: dict[str, object]) -> Record:
    """The Record of a row the writer just committed (its kind is already a RecordKind)."""
    seq, session, ts, kind, song, take, daw, source, text, amends, _ = row
    return Record(seq, session, ts, kind, song, take, daw, source, text, amends, data)


def rows_to_records(rows: Iterable[tuple[Any, ...]], path: Path) -> list[Record]:
    """Stored rows (``COLUMNS`` order) as Records; rows of an unknown kind are skipped and counted
    (one warning per call), so a reader never meets a kind no writer of this version emits."""
    out: list[Record] = []
    unknown: collections.Counter[str] = collections.Counter()
    for seq, session, ts, kind, song, take, daw, source, text, amends, data in rows:
        known = _KINDS.get(kind)
        if known is None:
            unknown[str(kind)] += 1
            continue
        out.append(
            Record(
                seq, session, ts, known, song, take, daw, source or "", text or "", amends, decode_data(data)
            )
        )
    if unknown:
        log.warning(
            "session log %s: %d record(s) of a kind this studio-bridge does not know were skipped (%s); "
            "a newer studio-bridge wrote them; they stay in the file",
            path,
            sum(unknown.values()),
            ", ".join(f"{kind} {n}" for kind, n in sorted(unknown.items())),
        )
    return out
