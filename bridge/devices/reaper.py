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

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from bridge.devices._osc import OscArgs
from bridge.devices._osc_daw import MARKER_WAIT, OscDaw, PendingMarker, TrackCommand, flag, number
from bridge.options import in_range, port_check, positive
from bridge.vocab import AddMarker, MarkerAdded, TransportChanged

log = logging.getLogger(__name__)

ACTION_INSERT_MARKER = 40157  # Markers: Insert marker at current position
ACTION_REFRESH_SURFACES = 41743  # Control surface: Refresh all surfaces
_TRACK_FIELDS = {"name": "name", "recarm": "arm", "mute": "mute", "solo": "solo", "volume": "fader"}
_TRACK_PATHS = {"arm": "recarm", "mute": "mute", "solo": "solo", "fader": "volume"}


def _count_check(value: Any) -> str | None:
    return None if 1 <= value <= 1024 else "an integer 1-1024"


@dataclass(slots=True, eq=False)
class _PendingMarker(PendingMarker):
    number: int | None
    seconds: float | None
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


class ReaperOsc(OscDaw[ReaperOptions, _PendingMarker]):
    """REAPER as the studio's DAW, over OSC (UDP)."""

    kind: ClassVar[str] = "reaper"
    daw: ClassVar[str] = "REAPER"
    record_toggle: ClassVar[str] = "/record"
    record_state: ClassVar[str] = "REAPER record"
    stat_keys: ClassVar[str] = "rx tx bad ignored unknown_track overflow probes"
    burst_quiet: ClassVar[float | None] = 0.1  # the refresh burst is the starting state
    tick_floor: ClassVar[float] = 0.01
    max_backoff: ClassVar[float] = 2.0
    _log = log

    Options: ClassVar[type[ReaperOptions]] = ReaperOptions

    def _reset(self) -> None:
        super()._reset()
        self._bank = 1
        self._paused = False
        self._seconds: float | None = None
        self._seconds_at = 0.0
        self._markers: dict[int, list[Any]] = {}  # marker slot -> [number, name, time]
        self._known_numbers: set[int] = set()

    # ------------------------------------------------------------------ connect, liveness
    def _hello(self, now: float) -> float:
        o = self.options
        self._tx("/device/track/count", o.bank_size)
        self._tx("/device/marker/count", o.marker_count)
        self._tx("/device/track/bank/select", 1)
        self._tx("/action", o.probe_action)
        return 0.5

    def _unanswered_hint(self) -> str:
        return f" (is its device port set to {self.options.local_port}?)"

    def _summary(self) -> str:
        return f"{len(self._tracks)} tracks seen"

    def _liveness(self, now: float) -> float:
        o = self.options
        probe = ("/action", o.probe_action)  # refresh all surfaces: REAPER re-sends its state
        return self._probe_on_silence(now, o.probe_interval, o.probe_timeout, "a refresh", *probe)

    def _marker_timed_out(self, m: _PendingMarker) -> None:
        # no marker feedback (DEVICE_MARKER_COUNT 0?): report what we sent
        seconds = m.seconds if m.seconds is not None else self._position()
        self._emit(MarkerAdded(m.label, seconds, None if m.number is None else str(m.number), m.tag))

    # ------------------------------------------------------------------ send
    def _play(self) -> None:
        if self._playing and not self._paused:
            self._emit(TransportChanged(playing=True))
        else:
            self._tx("/play")

    def _stop(self) -> None:
        if self._playing is False and not self._recording and not self._paused:
            self._emit(TransportChanged(playing=False))
        else:
            self._tx("/stop")

    def _locate(self, seconds: float) -> None:
        self._tx("/time", max(0.0, float(seconds)))

    def _track_command(self, cmd: TrackCommand) -> None:
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
        what, value = self._track_value(cmd)
        self._tx(f"/track/{n - (bank - 1) * size}/{_TRACK_PATHS[what]}", value)

    def _add_marker(self, cmd: AddMarker) -> None:
        deadline = self._clock() + MARKER_WAIT
        if self.options.marker_mode == "action":
            known = frozenset(self._known_numbers)
            self._pending.append(_PendingMarker(cmd.label, cmd.tag, deadline, None, None, known))
            self._tx("/action", ACTION_INSERT_MARKER)
            return
        n = max(self._known_numbers | {self.options.marker_base - 1}) + 1
        self._known_numbers.add(n)
        seconds = self._position() or 0.0
        self._pending.append(_PendingMarker(cmd.label, cmd.tag, deadline, n, seconds, frozenset()))
        self._tx(f"/marker_id/{n}/time", float(seconds))
        self._tx(f"/marker_id/{n}/name", cmd.label)

    def _position(self) -> float | None:
        """The known play position, extrapolated while rolling."""
        if self._seconds is None:
            return None
        if self._playing:
            return self._seconds + (self._clock() - self._seconds_at)
        return self._seconds

    # ------------------------------------------------------------------ feedback
    def _playhead(self) -> float | None:
        return self._seconds

    def _handle(self, address: str, args: OscArgs) -> bool:
        if address == "/time":
            self._seconds, self._seconds_at = number(args[0]), self._clock()
            if self._seconds < 0:
                raise ValueError("negative time")
            self._emit_position()
            return True
        if address in ("/play", "/stop", "/pause", "/record"):
            self._transport(address[1:], flag(args[0]))
            return True
        if address.startswith("/track/"):
            return self._track_feedback(address, args)
        if address.startswith("/marker/"):
            return self._marker_feedback(address, args)
        return False

    def _transport(self, what: str, on: bool) -> None:
        if what == "record":
            self._record_feedback(on)
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
            self._set_playing(playing)

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
        value: Any
        if key == "name":
            value = args[0]
            if not isinstance(value, str):
                raise ValueError("bad track name")
        elif key == "fader":
            value = number(args[0])
            if not 0.0 <= value <= 1.0:
                raise ValueError("bad volume")
        else:
            value = flag(args[0])
        self._set_track((self._bank - 1) * self.options.bank_size + rel, key, value)
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
            slot[2] = number(args[0])
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
