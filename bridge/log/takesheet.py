"""Take sheets: the session log folded into takes, talkback cues and notes; what every export
format (:mod:`bridge.log.formats`), the web console and the MQTT ``takesheet`` topic show.

``build_take_sheet(records)`` reads records in seq order and folds every correction (``amends``)
into the record it points to; nothing in the log is changed.

Per take (one per ``take_marker``):
    ``song``, ``take`` (number), ``label`` (the latest ``take_rename`` text, else the marker's
    text), ``circled`` / ``false_start`` (each ``take_flag``'s ``data.circled`` /
    ``data.false_start`` in order; the latest value wins). ``take_flag`` and ``take_rename`` records
    amend the marker's seq (``amends``) and carry its ``song`` and ``take``; one without ``amends``
    (older bridges wrote those after resuming a session) is tied by session, song and take. A
    correction made in a later session to an earlier session's take belongs on the earlier
    sheet (``read_records(path, session, amending=True)`` reads it with the session's records).
    ``start`` (UTC wall clock of the marker), ``daw_seconds`` (the position a ``daw_marker``
    amending the take reported, else the marker's own; ``daw_source`` says ``daw`` or ``bridge``),
    ``marker_id`` (from the ``daw_marker``), ``duration`` (wall-clock seconds until the next take of
    the same session or the first transport stop / record-off after the take, whichever comes first;
    ``None`` while the take is still open), ``end`` (UTC wall clock of that moment), ``notes``
    (every ``note`` whose ``amends`` is the take, or, without ``amends``, whose ``song`` and
    ``take`` match it), ``source`` (who marked it) and ``seq`` (the marker's seq).
Per talkback cue (one per ``talkback_start``): ``start``, ``end`` (its ``talkback_end``),
    ``duration`` (``data.duration`` of the end record), ``daw_seconds``, ``source``, the ``song`` /
    ``take`` it happened in, and ``audio`` (the path of the WAV a talkback recorder saved for it:
    the ``talkback_audio`` record amending it; ``None`` without a recorder). A cue left open by a
    crash is ended at the restart by a ``talkback_end`` with ``data.closed_at_restart`` whose ``ts``
    is the last record's before the crash.
Notes tied to no take are kept as session notes.

``sheet_to_json(sheet)`` is the sheet as one JSON object (``{"format": FORMAT, "version": 1,
"session": {id, name, started, ended}, "takes": [...], "talkback": [...], "notes": [...]}`` with
the fields above, ``null`` for unknown): the ``json`` export and the MQTT take sheet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from bridge.log.kinds import RecordKind
from bridge.log.records import Record

FORMAT = "studio-bridge.take-sheet"


@dataclass(frozen=True, slots=True)
class Take:
    seq: int
    session: int
    song: str
    take: int | None
    label: str
    circled: bool
    false_start: bool
    start: str
    end: str | None
    duration: float | None
    daw_seconds: float | None
    daw_source: str
    marker_id: str | None
    source: str
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TalkbackCue:
    seq: int
    session: int
    start: str
    end: str | None
    duration: float | None
    daw_seconds: float | None
    source: str
    song: str
    take: int | None
    #: the talkback recorder's WAV of this cue (a ``talkback_audio`` record amending it)
    audio: str | None = None


@dataclass(frozen=True, slots=True)
class SessionNote:
    seq: int
    session: int
    ts: str
    song: str
    take: int | None
    text: str
    source: str


@dataclass(frozen=True, slots=True)
class TakeSheet:
    session: int | None
    name: str
    started: str | None
    ended: str | None
    takes: tuple[Take, ...]
    talkback: tuple[TalkbackCue, ...]
    notes: tuple[SessionNote, ...]


@dataclass(slots=True)
class _TakeDraft:
    rec: Record
    label: str
    circled: bool = False
    false_start: bool = False
    end: str | None = None
    daw_seconds: float | None = None
    daw_source: str = ""
    marker_id: str | None = None
    notes: list[str] = field(default_factory=list)
    rolling: bool = True  # the transport may be rolling (a stop ends the take)
    recording: bool = False  # recording was on (a record-off ends the take)


def _seconds_between(start: str, end: str) -> float:
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def _flag(data: dict[str, object], key: str) -> bool | None:
    value = data.get(key)
    return value if isinstance(value, bool) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def build_take_sheet(records: Iterable[Record]) -> TakeSheet:
    """Fold a session's records (any order; one or more sessions) into a take sheet."""
    ordered = sorted(records, key=lambda r: r.seq)
    takes: dict[int, _TakeDraft] = {}
    by_number: dict[tuple[int, str, int], _TakeDraft] = {}
    open_take: dict[int, _TakeDraft] = {}  # per session: the take not ended yet
    transport: dict[int, tuple[bool | None, bool | None]] = {}  # per session: (playing, recording)
    cues: dict[int, dict[str, Any]] = {}
    notes: list[SessionNote] = []
    name, started, ended, session = "", None, None, None

    def end_open(sess: int, ts: str) -> None:
        draft = open_take.pop(sess, None)
        if draft is not None:
            draft.end = ts

    def amended_take(rec: Record) -> _TakeDraft | None:
        target = takes.get(rec.amends) if rec.amends is not None else None
        if target is None and rec.amends is None and rec.take is not None:
            target = by_number.get((rec.session, rec.song or "", rec.take))
        return target

    for rec in ordered:
        kind, data = rec.kind, rec.data
        if kind == RecordKind.SESSION_START:
            session, name, started, ended = rec.session, rec.text, rec.ts, None
        elif kind == RecordKind.SESSION_END:
            ended = rec.ts
        elif kind == RecordKind.TAKE_MARKER:
            end_open(rec.session, rec.ts)
            playing, recording = transport.get(rec.session, (None, None))
            draft = _TakeDraft(
                rec,
                label=rec.text,
                daw_seconds=rec.daw_seconds,
                daw_source="bridge" if rec.daw_seconds is not None else "",
                rolling=playing is not False,
                recording=recording is True,
            )
            takes[rec.seq] = draft
            open_take[rec.session] = draft
            if rec.take is not None:
                by_number[(rec.session, rec.song or "", rec.take)] = draft
        elif kind == RecordKind.TAKE_FLAG:
            target = amended_take(rec)
            if target is not None:
                circled, false_start = _flag(data, "circled"), _flag(data, "false_start")
                target.circled = target.circled if circled is None else circled
                target.false_start = target.false_start if false_start is None else false_start
        elif kind == RecordKind.TAKE_RENAME:
            target = amended_take(rec)
            if target is not None:
                target.label = rec.text
        elif kind == RecordKind.DAW_MARKER and rec.amends in takes:
            draft = takes[rec.amends]
            if rec.daw_seconds is not None:
                draft.daw_seconds, draft.daw_source = rec.daw_seconds, "daw"
            if data.get("marker_id") is not None:
                draft.marker_id = str(data["marker_id"])
        elif kind == RecordKind.NOTE:
            target = takes.get(rec.amends) if rec.amends is not None else None
            if target is None and rec.take is not None:
                target = by_number.get((rec.session, rec.song or "", rec.take))
            if target is not None:
                target.notes.append(rec.text)
            else:
                notes.append(
                    SessionNote(rec.seq, rec.session, rec.ts, rec.song or "", rec.take, rec.text, rec.source)
                )
        elif kind == RecordKind.TRANSPORT:
            playing, recording = _flag(data, "playing"), _flag(data, "recording")
            transport[rec.session] = (
                playing if playing is not None else transport.get(rec.session, (None, None))[0],
                recording if recording is not None else transport.get(rec.session, (None, None))[1],
            )
            draft_or_none = open_take.get(rec.session)
            if draft_or_none is not None:
                if (playing is False and draft_or_none.rolling) or (
                    recording is False and draft_or_none.recording
                ):
                    end_open(rec.session, rec.ts)
                else:
                    draft_or_none.rolling = draft_or_none.rolling or playing is True
                    draft_or_none.recording = draft_or_none.recording or recording is True
        elif kind == RecordKind.TALKBACK_START:
            cues[rec.seq] = {"rec": rec, "end": None, "duration": None}
        elif kind == RecordKind.TALKBACK_END and rec.amends in cues:
            cue = cues[rec.amends]
            cue["end"] = rec.ts
            cue["duration"] = _number(data.get("duration"))
        elif kind == RecordKind.TALKBACK_AUDIO and rec.amends in cues:
            cues[rec.amends]["audio"] = rec.text

    return TakeSheet(
        session=session,
        name=name,
        started=started,
        ended=ended,
        takes=tuple(_freeze_take(d) for d in takes.values()),
        talkback=tuple(_freeze_cue(c) for c in cues.values()),
        notes=tuple(notes),
    )


