"""The one typed vocabulary of the bridge: commands, events, control inputs and feedback.

Only drivers see bytes and OSC paths; everything between drivers speaks these types.

* **Commands** are imperative and absolute (``SetTrackArm(track=2, on=True)``): a toggle
  is resolved against the studio state before a command is built.
* **Events** are past tense and report facts from devices (``TransportChanged``).
  The studio state changes only through events.
* **ControlInput** is a raw-but-named control movement from a mapped surface
  (``ControlInput("transport.rec", 1.0)``); the mapper turns it into commands.
* **Feedback** goes back to a surface: a named control and the value it should show.
* **Request** wraps a command with a completion callback, for APIs that answer each
  command (the OSC API's ``/ok`` and ``/error``, MQTT replies).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, TypeAlias

#: A value held in the studio state or carried by feedback.
Value: TypeAlias = bool | int | float | str | None

#: A track named by its 1-based number or by its DAW name ("Lead Vox").
TrackRef: TypeAlias = int | str


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Command:
    """Base of all commands. ``continuous`` commands may be coalesced (latest wins)."""

    continuous: ClassVar[bool] = False

    def coalesce_key(self) -> Hashable:
        """Key under which continuous commands replace each other in an outbox."""
        return type(self).__name__


@dataclass(frozen=True, slots=True)
class Play(Command):
    pass


@dataclass(frozen=True, slots=True)
class Stop(Command):
    pass


@dataclass(frozen=True, slots=True)
class SetRecord(Command):
    """Global record enable: with the transport rolling this punches in / out."""

    on: bool


@dataclass(frozen=True, slots=True)
class Locate(Command):
    seconds: float


@dataclass(frozen=True, slots=True)
class SetTrackArm(Command):
    track: TrackRef
    on: bool


@dataclass(frozen=True, slots=True)
class SetTrackMute(Command):
    track: TrackRef
    on: bool


@dataclass(frozen=True, slots=True)
class SetTrackSolo(Command):
    track: TrackRef
    on: bool


@dataclass(frozen=True, slots=True)
class SetTrackFader(Command):
    """Fader position 0.0-1.0 (the DAW's own fader law)."""

    continuous: ClassVar[bool] = True
    track: TrackRef
    value: float

    def coalesce_key(self) -> Hashable:
        return ("fader", self.track)


@dataclass(frozen=True, slots=True)
class AddMarker(Command):
    """Drop a marker at the DAW's playhead. ``tag`` is echoed in the MarkerAdded event
    (the session-log seq of the take it belongs to)."""

    label: str
    tag: int | None = None


@dataclass(frozen=True, slots=True)
class SetTalkback(Command):
    on: bool
    channel: str = "A"


# Session commands: handled by the core (the session log), never routed to a device.


@dataclass(frozen=True, slots=True)
class SetSong(Command):
    name: str


@dataclass(frozen=True, slots=True)
class MarkTake(Command):
    """Start a new take of the current song at the playhead (take number auto-increments)."""

    label: str = ""


@dataclass(frozen=True, slots=True)
class CircleTake(Command):
    """Circle (or un-circle) a take of the current song; ``take=None`` is the selected take."""

    take: int | None = None
    on: bool = True


@dataclass(frozen=True, slots=True)
class FalseStart(Command):
    """Flag (or clear) a take of the current song as a false start; ``take=None``: the selected take."""

    take: int | None = None
    on: bool = True


@dataclass(frozen=True, slots=True)
class RenameTake(Command):
    """Give a take of the current song a new label; ``take=None`` is the selected take."""

    label: str
    take: int | None = None


@dataclass(frozen=True, slots=True)
class SelectTake(Command):
    """Select a take of the current song by number, or ``step`` takes from the selected one."""

    take: int | None = None
    step: int = 0


@dataclass(frozen=True, slots=True)
class AddNote(Command):
    """A note on a take of the current song; ``take=None`` is the selected take."""

    text: str
    take: int | None = None


@dataclass(frozen=True, slots=True)
class AddSong(Command):
    """Add a song to the session's song list (the current song does not change)."""

    name: str


@dataclass(frozen=True, slots=True)
class StepSong(Command):
    """Set the song ``step`` places from the current one in the song list."""

    step: int


@dataclass(frozen=True, slots=True)
class NewSession(Command):
    name: str = ""


SESSION_COMMANDS: frozenset[type[Command]] = frozenset(
    {
        SetSong,
        AddSong,
        StepSong,
        MarkTake,
        CircleTake,
        FalseStart,
        RenameTake,
        SelectTake,
        AddNote,
        NewSession,
    }
)
TRANSPORT_COMMANDS: frozenset[type[Command]] = frozenset({Play, Stop, SetRecord, Locate})
TRACK_COMMANDS: frozenset[type[Command]] = frozenset({SetTrackArm, SetTrackMute, SetTrackSolo, SetTrackFader})


# --------------------------------------------------------------------------- events


class DeviceStatus(StrEnum):
    """Device status values (after Companion's InstanceStatus)."""

    CONNECTING = "connecting"
    OK = "ok"
    DISCONNECTED = "disconnected"
    FAILED = "failed"
    BAD_CONFIG = "bad_config"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events (facts reported by devices or by the core)."""


@dataclass(frozen=True, slots=True)
class TransportChanged(Event):
    """Partial update; ``None`` fields are unchanged. ``assumed`` marks state the bridge
    assumes because the protocol is one-way (MMC)."""

    playing: bool | None = None
    recording: bool | None = None
    assumed: bool = False


@dataclass(frozen=True, slots=True)
class PositionChanged(Event):
    seconds: float


@dataclass(frozen=True, slots=True)
class MarkerAdded(Event):
    """The DAW reports a marker it created. ``tag`` echoes ``AddMarker.tag`` when the
    driver can tie the two together."""

    label: str
    seconds: float | None = None
    marker_id: str | None = None
    tag: int | None = None


@dataclass(frozen=True, slots=True)
class TrackChanged(Event):
    """Partial update of one track (1-based); ``None`` fields are unchanged."""

    track: int
    name: str | None = None
    arm: bool | None = None
    mute: bool | None = None
    solo: bool | None = None
    fader: float | None = None
    assumed: bool = False


@dataclass(frozen=True, slots=True)
class TracksReset(Event):
    """The DAW's track list is about to be re-reported (session reloaded / DAW restarted):
    forget every track at or above ``first`` (1-based)."""

    first: int = 1


@dataclass(frozen=True, slots=True)
class TalkbackChanged(Event):
    on: bool
    channel: str = "A"


@dataclass(frozen=True, slots=True)
class DeviceStatusChanged(Event):
    device: str
    status: DeviceStatus
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AudioCaptured(Event):
    """A recorder device saved audio (e.g. the talkback mic of one cue). ``path`` is the file,
    ``seconds`` its length; the hub logs it against the talkback cue it belongs to."""

    path: str
    seconds: float
    channel: str = "A"


@dataclass(frozen=True, slots=True)
class SessionChanged(Event):
    """Emitted by the core: session/song/take counters changed (partial update)."""

    session: str | None = None
    song: str | None = None
    take: int | None = None
    next_take: int | None = None
    take_label: str | None = None
    selected: int | None = None
    selected_circled: bool | None = None
    selected_false_start: bool | None = None
    selected_label: str | None = None
    elapsed: float | None = None
    #: the song list, JSON-encoded (a state value is a scalar)
    songs: str | None = None


# --------------------------------------------------------------------------- surface I/O


@dataclass(frozen=True, slots=True)
class ControlInput:
    """A named control moved on a mapped surface.

    ``value`` is absolute 0.0-1.0 (buttons: 1.0 press, 0.0 release) unless ``relative``,
    in which case it is a signed step count (encoders)."""

    control: str
    value: float
    relative: bool = False


@dataclass(frozen=True, slots=True)
class Feedback:
    """A value for a surface to show. For ``state``-mode devices ``control`` is a StateKey
    (``track/3/armed``); for mapped devices it is a control name (``transport.rec``)."""

    control: str
    value: Value
    continuous: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class Request:
    """A command whose sender wants to know the outcome. ``done(None)`` means it took
    effect (durable, for anything logged); ``done("reason")`` means it failed. The hub
    calls ``done`` exactly once, on the event loop."""

    command: Command
    done: Callable[[str | None], None]


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A session-log record that has become durable, for devices with ``wants_log``
    (MQTT publishes it on ``.../log``). ``record`` is the JSON-ready dict of the record."""

    seq: int
    record: dict[str, object]


#: What a device yields to the hub.
Inbound: TypeAlias = ControlInput | Event | Command | Request
#: What the hub gives a device to send.
Outbound: TypeAlias = Command | Feedback | LogEntry


def is_continuous(message: Outbound) -> bool:
    if isinstance(message, LogEntry):
        return False
    return message.continuous


def coalesce_key(message: Outbound) -> Hashable:
    if isinstance(message, Feedback):
        return ("feedback", message.control)
    if isinstance(message, LogEntry):
        return ("log", message.seq)
    return message.coalesce_key()
