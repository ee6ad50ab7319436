"""The kinds of session-log record: one enum shared by every writer and reader.

A ``StrEnum``, so a kind is stored as its plain text in SQLite and in JSON (exports, MQTT
``log`` messages) and compares equal to it; no reader may look for a kind, or a field in a
kind's ``data``, that no writer emits (``tests/test_record_kinds.py`` checks the writers).
"""

from __future__ import annotations

from enum import StrEnum


class RecordKind(StrEnum):
    #: a session opened (``text``: its name); written by the log itself
    SESSION_START = "session_start"
    #: a session closed cleanly; written by the log itself
    SESSION_END = "session_end"
    #: the current song changed (``song``)
    SONG = "song"
    #: a song was added to the session's song list (``song``, ``text``)
    SONG_ADD = "song_add"
    #: a take began (``song``, ``take``, ``text``: label, ``daw_seconds``; ``data``: recording,
    #: playing, armed, daw, auto)
    TAKE_MARKER = "take_marker"
    #: a take's flags changed (``amends``: its take_marker; ``data``: circled and/or false_start)
    TAKE_FLAG = "take_flag"
    #: a take was renamed (``amends``: its take_marker; ``text``: the new label)
    TAKE_RENAME = "take_rename"
    #: a note, on a take (``amends``) or on the session
    NOTE = "note"
    #: the transport changed (``data``: playing, recording, assumed)
    TRANSPORT = "transport"
    #: talkback pressed (``data``: channel)
    TALKBACK_START = "talkback_start"
    #: talkback released (``amends``: its talkback_start; ``data``: channel, duration)
    TALKBACK_END = "talkback_end"
    #: a recorded talkback cue's WAV (``amends``: its talkback_start; ``text``: path)
    TALKBACK_AUDIO = "talkback_audio"
    #: the DAW reported a marker (``text``: name, ``daw_seconds``; ``amends``: the take it is for)
    DAW_MARKER = "daw_marker"
    #: a device's status changed (``source``: device, ``text``: status; ``data``: detail)
    DEVICE_STATUS = "device_status"
    #: the log could not write for a while (``data``: reason, since, refused)
    LOG_FAULT = "log_fault"
