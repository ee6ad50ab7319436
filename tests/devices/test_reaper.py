"""ReaperOsc against the fake REAPER (tests/peers/fake_reaper.py), which speaks the addresses of
REAPER's default pattern file."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from peers.fake_reaper import FakeReaper
from peers.recorder import Recorder
from peers.recorder import track_state as tracks_of

from bridge.devices._osc import encode
from bridge.devices.reaper import ReaperOsc
from bridge.errors import DeviceLost, DeviceUnavailable
from bridge.vocab import (
    AddMarker,
    Locate,
    MarkerAdded,
    Play,
    PositionChanged,
    SetRecord,
    SetTrackArm,
    SetTrackFader,
    SetTrackMute,
    SetTrackSolo,
    Stop,
    TrackChanged,
    TracksReset,
    TransportChanged,
)

WAIT = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def rig(**kw: Any) -> AsyncIterator[tuple[FakeReaper, ReaperOsc, Recorder]]:
    device_port = free_port()
    fake = FakeReaper(device_port=device_port)
    await fake.start()
    opts = ReaperOsc.Options(port=fake.port, local_port=device_port, **kw)
    driver = ReaperOsc("reaper", opts)
    try:
        async with asyncio.timeout(WAIT):
            await driver.__aenter__()
        rec = Recorder(driver, wait=WAIT)
        try:
            yield fake, driver, rec
        finally:
            await rec.stop()
            await driver.__aexit__(None, None, None)
    finally:
        await fake.close()


async def test_connect_learns_state_with_a_raised_bank_size() -> None:
    async with rig(bank_size=16) as (fake, _driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        assert ("/device/track/count", [16]) in fake.received
        assert ("/action", [41743]) in fake.received
        # every track's values, then only the tracks beyond the last one are forgotten
        resets = [e for e in rec.events if isinstance(e, TracksReset)]
        assert resets == [TracksReset(first=17)]
        assert all(isinstance(e, TrackChanged) for e in rec.events[: rec.events.index(resets[0])])
        tracks = tracks_of(rec.events)
        assert sorted(tracks) == list(range(1, 17))  # all 16, not just the default 8
        assert tracks[12]["name"] == "Track 12" and tracks[12]["arm"] is False
        assert abs(tracks[1]["fader"] - 0.716) < 1e-6


async def test_transport_record_and_markers() -> None:
    async with rig(bank_size=8) as (fake, driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        await driver.send(SetRecord(True))
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.recording is True)
        assert fake.recording and fake.playing
        n_record = sum(1 for a, _ in fake.received if a == "/record")
        await driver.send(SetRecord(True))  # already recording: never toggle blind
        await asyncio.sleep(0.2)
        assert sum(1 for a, _ in fake.received if a == "/record") == n_record and fake.recording
        await rec.wait_for(lambda e: isinstance(e, PositionChanged) and e.seconds > 0.3)

        await driver.send(AddMarker("Take 1", tag=7))
        m1 = await rec.wait_for(lambda e: isinstance(e, MarkerAdded) and e.tag == 7)
        await asyncio.sleep(0.3)
        await driver.send(AddMarker("Take 2", tag=8))
        m2 = await rec.wait_for(lambda e: isinstance(e, MarkerAdded) and e.tag == 8)
        assert {(m.name, m.number) for m in fake.markers} == {("Take 1", 1), ("Take 2", 2)}
        by_name = {m.name: m for m in fake.markers}
        assert m1.seconds == by_name["Take 1"].time and m2.seconds == by_name["Take 2"].time
        assert m1.marker_id == "1" and m2.marker_id == "2"
        assert abs(m1.seconds - fake.position) < 1.0 and m1.seconds < m2.seconds
        assert any(a == "/marker_id/1/name" and v == ["Take 1"] for a, v in fake.received)

        await driver.send(SetRecord(False))
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.recording is False)
        await driver.send(Play())
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is True)
        m = rec.mark()
        await driver.send(Stop())
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is False, start=m)
        m = rec.mark()
        await driver.send(Locate(42.5))
        await rec.wait_for(lambda e: isinstance(e, PositionChanged) and e.seconds == 42.5, start=m)
        assert fake.position == 42.5


async def test_marker_by_action_is_named_after_it_appears() -> None:
    async with rig(marker_mode="action") as (fake, driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        await driver.send(Locate(3.0))
        await rec.wait_for(lambda e: isinstance(e, PositionChanged) and e.seconds == 3.0)
        await driver.send(AddMarker("Verse", tag=1))
        m = await rec.wait_for(lambda e: isinstance(e, MarkerAdded))
        assert ("/action", [40157]) in fake.received
        assert m.label == "Verse" and m.seconds == 3.0 and m.marker_id == "1" and m.tag == 1
        assert [(x.number, x.name, x.time) for x in fake.markers] == [(1, "Verse", 3.0)]


async def test_arm_track_beyond_first_bank() -> None:
    async with rig(bank_size=8) as (fake, driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        assert sorted(tracks_of(rec.events)) == list(range(1, 9))  # one bank of 8
        await driver.send(SetTrackArm(11, True))
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 11 and e.arm is True)
        assert fake.tracks[10].recarm and not fake.tracks[2].recarm  # track 11, not track 3
        assert ("/device/track/bank/select", [2]) in fake.received
        assert ("/track/3/recarm", [1]) in fake.received
        assert tracks_of(rec.events)[11]["name"] == "Track 11"
        # Back to bank 1 for track 2: mute and solo, bank state stays consistent.
        await driver.send(SetTrackMute(2, True))
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 2 and e.mute is True)
        await driver.send(SetTrackSolo(16, True))
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 16 and e.solo is True)
        await driver.send(SetTrackFader(9, 0.5))
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 9 and e.fader == 0.5)
        assert fake.tracks[1].mute and fake.tracks[15].solo and fake.tracks[8].volume == 0.5
        assert fake.bank == 2 and not fake.unknown
        # A rename in REAPER (bank 2 is current) is reported with the global number.
        fake.tracks[12].name = "Lead Vox"
        fake.refresh_all()
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 13 and e.name == "Lead Vox")


async def test_malformed_feedback_is_counted_and_dropped() -> None:
    async with rig(bank_size=8) as (fake, driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        before = tracks_of(rec.events)
        st0 = driver.stats()
        n0 = rec.mark()
        target = ("127.0.0.1", driver.options.local_port)
        bad = [
            b"junk",
            b"/record\x00,f",
            encode("/record", "yes"),
            encode("/record", 0.5),
            encode("/time", "now"),
            encode("/time", -3.0),
            encode("/track/1/recarm", 2),
            encode("/track/1/name", 5),
            encode("/track/1/volume", 7.5),
            encode("/marker/1/number/str", "x"),
            encode("/play"),
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for b in bad:
                s.sendto(b, target)
            s.sendto(encode("/track/99/mute", 1.0), target)  # beyond the bank size
            s.sendto(encode("/no/such/thing", 1), target)
        async with asyncio.timeout(WAIT):
            while driver.stats()["rx"] < st0["rx"] + len(bad) + 2:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        st = driver.stats()
        assert st["bad"] - st0["bad"] == len(bad)
        assert st["unknown_track"] - st0["unknown_track"] == 1
        assert st["ignored"] - st0["ignored"] >= 1
        assert tracks_of(rec.events) == before
        assert not [e for e in rec.events[n0:] if isinstance(e, TrackChanged | TransportChanged)]
        await driver.send(SetTrackArm(1, True))
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 1 and e.arm is True)
        assert fake.tracks[0].recarm


async def test_silent_reaper_is_lost_and_absent_reaper_unavailable() -> None:
    async with rig(probe_interval=0.3, probe_timeout=0.3) as (fake, _driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        await asyncio.sleep(0.8)  # idle: probes are answered, still connected
        assert rec.error is None and ("/action", [41743]) in fake.received[3:]
        fake.silent = True
        async with asyncio.timeout(WAIT):
            with contextlib.suppress(DeviceLost):
                await rec.task
        assert isinstance(rec.error, DeviceLost)

    port = free_port()
    driver = ReaperOsc("reaper", ReaperOsc.Options(port=port, local_port=free_port(), connect_timeout=0.4))
    with pytest.raises(DeviceUnavailable):
        async with asyncio.timeout(WAIT):
            await driver.__aenter__()


async def test_feedback_flood_beyond_the_queue_forces_a_full_resync(monkeypatch: pytest.MonkeyPatch) -> None:
    """More events than the driver queues (nobody reading for a while): rather than drop a
    fact, the driver reports the link lost, so the supervisor reconnects and relearns it all."""
    monkeypatch.setattr(ReaperOsc, "max_queue", 300)  # the same logic, a smaller flood
    device_port = free_port()
    fake = FakeReaper(device_port=device_port)
    await fake.start()
    driver = ReaperOsc("reaper", ReaperOsc.Options(port=fake.port, local_port=device_port, bank_size=8))
    try:
        async with asyncio.timeout(WAIT):
            await driver.__aenter__()
        target = ("127.0.0.1", device_port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
            for i in range(1000):
                s.sendto(encode("/track/1/mute", float(i % 2)), target)
                if i % 200 == 199:
                    await asyncio.sleep(0.002)  # let the loop read; nobody drains receive()
        async with asyncio.timeout(WAIT):
            while driver.stats()["overflow"] == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        with pytest.raises(DeviceLost, match="feedback flood"):
            async with asyncio.timeout(WAIT):
                async for _ in driver.receive():
                    pass
        await driver.__aexit__(None, None, None)
        await asyncio.sleep(0.3)  # the supervisor's first backoff step; the old socket closes
        # a fresh connect relearns the state and is not flooded any more
        async with asyncio.timeout(WAIT):
            await driver.__aenter__()
        async with asyncio.timeout(WAIT):
            first = await anext(driver.receive())
        assert isinstance(first, TrackChanged) and first.track == 1 and first.name is not None
    finally:
        await driver.__aexit__(None, None, None)
        await fake.close()
