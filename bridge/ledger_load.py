"""The take ledger's data, and the pure functions that rebuild it from session-log records.

``load_takes`` turns a (re)opened session's records into the take counters, labels, flags
and song list the ledger works from; ``close_open_cues`` ends the talkback cues a killed
daemon left open. Both only read the records they are given: no log, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bridge.log.kinds import RecordKind
from bridge.vocab import Command, Event

if TYPE_CHECKING:
    from bridge.log.records import Record, SessionInfo

#: a command's answer: None (done) or the reason it failed
Done = Callable[[str | None], None]


@dataclass(frozen=True, slots=True)
class Moment:
    """What the ledger needs to know of the studio when it is called (the hub reads it from
    its clock and state): the ledger itself reads no clock and no state."""

    #: monotonic seconds (AUTO_TAKE_MERGE, talkback cue durations)
    clock: float
    #: the DAW playhead, in seconds
    position: float = 0.0
    playing: bool = False
    recording: bool = False
    #: the armed track numbers
    armed: tuple[int, ...] = ()
    #: the name of the device with the role daw ("" without one)
    daw: str = ""


# ---------------------------------------------------------------------- effects


@dataclass(eq=False, slots=True)
class Append:
    """Append this record to the session log; once it is durable (``Ledger.durable``) or has
    failed (``Ledger.failed``) the ledger says what follows."""

    kind: RecordKind
    fields: dict[str, Any]
    #: run once the record is durable (the ledger's own change); returns more effects
    on_durable: Callable[[Record, Moment], list[Effect]] | None = None
    #: who is answered once the record is durable (None) or failed (the reason)
    done: Done | None = None
    #: later session commands wait until this record is settled
    barrier: bool = False

    @property
    def follows(self) -> bool:
        """Something happens once the record is settled (else the hub need not report it)."""
        return self.on_durable is not None or self.done is not None or self.barrier


@dataclass(frozen=True, slots=True)
class Apply:
    """Apply this event to the studio state (e.g. SessionChanged)."""

    event: Event


@dataclass(frozen=True, slots=True)
class Send:
    """Send this command to the device with ``role`` if it is connected (else skip it);
    ``sent`` is called just before it goes out, ``done`` with its answer."""

    role: str
    command: Command
    done: Done
    sent: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    done: Done
    error: str | None


@dataclass(frozen=True, slots=True)
class StartSession:
    """End the log's session and start another, then ``Ledger.session_started`` (or
    ``session_failed``) with ``done``, who asked."""

    name: str | None
    done: Done


Effect = Append | Apply | Send | Answer | StartSession
#: what an ``Append`` runs once its record is durable
OnDurable = Callable[["Record", Moment], list[Effect]]


# ---------------------------------------------------------------------- take data


@dataclass
class TakeInfo:
    seq: int | None = None
    label: str = ""
    circled: bool = False
    false_start: bool = False
    #: DAW position at the take's start (the mark's playhead, then the DAW's own marker)
    start: float | None = None
    #: the session the take was marked in (its take sheet)
    session: int | None = None


@dataclass
class Takes:
    """Take counters of the open session: only durable records move them."""

    next_take: dict[str, int] = field(default_factory=dict)
    last_take: dict[str, int] = field(default_factory=dict)
    info: dict[tuple[str, int], TakeInfo] = field(default_factory=dict)
    #: the selected take of the current song (0: none)
    selected: int = 0
    songs: list[str] = field(default_factory=list)
    #: the running take (song, number) whose elapsed time is shown
    running: tuple[str, int] | None = None


_FLAGS = ("circled", "false_start")


def load_takes(
    info: SessionInfo,
    records: Sequence[Record] = (),
    songs: Sequence[str] = (),
    earlier: dict[tuple[str, int], TakeInfo] | None = None,
) -> Takes:
    """The takes of a (re)opened session. ``records``: the take records of the whole log and
    the resumed session's records, in seq order (flags and renames amend a marker by seq);
    ``songs``: the configured song list; ``earlier``: the takes known so far (a new session
    keeps the earlier sessions' takes: take numbers are log-wide)."""
    takes = Takes(next_take=dict(info.next_take), last_take=dict(info.last_take))
    takes.songs = list(songs)
    takes.info = dict(earlier or {})
    by_seq: dict[int, TakeInfo] = {}
    for rec in records:
        song = rec.song or ""
        if rec.kind in (RecordKind.SONG, RecordKind.SONG_ADD) and song and song not in takes.songs:
            if rec.session == info.session_id:
                takes.songs.append(song)
        elif rec.kind == RecordKind.TAKE_MARKER and rec.take is not None:
            by_seq[rec.seq] = takes.info[(song, rec.take)] = TakeInfo(
                rec.seq, rec.text, start=rec.daw_seconds, session=rec.session
            )
        elif rec.kind in (RecordKind.TAKE_FLAG, RecordKind.TAKE_RENAME):
            found = by_seq.get(rec.amends) if rec.amends is not None else None
            if found is None and rec.amends is None and rec.take is not None:
                found = takes.info.get((song, rec.take))  # an older bridge's: same session only
                if found is not None and found.session != rec.session:
                    found = None
            if found is None:
                continue
            if rec.kind == RecordKind.TAKE_RENAME:
                found.label = rec.text
            for flag in _FLAGS:
                if isinstance(rec.data.get(flag), bool):
                    setattr(found, flag, rec.data[flag])
    takes.selected = takes.last_take.get(info.song, 0)
    return takes


def _parse_ts(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def close_open_cues(records: Sequence[Record]) -> list[Append]:
    """A resumed session (the daemon was killed) may hold a talkback cue that never ended:
    the records that end each, as of the last record before the stop (the latest moment the
    bridge is known to have run; the talkback state starts off, and a mixer's own report
    wins when it comes)."""
    ended = {r.amends for r in records if r.kind == RecordKind.TALKBACK_END}
    cues = [r for r in records if r.kind == RecordKind.TALKBACK_START and r.seq not in ended]
    if not cues:
        return []
    end = _parse_ts(records[-1].ts)
    out = []
    for cue in cues:
        channel = str(cue.data.get("channel", "A"))
        duration = round(max(0.0, (end - _parse_ts(cue.ts)).total_seconds()), 3)
        fields: dict[str, Any] = {
            "song": cue.song,
            "take": cue.take,
            "source": "restart",
            "amends": cue.seq,
            "ts": end,
            "text": f"closed at restart: the bridge stopped while talkback {channel} was on; "
            "the end is the time of the last record before it stopped",
            "data": {"channel": channel, "closed_at_restart": True, "duration": duration},
        }
        out.append(Append(RecordKind.TALKBACK_END, fields))
    return out
