"""The OSC DAW base (bridge/devices/_osc_daw.py) through a minimal driver, against an in-process
peer: handshake retry, no answer, the never-blind record toggle, the flood limit, stats order.

``ToyDaw`` is also the measure of what a third DAW driver needs on the base: a DAW with
``/hello`` (answered with its state), ``/play`` ``/stop`` ``/record`` (a toggle), ``/time``,
``/track/<n>/<field>`` and no heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from peers.recorder import Recorder

from bridge.devices._osc import OscArgs, decode, encode
from bridge.devices._osc_daw import OscDaw, PendingMarker, TrackCommand, flag, number
from bridge.errors import DeviceLost, DeviceUnavailable
from bridge.vocab import (
    AddMarker,
    MarkerAdded,
    Play,
    SetRecord,
    SetTrackMute,
    TrackChanged,
    TracksReset,
    TransportChanged,
)

WAIT = 5.0
log = logging.getLogger("toy_daw")


@dataclass(frozen=True)
class ToyOptions:
    host: str = "127.0.0.1"
    port: int = 0
    local_host: str = "127.0.0.1"
    local_port: int = 0
    connect_timeout: float = 2.0
    position_rate: float = 10.0
    probe_interval: float = 3.0
    probe_timeout: float = 1.5


class ToyDaw(OscDaw[ToyOptions, PendingMarker]):
    kind: ClassVar[str] = "toy"
    daw: ClassVar[str] = "Toy"
    record_toggle: ClassVar[str] = "/record"
    record_state: ClassVar[str] = "Toy record"
    stat_keys: ClassVar[str] = "rx unknown_track"
    burst_quiet: ClassVar[float | None] = 0.05  # /hello is answered with a burst of the state
    _log = log
    Options: ClassVar[type[ToyOptions]] = ToyOptions

    def _reset(self) -> None:
        super()._reset()
        self._seconds: float | None = None

    def _hello(self, now: float) -> float:
        self._tx("/hello", self._endpoint.local_address[1] if self._endpoint else 0)
        return 0.1

    def _summary(self) -> str:
        return f"{len(self._tracks)} tracks"

    def _liveness(self, now: float) -> float:
        o = self.options
        return self._probe_on_silence(now, o.probe_interval, o.probe_timeout, "a hello", "/hello", 0)

    def _playhead(self) -> float | None:
        return self._seconds

    def _play(self) -> None:
        self._tx("/play")

    def _stop(self) -> None:
        self._tx("/stop")

    def _locate(self, seconds: float) -> None:
        self._tx("/time", max(0.0, seconds))

    def _track_command(self, cmd: TrackCommand) -> None:
        what, value = self._track_value(cmd)
        self._tx(f"/track/{cmd.track}/{what}", value)

    def _add_marker(self, cmd: AddMarker) -> None:
        self._tx("/marker", cmd.label)
        self._emit(MarkerAdded(cmd.label, self._seconds, None, cmd.tag))

    def _handle(self, address: str, args: OscArgs) -> bool:
        if address == "/time":
            self._seconds = number(args[0])
            self._emit_position()
        elif address in ("/play", "/stop"):
            if flag(args[0]):
                self._set_playing(address == "/play")
        elif address == "/record":
            self._record_feedback(flag(args[0]))
        elif address.startswith("/track/"):
            _, _, n, key = address.split("/")
            self._set_track(int(n), key, args[0] if key == "name" else flag(args[0]))
        else:
            return False
        return True


class ToyPeer(asyncio.DatagramProtocol):
    """Answers ``/hello <port>`` (after ``ignore`` hellos) with two tracks and the transport;
    ``/record`` toggles its record state and reports it unless ``report_record`` is False."""

    def __init__(self, ignore: int = 0, report_record: bool = True) -> None:
        self.ignore = ignore
        self.report_record = report_record
        self.received: list[tuple[str, OscArgs]] = []
        self.recording = False
        self.reply: tuple[str, int] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send(self, address: str, *args: Any) -> None:
        assert self.reply is not None
        self.transport.sendto(encode(address, *args), self.reply)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        for address, args in decode(data):
            self.received.append((address, args))
            if address == "/hello":
                if args[0]:
                    self.reply = ("127.0.0.1", args[0])
                if self.hellos() <= self.ignore:
                    continue
                for n in (1, 2):
                    self.send(f"/track/{n}/name", f"Track {n}")
                    self.send(f"/track/{n}/mute", 0.0)
                self.send("/stop", 1.0)
                if self.report_record:
                    self.send("/record", 1.0 if self.recording else 0.0)
            elif address == "/record":
                self.recording = not self.recording
                if self.report_record:
                    self.send("/record", 1.0 if self.recording else 0.0)

    def hellos(self) -> int:
        return sum(1 for a, _ in self.received if a == "/hello")

    def count(self, address: str) -> int:
        return sum(1 for a, _ in self.received if a == address)


async def until(check: Any) -> None:
    async with asyncio.timeout(WAIT):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def rig(peer: ToyPeer, **kw: Any) -> AsyncIterator[tuple[ToyDaw, Recorder]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    driver = ToyDaw("toy", ToyOptions(port=transport.get_extra_info("sockname")[1], **kw))
    try:
        async with asyncio.timeout(WAIT):
            await driver.__aenter__()
        rec = Recorder(driver, wait=WAIT)
        try:
            yield driver, rec
        finally:
            await rec.stop()
            await driver.__aexit__(None, None, None)
    finally:
        transport.close()


async def test_handshake_is_sent_again_until_the_daw_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="toy_daw")
    peer = ToyPeer(ignore=2)
    async with rig(peer) as (driver, rec):
        assert peer.hellos() == 3  # two unanswered (0.1 s each), the third answered
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        assert rec.events[:4] == [
            TrackChanged(1, name="Track 1", mute=False),
            TrackChanged(2, name="Track 2", mute=False),
            TracksReset(first=3),
            TransportChanged(playing=False, recording=False),
        ]
        assert "toy: connected to Toy at 127.0.0.1:" in caplog.text and "(2 tracks)" in caplog.text
        await driver.send(SetTrackMute(2, True))
        await driver.send(Play())
        await until(lambda: peer.count("/play") == 1)
        assert ("/track/2/mute", [1]) in peer.received


async def test_no_answer_is_unavailable_and_closes_the_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        driver = ToyDaw("toy", ToyOptions(port=port, connect_timeout=0.3))
        with pytest.raises(
            DeviceUnavailable, match=rf"^Toy did not answer OSC at 127.0.0.1:{port} within 0.3 s$"
        ):
            async with asyncio.timeout(WAIT):
                await driver.__aenter__()
        assert driver._endpoint is None


async def test_record_is_never_toggled_blind(caplog: pytest.LogCaptureFixture) -> None:
    peer = ToyPeer(report_record=False)
    async with rig(peer) as (driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        await driver.send(SetRecord(True))  # the DAW never said whether it records
        await driver.send(Play())
        await until(lambda: peer.count("/play") == 1)
        assert peer.count("/record") == 0
        assert "toy: Toy record state unknown, not toggling blind" in caplog.text

    peer = ToyPeer()
    async with rig(peer) as (driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        await driver.send(SetRecord(True))
        await driver.send(SetRecord(True))  # the first toggle is in flight: not again
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.recording is True)
        m = rec.mark()
        await driver.send(SetRecord(True))  # already recording: confirmed again, not toggled
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.recording is True, start=m)
        assert peer.count("/record") == 1 and peer.recording
        await driver.send(SetRecord(False))
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.recording is False, start=m)
        assert peer.count("/record") == 2 and not peer.recording


async def test_a_flood_beyond_the_queue_is_a_lost_link(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ToyDaw, "max_queue", 20)
    peer = ToyPeer()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    driver = ToyDaw("toy", ToyOptions(port=transport.get_extra_info("sockname")[1]))
    try:
        async with asyncio.timeout(WAIT):
            await driver.__aenter__()
        for i in range(40):  # nobody reads receive(): the queue fills
            peer.send("/track/1/mute", float(i % 2))
        async with asyncio.timeout(WAIT):
            while driver.stats()["overflow"] == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        with pytest.raises(DeviceLost, match=r"^Toy feedback flood"):
            async with asyncio.timeout(WAIT):
                async for _ in driver.receive():
                    pass
    finally:
        await driver.__aexit__(None, None, None)
        transport.close()


def test_stats_list_the_drivers_order_then_the_common_counters() -> None:
    driver = ToyDaw("toy", ToyOptions())
    assert list(driver.stats()) == ["rx", "unknown_track", "tx", "bad", "ignored", "overflow", "probes"]
