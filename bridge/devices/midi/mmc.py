"""MIDI Machine Control: a pure codec, a one-way transport driver and an MMC input surface.

Wire format (protocols.md §3.1): ``F0 7F <dev> 06 <cmd> [count data...] F7``; ``dev`` 7F is
all-call. Commands 00-3F carry no count byte; 40-77 are followed by a byte count.

* :class:`MmcTransport` (``kind = "mmc"``, role ``daw``) sends Play/Stop/record strobe/record
  exit/Locate/track record-ready. MMC is one-way, so after each send it emits the matching
  event itself with ``assumed=True``.
* :class:`MmcInput` (``kind = "mmc_in"``, a surface with ``feedback = "none"``) turns MMC from
  a recorder or controller into bridge commands. Non-MMC input on the port is ignored and
  counted (``ignored`` in ``stats()``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from bridge.devices.base import Device, DeviceContext
from bridge.devices.midi.link import MidiLink
from bridge.devices.midi.ports import check_pattern
from bridge.errors import DeviceError, DeviceLost
from bridge.options import in_range
from bridge.vocab import (
    Command,
    Event,
    Inbound,
    Locate,
    Outbound,
    Play,
    PositionChanged,
    SetRecord,
    SetTrackArm,
    Stop,
    TrackChanged,
    TransportChanged,
)

log = logging.getLogger(__name__)

ALL_CALL = 0x7F

STOP = 0x01
PLAY = 0x02
DEFERRED_PLAY = 0x03
FAST_FORWARD = 0x04
REWIND = 0x05
RECORD_STROBE = 0x06
RECORD_EXIT = 0x07
RECORD_PAUSE = 0x08
PAUSE = 0x09
WRITE = 0x40
MASKED_WRITE = 0x41
LOCATE = 0x44
TRACK_RECORD_READY = 0x4F

FrameRate = Literal["24", "25", "30df", "30"]
#: Time-code type bits (hr byte ``0 tt hhhhh``) and nominal frames per second.
_RATE_BITS: dict[str, int] = {"24": 0, "25": 1, "30df": 2, "30": 3}
_RATE_FPS: dict[int, int] = {0: 24, 1: 25, 2: 30, 3: 30}


# --------------------------------------------------------------------------- codec (pure)


def _check_dev(device_id: int) -> None:
    if not 0 <= device_id <= 0x7F:
        raise ValueError(f"MMC device id must be 0-127, got {device_id}")


def command(cmd: int, device_id: int = ALL_CALL, data: bytes = b"") -> bytes:
    """One MMC command message. ``data`` (for commands >= 0x40) is preceded by its byte count."""
    _check_dev(device_id)
    if cmd >= 0x40:
        return bytes((0xF0, 0x7F, device_id, 0x06, cmd, len(data))) + data + b"\xf7"
    return bytes((0xF0, 0x7F, device_id, 0x06, cmd, 0xF7))


def stop(device_id: int = ALL_CALL) -> bytes:
    return command(STOP, device_id)


def play(device_id: int = ALL_CALL) -> bytes:
    return command(PLAY, device_id)


def deferred_play(device_id: int = ALL_CALL) -> bytes:
    return command(DEFERRED_PLAY, device_id)


def record_strobe(device_id: int = ALL_CALL) -> bytes:
    return command(RECORD_STROBE, device_id)


def record_exit(device_id: int = ALL_CALL) -> bytes:
    return command(RECORD_EXIT, device_id)


def seconds_to_time(seconds: float, rate: str = "30") -> tuple[int, int, int, int, int]:
    """(hours, minutes, seconds, frames, subframes 0-99) of a position; hours wrap at 24.

    For 30 drop-frame the label is computed with 30 nominal frames per second (an
    approximation of the drop-frame label, off by at most a frame per minute)."""
    fps = _RATE_FPS[_RATE_BITS[rate]]
    seconds = max(0.0, seconds)
    total_sub = round(seconds * fps * 100)  # in 1/100 frames
    sub = total_sub % 100
    total_frames = total_sub // 100
    fr = total_frames % fps
    whole = total_frames // fps
    return (whole // 3600) % 24, (whole // 60) % 60, whole % 60, fr, sub


def locate(seconds: float, rate: str = "30", device_id: int = ALL_CALL, type_bits: bool = True) -> bytes:
    """LOCATE [TARGET] standard time: ``F0 7F dev 06 44 06 01 hr mn sc fr ff F7``.

    ``type_bits`` puts the frame-rate code into the hr byte (``0 tt hhhhh``) as MTC does;
    Ardour sends hours without them and ignores them on receive."""
    hr, mn, sc, fr, ff = seconds_to_time(seconds, rate)
    if type_bits:
        hr |= _RATE_BITS[rate] << 5
    return command(LOCATE, device_id, bytes((0x01, hr, mn, sc, fr, ff)))


def track_bit(track: int) -> tuple[int, int]:
    """(byte index, bit) of a 1-based track in the standard track bitmap (protocols.md §3.1):
    track 1 = byte 0 bit 5, track 2 = byte 0 bit 6, then 7 tracks per byte."""
    if track < 1:
        raise ValueError(f"track numbers start at 1, got {track}")
    t = track - 1 + 5
    return t // 7, t % 7


def track_arm(track: int, on: bool, device_id: int = ALL_CALL) -> bytes:
    """MASKED WRITE of TRACK RECORD READY: ``F0 7F dev 06 41 04 4F byte mask data F7``."""
    index, bit = track_bit(track)
    if index > 0x7F:
        raise ValueError(f"track {track} is beyond the MMC track bitmap")
    mask = 1 << bit
    return command(MASKED_WRITE, device_id, bytes((TRACK_RECORD_READY, index, mask, mask if on else 0)))


def time_to_seconds(hr: int, mn: int, sc: int, fr: int, ff: int) -> float:
    fps = _RATE_FPS[(hr >> 5) & 0x03]
    return (hr & 0x1F) * 3600 + mn * 60 + sc + (fr + ff / 100.0) / fps


def is_mmc(msg: bytes) -> bool:
    return len(msg) >= 6 and msg[0] == 0xF0 and msg[1] == 0x7F and msg[3] == 0x06 and msg[-1] == 0xF7


def decode(msg: bytes, device_id: int = ALL_CALL) -> list[Command] | None:
    """Commands in one MMC message, or None if ``msg`` is not MMC for us.

    A message addressed to another device id is not for us (unless we listen as 7F, which
    accepts every id). Unknown or malformed commands inside a valid message are skipped."""
    if not is_mmc(msg):
        return None
    dev = msg[2]
    if device_id != ALL_CALL and dev not in (device_id, ALL_CALL):
        return None
    body = msg[4:-1]
    out: list[Command] = []
    i = 0
    while i < len(body):
        cmd = body[i]
        i += 1
        if cmd < 0x40:
            if cmd == STOP:
                out.append(Stop())
            elif cmd in (PLAY, DEFERRED_PLAY):
                out.append(Play())
            elif cmd == RECORD_STROBE:
                out.append(SetRecord(True))
            elif cmd == RECORD_EXIT:
                out.append(SetRecord(False))
            continue
        if i >= len(body):
            break
        count = body[i]
        data = body[i + 1 : i + 1 + count]
        i += 1 + count
        if len(data) < count:
            break
        if cmd == LOCATE and count == 6 and data[0] == 0x01:
            out.append(Locate(time_to_seconds(*data[1:6])))
        elif cmd == MASKED_WRITE and count == 4 and data[0] == TRACK_RECORD_READY:
            index, mask, value = data[1], data[2], data[3]
            for bit in range(7):
                if mask & (1 << bit):
                    t = index * 7 + bit - 5  # 0-based track
                    if t >= 0:
                        out.append(SetTrackArm(t + 1, bool(value & (1 << bit))))
    return out


# --------------------------------------------------------------------------- drivers


def _pattern_check(value: Any) -> str | None:
    return check_pattern(value) if isinstance(value, str) else None


def _dev_check(value: Any) -> str | None:
    return None if isinstance(value, int) and 0 <= value <= 0x7F else "an integer 0-127 (127 = all-call)"


@dataclass(frozen=True)
class MmcTransportOptions:
    #: Output port name pattern (substring, or "re:<regex>"), e.g. "ardour:MMC in".
    output: str = field(default="MMC in", metadata={"check": _pattern_check})
    api: Literal["jack", "alsa", "auto"] = "auto"
    #: MMC device id of the recorder, 127 = all-call.
    device_id: int = field(default=ALL_CALL, metadata={"check": _dev_check})
    #: Send DEFERRED PLAY (03) instead of PLAY (02).
    deferred_play: bool = False
    #: Frame rate of LOCATE times.
    frame_rate: FrameRate = "30"
    #: Put the frame-rate code into the LOCATE hours byte.
    locate_type_bits: bool = True
    #: JACK/ALSA client name (default: "sb-<device name>").
    client_name: str = ""
    #: Largest track number accepted by SetTrackArm.
    max_tracks: int = field(default=128, metadata={"check": in_range(1, 889)})


class _MmcPortOptions(Protocol):
    @property
    def client_name(self) -> str: ...
    @property
    def api(self) -> Literal["jack", "alsa", "auto"]: ...


MO = TypeVar("MO", bound=_MmcPortOptions)


class _MmcBase(Device[MO]):
    max_backoff: ClassVar[float] = 0.5

    def _link(self, in_pattern: str | None, out_pattern: str | None) -> MidiLink:
        client = self.options.client_name or f"sb-{self.name}"
        return MidiLink(client, in_pattern, out_pattern, api=self.options.api)

    async def __aexit__(self, *exc: object) -> None:
        await self.link.aclose()

    link: MidiLink


class MmcTransport(_MmcBase[MmcTransportOptions]):
    """One-way MMC transport (role ``daw``): emits the matching events with ``assumed=True``."""

    kind: ClassVar[str] = "mmc"
    handles: ClassVar[frozenset[type[Command]]] = frozenset({Play, Stop, SetRecord, Locate, SetTrackArm})
    feedback: ClassVar[Literal["none"]] = "none"
    Options: ClassVar[type[MmcTransportOptions]] = MmcTransportOptions

    def __init__(self, name: str, options: MmcTransportOptions, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        self.link = self._link(None, options.output)
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    async def __aenter__(self) -> MmcTransport:
        await self.link.open()
        return self

    def encode(self, message: Outbound) -> tuple[bytes, Event] | None:
        """Bytes to send and the event to assume, or None for messages MMC cannot carry."""
        o: MmcTransportOptions = self.options
        dev = o.device_id
        if isinstance(message, Play):
            data = deferred_play(dev) if o.deferred_play else play(dev)
            return data, TransportChanged(playing=True, assumed=True)
        if isinstance(message, Stop):
            return stop(dev), TransportChanged(playing=False, recording=False, assumed=True)
        if isinstance(message, SetRecord):
            data = record_strobe(dev) if message.on else record_exit(dev)
            # record strobe from stop rolls in record (MMC); record exit punches out, still rolling
            return data, TransportChanged(
                playing=True if message.on else None, recording=message.on, assumed=True
            )
        if isinstance(message, Locate):
            data = locate(message.seconds, o.frame_rate, dev, o.locate_type_bits)
            return data, PositionChanged(message.seconds)
        if isinstance(message, SetTrackArm):
            track = message.track
            if not isinstance(track, int) or not 1 <= track <= o.max_tracks:
                raise DeviceError(f"{self.name}: MMC cannot arm track {track!r} (1-{o.max_tracks})")
            return track_arm(track, message.on, dev), TrackChanged(track, arm=message.on, assumed=True)
        return None

    async def send(self, message: Outbound) -> None:
        encoded = self.encode(message)
        if encoded is None:
            log.debug("%s: MMC cannot carry %r", self.name, message)
            return
        data, event = encoded
        self.link.send(data)
        self._events.put_nowait(event)

    async def receive(self) -> AsyncIterator[Inbound]:
        watch = asyncio.ensure_future(self._watch())
        try:
            while True:
                get = asyncio.ensure_future(self._events.get())
                done, _ = await asyncio.wait({get, watch}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    yield get.result()
                else:
                    get.cancel()
                    watch.result()  # raises DeviceLost
                    raise DeviceLost(f"{self.name}: MIDI link closed")
        finally:
            watch.cancel()

    async def _watch(self) -> None:
        async for _batch in self.link.messages():  # output-only: only ends by DeviceLost
            pass

    def stats(self) -> dict[str, int]:
        return self.link.stats()


@dataclass(frozen=True)
class MmcInputOptions:
    #: Input port name pattern (substring, or "re:<regex>").
    input: str = field(default="MMC", metadata={"check": _pattern_check})
    api: Literal["jack", "alsa", "auto"] = "auto"
    #: Our MMC device id: accept messages for it and all-call; 127 accepts every id.
    device_id: int = field(default=ALL_CALL, metadata={"check": _dev_check})
    client_name: str = ""


class MmcInput(_MmcBase[MmcInputOptions]):
    """MMC from a recorder or controller becomes commands (Play, Stop, SetRecord, Locate, SetTrackArm)."""

    kind: ClassVar[str] = "mmc_in"
    feedback: ClassVar[Literal["none"]] = "none"
    Options: ClassVar[type[MmcInputOptions]] = MmcInputOptions

    def __init__(self, name: str, options: MmcInputOptions, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        self.link = self._link(options.input, None)
        self.ignored = 0
        self.commands = 0

    async def __aenter__(self) -> MmcInput:
        await self.link.open()
        return self

    async def receive(self) -> AsyncIterator[Inbound]:
        dev = self.options.device_id
        async for batch in self.link.messages():
            for msg in batch:
                cmds = decode(msg, dev)
                if cmds is None:
                    self.ignored += 1
                    continue
                for c in cmds:
                    self.commands += 1
                    yield c

    async def send(self, message: Outbound) -> None:
        return None  # an input-only surface gets no feedback

    def stats(self) -> dict[str, int]:
        return {**self.link.stats(), "ignored": self.ignored, "commands": self.commands}
