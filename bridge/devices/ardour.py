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
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from bridge.devices._ardour_markers import ArdourMarker, ArdourMarkers
from bridge.devices._osc import OscArgs
from bridge.devices._osc_daw import OscDaw, TrackCommand, flag
from bridge.devices.base import DeviceContext
from bridge.errors import DeviceError, DeviceLost
from bridge.options import in_range, port_check, positive
from bridge.vocab import AddMarker, Event

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
_STRIP_PATHS = {"arm": "recenable", "mute": "mute", "solo": "solo", "fader": "fader"}


def _nonneg_int(value: Any) -> str | None:
    return None if value >= 0 else "an integer >= 0"


def _local_port_check(value: Any) -> str | None:
    return None if value == 0 else port_check(value)


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


class ArdourOsc(OscDaw[ArdourOptions, ArdourMarker]):
    """Ardour as the studio's DAW, over OSC (UDP)."""

    kind: ClassVar[str] = "ardour"
    daw: ClassVar[str] = "Ardour"
    record_toggle: ClassVar[str] = "/rec_enable_toggle"
    record_state: ClassVar[str] = "global record"
    stat_keys: ClassVar[str] = (
        "rx tx bad ignored unknown_strip overflow connects probes restarts_seen markers_read_back"
    )
    #: While Ardour is away the driver polls its registration every ``probe_interval`` inside each
    #: connect attempt; a short pause between attempts keeps a returning Ardour from waiting.
    max_backoff: ClassVar[float] = 0.25
    reports_all_tracks: ClassVar[bool] = True
    _log = log

    Options: ClassVar[type[ArdourOptions]] = ArdourOptions

    def __init__(self, name: str, options: ArdourOptions, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        self._reconnect_now = False

    def retry_delay(self, attempt: int) -> float:
        if attempt == 0 and self._reconnect_now:
            self._reconnect_now = False
            return 0.0
        return super().retry_delay(attempt)

    def _reset(self) -> None:
        super()._reset()
        self._strip_list: list[tuple[int, str, bool, bool, bool]] = []
        self._collecting_list = False
        self._samples: int | None = None
        self._rate = float(self.options.sample_rate)
        self._frame_waiters: deque[Callable[[int], None]] = deque()
        self._markers = ArdourMarkers(self)
        self._got: set[str] = set()
        self._unregistered = asyncio.Event()  # Ardour answered: "no such surface" (new instance)
        self._subscribed_at: float | None = None
        self._probe_at = 0.0
        self._probing = False

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._stats["connects"] += 1
        return self

    def _hello(self, now: float) -> float:
        # Register, then poll the registration cheaply until the starting state is complete.
        # Ardour may be down or still starting (port not bound): the poll's first answer from
        # a (new) Ardour says "not registered" and the bridge registers at once. In Ardour's
        # "Manual" port mode that answer goes elsewhere: registering again every second covers it.
        o = self.options
        if self._subscribed_at is None or self._unregistered.is_set() or now - self._subscribed_at >= 1.0:
            assert self._endpoint is not None
            reply_port = self._endpoint.local_address[1]
            self._got.clear()
            self._frame_waiters.clear()
            self._unregistered.clear()
            self._tx("/set_surface", 0, o.strip_types, o.feedback_bits, GAINMODE_FADER, 0, 0, reply_port)
            self._tx("/strip/list")
            self._query_frame(self._on_sync_frame)
            self._subscribed_at = now
        else:
            self._probe("/set_surface")  # no arguments: Ardour answers this address's settings
        return o.probe_interval

    def _answered(self) -> bool:
        return {"list", "frame", "transport"} <= self._got

    def _hello_again(self) -> bool:
        return self._unregistered.is_set()

    def _summary(self) -> str:
        return f"{len(self._tracks)} tracks, {self._rate:g} Hz"

    def _on_sync_frame(self, samples: int) -> None:
        self._samples = samples
        self._got.add("frame")

    def _goodbye(self) -> None:
        self._tx("/set_surface", 0, 0, 0)  # unsubscribe: no feedback to a closed port

    def _close(self) -> None:
        self._markers.cancel()
        super()._close()

    # ------------------------------------------------------------------ liveness
    def _tick(self, now: float) -> float:
        if self._unregistered.is_set():
            self._stats["restarts_seen"] += 1
            self._reconnect_now = True  # the new Ardour is answering: no pause
            raise DeviceLost("Ardour restarted (it no longer knows the bridge's surface); re-registering")
        return super()._tick(now)

    def _liveness(self, now: float) -> float:
        o = self.options
        silent = now - self._last_rx
        if silent > o.heartbeat_timeout:
            raise DeviceLost(f"Ardour silent for {silent:.1f} s (no heartbeat)")
        wait = o.heartbeat_timeout - silent + 0.05
        self._probing = silent >= o.probe_after
        if not self._probing:
            return min(wait, o.probe_after - silent + 0.005)
        # A heartbeat is late: is this still the Ardour we registered with?
        if now >= self._probe_at:
            self._probe_at = now + o.probe_interval
            self._probe("/set_surface")
        return min(wait, max(0.005, self._probe_at - now))

    async def _next_event(self, wait: float) -> Event | None:
        if not self._probing:
            return await super()._next_event(wait)
        # probing: an answer saying "not registered" ends the wait at once
        get = asyncio.ensure_future(self._queue.get())
        restarted = asyncio.ensure_future(self._unregistered.wait())
        try:
            done, _ = await asyncio.wait((get, restarted), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            restarted.cancel()
            if not get.done():
                get.cancel()  # asyncio.Queue keeps the item for the next get()
        return get.result() if get in done else None

    # ------------------------------------------------------------------ send
    def _play(self) -> None:
        self._tx("/transport_play")

    def _stop(self) -> None:
        self._tx("/transport_stop")

    def _record(self, on: bool) -> None:
        """Record means "record now", as on the internal transport, REAPER and MMC record
        strobe: enable Ardour's global record and, when stopped, roll. Off punches out."""
        self._toggle_record(on)
        if on and not self._playing:
            self._tx("/transport_play")

    def _locate(self, seconds: float) -> None:
        sample = max(0, round(seconds * self._rate))
        if sample > 2**31 - 1:
            raise DeviceError(f"locate target {seconds:g} s is beyond Ardour's int32 sample range")
        self._tx("/locate", sample, 0)
        self._query_frame(self._on_frame)  # confirms even a locate to the current position

    def _track_command(self, cmd: TrackCommand) -> None:
        track = cmd.track
        if not isinstance(track, int) or track not in self._tracks:
            self._stats["unknown_strip"] += 1
            log.warning("%s: no track %r in Ardour (known: %s)", self.name, track, sorted(self._tracks))
            return
        what, value = self._track_value(cmd)
        self._tx(f"/strip/{_STRIP_PATHS[what]}", track, value)

    def _query_frame(self, then: Callable[[int], None]) -> None:
        self._frame_waiters.append(then)
        self._tx("/transport_frame")

    def _on_frame(self, samples: int) -> None:
        self._samples = samples
        self._emit_position(force=True)

    # --- markers (bridge/devices/_ardour_markers.py)
    def _add_marker(self, cmd: AddMarker) -> None:
        self._markers.add(cmd)

    def _marker_timed_out(self, m: ArdourMarker) -> None:
        self._markers.timed_out(m)

    def stats(self) -> dict[str, int]:
        out = super().stats()
        if self._endpoint is not None:
            out["udp_errors"] = self._endpoint.errors
        return out

    # ------------------------------------------------------------------ feedback
    def _seconds(self, samples: int | None) -> float | None:
        return None if samples is None else samples / self._rate

    def _playhead(self) -> float | None:
        return self._seconds(self._samples)

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
        if flag(args[0]):
            self._set_playing(True)

    def _h_stop(self, args: OscArgs) -> None:
        if flag(args[0]):
            self._set_playing(False)
        self._got.add("transport")

    def _set_playing(self, playing: bool) -> bool:
        changed = super()._set_playing(playing)
        if changed and not self._syncing:
            self._emit_position(force=True)
            if not playing:
                self._markers.start()
        return changed

    def _h_rec(self, args: OscArgs) -> None:
        self._record_feedback(flag(args[0]))

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
        flag(args[0])  # liveness only (_last_rx is updated for every handled message)

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
            arm = flag(args[7]) if len(args) > 7 else False
            if not self._collecting_list:
                self._collecting_list = True
                self._strip_list = []
            self._strip_list.append((ssid, name, flag(args[4]), flag(args[5]), arm))
            return
        if isinstance(kind, str):
            return  # busses, VCAs...: not tracks
        raise ValueError("bad /reply")

    def _finish_strip_list(self) -> None:
        entries, self._strip_list, self._collecting_list = self._strip_list, [], False
        old = self._tracks
        self._tracks = {
            n: {"name": name, "arm": arm, "mute": mute, "solo": solo, "fader": old.get(n, {}).get("fader")}
            for n, name, mute, solo, arm in entries
        }
        self._got.add("list")
        if not self._syncing:
            self._emit_tracks()  # Ardour re-sends the list when its strips change: re-report all

    # --- strips: /strip/<what> ssid value
    def _handle_strip(self, address: str, args: OscArgs) -> bool:
        what = address[7:]
        if what not in ("name", "recenable", "mute", "solo", "fader"):
            return False
        ssid = _ssid(args)
        if ssid not in self._tracks:
            if not self._syncing:
                self._stats["unknown_strip"] += 1
                return True
            self._tracks[ssid] = {}
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
            value = flag(args[1])
        self._set_track(ssid, "arm" if what == "recenable" else what, value)
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