def _freeze_take(d: _TakeDraft) -> Take:
    rec = d.rec
    duration = _seconds_between(rec.ts, d.end) if d.end is not None else None
    return Take(
        seq=rec.seq,
        session=rec.session,
        song=rec.song or "",
        take=rec.take,
        label=d.label,
        circled=d.circled,
        false_start=d.false_start,
        start=rec.ts,
        end=d.end,
        duration=duration,
        daw_seconds=d.daw_seconds,
        daw_source=d.daw_source,
        marker_id=d.marker_id,
        source=rec.source,
        notes=tuple(d.notes),
    )


def _freeze_cue(cue: dict[str, Any]) -> TalkbackCue:
    rec: Record = cue["rec"]
    return TalkbackCue(
        seq=rec.seq,
        session=rec.session,
        start=rec.ts,
        end=cue["end"],
        duration=cue["duration"],
        daw_seconds=rec.daw_seconds,
        source=rec.source,
        song=rec.song or "",
        take=rec.take,
        audio=cue.get("audio"),
    )


def take_name(take: Take) -> str:
    """``"Blue T3"`` (``"T3"`` without a song; the label when there is no take number)."""
    if take.take is None:
        return take.label or take.song or f"take {take.seq}"
    return f"{take.song} T{take.take}" if take.song else f"T{take.take}"


def sheet_to_json(sheet: TakeSheet) -> dict[str, object]:
    """The sheet as one JSON-ready object (see the module docstring)."""
    return {
        "format": FORMAT,
        "version": 1,
        "session": {"id": sheet.session, "name": sheet.name, "started": sheet.started, "ended": sheet.ended},
        "takes": [{**asdict(t), "notes": list(t.notes)} for t in sheet.takes],
        "talkback": [asdict(c) for c in sheet.talkback],
        "notes": [asdict(n) for n in sheet.notes],
    }
