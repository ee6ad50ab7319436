"""The kinds of session-log record: one enum shared by every writer and reader, and the shape
each kind has (``SHAPES``: which columns a writer fills and which keys its ``data`` may hold).

A ``StrEnum``, so a kind is stored as its plain text in SQLite and in JSON (exports, MQTT
``log`` messages) and compares equal to it. ``SessionLog.append`` takes only RecordKind members;
readers turn stored text back into members (a kind this version does not know is skipped, see
:mod:`bridge.log.records`). No reader may look for a kind, or a field in a kind's ``data``, that
no writer emits: ``tests/test_record_kinds.py`` checks the writers against ``SHAPES`` and the
readers against the writers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RecordKind(StrEnum):
    #: a session opened (``text``: its name); written by the log itself
    SESSION_START = "session_start"
    #: a session closed cleanly; written by the log itself
    SESSION_END = "session_end"
    #: the current song changed (``song``, ``daw_seconds``)
    SONG = "song"
    #: a song was added to the session's song list (``song``, ``text``)
    SONG_ADD = "song_add"
    #: a take began (``song``, ``take``, ``text``: label, ``daw_seconds``; ``data``: recording,
    #: playing, armed, daw, auto)
    TAKE_MARKER = "take_marker"
    #: a take's flags changed (``amends``: its take_marker, with its ``song`` and ``take``;
    #: ``data``: circled and/or false_start)
    TAKE_FLAG = "take_flag"
    #: a take was renamed (``amends``: its take_marker, with its ``song`` and ``take``; ``text``:
    #: the new label)
    TAKE_RENAME = "take_rename"
    #: a note, on a take (``amends``, ``song``, ``take``) or on the session (``text``)
    NOTE = "note"
    #: the transport changed (``daw_seconds``; ``data``: playing, recording, assumed)
    TRANSPORT = "transport"
    #: talkback pressed (``song``, ``take``, ``daw_seconds``; ``data``: channel, mixer, confirmed,
    #: assumed)
    TALKBACK_START = "talkback_start"
    #: talkback released (``amends``: its talkback_start; ``data``: channel, duration; after an
    #: auto-release auto_released, max_on; a cue a restart closed: closed_at_restart)
    TALKBACK_END = "talkback_end"
    #: a recorded talkback cue's WAV (``amends``: its talkback_start; ``text``: path; ``data``:
    #: seconds, channel)
    TALKBACK_AUDIO = "talkback_audio"
    #: the DAW reported a marker (``text``: name, ``daw_seconds``; ``amends``: the take it is for;
    #: ``data``: marker_id, device)
    DAW_MARKER = "daw_marker"
    #: a device's status changed (``source``: device, ``text``: status; ``data``: detail)
    DEVICE_STATUS = "device_status"
    #: the log could not write for a while (``text``: reason; ``data``: refused, by_kind, since,
    #: reason); written by the log itself
    LOG_FAULT = "log_fault"


@dataclass(frozen=True, slots=True)
class Shape:
    """What a record of one kind carries: the optional columns a writer fills (besides ``seq``,
    ``session``, ``ts``, ``kind``; ``source`` is always allowed) and the keys its ``data`` may hold."""

    columns: frozenset[str]
    data: frozenset[str] = frozenset()


def _shape(columns: str, data: str = "") -> Shape:
    return Shape(frozenset(columns.split()), frozenset(data.split()))


SHAPES: dict[RecordKind, Shape] = {
    RecordKind.SESSION_START: _shape("text"),
    RecordKind.SESSION_END: _shape(""),
    RecordKind.SONG: _shape("song daw_seconds"),
    RecordKind.SONG_ADD: _shape("song text"),
    RecordKind.TAKE_MARKER: _shape("song take text daw_seconds", "recording playing armed daw auto"),
    RecordKind.TAKE_FLAG: _shape("song take amends", "circled false_start"),
    RecordKind.TAKE_RENAME: _shape("song take text amends"),
    RecordKind.NOTE: _shape("song take text daw_seconds amends"),
    RecordKind.TRANSPORT: _shape("daw_seconds", "playing recording assumed"),
    RecordKind.TALKBACK_START: _shape("song take daw_seconds", "channel mixer confirmed assumed"),
    RecordKind.TALKBACK_END: _shape(
        "song take daw_seconds text amends",
        "channel mixer confirmed assumed duration auto_released max_on closed_at_restart",
    ),
    RecordKind.TALKBACK_AUDIO: _shape("text amends", "seconds channel"),
    RecordKind.DAW_MARKER: _shape("text daw_seconds amends", "marker_id device"),
    RecordKind.DEVICE_STATUS: _shape("text", "detail"),
    RecordKind.LOG_FAULT: _shape("text", "refused by_kind since reason"),
}


def shape_errors(kind: RecordKind, columns: dict[str, object], data: dict[str, object]) -> list[str]:
    """What in a record (its optional ``columns`` by name, and ``data``) its kind's shape does not
    document: ``[]`` for a record some writer could emit. Empty values count as not set."""
    shape = SHAPES[kind]
    extra = sorted(
        c for c, v in columns.items() if v not in (None, "") and c not in shape.columns | {"source"}
    )
    errors = [f"{kind}: column {c} is not part of its shape" for c in extra]
    errors += [f"{kind}: data.{key} is not part of its shape" for key in sorted(set(data) - shape.data)]
    return errors
