"""What the OSC DAW drivers (Ardour, REAPER) share: the base class :class:`OscDaw`.

A DAW driver talks OSC over UDP to one DAW, believes only the DAW's feedback (``feedback =
"none"``: the DAW is the source of facts) and carries out the transport, record, locate, track
and marker commands. :class:`OscDaw` gives it

* the UDP endpoint: bound to ``local_host:local_port`` in ``__aenter__``, the DAW at
  ``host:port``; ``__aexit__`` sends the driver's :meth:`~OscDaw._goodbye` and closes it;
* the **handshake**: :meth:`~OscDaw._hello` is sent, and sent again each time the wait it
  returns has passed (or :meth:`~OscDaw._hello_again` says so), until
  :meth:`~OscDaw._answered` says the starting state is in (by default: any message understood;
  ``burst_quiet`` then waits for the burst to end). No answer within ``connect_timeout``:
  DeviceUnavailable. Then the starting picture is reported as one (values only, no reset first:
  every track via ``relearn_events``, the transport, the playhead) and
  ``connected to <DAW> at host:port (<summary>)`` is logged;
* the **bounded event queue**: a backlog beyond ``max_queue`` never drops a fact silently; it is
  counted (``overflow``) and ``receive()`` raises DeviceLost ("feedback flood"), so the
  supervisor reconnects and the driver relearns everything into a fresh queue;
* the ``receive()`` loop with no extra task: queued events, the rate-limited playhead
  (``PositionLimiter``), marker deadlines and the driver's **liveness**
  (:meth:`~OscDaw._liveness`: raise DeviceLost, send probes, say when to look again);
  :meth:`~OscDaw._probe_on_silence` is the policy of a DAW without a heartbeat;
* ``send()``: one method per command (:meth:`~OscDaw._play`, ...), anything else counted
  ``ignored``;
* the **never-blind record toggle** (:meth:`~OscDaw._toggle_record`): a DAW whose record
  command is a toggle gets it only when its record state is known and differs from the wanted
  one; its record feedback goes to :meth:`~OscDaw._record_feedback`;
* bookkeeping and emit helpers: :meth:`~OscDaw._set_track`, :meth:`~OscDaw._set_playing`,
  :meth:`~OscDaw._emit_position`, pending markers reported anyway after ``MARKER_WAIT``, and
  the counters every driver has (``rx tx bad ignored overflow probes``).

docs/daw_drivers.md says what a new driver supplies.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from bridge.devices._osc import (
    Address,
    EventQueue,
    OscArgs,
    PositionLimiter,
    UdpEndpoint,
    UdpPeerOptions,
    dispatch,
    encode,
    relearn_events,
)
from bridge.devices.base import Device, DeviceContext
from bridge.errors import DeviceError, DeviceLost, DeviceUnavailable
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

#: Events waiting for ``receive()`` beyond which the link counts as lost (and is resynced).
MAX_QUEUE = 10_000
#: Seconds a marker waits for the DAW's answer before :meth:`OscDaw._marker_timed_out`.
MARKER_WAIT = 1.0
#: Seconds a record toggle counts as in flight (the DAW will end up in the wanted state).
TOGGLE_WAIT = 1.0
#: The counters every OSC DAW driver reports (``stat_keys`` adds and orders a driver's own).
COMMON_STATS = "rx tx bad ignored overflow probes"
TrackCommand = SetTrackArm | SetTrackMute | SetTrackSolo | SetTrackFader
_TRACK_FIELDS: dict[type[Command], str] = {SetTrackArm: "arm", SetTrackMute: "mute", SetTrackSolo: "solo"}


def flag(v: Any) -> bool:
    """A 0/1 value (DAWs send floats or ints); raise ValueError on anything else."""
    if isinstance(v, bool) or not isinstance(v, int | float) or v not in (0, 1):
        raise ValueError(f"expected 0/1, got {v!r}")
    return v == 1


def number(v: Any) -> float:
    """A number (int or float, not NaN); raise ValueError on anything else."""
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


class OscDawOptions(UdpPeerOptions, Protocol):
    """What every OSC DAW driver's options have."""

    @property
    def connect_timeout(self) -> float: ...
    @property
    def position_rate(self) -> float: ...


