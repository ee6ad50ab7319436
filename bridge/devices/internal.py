"""The bridge's own transport: a timeline for takes and cues when no DAW is configured.

Role ``daw``. Play / stop / record / locate run a playhead on the monotonic clock;
``SetRecord(True)`` from stop starts rolling in record (like MMC record strobe or a
tape machine's REC+PLAY); ``SetRecord(False)`` punches out and keeps rolling; ``Stop``
stops and leaves record. Tracks are virtual: arm, mute, solo and fader are reported
back as facts at once. While rolling the position is reported ``position_rate`` times a
second; when stopped no timer runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar

from bridge.devices.base import DeviceContext, SyncDevice
from bridge.options import in_range, positive
from bridge.vocab import (
    AddMarker,
    Command,
    Event,
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


@dataclass(frozen=True)
class InternalOptions:
    tracks: int = field(default=16, metadata={"check": in_range(1, 512)})
    names: list[str] = field(default_factory=list)
    position_rate: float = field(default=10.0, metadata={"check": positive})


class InternalTransport(SyncDevice[InternalOptions]):
    kind: ClassVar[str] = "internal"
    handles: ClassVar[frozenset[type[Command]]] = frozenset(
        {Play, Stop, SetRecord, Locate, SetTrackArm, SetTrackMute, SetTrackSolo, SetTrackFader, AddMarker}
    )
    Options: ClassVar[type[InternalOptions]] = InternalOptions
    reports_all_tracks: ClassVar[bool] = True

    def __init__(
        self, name: str, options: InternalOptions | None = None, ctx: DeviceContext | None = None
    ) -> None:
        super().__init__(name, options or InternalOptions(), ctx)
        self._clock = (ctx.clock if ctx and ctx.clock else None) or time.monotonic
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self.playing = False
        self.recording = False
        self._origin = 0.0  # position at _since
        self._since = self._clock()
        self._ticker: asyncio.Task[None] | None = None
        self._markers = 0
        self._count = max(self.options.tracks, len(self.options.names))

    def position(self) -> float:
        if self.playing:
            return self._origin + (self._clock() - self._since)
        return self._origin

    async def __aenter__(self) -> InternalTransport:
        self._emit(TransportChanged(playing=self.playing, recording=self.recording))
        self._emit(PositionChanged(self.position()))
        for n in range(1, self._count + 1):
            name = self.options.names[n - 1] if n <= len(self.options.names) else f"Track {n}"
            self._emit(TrackChanged(n, name=name, arm=False, mute=False, solo=False))
        if self.playing:
            self._start_ticker()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop_ticker()

    def _emit(self, event: Event) -> None:
        # Straight to the hub when nothing earlier is still queued (the facts of __aenter__
        # go through receive first): a confirmation then costs no loop turn.
        report = self.report_now
        if report is not None and self._events.empty():
            report(event)
        else:
            self._events.put_nowait(event)

    async def receive(self) -> AsyncIterator[Event]:
        while True:
            yield await self._events.get()

    def _start_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick(self) -> None:
        interval = 1.0 / self.options.position_rate
        while self.playing:
            await asyncio.sleep(interval)
            self._emit(PositionChanged(round(self.position(), 6)))

    def _roll(self, playing: bool) -> None:
        if playing == self.playing:
            return
        self._origin = self.position()
        self._since = self._clock()
        self.playing = playing
        if playing:
            self._start_ticker()
        else:
            self._stop_ticker()

    def send_now(self, message: Outbound) -> None:
        kind = type(message)  # arm / mute / solo first, without a pattern match (the hot path)
        if kind is SetTrackArm or kind is SetTrackMute or kind is SetTrackSolo:
            assert isinstance(message, SetTrackArm | SetTrackMute | SetTrackSolo)
            track = message.track
            if type(track) is int and 1 <= track <= self._count:
                if kind is SetTrackArm:
                    self._emit(TrackChanged(track, arm=message.on))
                elif kind is SetTrackMute:
                    self._emit(TrackChanged(track, mute=message.on))
                else:
                    self._emit(TrackChanged(track, solo=message.on))
            return
        match message:
            case SetTrackFader(track=int(track), value=value) if 1 <= track <= self._count:
                self._emit(TrackChanged(track, fader=max(0.0, min(1.0, value))))
            case Play():
                self._roll(True)
                self._emit(TransportChanged(playing=True, recording=self.recording))
            case Stop():
                self._roll(False)
                self.recording = False
                self._emit(TransportChanged(playing=False, recording=False))
                self._emit(PositionChanged(round(self.position(), 6)))
            case SetRecord(on=on):
                self.recording = on
                if on:
                    self._roll(True)
                self._emit(TransportChanged(playing=self.playing, recording=on))
            case Locate(seconds=seconds):
                self._origin = max(0.0, seconds)
                self._since = self._clock()
                self._emit(PositionChanged(round(self._origin, 6)))
            case AddMarker(label=label, tag=tag):
                self._markers += 1
                self._emit(MarkerAdded(label, round(self.position(), 6), f"M{self._markers}", tag))
            case _:
                pass  # unknown tracks: no confirmation, the hub answers with a timeout error
