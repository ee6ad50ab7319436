"""The studio state: the single source of truth, changed only by events.

The state is a flat mapping of StateKeys (path strings) to values. The same key string
is the feedback key for surfaces, the OSC feedback address suffix and the MQTT topic
suffix. Keys:

=============================  ======  =============================================
``transport/playing``          bool    the transport is rolling
``transport/recording``        bool    global record is enabled (recording when rolling)
``transport/position``         float   playhead in seconds (DAW-reported or internal)
``transport/assumed``          bool    transport state is assumed (one-way protocol)
``transport/on_air``           bool    derived: rolling and recording (the on-air light)
``track/<n>/name``             str     DAW track name (n is 1-based)
``track/<n>/armed``            bool    record-enabled
``track/<n>/mute``             bool
``track/<n>/solo``             bool
``track/<n>/fader``            float   0.0-1.0
``talkback``                   bool    talkback channel A engaged (the artist's talkback)
``talkback/<ch>``              bool    another talk channel engaged (``talkback/B``)
``talkback/assumed``           bool    the last talkback report is assumed (no feedback)
``session``                    str     current session name
``song``                       str     current song
``take``                       int     last take number of the current song (0: none)
``take/next``                  int     number the next take of the current song gets
``take/label``                 str     label of the last take
``take/selected``              int     the selected take (flags, renames, notes without a
                                       take number act on it; a new take selects itself; 0: none)
``take/selected/circled``      bool    the selected take is circled
``take/selected/false_start``  bool    the selected take is flagged as a false start
``take/selected/label``        str     label of the selected take
``take/elapsed``               float   seconds into the running take (DAW position minus the
                                       take's start; updated while rolling, at the position rate)
``songs``                      str     the session's song list as a JSON array of strings
                                       (``'["Blue", "Gold"]'``; a state value is a scalar)
``device/<name>/status``       str     DeviceStatus value
``log/status``                 str     ``ok``: the session log writes; ``failing``: it cannot (records
                                       are refused, answered ``/error``) and retries by itself
``log/reason``                 str     why it is failing ("database or disk is full"); "" when ok
``log/unwritten``              int     records refused (not written) since the daemon started
``daw/status``                 str     status of the device with role ``daw`` (as above)
``daw/online``                 bool    derived: the DAW is connected (``daw/status`` is ok)
=============================  ======  =============================================

While the DAW is not online, what the state holds for the keys it owns (``transport/*``,
``track/*``, see :func:`is_daw_key`) is its last report, not the truth: surfaces show them
as unknown (LEDs off) until it is back (:mod:`bridge.feedback`, the Mackie driver).

``reduce(values, event)`` is pure: it returns the list of changes and never mutates.
``Store`` applies them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from bridge.vocab import (
    DeviceStatusChanged,
    Event,
    LogStatusChanged,
    PositionChanged,
    SessionChanged,
    TalkbackChanged,
    TrackChanged,
    TracksReset,
    TransportChanged,
    Value,
)

PLAYING = "transport/playing"
RECORDING = "transport/recording"
POSITION = "transport/position"
ASSUMED = "transport/assumed"
ON_AIR = "transport/on_air"
TALKBACK = "talkback"
TALKBACK_ASSUMED = "talkback/assumed"
#: The talk channels the bridge knows: A (the artist) and B (e.g. the live room).
TALK_CHANNELS = ("A", "B")
SESSION = "session"
SONG = "song"
TAKE = "take"
NEXT_TAKE = "take/next"
TAKE_LABEL = "take/label"
SELECTED = "take/selected"
SELECTED_CIRCLED = "take/selected/circled"
SELECTED_FALSE_START = "take/selected/false_start"
SELECTED_LABEL = "take/selected/label"
ELAPSED = "take/elapsed"
SONGS = "songs"
LOG_STATUS = "log/status"
LOG_REASON = "log/reason"
LOG_UNWRITTEN = "log/unwritten"

#: Keys with a value before anything happened (the hub's store starts with them, so a device
#: that connects, e.g. an MQTT dashboard or Home Assistant, gets them in its first full dump
#: instead of "unknown"): talkback is off, the transport stopped and out of record until a
#: DAW says otherwise (``assumed`` until one does). Session, song and take come from the
#: session log at start, tracks and device statuses from their devices.
DEFAULTS: Mapping[str, Value] = MappingProxyType(
    {PLAYING: False, RECORDING: False, ON_AIR: False, ASSUMED: True, TALKBACK: False}
)
DAW_STATUS = "daw/status"
DAW_ONLINE = "daw/online"

#: Keys whose values change continuously (coalesced, rate-limited on every output).
CONTINUOUS_SUFFIXES = ("/position", "/fader", "/elapsed")


def track_key(track: int, field: str) -> str:
    return f"track/{track}/{field}"


def talkback_key(channel: str = "A") -> str:
    """State key of a talk channel: ``talkback`` for A (compatibility), ``talkback/B`` etc."""
    return TALKBACK if channel == "A" else f"{TALKBACK}/{channel}"


def device_key(device: str) -> str:
    return f"device/{device}/status"


def is_daw_key(key: str) -> bool:
    """A key whose value only the DAW knows (transport and tracks): unknown while it is offline."""
    return key.startswith(("transport/", "track/"))


def daw_offline(status: Value) -> bool:
    """``daw/status`` says the DAW is known to be away (absent: no DAW status known, not offline)."""
    return isinstance(status, str) and status != "ok"


def is_continuous_key(key: str) -> bool:
    return key.endswith(CONTINUOUS_SUFFIXES)


def parse_track_key(key: str) -> tuple[int, str] | None:
    """``"track/3/armed"`` -> ``(3, "armed")``; anything else -> None."""
    if not key.startswith("track/"):
        return None
    parts = key.split("/")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2]


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    old: Value
    new: Value


def _set(values: Mapping[str, Value], out: list[Change], key: str, new: Value) -> None:
    old = values.get(key)
    if old != new or (new is not None and type(old) is not type(new)):
        out.append(Change(key, old, new))


def reduce(values: Mapping[str, Value], event: Event, daw: str | None = None) -> list[Change]:
    """Pure reducer: the changes ``event`` makes to ``values`` (``daw``: the name of the device
    with role daw, whose status is mirrored in ``daw/status``)."""
    out: list[Change] = []
    match event:
        case TransportChanged(playing=playing, recording=recording, assumed=assumed):
            if playing is not None:
                _set(values, out, PLAYING, playing)
            if recording is not None:
                _set(values, out, RECORDING, recording)
            if playing is not None or recording is not None:
                _set(values, out, ASSUMED, assumed)
                now_playing = values.get(PLAYING) if playing is None else playing
                now_recording = values.get(RECORDING) if recording is None else recording
                _set(values, out, ON_AIR, now_playing is True and now_recording is True)
        case PositionChanged(seconds=seconds):
            _set(values, out, POSITION, float(seconds))
        case TrackChanged(track=track) if track >= 1:
            for field, value in (
                ("name", event.name),
                ("armed", event.arm),
                ("mute", event.mute),
                ("solo", event.solo),
                ("fader", None if event.fader is None else float(event.fader)),
            ):
                if value is not None:
                    _set(values, out, track_key(track, field), value)
        case TracksReset(first=first):
            for key in values:
                parsed = parse_track_key(key)
                if parsed and parsed[0] >= first:
                    out.append(Change(key, values[key], None))
        case TalkbackChanged(on=on, channel=channel, assumed=assumed):
            _set(values, out, talkback_key(channel), on)
            _set(values, out, TALKBACK_ASSUMED, assumed)
        case DeviceStatusChanged(device=device, status=status):
            _set(values, out, device_key(device), str(status))
            if device == daw:
                _set(values, out, DAW_STATUS, str(status))
                _set(values, out, DAW_ONLINE, str(status) == "ok")
        case LogStatusChanged(status=status, reason=reason, unwritten=unwritten):
            _set(values, out, LOG_STATUS, status)
            _set(values, out, LOG_REASON, reason)
            _set(values, out, LOG_UNWRITTEN, unwritten)
        case SessionChanged():
            for key, value in (
                (SESSION, event.session),
                (SONG, event.song),
                (TAKE, event.take),
                (NEXT_TAKE, event.next_take),
                (TAKE_LABEL, event.take_label),
                (SELECTED, event.selected),
                (SELECTED_CIRCLED, event.selected_circled),
                (SELECTED_FALSE_START, event.selected_false_start),
                (SELECTED_LABEL, event.selected_label),
                (ELAPSED, event.elapsed),
                (SONGS, event.songs),
            ):
                if value is not None:
                    _set(values, out, key, value)
        case _:
            pass
    return out


def track_named(values: Mapping[str, Value], name: str) -> int | None:
    """The number of the track called ``name`` in ``values`` (state keys): an exact match
    first, else the first case-insensitive one; None if no track has that name."""
    folded: int | None = None
    for key, value in values.items():
        if not key.endswith("/name") or not isinstance(value, str):
            continue
        parsed = parse_track_key(key)
        if parsed is None:
            continue
        if value == name:
            return parsed[0]
        if folded is None and value.casefold() == name.casefold():
            folded = parsed[0]
    return folded


class Store:
    """The live studio state: ``apply(event)`` returns what changed."""

    def __init__(self, initial: Mapping[str, Value] | None = None, daw: str | None = None) -> None:
        self._values: dict[str, Value] = dict(initial or {})
        #: the device with role daw (its status is mirrored in daw/status)
        self.daw = daw
        self._tracks: dict[int, int] = {}  # track -> number of keys it has
        for key in self._values:
            self._count_track(key, 1)

    def _count_track(self, key: str, delta: int) -> None:
        parsed = parse_track_key(key)
        if parsed is None:
            return
        left = self._tracks.get(parsed[0], 0) + delta
        if left > 0:
            self._tracks[parsed[0]] = left
        else:
            self._tracks.pop(parsed[0], None)

    def apply(self, event: Event) -> list[Change]:
        changes = reduce(self._values, event, self.daw)
        values = self._values
        for change in changes:
            key = change.key
            if change.new is None:
                if values.pop(key, None) is not None and key.startswith("track/"):
                    self._count_track(key, -1)
            else:
                if key not in values and key.startswith("track/"):
                    self._count_track(key, 1)
                values[key] = change.new
        return changes

    def has_track(self, track: int) -> bool:
        return track in self._tracks

    def get(self, key: str, default: Value = None) -> Value:
        return self._values.get(key, default)

    def items(self) -> Iterator[tuple[str, Value]]:
        return iter(list(self._values.items()))

    def snapshot(self) -> dict[str, Value]:
        return dict(self._values)

    def tracks(self) -> list[int]:
        """Track numbers known to the state, ascending."""
        return sorted(self._tracks)

    def track_by_name(self, name: str) -> int | None:
        """Resolve a DAW track name (exact first, then case-insensitive) to its number."""
        return track_named(self._values, name)
