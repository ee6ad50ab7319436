"""The hub's routing parts: a device's slot, which role carries out what, and how the studio
state confirms a command (see ``bridge.hub``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bridge import state as S
from bridge.devices.base import Device
from bridge.mapping import Mapper
from bridge.outbox import Outbox
from bridge.vocab import (
    AddMarker,
    Command,
    DeviceStatus,
    Event,
    Locate,
    MarkerAdded,
    Outbound,
    Play,
    PositionChanged,
    SetRecord,
    SetTalkback,
    SetTrackArm,
    SetTrackFader,
    SetTrackMute,
    SetTrackSolo,
    Stop,
    Value,
)

log = logging.getLogger("bridge.hub")

Done = Callable[[str | None], None]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


#: ``timer(delay, fn)``: call ``fn`` in ``delay`` seconds; the handle cancels it
Timer = Callable[[float, Callable[[], None]], TimerHandle]


def loop_timer(delay: float, fn: Callable[[], None]) -> TimerHandle:
    """The default timer: the running event loop's ``call_later``."""
    import asyncio

    return asyncio.get_running_loop().call_later(delay, fn)


#: Which role carries out which commands (SetTalkback: "talkback", then "mixer").
DAW_COMMANDS: frozenset[type[Command]] = frozenset(
    {Play, Stop, SetRecord, Locate, SetTrackArm, SetTrackMute, SetTrackSolo, SetTrackFader, AddMarker}
)

_TRACK_FIELD: dict[type[Command], str] = {SetTrackArm: "armed", SetTrackMute: "mute", SetTrackSolo: "solo"}


@dataclass(eq=False)
class Slot:
    device: Device[Any]
    role: str | None
    outbox: Outbox
    mapper: Mapper | None = None
    status: DeviceStatus = DeviceStatus.CONNECTING
    #: the driver implements the synchronous fast path (Device.send_nowait)
    direct: bool = False

    def deliver(self, message: Outbound, now: float) -> None:
        """Send at once when the driver can and nothing is queued; else queue for the writer."""
        box = self.outbox
        if self.direct:
            try:
                if box.send_direct(message, now, self.device.send_nowait):
                    return
            except Exception as exc:  # the writer sends it again and reports the failure
                log.debug("%s: direct send failed (%s); queued", self.device.name, exc)
        box.put(message)


@dataclass(eq=False)
class Pending:
    """A command sent and not yet confirmed by the state."""

    device: str
    check: Callable[[Event | None], bool]
    done: Done
    deadline: float
    what: str


def confirmation(command: Command, get: Callable[[str], Value]) -> Callable[[Event | None], bool] | None:
    """What in the state (or which event) confirms ``command`` (None: sent is done)."""
    if command.continuous:
        return None  # continuous commands (faders) are not confirmed one by one
    match command:  # the most frequent first: each case is an isinstance check
        case SetTrackArm() | SetTrackMute() | SetTrackSolo():
            assert isinstance(command.track, int)
            key = S.track_key(command.track, _TRACK_FIELD[type(command)])
            on = command.on
            return lambda _e: get(key) is on
        case Play():
            return lambda _e: get(S.PLAYING) is True
        case Stop():
            return lambda _e: get(S.PLAYING) is False
        case SetRecord(on=on):
            return lambda _e: get(S.RECORDING) is on
        case Locate():
            return lambda e: isinstance(e, PositionChanged)
        case AddMarker(tag=tag):
            return lambda e: isinstance(e, MarkerAdded) and e.tag in (tag, None)
        case SetTalkback(on=on, channel=channel):
            talk_key = S.talkback_key(channel)
            return lambda _e: get(talk_key) is on
    return None


def ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> "tracks 1-3, 5"."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        if n is not None:
            start = prev = n
    return "tracks " + ", ".join(parts)


def describe(command: Command) -> str:
    names = {
        Play: "play",
        Stop: "stop",
        SetRecord: "record",
        Locate: "locate",
        SetTrackArm: "arm tracks",
        SetTrackMute: "mute tracks",
        SetTrackSolo: "solo tracks",
        SetTrackFader: "move faders",
        AddMarker: "add markers",
    }
    return names.get(type(command), type(command).__name__)


class Confirmations:
    """Commands sent and not yet confirmed: answered when the state confirms them, failed when
    their device goes down or ``timeout()`` seconds pass (the injected ``timer`` fires)."""

    def __init__(self, clock: Callable[[], float], timer: Timer, timeout: Callable[[], float]) -> None:
        self.clock = clock
        self.timer = timer
        self.timeout = timeout
        self.pending: list[Pending] = []
        self._handle: TimerHandle | None = None

    def add(self, device: str, check: Callable[[Event | None], bool], done: Done, what: str) -> None:
        self.pending.append(Pending(device, check, done, self.clock() + self.timeout(), what))
        self._arm()

    def check(self, event: Event) -> None:
        if not self.pending:
            return
        confirmed: list[Pending] = []
        still: list[Pending] = []
        for pending in self.pending:
            try:
                ok = pending.check(event)
            except Exception:
                log.exception("confirmation check failed")
                ok = False
            (confirmed if ok else still).append(pending)
        self.pending[:] = still
        for pending in confirmed:
            pending.done(None)

    def fail(self, device: str, reason: str) -> None:
        """Answer ``reason`` to every command pending on ``device``."""
        failing = [p for p in self.pending if p.device == device]
        self.pending[:] = [p for p in self.pending if p.device != device]
        for pending in failing:
            pending.done(reason)

    def _arm(self) -> None:
        if self._handle is not None or not self.pending:
            return
        soonest = min(p.deadline for p in self.pending)
        self._handle = self.timer(max(0.0, soonest - self.clock()), self._expire)

    def _expire(self) -> None:
        self._handle = None
        now = self.clock()
        expired = [p for p in self.pending if p.deadline <= now]
        self.pending[:] = [p for p in self.pending if p.deadline > now]
        for pending in expired:
            pending.done(f"{pending.device} did not confirm {pending.what} within {self.timeout():g} s")
        self._arm()
