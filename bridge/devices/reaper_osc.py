"""REAPER over its native OSC control surface, with the shipped ``Default.ReaperOSC`` patterns.

REAPER listens on its "local listen port" (``port``, 8000 by convention) and sends feedback to
the configured "device port" (``local_port``, 9000 by convention); both are options.

* Connect: ``/device/track/count <bank_size>`` (see more than 8 tracks), ``/device/marker/count``
  (marker feedback confirms markers), bank 1, then a refresh of all surfaces (``/action 41743``)
  whose feedback burst is the starting state. No answer within ``connect_timeout`` ->
  DeviceUnavailable.
* ``/play``, ``/stop`` and ``/record`` are triggers/toggles: the driver decides from the known
  state (REAPER's ``/record 1`` feedback is the confirmation) and never toggles blind.
* Tracks beyond the current bank: select the bank (``/device/track/bank/select``), then
  address the bank-relative index. The driver stays in that bank (REAPER then sends feedback
  only for it), so its idea of the bank always matches REAPER's.
* Markers (``marker_mode = "id"``, default): write ``/marker_id/<N>/time`` at the known play
  position and ``/marker_id/<N>/name <label>``; REAPER creates marker N and its marker
  feedback reports the position. ``"action"``: ``/action 40157`` (insert marker at the play
  position, exact), then the new marker is named once its feedback shows it.
* Liveness: REAPER has no heartbeat. After ``probe_interval`` s of silence the driver asks
  for a refresh; no answer within ``probe_timeout`` -> DeviceLost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from bridge.devices._osc import (
    Address,
    EventQueue,
    OscArgs,
    PositionLimiter,
    UdpEndpoint,
    dispatch,
    encode,
    relearn_events,
)
from bridge.devices.base import Device, DeviceContext
from bridge.errors import DeviceError, DeviceLost, DeviceUnavailable
from bridge.options import in_range, port_check, positive
from bridge.vocab import (
    AddMarker,
    Command,
    Event,
    Inbound,
    Locate,
    MarkerAdded,
    Outbound,
    Play,
    PositionChanged,
    SetRecord,
    SetTrackArm,
    SetTrackFader,
    SetTrackMute,
    SetTrackSolo,
    Stop,
    TrackChanged,
    TransportChanged,
)

log = logging.getLogger(__name__)

ACTION_INSERT_MARKER = 40157  # Markers: Insert marker at current position
ACTION_REFRESH_SURFACES = 41743  # Control surface: Refresh all surfaces
MAX_QUEUE = 10_000
_TRACK_FIELDS = {"name": "name", "recarm": "arm", "mute": "mute", "solo": "solo", "volume": "fader"}
_STRIP_PATHS: dict[type[Command], str] = {SetTrackArm: "recarm", SetTrackMute: "mute", SetTrackSolo: "solo"}


def _count_check(value: Any) -> str | None:
    return None if 1 <= value <= 1024 else "an integer 1-1024"


def _flag(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float) or v not in (0, 1):
        raise ValueError(f"expected 0/1, got {v!r}")
    return v == 1


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


@dataclass(slots=True)
class _PendingMarker:
    label: str
    tag: int | None
    number: int | None
    seconds: float | None
    deadline: float
    #: "action" mode: marker numbers REAPER had before ours was inserted.
    known_before: frozenset[int]


@dataclass(frozen=True)
class ReaperOptions:
    host: str = "127.0.0.1"
    #: REAPER's "local listen port".
    port: int = field(default=8000, metadata={"check": port_check})
    local_host: str = "127.0.0.1"
    #: REAPER's "device port": where REAPER sends feedback (we bind it).
    local_port: int = field(default=9000, metadata={"check": port_check})
    #: Tracks per bank (DEVICE_TRACK_COUNT), raised at connect so more tracks are seen.
    bank_size: int = field(default=64, metadata={"check": _count_check})
    #: Markers REAPER reports (DEVICE_MARKER_COUNT); 0 = no marker feedback.
    marker_count: int = field(default=64, metadata={"check": lambda v: None if 0 <= v <= 1024 else "0-1024"})
    marker_mode: Literal["id", "action"] = "id"
    #: First marker number the bridge uses in "id" mode (above REAPER's own).
    marker_base: int = field(default=1, metadata={"check": positive})
    connect_timeout: float = field(default=2.0, metadata={"check": positive})
    #: Silence (s) before the driver probes REAPER with a surface refresh.
    probe_interval: float = field(default=3.0, metadata={"check": positive})
    #: Seconds to wait for the probe's answer before DeviceLost.
    probe_timeout: float = field(default=1.5, metadata={"check": positive})
    probe_action: int = field(default=ACTION_REFRESH_SURFACES, metadata={"check": positive})
    position_rate: float = field(default=10.0, metadata={"check": in_range(0.1, 1000)})


class ReaperOsc(Device[ReaperOptions]):
    """REAPER as the studio's DAW, over OSC (UDP)."""

    kind: ClassVar[str] = "reaper"
    handles: ClassVar[frozenset[type[Command]]] = frozenset(
        {Play, Stop, SetRecord, Locate, SetTrackArm, SetTrackMute, SetTrackSolo, SetTrackFader, AddMarker}
    )
    feedback = "none"
    min_interval: ClassVar[float] = 0.02
    max_backoff: ClassVar[float] = 2.0

    Options: ClassVar[type[ReaperOptions]] = ReaperOptions

    def __init__(self, name: str, options: ReaperOptions, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        self._clock: Callable[[], float] = self.ctx.clock or time.monotonic
        self._endpoint: UdpEndpoint | None = None
        self._target: Address = (options.host, options.port)
        self._queue = EventQueue(MAX_QUEUE)
        self._stats = {
            "rx": 0,
            "tx": 0,
            "bad": 0,
            "ignored": 0,
            "unknown_track": 0,
            "overflow": 0,
            "probes": 0,
        }
        self._reset()

    def _reset(self) -> None:
        self._bank = 1
        self._tracks: dict[int, dict[str, Any]] = {}
        self._playing: bool | None = None
        self._recording: bool | None = None
        self._paused = False
        self._rec_wanted: tuple[bool, float] | None = None
        self._seconds: float | None = None
        self._seconds_at = 0.0
        self._pos = PositionLimiter(self.options.position_rate)
        self._markers: dict[int, list[Any]] = {}  # marker slot -> [number, name, time]
        self._known_numbers: set[int] = set()
        self._pending: deque[_PendingMarker] = deque()
        self._last_rx = self._clock()
        self._probe_sent: float | None = None
        self._syncing = True
        self._got_any = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        self._reset()
        self._queue = EventQueue(MAX_QUEUE)  # a fresh, unflooded queue per connection
        o = self.options
        self._endpoint = await UdpEndpoint.open(self._on_datagram, (o.local_host, o.local_port))
        try:
            await self._handshake()
        except BaseException:
            self._close()
            raise
        return self

    async def _handshake(self) -> None:
        o = self.options
        deadline = self._clock() + o.connect_timeout
        while not self._got_any.is_set():
            left = deadline - self._clock()
            if left <= 0:
                raise DeviceUnavailable(
                    f"REAPER did not answer OSC at {o.host}:{o.port} within {o.connect_timeout:g} s "
                    f"(is its device port set to {o.local_port}?)"
                )
            self._tx("/device/track/count", o.bank_size)
            self._tx("/device/marker/count", o.marker_count)
            self._tx("/device/track/bank/select", 1)
            self._tx("/action", o.probe_action)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.5, left)):
                    await self._got_any.wait()
        # Let the refresh burst finish: it ends when REAPER goes quiet for a moment.
        async with asyncio.timeout(max(0.2, deadline - self._clock()) + 1.0):
            while self._clock() - self._last_rx < 0.1:  # noqa: ASYNC110 - bounded settle wait
                await asyncio.sleep(0.05)
        self._syncing = False
        for event in relearn_events(self._tracks):  # values only: no reset first
            self._emit(event)
        self._emit(TransportChanged(playing=bool(self._playing), recording=bool(self._recording)))
        if self._seconds is not None:
            self._emit_position(force=True)
        log.info(
            "%s: connected to REAPER at %s:%d (%d tracks seen)", self.name, o.host, o.port, len(self._tracks)
        )

    async def __aexit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    # ------------------------------------------------------------------ receive
    async def receive(self) -> AsyncIterator[Inbound]:
        o = self.options
        while True:
            if self._endpoint is None or self._endpoint.closed:
                raise DeviceLost("REAPER OSC socket closed")
            self._queue.raise_if_flooded("REAPER")
            if not self._queue.empty():
                yield self._queue.get_nowait()
                continue
            now = self._clock()
            self._expire_markers(now)
            if self._probe_sent is not None:
                if self._last_rx >= self._probe_sent:
                    self._probe_sent = None
                elif now - self._probe_sent > o.probe_timeout:
                    raise DeviceLost(f"REAPER did not answer a refresh within {o.probe_timeout:g} s")
            elif now - self._last_rx > o.probe_interval:
                self._probe_sent = now
                self._stats["probes"] += 1
                self._tx("/action", o.probe_action)
            if self._probe_sent is not None:
                wait = self._probe_sent + o.probe_timeout - now + 0.01
            else:
                wait = self._last_rx + o.probe_interval - now + 0.01
            left = self._pos.flush_in(now)
            if left is not None:
                if left <= 0:
                    self._emit_position(force=True)
                    continue
                wait = min(wait, left)
            if self._pending:
                wait = min(wait, self._pending[0].deadline - now)
            try:
                async with asyncio.timeout(max(0.01, wait)):
                    event = await self._queue.get()
            except TimeoutError:
                continue
            yield event

    def _expire_markers(self, now: float) -> None:
        while self._pending and self._pending[0].deadline <= now:
            m = self._pending.popleft()  # no marker feedback (DEVICE_MARKER_COUNT 0?): report what we sent
            seconds = m.seconds if m.seconds is not None else self._position()
            self._emit(MarkerAdded(m.label, seconds, None if m.number is None else str(m.number), m.tag))

    # ------------------------------------------------------------------ send
    async def send(self, message: Outbound) -> None:
        if not isinstance(message, Command):
            return
        if isinstance(message, Play):
            if self._playing and not self._paused:
                self._emit(TransportChanged(playing=True))
            else:
                self._tx("/play")
        elif isinstance(message, Stop):
            if self._playing is False and not self._recording and not self._paused:
                self._emit(TransportChanged(playing=False))
            else:
                self._tx("/stop")
        elif isinstance(message, SetRecord):
            self._set_record(message.on)
        elif isinstance(message, Locate):
            self._tx("/time", max(0.0, float(message.seconds)))
        elif isinstance(message, SetTrackArm | SetTrackMute | SetTrackSolo | SetTrackFader):
            self._track_command(message)
        elif isinstance(message, AddMarker):
            self._add_marker(message)
        else:
            self._stats["ignored"] += 1

    def _set_record(self, on: bool) -> None:
        now = self._clock()
        effective = self._recording
        if self._rec_wanted is not None and now - self._rec_wanted[1] < 1.0:
            effective = self._rec_wanted[0]
        if effective is None:
            log.warning("%s: REAPER record state unknown, not toggling blind", self.name)
            return
        if effective == on:
            if self._recording == on:
                self._emit(TransportChanged(recording=on))
            return
        self._rec_wanted = (on, now)
        self._tx("/record")

    def _track_command(self, cmd: SetTrackArm | SetTrackMute | SetTrackSolo | SetTrackFader) -> None:
        n = cmd.track
        if not isinstance(n, int) or n < 1:
            self._stats["unknown_track"] += 1
            log.warning("%s: bad track %r", self.name, n)
            return
        size = self.options.bank_size
        bank = (n - 1) // size + 1
        if bank != self._bank:
            self._bank = bank  # REAPER follows the device's bank (DEVICE_TRACK_BANK_FOLLOWS DEVICE)
            self._tx("/device/track/bank/select", bank)
        rel = n - (bank - 1) * size
        if isinstance(cmd, SetTrackFader):
            self._tx(f"/track/{rel}/volume", min(1.0, max(0.0, float(cmd.value))))
        else:
            self._tx(f"/track/{rel}/{_STRIP_PATHS[type(cmd)]}", 1 if cmd.on else 0)

    def _add_marker(self, cmd: AddMarker) -> None:
        deadline = self._clock() + 1.0
        if self.options.marker_mode == "action":
            known = frozenset(self._known_numbers)
            self._pending.append(_PendingMarker(cmd.label, cmd.tag, None, None, deadline, known))
            self._tx("/action", ACTION_INSERT_MARKER)
            return
        number = max(self._known_numbers | {self.options.marker_base - 1}) + 1
        self._known_numbers.add(number)
        seconds = self._position() or 0.0
        self._pending.append(_PendingMarker(cmd.label, cmd.tag, number, seconds, deadline, frozenset()))
        self._tx(f"/marker_id/{number}/time", float(seconds))
        self._tx(f"/marker_id/{number}/name", cmd.label)

    def _position(self) -> float | None:
        """The known play position, extrapolated while rolling."""
        if self._seconds is None:
            return None
        if self._playing:
            return self._seconds + (self._clock() - self._seconds_at)
        return self._seconds

    def _tx(self, address: str, *args: Any) -> None:
        if self._endpoint is None:
            raise DeviceUnavailable("REAPER OSC socket is not open")
        try:
            self._endpoint.sendto(encode(address, *args), self._target)
        except ValueError as exc:
            raise DeviceError(f"cannot encode {address}: {exc}") from exc
        self._stats["tx"] += 1

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    # ------------------------------------------------------------------ feedback
    def _emit(self, event: Event) -> None:
        if not self._queue.put_event(event):
            self._stats["overflow"] += 1  # receive() turns this into DeviceLost (full resync)

    def _emit_position(self, force: bool = False) -> None:
        if self._seconds is None or self._syncing:
            return
        if self._pos.due(self._seconds, bool(self._playing), self._clock(), force):
            self._emit(PositionChanged(self._seconds))

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if dispatch(data, self._handle, self._stats):
            self._last_rx = self._clock()
            self._got_any.set()

    def _handle(self, address: str, args: OscArgs) -> bool:
        if address == "/time":
            self._seconds, self._seconds_at = _number(args[0]), self._clock()
            if self._seconds < 0:
                raise ValueError("negative time")
            self._emit_position()
            return True
        if address in ("/play", "/stop", "/pause", "/record"):
            self._transport(address[1:], _flag(args[0]))
            return True
        if address.startswith("/track/"):
            return self._track_feedback(address, args)
        if address.startswith("/marker/"):
            return self._marker_feedback(address, args)
        return False

    def _transport(self, what: str, on: bool) -> None:
        if what == "record":
            if self._rec_wanted is not None and self._rec_wanted[0] == on:
                self._rec_wanted = None
            if on != self._recording:
                self._recording = on
                if not self._syncing:
                    self._emit(TransportChanged(recording=on))
            return
        playing = self._playing
        if what == "play":
            playing = on
        elif what == "stop":
            playing = False if on else playing
        else:  # pause
            self._paused = on
            playing = False if on else playing
        if playing is not None and playing != self._playing:
            if self._seconds is not None:  # re-anchor the extrapolated position
                self._seconds, self._seconds_at = self._position(), self._clock()
            self._playing = playing
            if not self._syncing:
                self._emit(TransportChanged(playing=playing))

    def _track_feedback(self, address: str, args: OscArgs) -> bool:
        parts = address.split("/")  # ['', 'track', '<i>', field...]
        if len(parts) != 4 or not parts[2].isdigit():
            return False  # un-indexed (selected track) forms, number/str, vu...
        key = _TRACK_FIELDS.get(parts[3])
        if key is None:
            return False
        rel = int(parts[2])
        if not 1 <= rel <= self.options.bank_size:
            self._stats["unknown_track"] += 1
            return True
        n = (self._bank - 1) * self.options.bank_size + rel
        value: Any
        if key == "name":
            value = args[0]
            if not isinstance(value, str):
                raise ValueError("bad track name")
        elif key == "fader":
            value = _number(args[0])
            if not 0.0 <= value <= 1.0:
                raise ValueError("bad volume")
        else:
            value = _flag(args[0])
        track = self._tracks.setdefault(n, {})
        if track.get(key) == value:
            return True
        track[key] = value
        if not self._syncing:
            self._emit(TrackChanged(n, **{key: value}))
        return True

    def _marker_feedback(self, address: str, args: OscArgs) -> bool:
        parts = address.split("/")  # ['', 'marker', '<slot>', field(, 'str')]
        if len(parts) < 4 or not parts[2].isdigit():
            return False
        what = "/".join(parts[3:])
        slot = self._markers.setdefault(int(parts[2]), [None, None, None])
        if what == "number/str":
            v = args[0]
            if not isinstance(v, str) or not v.strip().isdigit():
                raise ValueError("bad marker number")
            slot[0] = int(v)
            self._known_numbers.add(slot[0])
        elif what == "name":
            if not isinstance(args[0], str):
                raise ValueError("bad marker name")
            slot[1] = args[0]
        elif what == "time":
            slot[2] = _number(args[0])
        else:
            return False
        if None not in slot:
            self._match_marker(slot[0], slot[1], slot[2])
        return True

    def _match_marker(self, number: int, name: str, seconds: float) -> None:
        for m in list(self._pending):
            if m.number == number and name == m.label:
                self._pending.remove(m)
                self._emit(MarkerAdded(m.label, seconds, str(number), m.tag))
                return
            if m.number is None and number not in m.known_before and number not in self._claimed():
                # "action" mode: the first unclaimed marker REAPER shows is ours; name it.
                m.number = number
                m.seconds = seconds
                self._tx(f"/marker_id/{number}/name", m.label)
                return

    def _claimed(self) -> set[int]:
        return {m.number for m in self._pending if m.number is not None}
