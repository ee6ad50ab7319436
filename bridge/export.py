"""Take sheets: the session log folded into takes, talkback cues and notes, and its export formats.

``build_take_sheet(records)`` reads records in seq order and folds every correction (``amends``)
into the record it points to; nothing in the log is changed.

Per take (one per ``take_marker``):
    ``song``, ``take`` (number), ``label`` (the latest ``take_rename`` text, else the marker's
    text), ``circled`` / ``false_start`` (each ``take_flag``'s ``data.circled`` /
    ``data.false_start`` in order; the latest value wins). ``take_flag`` and ``take_rename`` records
    amend the marker's seq (``amends``) and carry its ``song`` and ``take``; one without ``amends``
    (older bridges wrote those after resuming a session) is tied by session, song and take.
    ``start`` (UTC wall clock of the marker), ``daw_seconds`` (the position a ``daw_marker``
    amending the take reported, else the marker's own; ``daw_source`` says ``daw`` or ``bridge``),
    ``marker_id`` (from the ``daw_marker``), ``duration`` (wall-clock seconds until the next take of
    the same session or the first transport stop / record-off after the take, whichever comes first;
    ``None`` while the take is still open), ``end`` (UTC wall clock of that moment), ``notes``
    (every ``note`` whose ``amends`` is the take, or, without ``amends``, whose ``song`` and
    ``take`` match it), ``source`` (who marked it) and ``seq`` (the marker's seq).
Per talkback cue (one per ``talkback_start``): ``start``, ``end`` (its ``talkback_end``),
    ``duration`` (``data.duration`` of the end record, else the wall-clock difference), ``daw_seconds``,
    ``source``, and the ``song`` / ``take`` it happened in.
Notes tied to no take are kept as session notes.

CSV (``to_csv``; one row per take, talkback cue and session note, in seq order; UTF-8, ``,``-separated,
header row). Columns:
    ``type`` (take | talkback | note), ``seq``, ``song``, ``take``, ``label``, ``circled`` and
    ``false_start`` (true/false for takes, empty otherwise), ``start_utc`` and ``end_utc`` (ISO 8601
    ``...Z``), ``duration_s`` (seconds, 3 decimals), ``daw_seconds`` (DAW position in seconds, 3
    decimals), ``daw_source`` (daw | bridge), ``marker_id``, ``source``, ``notes`` (a take's notes
    joined with `` | ``; a note row's text). Empty cell = unknown / not applicable.
JSON (``to_json``): ``{"format": "studio-bridge.take-sheet", "version": 1, "session": {id, name,
    started, ended}, "takes": [...], "talkback": [...], "notes": [...]}`` with the fields above
    (``null`` for unknown).
REAPER (``to_reaper_csv``): region/marker manager CSV ``#,Name,Start,End,Length`` with one marker
    ``M<n>,<Song> T<take>,<daw seconds>,,`` per take that has a DAW position. Set REAPER's ruler to
    seconds (or minutes:seconds) before importing.
Audacity (``to_audacity_labels``): ``t0<TAB>t1<TAB><Song> T<take>`` per take with a DAW position; a
    region label (t1 = t0 + duration) when the duration is known, else a point label (t1 = t0).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TextIO

from bridge.sessionlog import Record

FORMAT = "studio-bridge.take-sheet"
CSV_COLUMNS = (
    "type",
    "seq",
    "song",
    "take",
    "label",
    "circled",
    "false_start",
    "start_utc",
    "end_utc",
    "duration_s",
    "daw_seconds",
    "daw_source",
    "marker_id",
    "source",
    "notes",
)


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

    for rec in ordered:
        kind, data = rec.kind, rec.data
        if kind == "session_start":
            session, name, started, ended = rec.session, rec.text, rec.ts, None
        elif kind == "session_end":
            ended = rec.ts
        elif kind == "take_marker":
            end_open(rec.session, rec.ts)
            playing, recording = transport.get(rec.session, (None, None))
            draft = _TakeDraft(
                rec,
                label=rec.text,
                circled=False,
                false_start=False,
                daw_seconds=rec.daw_seconds,
                daw_source="bridge" if rec.daw_seconds is not None else "",
                rolling=playing is not False,
                recording=recording is True,
            )
            takes[rec.seq] = draft
            open_take[rec.session] = draft
            if rec.take is not None:
                by_number[(rec.session, rec.song or "", rec.take)] = draft
        elif kind in ("take_flag", "take_rename"):
            target = takes.get(rec.amends) if rec.amends is not None else None
            if target is None and rec.amends is None and rec.take is not None:
                target = by_number.get((rec.session, rec.song or "", rec.take))
            if target is None:
                continue
            if kind == "take_rename":
                target.label = rec.text
            if isinstance(data.get("circled"), bool):
                target.circled = bool(data["circled"])
            if isinstance(data.get("false_start"), bool):
                target.false_start = bool(data["false_start"])
        elif kind == "daw_marker" and rec.amends in takes:
            draft = takes[rec.amends]
            if rec.daw_seconds is not None:
                draft.daw_seconds, draft.daw_source = rec.daw_seconds, "daw"
            if data.get("marker_id") is not None:
                draft.marker_id = str(data["marker_id"])
        elif kind == "note":
            target = takes.get(rec.amends) if rec.amends is not None else None
            if target is None and rec.take is not None:
                target = by_number.get((rec.session, rec.song or "", rec.take))
            if target is not None:
                target.notes.append(rec.text)
            else:
                notes.append(
                    SessionNote(rec.seq, rec.session, rec.ts, rec.song or "", rec.take, rec.text, rec.source)
                )
        elif kind == "transport":
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
        elif kind == "talkback_start":
            cues[rec.seq] = {"rec": rec, "end": None, "duration": None}
        elif kind == "talkback_end" and rec.amends in cues:
            cue = cues[rec.amends]
            cue["end"] = rec.ts
            cue["duration"] = _number(data.get("duration"))
            if cue["duration"] is None:
                cue["duration"] = _seconds_between(cue["rec"].ts, rec.ts)

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
    )


# --------------------------------------------------------------------------- writers
def _num(value: float | None, places: int = 3) -> str:
    return "" if value is None else f"{value:.{places}f}"


def take_name(take: Take) -> str:
    """``"Blue T3"`` (``"T3"`` without a song; the label when there is no take number)."""
    if take.take is None:
        return take.label or take.song or f"take {take.seq}"
    return f"{take.song} T{take.take}" if take.song else f"T{take.take}"


def to_csv(sheet: TakeSheet, file: TextIO) -> None:
    rows: list[dict[str, object]] = []
    for t in sheet.takes:
        rows.append(
            {
                "type": "take",
                "seq": t.seq,
                "song": t.song,
                "take": t.take,
                "label": t.label,
                "circled": str(t.circled).lower(),
                "false_start": str(t.false_start).lower(),
                "start_utc": t.start,
                "end_utc": t.end,
                "duration_s": _num(t.duration),
                "daw_seconds": _num(t.daw_seconds),
                "daw_source": t.daw_source,
                "marker_id": t.marker_id,
                "source": t.source,
                "notes": " | ".join(t.notes),
            }
        )
    for c in sheet.talkback:
        rows.append(
            {
                "type": "talkback",
                "seq": c.seq,
                "song": c.song,
                "take": c.take,
                "start_utc": c.start,
                "end_utc": c.end,
                "duration_s": _num(c.duration),
                "daw_seconds": _num(c.daw_seconds),
                "daw_source": "bridge" if c.daw_seconds is not None else "",
                "source": c.source,
            }
        )
    for n in sheet.notes:
        rows.append(
            {
                "type": "note",
                "seq": n.seq,
                "song": n.song,
                "take": n.take,
                "start_utc": n.ts,
                "source": n.source,
                "notes": n.text,
            }
        )
    rows.sort(key=lambda row: int(str(row["seq"])))
    writer = csv.DictWriter(file, CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})


def sheet_to_json(sheet: TakeSheet) -> dict[str, object]:
    return {
        "format": FORMAT,
        "version": 1,
        "session": {"id": sheet.session, "name": sheet.name, "started": sheet.started, "ended": sheet.ended},
        "takes": [{**asdict(t), "notes": list(t.notes)} for t in sheet.takes],
        "talkback": [asdict(c) for c in sheet.talkback],
        "notes": [asdict(n) for n in sheet.notes],
    }


def to_json(sheet: TakeSheet, file: TextIO) -> None:
    json.dump(sheet_to_json(sheet), file, indent=2, ensure_ascii=False)
    file.write("\n")


def to_reaper_csv(sheet: TakeSheet, file: TextIO) -> None:
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(["#", "Name", "Start", "End", "Length"])
    n = 0
    for t in sheet.takes:
        if t.daw_seconds is None:
            continue
        n += 1
        writer.writerow([f"M{n}", take_name(t), _num(t.daw_seconds), "", ""])


def to_audacity_labels(sheet: TakeSheet, file: TextIO) -> None:
    for t in sheet.takes:
        if t.daw_seconds is None:
            continue
        end = t.daw_seconds + t.duration if t.duration is not None else t.daw_seconds
        title = take_name(t).replace("\t", " ").replace("\n", " ")
        file.write(f"{t.daw_seconds:.6f}\t{end:.6f}\t{title}\n")
