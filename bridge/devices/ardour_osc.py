"""Ardour (7.x) over its OSC control surface.

On connect the driver binds a local UDP port and registers itself with
``/set_surface 0 <strip_types> <feedback> <gainmode> 0 0 <local port>``: no banking (so the
strip id is the track number), feedback for strip buttons and values, the master/transport
section, a 1 s heartbeat and the playhead in samples, replies sent to our own port. Ardour
answers with a burst of its current state; the driver also asks ``/strip/list`` (names,
arm/mute/solo and the sample rate) and ``/transport_frame``, and returns from ``__aenter__``
only once all of that has arrived.

Ardour's ``/rec_enable_toggle`` is a toggle: it is sent only when the known global record
state differs from the wanted one. A marker is one OSC bundle ``/transport_frame``,
``/add_marker <label>``, ``/transport_frame``: Ardour handles the three in a row and puts the
marker at the playhead it reads in between, so when both answers agree that is the marker's
exact sample (``MarkerAdded`` with ``marker_id = "<sample>"``). When they differ (Ardour's
process cycle ended inside the bundle, a few percent of marks while rolling) the marker is one
of the two samples: it is reported at once without a position, and read back from Ardour once
the transport stops (locate to it by name, read the playhead, locate back), then reported again
with its exact sample. Ardour's OSC has no query for a marker's position.

Liveness: Ardour sends ``/heartbeat`` every second (1.0 s and 1.1 s apart). After
``probe_after`` of silence the driver asks ``/set_surface`` (no arguments: Ardour answers the
settings it has for this address) every ``probe_interval``: an answer without the bridge's
settings means a restarted Ardour that has forgotten the surface, and ``receive()`` raises
DeviceLost at once; no answer for ``heartbeat_timeout`` raises DeviceLost as well. Connecting
polls the same way while Ardour is away and registers on a new Ardour's first answer.
Bad or unexpected feedback is counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from bridge.devices._osc import (
    Address,
    EventQueue,
    OscArgs,
    PositionLimiter,
    UdpEndpoint,
    bundle,
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

#: /set_surface feedback bits (Ardour manual, "Feedback and strip-types values").
FB_STRIP_BUTTONS = 1
FB_STRIP_VALUES = 2
FB_HEARTBEAT = 8
FB_MASTER = 16
FB_POSITION_SAMPLES = 1024
FB_REPLY_PATH = 16384  # answer queries on /reply instead of #reply (a valid OSC address)
DEFAULT_FEEDBACK = (
    FB_STRIP_BUTTONS | FB_STRIP_VALUES | FB_HEARTBEAT | FB_MASTER | FB_POSITION_SAMPLES | FB_REPLY_PATH
)
#: strip types: 1 audio tracks, 2 MIDI tracks.
DEFAULT_STRIP_TYPES = 1 | 2
#: gain mode 3: /strip/fader 0-1 only (mode 1 would flash dB values into /strip/name).
GAINMODE_FADER = 3
MAX_QUEUE = 10_000
_STRIP_PATHS: dict[type[Command], str] = {
    SetTrackArm: "/strip/recenable",
    SetTrackMute: "/strip/mute",
    SetTrackSolo: "/strip/solo",
}


def _nonneg_int(value: Any) -> str | None:
    return None if value >= 0 else "an integer >= 0"


def _local_port_check(value: Any) -> str | None:
    return None if value == 0 else port_check(value)


@dataclass(slots=True)
class _Track:
    name: str | None = None
    arm: bool | None = None
    mute: bool | None = None
    solo: bool | None = None
    fader: float | None = None


@dataclass(slots=True, eq=False)
class _PendingMarker:
    label: str
    tag: int | None
    deadline: float
    #: Ardour's playhead right before and right after it created the marker (one bundle)
    frames: list[int] = field(default_factory=list)
    waiters: list[Callable[[int], None]] = field(default_factory=list)


def _flag(args: OscArgs, i: int) -> bool:
    """A 0/1 value (Ardour sends floats or ints); raise on anything else."""
    v = args[i]
    if isinstance(v, bool) or not isinstance(v, int | float) or v not in (0, 1):
        raise ValueError(f"expected 0/1, got {v!r}")
    return v == 1


def _ssid(args: OscArgs) -> int:
    v = args[0]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"expected a strip id, got {v!r}")
    return v


@dataclass(frozen=True)
class ArdourOptions:
    host: str = "127.0.0.1"
    port: int = field(default=3819, metadata={"check": port_check})
    local_host: str = "127.0.0.1"
    #: 0 = any free port (it is passed to Ardour as the reply port).
    local_port: int = field(default=0, metadata={"check": _local_port_check})
    strip_types: int = field(default=DEFAULT_STRIP_TYPES, metadata={"check": _nonneg_int})
    feedback_bits: int = field(default=DEFAULT_FEEDBACK, metadata={"check": _nonneg_int})
    #: Seconds without any message (Ardour's heartbeat comes every 1 s) before DeviceLost.
    heartbeat_timeout: float = field(default=2.5, metadata={"check": positive})
    #: Seconds without any message (a late heartbeat) before the bridge asks Ardour whether it
    #: still knows the bridge's surface; a restarted Ardour does not: reconnect at once.
    #: (Ardour's heartbeats come 1.0 s and 1.1 s apart.)
    probe_after: float = field(default=1.2, metadata={"check": positive})
    #: Seconds between those registration queries (also while waiting for Ardour to answer).
    probe_interval: float = field(default=0.05, metadata={"check": in_range(0.01, 5)})
    #: Seconds to wait for Ardour's answer in ``__aenter__``.
    connect_timeout: float = field(default=2.0, metadata={"check": positive})
    #: Most PositionChanged events per second while rolling (jumps are always reported).
    position_rate: float = field(default=10.0, metadata={"check": in_range(0.1, 1000)})
    #: Used until Ardour reports its rate (``/strip/list``).
    sample_rate: int = field(default=48000, metadata={"check": positive})


class ArdourOsc(Device[ArdourOptions]):
    """Ardour as the studio's DAW, over OSC (UDP)."""

    kind: ClassVar[str] = "ardour"
    handles: ClassVar[frozenset[type[Command]]] = frozenset(
        {Play, Stop, SetRecord, Locate, SetTrackArm, SetTrackMute, SetTrackSolo, SetTrackFader, AddMarker}
    )
    feedback = "none"
    min_interval: ClassVar[float] = 0.02
    #: While Ardour is away the driver polls its registration every ``probe_interval`` inside each
    #: connect attempt; a short pause between attempts keeps a returning Ardour from waiting.
    max_backoff: ClassVar[float] = 0.25
    reports_all_tracks: ClassVar[bool] = True

    Options: ClassVar[type[ArdourOptions]] = ArdourOptions

    def __init__(self, name: str, options: ArdourOptions, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        self._clock: Callable[[], float] = self.ctx.clock or time.monotonic
        self._endpoint: UdpEndpoint | None = None
        self._target: Address = (options.host, options.port)
        self._queue = EventQueue(MAX_QUEUE)
        self._stats: dict[str, int] = {
            "rx": 0,
            "tx": 0,
            "bad": 0,
            "ignored": 0,
            "unknown_strip": 0,
            "overflow": 0,
            "connects": 0,
            "probes": 0,
            "restarts_seen": 0,
            "markers_read_back": 0,
        }
        self._reconnect_now = False
        self._reset_model()

    def retry_delay(self, attempt: int) -> float:
        if attempt == 0 and self._reconnect_now:
            self._reconnect_now = False
            return 0.0
        return super().retry_delay(attempt)

    def _reset_model(self) -> None:
        self._tracks: dict[int, _Track] = {}
        self._strip_list: list[tuple[int, str, bool, bool, bool]] = []
        self._collecting_list = False
        self._playing: bool | None = None
        self._recording: bool | None = None
        self._rec_wanted: tuple[bool, float] | None = None
        self._samples: int | None = None
        self._rate = float(self.options.sample_rate)
        self._pos = PositionLimiter(self.options.position_rate)
        self._frame_waiters: deque[Callable[[int], None]] = deque()
        self._markers: deque[_PendingMarker] = deque()
        #: markers whose position is one of two samples (Ardour's cycle moved on while it made
        #: them): read back from Ardour once the transport is stopped
        self._unresolved: deque[tuple[_PendingMarker, int, int]] = deque()
        self._resolver: asyncio.Task[None] | None = None
        self._last_rx = self._clock()
        self._syncing = True
        self._got: set[str] = set()
        self._sync_event = asyncio.Event()
        self._unregistered = asyncio.Event()  # Ardour answered: "no such surface" (new instance)
        self._probe_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        self._reset_model()
        self._queue = EventQueue(MAX_QUEUE)  # a fresh, unflooded queue per connection
        opts = self.options
        self._endpoint = await UdpEndpoint.open(self._on_datagram, (opts.local_host, opts.local_port))
        try:
            await self._handshake()
        except BaseException:
            self._close()
            raise
        self._stats["connects"] += 1
        return self

    async def _handshake(self) -> None:
        assert self._endpoint is not None
        opts = self.options
        reply_port = self._endpoint.local_address[1]
        subscribe = encode(
            "/set_surface", 0, opts.strip_types, opts.feedback_bits, GAINMODE_FADER, 0, 0, reply_port
        )
        query = encode("/set_surface")  # no arguments: Ardour answers this address's settings
        deadline = self._clock() + opts.connect_timeout
        subscribed_at: float | None = None
        # Register, then poll the registration cheaply until the starting state is complete.
        # Ardour may be down or still starting (port not bound): the poll's first answer from
        # a (new) Ardour says "not registered" and the bridge registers at once. In Ardour's
        # "Manual" port mode that answer goes elsewhere: registering again every second covers it.
        while not self._sync_event.is_set():
            now = self._clock()
            left = deadline - now
            if left <= 0:
                raise DeviceUnavailable(
                    f"Ardour did not answer OSC at {opts.host}:{opts.port} within {opts.connect_timeout:g} s"
                )
            if subscribed_at is None or self._unregistered.is_set() or now - subscribed_at >= 1.0:
                self._got.clear()
                self._frame_waiters.clear()
                self._unregistered.clear()
                self._tx(subscribe)
                self._tx(encode("/strip/list"))
                self._query_frame(self._on_sync_frame)
                subscribed_at = now
            else:
                self._tx(query)
                self._stats["probes"] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(opts.probe_interval, left)):
                    await _first(self._sync_event, self._unregistered)
        # The starting state is known: report it as one consistent picture (values only, no
        # reset first: the bridge's state changes only where Ardour's really differs).
        self._syncing = False
        self._emit_tracks()
        self._emit(TransportChanged(playing=bool(self._playing), recording=bool(self._recording)))
        if self._samples is not None:
            self._emit_position(force=True)
        log.info(
            "%s: connected to Ardour at %s:%d (%d tracks, %g Hz)",
            self.name,
            opts.host,
            opts.port,
            len(self._tracks),
            self._rate,
        )

    def _on_sync_frame(self, samples: int) -> None:
        self._samples = samples
        self._got.add("frame")
        self._check_synced()

    def _check_synced(self) -> None:
        if self._syncing and {"list", "frame", "transport"} <= self._got:
            self._sync_event.set()

    async def __aexit__(self, *exc: object) -> None:
        if self._endpoint is not None and not self._endpoint.closed:
            with contextlib.suppress(DeviceError):  # unsubscribe: no feedback to a closed port
                self._tx(encode("/set_surface", 0, 0, 0))
        self._close()

    def _close(self) -> None:
        if self._resolver is not None:
            self._resolver.cancel()
            self._resolver = None
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    # ------------------------------------------------------------------ receive
    async def receive(self) -> AsyncIterator[Inbound]:
        timeout = self.options.heartbeat_timeout
        while True:
            if self._endpoint is None or self._endpoint.closed:
                raise DeviceLost("Ardour OSC socket closed")
            self._queue.raise_if_flooded("Ardour")
            if not self._queue.empty():
                yield self._queue.get_nowait()
                continue
            if self._unregistered.is_set():
                self._stats["restarts_seen"] += 1
                self._reconnect_now = True  # the new Ardour is answering: no pause
                raise DeviceLost("Ardour restarted (it no longer knows the bridge's surface); re-registering")
            now = self._clock()
            self._expire_markers(now)
            silent = now - self._last_rx
            if silent > timeout:
                raise DeviceLost(f"Ardour silent for {silent:.1f} s (no heartbeat)")
            wait = timeout - silent + 0.05
            if silent >= self.options.probe_after:
                # A heartbeat is late: is this still the Ardour we registered with?
                if now >= self._probe_at:
                    self._probe_at = now + self.options.probe_interval
                    self._stats["probes"] += 1
                    self._tx(encode("/set_surface"))
                wait = min(wait, max(0.005, self._probe_at - now))
            else:
                wait = min(wait, self.options.probe_after - silent + 0.005)
            left = self._pos.flush_in(now)
            if left is not None:
                if left <= 0:
                    self._emit_position(force=True)
                    continue
                wait = min(wait, left)
            if self._markers:
                wait = min(wait, max(0.01, self._markers[0].deadline - now))
            if silent >= self.options.probe_after:
                # probing: an answer saying "not registered" ends the wait at once
                got = await self._get_unless_restarted(wait)
                if got is not None:
                    yield got
                continue
            try:
                async with asyncio.timeout(wait):
                    event = await self._queue.get()
            except TimeoutError:
                continue
            yield event

    async def _get_unless_restarted(self, wait: float) -> Event | None:
        get = asyncio.ensure_future(self._queue.get())
        restarted = asyncio.ensure_future(self._unregistered.wait())
        try:
            done, _ = await asyncio.wait((get, restarted), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            restarted.cancel()
            if not get.done():
                get.cancel()  # asyncio.Queue keeps the item for the next get()
        return get.result() if get in done else None

    def _expire_markers(self, now: float) -> None:
        # Ardour's /transport_frame answers were lost: the marker exists, its position is unknown.
        while self._markers and self._markers[0].deadline <= now:
            m = self._markers.popleft()
            for waiter in m.waiters:
                with contextlib.suppress(ValueError):
                    self._frame_waiters.remove(waiter)
            log.warning("%s: no position from Ardour for marker %r", self.name, m.label)
            self._emit(MarkerAdded(m.label, None, None, m.tag))

    # ------------------------------------------------------------------ send
    async def send(self, message: Outbound) -> None:
        if not isinstance(message, Command):
            return  # feedback = "none": nothing else is routed here
        if isinstance(message, Play):
            self._tx(encode("/transport_play"))
        elif isinstance(message, Stop):
            self._tx(encode("/transport_stop"))
        elif isinstance(message, SetRecord):
            self._set_record(message.on)
        elif isinstance(message, Locate):
            sample = max(0, round(message.seconds * self._rate))
            if sample > 2**31 - 1:
                raise DeviceError(
                    f"locate target {message.seconds:g} s is beyond Ardour's int32 sample range"
                )
            self._tx(encode("/locate", sample, 0))
            self._query_frame(self._on_frame)  # confirms even a locate to the current position
        elif isinstance(message, SetTrackArm | SetTrackMute | SetTrackSolo | SetTrackFader):
            self._strip_command(message)
        elif isinstance(message, AddMarker):
            self._add_marker(message)
        else:
            self._stats["ignored"] += 1

    def _set_record(self, on: bool) -> None:
        """Record means "record now", as on the internal transport, REAPER and MMC record
        strobe: enable Ardour's global record and, when stopped, roll. Off punches out."""
        self._set_global_record(on)
        if on and not self._playing:
            self._tx(encode("/transport_play"))

    def _set_global_record(self, on: bool) -> None:
        now = self._clock()
        effective = self._recording
        if self._rec_wanted is not None and now - self._rec_wanted[1] < 1.0:
            effective = self._rec_wanted[0]  # a toggle is in flight: Ardour will end up there
        if effective is None:
            log.warning("%s: global record state unknown, not toggling blind", self.name)
            return
        if effective == on:
            if self._recording == on:  # already there: report it again so the sender is confirmed
                self._emit(TransportChanged(recording=on))
            return
        self._rec_wanted = (on, now)
        self._tx(encode("/rec_enable_toggle"))

    def _strip_command(self, cmd: SetTrackArm | SetTrackMute | SetTrackSolo | SetTrackFader) -> None:
        track = cmd.track
        if not isinstance(track, int) or track not in self._tracks:
            self._stats["unknown_strip"] += 1
            log.warning("%s: no track %r in Ardour (known: %s)", self.name, track, sorted(self._tracks))
            return
        if isinstance(cmd, SetTrackFader):
            self._tx(encode("/strip/fader", track, min(1.0, max(0.0, float(cmd.value)))))
            return
        self._tx(encode(_STRIP_PATHS[type(cmd)], track, 1 if cmd.on else 0))

    def _tx(self, data: bytes) -> None:
        if self._endpoint is None:
            raise DeviceUnavailable("Ardour OSC socket is not open")
        self._endpoint.sendto(data, self._target)
        self._stats["tx"] += 1

    def _query_frame(self, then: Callable[[int], None]) -> None:
        self._frame_waiters.append(then)
        self._tx(encode("/transport_frame"))

    def _on_frame(self, samples: int) -> None:
        self._samples = samples
        self._emit_position(force=True)

    # --- markers
    def _add_marker(self, cmd: AddMarker) -> None:
        """One bundle: playhead, marker (named with the label), playhead. Ardour handles the three
        in a row; the marker is at the playhead it read in between. Both playheads equal: that
        is the marker's exact sample. Different (a process cycle ended in between): it is one of
        the two, read back from Ardour once the transport is stopped."""
        m = _PendingMarker(cmd.label, cmd.tag, self._clock() + 1.0)

        def frame(samples: int) -> None:
            self._marker_frame(m, samples)

        m.waiters = [frame, frame]
        self._markers.append(m)
        self._frame_waiters.extend(m.waiters)
        query = encode("/transport_frame")
        add = encode("/add_marker", cmd.label) if cmd.label else encode("/add_marker")
        self._tx(bundle(query, add, query))

    def _marker_frame(self, m: _PendingMarker, samples: int) -> None:
        m.frames.append(samples)
        if len(m.frames) < 2:
            return
        self._on_frame(samples)
        with contextlib.suppress(ValueError):
            self._markers.remove(m)
        before, after = m.frames
        if before == after:
            self._emit(MarkerAdded(m.label, self._seconds(before), str(before), m.tag))
            return
        # Logged now without a position (the take is marked); the exact one follows.
        self._emit(MarkerAdded(m.label, None, None, m.tag))
        self._unresolved.append((m, min(before, after), max(before, after)))
        self._stats["markers_read_back"] += 1
        if self._playing is False:
            self._start_resolver()

    def _start_resolver(self) -> None:
        if self._unresolved and (self._resolver is None or self._resolver.done()):
            self._resolver = asyncio.create_task(self._resolve_markers(), name=f"{self.name}-markers")

    async def _frame(self) -> int | None:
        """Ardour's playhead now (None if it does not answer within 0.5 s)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def got(samples: int) -> None:
            if not fut.done():
                fut.set_result(samples)

        self._query_frame(got)
        try:
            async with asyncio.timeout(0.5):
                return await fut
        except TimeoutError:
            with contextlib.suppress(ValueError):
                self._frame_waiters.remove(got)
            return None

    async def _locate_back(self, home: int) -> None:
        """Put the stopped playhead back at ``home`` (Ardour drops a locate that comes while it
        is still finishing the previous one: ask again until it is there)."""
        t0 = sent = self._clock()
        self._tx(encode("/locate", home, 0))
        while self._clock() - t0 < 2.0 and self._playing is False:
            await asyncio.sleep(0.02)
            now = await self._frame()
            if now == home:
                self._on_frame(home)
                return
            if self._clock() - sent > 0.25:
                self._tx(encode("/locate", home, 0))
                sent = self._clock()
        if self._playing is False:
            log.warning("%s: the playhead did not return to %d after a marker read-back", self.name, home)

    async def _resolve_markers(self) -> None:
        """Read back the markers whose position is one of two samples: with the transport
        stopped, locate to the marker by its name (``/marker s``), read the playhead, and
        locate back to where the playhead was. Stops when the transport rolls again."""
        try:
            while self._unresolved and self._playing is False:
                m, low, high = self._unresolved[0]
                home = await self._frame()
                if home is None or self._playing is not False:
                    return
                found: int | None = None
                t0 = sent = self._clock()
                self._tx(encode("/marker", m.label))
                while self._clock() - t0 < 2.0 and self._playing is False:
                    await asyncio.sleep(0.02)
                    if self._clock() - sent > 0.25:  # a locate right after a stop can be dropped
                        self._tx(encode("/marker", m.label))
                        sent = self._clock()
                    now = await self._frame()
                    log.debug("%s: reading back %r (%d or %d): at %s", self.name, m.label, low, high, now)
                    # (home may itself be a candidate: then give the locate a few cycles)
                    if now in (low, high) and (now != home or self._clock() - t0 > 0.2):
                        found = now
                        break
                if found is None and self._playing is not False:
                    return  # rolling again: read it back at the next stop
                self._unresolved.popleft()
                if found is None:
                    log.warning("%s: could not read back marker %r from Ardour", self.name, m.label)
                else:
                    self._emit(MarkerAdded(m.label, self._seconds(found), str(found), m.tag))
                if home != found:
                    await self._locate_back(home)
        except DeviceError:
            return  # closed meanwhile

    def stats(self) -> dict[str, int]:
        out = dict(self._stats)
        if self._endpoint is not None:
            out["udp_errors"] = self._endpoint.errors
        return out

    # ------------------------------------------------------------------ feedback
    def _emit(self, event: Event) -> None:
        if not self._queue.put_event(event):
            self._stats["overflow"] += 1  # receive() turns this into DeviceLost (full resync)

    def _seconds(self, samples: int | None) -> float | None:
        return None if samples is None else samples / self._rate

    def _emit_position(self, force: bool = False) -> None:
        if self._samples is None or self._syncing:
            return
        seconds = self._samples / self._rate
        if self._pos.due(seconds, bool(self._playing), self._clock(), force):
            self._emit(PositionChanged(seconds))

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if dispatch(data, self._handle, self._stats):
            self._last_rx = self._clock()

    def _handle(self, address: str, args: OscArgs) -> bool:
        """Apply one feedback message; return False if it is not one we use."""
        handler = self._handlers.get(address)
        if handler is not None:
            handler(self, args)
            return True
        if address.startswith("/strip/"):
            return self._handle_strip(address, args)
        return False

    # --- transport / master section
    # Ardour sends both on every transport change: /transport_play 1 = rolling at speed 1,
    # /transport_stop 1 = stopped or stopping. Both 0 is "in between" (a locate; a just-started
    # Ardour that has not settled its transport yet): that says nothing about rolling.
    def _h_play(self, args: OscArgs) -> None:
        if _flag(args, 0):
            self._set_playing(True)

    def _h_stop(self, args: OscArgs) -> None:
        if _flag(args, 0):
            self._set_playing(False)
        self._got.add("transport")
        self._check_synced()

    def _set_playing(self, playing: bool) -> None:
        if playing != self._playing:
            self._playing = playing
            if not self._syncing:
                self._emit(TransportChanged(playing=playing))
                self._emit_position(force=True)
                if not playing:
                    self._start_resolver()

    def _h_rec(self, args: OscArgs) -> None:
        rec = _flag(args, 0)
        if self._rec_wanted is not None and self._rec_wanted[0] == rec:
            self._rec_wanted = None
        if rec != self._recording:
            self._recording = rec
            if not self._syncing:
                self._emit(TransportChanged(recording=rec))

    def _h_surface(self, args: OscArgs) -> None:
        """The answer to ``/set_surface`` without arguments: this address's surface settings
        (bank size, strip types, feedback, gain mode, ...). Different from ours: Ardour does
        not know the bridge's registration, so it is a new (restarted) instance."""
        if len(args) < 4 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args[:4]):
            raise ValueError("bad /set_surface answer")
        opts = self.options
        if (args[1], args[2], args[3]) != (opts.strip_types, opts.feedback_bits, GAINMODE_FADER):
            self._unregistered.set()

    def _h_heartbeat(self, args: OscArgs) -> None:
        _flag(args, 0)  # liveness only (_last_rx is updated for every handled message)

    def _h_position(self, args: OscArgs) -> None:
        v = args[0]
        samples = int(v) if isinstance(v, str) else None
        if samples is None or samples < 0:
            raise ValueError(f"bad position {v!r}")
        self._samples = samples
        self._emit_position()

    def _h_frame(self, args: OscArgs) -> None:
        v = args[0]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"bad frame {v!r}")
        if self._frame_waiters:
            self._frame_waiters.popleft()(v)
        else:
            self._on_frame(v)

    def _h_reply(self, args: OscArgs) -> None:
        kind = args[0]
        if kind == "end_route_list":
            rate = args[1]
            if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0:
                self._rate = float(rate)
            self._finish_strip_list()
            return
        if kind in ("AT", "MT"):
            name, ssid = args[1], args[6]
            if not isinstance(name, str) or isinstance(ssid, bool) or not isinstance(ssid, int) or ssid < 1:
                raise ValueError("bad strip list entry")
            arm = _flag(args, 7) if len(args) > 7 else False
            if not self._collecting_list:
                self._collecting_list = True
                self._strip_list = []
            self._strip_list.append((ssid, name, _flag(args, 4), _flag(args, 5), arm))
            return
        if isinstance(kind, str):
            return  # busses, VCAs...: not tracks
        raise ValueError("bad /reply")

    def _finish_strip_list(self) -> None:
        entries, self._strip_list, self._collecting_list = self._strip_list, [], False
        old = self._tracks
        self._tracks = {}
        for ssid, name, mute, solo, arm in entries:
            t = _Track(
                name=name, arm=arm, mute=mute, solo=solo, fader=old[ssid].fader if ssid in old else None
            )
            self._tracks[ssid] = t
        self._got.add("list")
        if self._syncing:
            self._check_synced()
            return
        # Ardour re-sends the list when its strips change: re-report every track.
        self._emit_tracks()

    def _emit_tracks(self) -> None:
        tracks = {
            n: {"name": t.name, "arm": t.arm, "mute": t.mute, "solo": t.solo, "fader": t.fader}
            for n, t in self._tracks.items()
        }
        for event in relearn_events(tracks):
            self._emit(event)

    # --- strips: /strip/<what> ssid value
    def _handle_strip(self, address: str, args: OscArgs) -> bool:
        what = address[7:]
        if what not in ("name", "recenable", "mute", "solo", "fader"):
            return False
        ssid = _ssid(args)
        track = self._tracks.get(ssid)
        if track is None:
            if not self._syncing:
                self._stats["unknown_strip"] += 1
                return True
            track = self._tracks[ssid] = _Track()
        value: Any
        if what == "name":
            value = args[1]
            if not isinstance(value, str):
                raise ValueError("bad strip name")
        elif what == "fader":
            value = args[1]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 2.0:
                raise ValueError("bad fader value")
            value = float(value)
        else:
            value = _flag(args, 1)
        attr = "arm" if what == "recenable" else what
        if getattr(track, attr) == value:
            return True
        setattr(track, attr, value)
        if not self._syncing:
            self._emit(TrackChanged(ssid, **{attr: value}))
        return True

    _handlers: ClassVar[dict[str, Callable[[ArdourOsc, OscArgs], None]]] = {
        "/transport_play": _h_play,
        "/transport_stop": _h_stop,
        "/rec_enable_toggle": _h_rec,
        "/heartbeat": _h_heartbeat,
        "/position/samples": _h_position,
        "/transport_frame": _h_frame,
        "/reply": _h_reply,
        "/set_surface": _h_surface,
    }


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