@dataclass(slots=True, eq=False)
class PendingMarker:
    """A marker sent to the DAW, waiting for the DAW's answer until ``deadline``."""

    label: str
    tag: int | None
    deadline: float


DO = TypeVar("DO", bound=OscDawOptions)
PM = TypeVar("PM", bound=PendingMarker)


class OscDaw(Device[DO], Generic[DO, PM]):
    """Base of the OSC DAW drivers (see the module docstring), generic over the driver's
    options and its pending-marker type."""

    handles: ClassVar[frozenset[type[Command]]] = frozenset(
        {Play, Stop, SetRecord, Locate, SetTrackArm, SetTrackMute, SetTrackSolo, SetTrackFader, AddMarker}
    )
    feedback = "none"
    min_interval: ClassVar[float] = 0.02
    #: The DAW's name in messages ("Ardour did not answer OSC at ...").
    daw: ClassVar[str]
    #: The address of the DAW's record toggle, and what its state is called in the warning
    #: "<record_state> state unknown, not toggling blind".
    record_toggle: ClassVar[str]
    record_state: ClassVar[str]
    #: Counters, space-separated, in the order ``stats()`` lists them (the common ones not named
    #: come last).
    stat_keys: ClassVar[str] = COMMON_STATS
    max_queue: ClassVar[int] = MAX_QUEUE
    #: The starting state comes as a burst: after :meth:`_answered`, wait until the DAW has been
    #: quiet this long (None: :meth:`_answered` says when the state is complete).
    burst_quiet: ClassVar[float | None] = None
    #: Shortest wait of the receive loop.
    tick_floor: ClassVar[float] = 0.0
    #: The driver's module logger (messages of the base are logged under the driver's name).
    _log: ClassVar[logging.Logger] = log

    def __init__(self, name: str, options: DO, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        self._clock: Callable[[], float] = self.ctx.clock or time.monotonic
        self._endpoint: UdpEndpoint | None = None
        self._target: Address = (options.host, options.port)
        self._queue = EventQueue(self.max_queue)
        self._stats: dict[str, int] = dict.fromkeys(f"{self.stat_keys} {COMMON_STATS}".split(), 0)
        self._reset()

    def _reset(self) -> None:
        """Forget the DAW's state (before every connect). A driver extends it (super first)."""
        self._tracks: dict[int, dict[str, Any]] = {}
        self._playing: bool | None = None
        self._recording: bool | None = None
        self._rec_wanted: tuple[bool, float] | None = None
        self._pos = PositionLimiter(self.options.position_rate)
        self._pending: deque[PM] = deque()
        self._last_rx = self._clock()
        self._probe_sent: float | None = None
        self._syncing = True
        self._heard = False
        self._wake = asyncio.Event()  # set by every understood datagram

    # ------------------------------------------------------------------ what a driver supplies
    @abc.abstractmethod
    def _hello(self, now: float) -> float:
        """Send the handshake messages; return the seconds to wait for the answer before they
        are sent again."""

    def _answered(self) -> bool:
        """Whether the DAW has answered the handshake with its starting state."""
        return self._heard

    def _hello_again(self) -> bool:
        """Whether an answer asks for the handshake again at once (Ardour: "not registered")."""
        return False

    def _unanswered_hint(self) -> str:
        """Appended to "<DAW> did not answer OSC at ..." (a likely misconfiguration)."""
        return ""

    @abc.abstractmethod
    def _summary(self) -> str:
        """What "connected to <DAW>" says in parentheses ("12 tracks, 48000 Hz")."""

    @abc.abstractmethod
    def _liveness(self, now: float) -> float:
        """Raise DeviceLost when the DAW is gone; send probes; return the seconds until this
        must run again."""

    @abc.abstractmethod
    def _handle(self, address: str, args: OscArgs) -> bool:
        """Apply one feedback message; False if it is not one the driver uses. ValueError,
        IndexError and TypeError count it as bad."""

    @abc.abstractmethod
    def _playhead(self) -> float | None:
        """The DAW's last reported playhead in seconds (None: unknown)."""

    @abc.abstractmethod
    def _play(self) -> None: ...

    @abc.abstractmethod
    def _stop(self) -> None: ...

    def _record(self, on: bool) -> None:
        self._toggle_record(on)

    @abc.abstractmethod
    def _locate(self, seconds: float) -> None: ...

    @abc.abstractmethod
    def _track_command(self, cmd: TrackCommand) -> None: ...

    @abc.abstractmethod
    def _add_marker(self, cmd: AddMarker) -> None:
        """Send the marker. One whose answer comes later goes to ``self._pending`` (in deadline
        order) and to :meth:`_marker_timed_out` if the answer does not come by its deadline."""

    def _marker_timed_out(self, m: PM) -> None:
        """The DAW did not answer for marker ``m`` within ``MARKER_WAIT``: report it anyway."""
        self._emit(MarkerAdded(m.label, None, None, m.tag))

    def _goodbye(self) -> None:
        """Messages sent before the socket closes (Ardour: unsubscribe)."""

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        self._reset()
        self._queue = EventQueue(self.max_queue)  # a fresh, unflooded queue per connection
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
        while not self._answered():
            now = self._clock()
            left = deadline - now
            if left <= 0:
                raise DeviceUnavailable(
                    f"{self.daw} did not answer OSC at {o.host}:{o.port} within {o.connect_timeout:g} s"
                    + self._unanswered_hint()
                )
            until = now + min(self._hello(now), left)
            while not self._answered() and not self._hello_again():
                wait = until - self._clock()
                if wait <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        if self.burst_quiet is not None:  # the burst ends when the DAW goes quiet for a moment
            async with asyncio.timeout(max(0.2, deadline - self._clock()) + 1.0):
                while self._clock() - self._last_rx < self.burst_quiet:  # noqa: ASYNC110 - bounded
                    await asyncio.sleep(0.05)
        # The starting state is known: report it as one consistent picture (values only, no
        # reset first: the bridge's state changes only where the DAW's really differs).
        self._syncing = False
        self._emit_tracks()
        self._emit(TransportChanged(playing=bool(self._playing), recording=bool(self._recording)))
        self._emit_position(force=True)
        summary = self._summary()
        self._log.info("%s: connected to %s at %s:%d (%s)", self.name, self.daw, o.host, o.port, summary)

    async def __aexit__(self, *exc: object) -> None:
        if self._endpoint is not None and not self._endpoint.closed:
            with contextlib.suppress(DeviceError):
                self._goodbye()
        self._close()

    def _close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    # ------------------------------------------------------------------ receive
    async def receive(self) -> AsyncIterator[Inbound]:
        while True:
            if self._endpoint is None or self._endpoint.closed:
                raise DeviceLost(f"{self.daw} OSC socket closed")
            self._queue.raise_if_flooded(self.daw)
            if not self._queue.empty():
                yield self._queue.get_nowait()
                continue
            now = self._clock()
            wait = self._tick(now)
            left = self._pos.flush_in(now)
            if left is not None:
                if left <= 0:
                    self._emit_position(force=True)
                    continue
                wait = min(wait, left)
            event = await self._next_event(max(self.tick_floor, wait))
            if event is not None:
                yield event

    def _tick(self, now: float) -> float:
        """Run the timers (marker deadlines, liveness); return the seconds until they are due."""
        while self._pending and self._pending[0].deadline <= now:
            self._marker_timed_out(self._pending.popleft())
        wait = self._liveness(now)
        if self._pending:
            wait = min(wait, max(0.01, self._pending[0].deadline - now))
        return wait

    async def _next_event(self, wait: float) -> Event | None:
        """The next queued event, or None after ``wait`` seconds."""
        try:
            async with asyncio.timeout(wait):
                return await self._queue.get()
        except TimeoutError:
            return None

    def _probe_on_silence(self, now: float, after: float, timeout: float, what: str, *probe: Any) -> float:
        """Liveness of a DAW without heartbeat: after ``after`` s without a message, send
        ``probe`` (address and arguments of something the DAW answers); no message within
        ``timeout`` after it: DeviceLost ("<DAW> did not answer <what> within ...")."""
        if self._probe_sent is not None:
            if self._last_rx >= self._probe_sent:
                self._probe_sent = None
            elif now - self._probe_sent > timeout:
                raise DeviceLost(f"{self.daw} did not answer {what} within {timeout:g} s")
        elif now - self._last_rx > after:
            self._probe_sent = now
            self._probe(*probe)
        if self._probe_sent is not None:
            return self._probe_sent + timeout - now + 0.01
        return self._last_rx + after - now + 0.01

    # ------------------------------------------------------------------ send
    async def send(self, message: Outbound) -> None:
        if not isinstance(message, Command):
            return  # feedback = "none": nothing else is routed here
        if isinstance(message, Play):
            self._play()
        elif isinstance(message, Stop):
            self._stop()
        elif isinstance(message, SetRecord):
            self._record(message.on)
        elif isinstance(message, Locate):
            self._locate(message.seconds)
        elif isinstance(message, SetTrackArm | SetTrackMute | SetTrackSolo | SetTrackFader):
            self._track_command(message)
        elif isinstance(message, AddMarker):
            self._add_marker(message)
        else:
            self._stats["ignored"] += 1

    def _toggle_record(self, on: bool) -> None:
        """Send the DAW's record toggle only when its record state is known and differs from
        ``on`` (never blind); already there: report it again, so the sender is confirmed."""
        now = self._clock()
        effective = self._recording
        if self._rec_wanted is not None and now - self._rec_wanted[1] < TOGGLE_WAIT:
            effective = self._rec_wanted[0]  # a toggle is in flight: the DAW will end up there
        if effective is None:
            self._log.warning("%s: %s state unknown, not toggling blind", self.name, self.record_state)
            return
        if effective == on:
            if self._recording == on:
                self._emit(TransportChanged(recording=on))
            return
        self._rec_wanted = (on, now)
        self._tx(self.record_toggle)

    @staticmethod
    def _track_value(cmd: TrackCommand) -> tuple[str, int | float]:
        """The track field a command sets ("arm", "mute", "solo", "fader") and the value to send:
        0/1, or the fader clamped to 0-1."""
        if isinstance(cmd, SetTrackFader):
            return "fader", min(1.0, max(0.0, float(cmd.value)))
        return _TRACK_FIELDS[type(cmd)], 1 if cmd.on else 0

    def _tx(self, address: str, *args: Any) -> None:
        """Send one OSC message to the DAW; DeviceError when it cannot be."""
        try:
            data = encode(address, *args)
        except ValueError as exc:
            raise DeviceError(f"cannot encode {address}: {exc}") from exc
        self._tx_raw(data)

    def _tx_raw(self, data: bytes) -> None:
        if self._endpoint is None:
            raise DeviceUnavailable(f"{self.daw} OSC socket is not open")
        self._endpoint.sendto(data, self._target)
        self._stats["tx"] += 1

    def _probe(self, address: str, *args: Any) -> None:
        """Send a liveness or registration query (counted as ``probes``)."""
        self._stats["probes"] += 1
        self._tx(address, *args)

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    # ------------------------------------------------------------------ feedback
    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if dispatch(data, self._handle, self._stats):
            self._last_rx = self._clock()
            self._heard = True
            self._wake.set()

    def _emit(self, event: Event) -> None:
        if not self._queue.put_event(event):
            self._stats["overflow"] += 1  # receive() turns this into DeviceLost (full resync)

    def _emit_position(self, force: bool = False) -> None:
        seconds = self._playhead()
        if seconds is None or self._syncing:
            return
        if self._pos.due(seconds, bool(self._playing), self._clock(), force):
            self._emit(PositionChanged(seconds))

    def _emit_tracks(self) -> None:
        """Re-report every track (after a connect, or when the DAW's track list changed)."""
        for event in relearn_events(self._tracks):
            self._emit(event)

    def _set_track(self, n: int, key: str, value: Any) -> None:
        """Note one track value from the DAW; report it if it changed (not while syncing)."""
        track = self._tracks.setdefault(n, {})
        if track.get(key) == value:
            return
        track[key] = value
        if not self._syncing:
            self._emit(TrackChanged(n, **{key: value}))

    def _set_playing(self, playing: bool) -> bool:
        """Note whether the DAW rolls; True (and reported unless syncing) if that changed."""
        if playing == self._playing:
            return False
        self._playing = playing
        if not self._syncing:
            self._emit(TransportChanged(playing=playing))
        return True

    def _record_feedback(self, on: bool) -> None:
        """The DAW's record state (its feedback): ends a toggle in flight, reported if changed."""
        if self._rec_wanted is not None and self._rec_wanted[0] == on:
            self._rec_wanted = None
        if on != self._recording:
            self._recording = on
            if not self._syncing:
                self._emit(TransportChanged(recording=on))
