"""A fake REAPER that speaks the addresses of REAPER's shipped ``Default.ReaperOSC`` pattern file.

REAPER cannot run on this machine, so the REAPER driver is tested against this model. It is
deliberately strict: it understands only the default patterns (see protocols.md §4), keeps
REAPER's bank semantics and sends feedback the way the pattern file describes.

* Listens on ``127.0.0.1:<port>`` (REAPER's "local listen port"), sends feedback to the
  configured device address (REAPER's "device IP/port"), never to the sender's port.
* Model: transport (play/stop/record/pause, time in seconds advancing while rolling), tracks
  (name, recarm, mute, solo, volume), ``DEVICE_TRACK_COUNT`` (default 8) and the current track
  bank; ``/track/@/...`` indices are 1-based *within the current bank*, and track feedback is
  sent only for the tracks of the current bank.
* Markers: ``/action 40157`` (or ``/action/40157``) inserts a marker at the play position;
  ``/marker_id/<N>/time`` and ``/marker_id/<N>/name`` write marker N, creating it if absent.
  Marker feedback (``/marker/@/name``, ``/marker/@/number/str``, ``/marker/@/time``) is sent
  only while ``DEVICE_MARKER_COUNT`` > 0 (default 0, set with ``/device/marker/count``).
* ``/action 41743`` (control surface: refresh all surfaces) re-sends all feedback.
* ``silent = True`` makes it ignore everything (a hung or closed REAPER).

Feedback values use OSC floats for ``b``/``t``/``n``/``f`` patterns and strings for ``s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

ACTION_INSERT_MARKER = 40157
ACTION_REFRESH_SURFACES = 41743


@dataclass
class FakeTrack:
    name: str
    recarm: bool = False
    mute: bool = False
    solo: bool = False
    volume: float = 0.716


@dataclass
class FakeMarker:
    number: int
    time: float
    name: str = ""


@dataclass
class FakeReaper(asyncio.DatagramProtocol):
    device_port: int
    device_host: str = "127.0.0.1"
    tracks: list[FakeTrack] = field(default_factory=lambda: [FakeTrack(f"Track {i}") for i in range(1, 17)])
    time_interval: float = 0.05
    track_count: int = 8  # DEVICE_TRACK_COUNT
    marker_count: int = 0  # DEVICE_MARKER_COUNT
    bank: int = 1  # 1-based
    playing: bool = False
    recording: bool = False
    paused: bool = False
    silent: bool = False
    markers: list[FakeMarker] = field(default_factory=list)
    received: list[tuple[str, list[Any]]] = field(default_factory=list)
    sent: list[tuple[str, list[Any]]] = field(default_factory=list)
    unknown: list[tuple[str, list[Any]]] = field(default_factory=list)
    port: int = 0
    _pos: float = 0.0
    _pos_t: float = 0.0
    _transport: asyncio.DatagramTransport | None = None
    _ticker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeReaper:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", self.port))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._transport is not None:
            self._transport.close()

    async def __aenter__(self) -> FakeReaper:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ model
    @property
    def position(self) -> float:
        if self.playing:
            return self._pos + (time.monotonic() - self._pos_t)
        return self._pos

    def _set_position(self, seconds: float) -> None:
        self._pos, self._pos_t = max(0.0, seconds), time.monotonic()

    def _track(self, rel: int) -> tuple[int, FakeTrack] | None:
        """Bank-relative 1-based index -> (global 1-based number, track)."""
        if not 1 <= rel <= self.track_count:
            return None
        n = (self.bank - 1) * self.track_count + rel
        if n > len(self.tracks):
            return None
        return n, self.tracks[n - 1]

    def _rel(self, n: int) -> int | None:
        first = (self.bank - 1) * self.track_count + 1
        return n - first + 1 if first <= n < first + self.track_count else None

    # ------------------------------------------------------------------ feedback
    def send(self, address: str, *args: Any) -> None:
        if self._transport is None or self.silent:
            return
        b = OscMessageBuilder(address=address)
        for a in args:
            b.add_arg(a)
        self._transport.sendto(b.build().dgram, (self.device_host, self.device_port))
        self.sent.append((address, list(args)))

    def _fb_transport(self) -> None:
        self.send("/play", 1.0 if self.playing else 0.0)
        self.send("/stop", 0.0 if self.playing or self.paused else 1.0)
        self.send("/pause", 1.0 if self.paused else 0.0)
        self.send("/record", 1.0 if self.recording else 0.0)

    def _fb_time(self) -> None:
        self.send("/time", float(self.position))

    def _fb_track(self, n: int) -> None:
        rel = self._rel(n)
        if rel is None:
            return  # feedback only for the current bank
        t = self.tracks[n - 1]
        self.send(f"/track/{rel}/name", t.name)
        self.send(f"/track/{rel}/number/str", str(n))
        self.send(f"/track/{rel}/recarm", 1.0 if t.recarm else 0.0)
        self.send(f"/track/{rel}/mute", 1.0 if t.mute else 0.0)
        self.send(f"/track/{rel}/solo", 1.0 if t.solo else 0.0)
        self.send(f"/track/{rel}/volume", float(t.volume))

    def _fb_bank(self) -> None:
        first = (self.bank - 1) * self.track_count + 1
        for n in range(first, min(first + self.track_count, len(self.tracks) + 1)):
            self._fb_track(n)

    def _fb_markers(self) -> None:
        ordered = sorted(self.markers, key=lambda m: m.time)
        for i, m in enumerate(ordered[: self.marker_count], start=1):
            self.send(f"/marker/{i}/name", m.name)
            self.send(f"/marker/{i}/number/str", str(m.number))
            self.send(f"/marker/{i}/time", float(m.time))

    def refresh_all(self) -> None:
        self._fb_transport()
        self._fb_time()
        self._fb_bank()
        if self.marker_count > 0:
            self._fb_markers()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.time_interval)
            if self.playing:
                self._fb_time()

    # ------------------------------------------------------------------ input
    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.silent:
            return
        try:
            messages = [m.message for m in OscPacket(data).messages]
        except Exception:
            self.unknown.append(("<malformed>", [data]))
            return
        for msg in messages:
            args = list(msg.params)
            self.received.append((msg.address, args))
            if not self._dispatch(msg.address, args):
                self.unknown.append((msg.address, args))

    @staticmethod
    def _trigger(args: list[Any]) -> bool:
        """``t`` patterns: no argument or 1 triggers; 0 is a release and does nothing."""
        return not args or args[0] == 1

    def _dispatch(self, address: str, args: list[Any]) -> bool:
        parts = address.strip("/").split("/")
        head = parts[0]
        if head == "play" and len(parts) == 1:
            if self._trigger(args) and not self.playing:
                self._set_position(self.position)
                self.playing, self.paused = True, False
                self._fb_transport()
            return True
        if head == "stop" and len(parts) == 1:
            if self._trigger(args):
                self._set_position(self.position)
                self.playing = self.recording = self.paused = False
                self._fb_transport()
                self._fb_time()
            return True
        if head == "pause" and len(parts) == 1:
            if self._trigger(args):
                self._set_position(self.position)
                self.paused = not self.paused if (self.playing or self.paused) else False
                self.playing = False if self.paused else self.playing
                self._fb_transport()
            return True
        if head == "record" and len(parts) == 1:
            if self._trigger(args):
                # REAPER's record button: from stop it starts recording (and rolling);
                # while recording it stops.
                self._set_position(self.position)
                if self.recording:
                    self.recording = self.playing = False
                else:
                    self.recording = self.playing = True
                self._fb_transport()
            return True
        if head == "time" and len(parts) == 1 and args and isinstance(args[0], float | int):
            self._set_position(float(args[0]))
            self._fb_time()
            return True
        if head == "action":
            if len(parts) == 1 and args and isinstance(args[0], int):
                return self._action(args[0])
            if len(parts) == 2 and parts[1].isdigit() and self._trigger(args):
                return self._action(int(parts[1]))
            return False
        if head == "track" and len(parts) >= 3 and parts[1].isdigit():
            return self._track_msg(int(parts[1]), parts[2:], args)
        if head == "marker_id" and len(parts) == 3 and parts[1].isdigit():
            return self._marker_id(int(parts[1]), parts[2], args)
        if head == "device":
            return self._device(parts[1:], args)
        return False

    def _action(self, cmd: int) -> bool:
        if cmd == ACTION_INSERT_MARKER:
            number = max((m.number for m in self.markers), default=0) + 1
            self.markers.append(FakeMarker(number, round(self.position, 6)))
            if self.marker_count > 0:
                self._fb_markers()
            return True
        if cmd == ACTION_REFRESH_SURFACES:
            self.refresh_all()
            return True
        return False

    def _track_msg(self, rel: int, what: list[str], args: list[Any]) -> bool:
        found = self._track(rel)
        if found is None:
            return False
        n, t = found
        key = "/".join(what)
        attrs = {"recarm": "recarm", "mute": "mute", "solo": "solo"}
        if key in attrs and args and args[0] in (0, 1):
            setattr(t, attrs[key], bool(args[0]))
        elif key.endswith("/toggle") and key[:-7] in attrs and self._trigger(args):
            setattr(t, attrs[key[:-7]], not getattr(t, attrs[key[:-7]]))
        elif key == "volume" and args and isinstance(args[0], float | int):
            t.volume = min(1.0, max(0.0, float(args[0])))
        elif key == "name" and args and isinstance(args[0], str):
            t.name = args[0]
        else:
            return False
        self._fb_track(n)
        return True

    def _marker_id(self, number: int, what: str, args: list[Any]) -> bool:
        if not args:
            return False
        marker = next((m for m in self.markers if m.number == number), None)
        if marker is None:
            marker = FakeMarker(number, round(self.position, 6))
            self.markers.append(marker)
        if what == "time" and isinstance(args[0], float | int):
            marker.time = float(args[0])
        elif what == "name" and isinstance(args[0], str):
            marker.name = args[0]
        else:
            return False
        if self.marker_count > 0:
            self._fb_markers()
        return True

    def _device(self, parts: list[str], args: list[Any]) -> bool:
        key = "/".join(parts)
        if key == "track/count" and args and isinstance(args[0], int) and args[0] > 0:
            self.track_count = args[0]
            self.bank = 1
            self._fb_bank()
            return True
        if key == "marker/count" and args and isinstance(args[0], int) and args[0] >= 0:
            self.marker_count = args[0]
            self._fb_markers()
            return True
        if key == "track/bank/select" and args and isinstance(args[0], int) and args[0] >= 1:
            self.bank = args[0]
            self._fb_bank()
            return True
        if key in ("track/bank/+", "track/bank/-") and self._trigger(args):
            self.bank = max(1, self.bank + (1 if key.endswith("+") else -1))
            self._fb_bank()
            return True
        return False

    # ------------------------------------------------------------------ test helpers
    def track_by_name(self, name: str) -> FakeTrack:
        return next(t for t in self.tracks if t.name == name)
