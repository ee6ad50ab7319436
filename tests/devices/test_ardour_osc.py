"""ArdourOsc against a real headless Ardour 7 (luasession, Dummy backend)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from peers.ardour import ArdourPeer
from peers.recorder import Recorder, track_state

from bridge.devices._osc import encode
from bridge.devices.ardour_osc import ArdourOsc
from bridge.errors import DeviceLost, DeviceUnavailable
from bridge.vocab import (
    AddMarker,
    Event,
    MarkerAdded,
    Play,
    PositionChanged,
    SetRecord,
    SetTrackArm,
    SetTrackMute,
    Stop,
    TrackChanged,
    TracksReset,
    TransportChanged,
)

pytestmark = pytest.mark.ardour

WAIT = 10.0  # generous: 2 shared cores


def opts(peer: ArdourPeer, **kw: Any) -> ArdourOsc.Options:
    return ArdourOsc.Options(port=peer.port, **kw)


@contextlib.asynccontextmanager
async def connected(peer: ArdourPeer, **kw: Any) -> AsyncIterator[tuple[ArdourOsc, Recorder]]:
    driver = ArdourOsc("ardour", opts(peer, **kw))
    async with asyncio.timeout(WAIT):
        await driver.__aenter__()
    rec = Recorder(driver, wait=WAIT)
    try:
        yield driver, rec
    finally:
        await rec.stop()
        await driver.__aexit__(None, None, None)


async def test_record_two_markers_and_session_file(ardour: ArdourPeer) -> None:
    async with connected(ardour) as (driver, rec):
        # Starting state learned from Ardour: a reset, then both tracks with their names.
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is False)
        assert isinstance(rec.events[0], TracksReset)
        tracks = track_state(rec.events)
        assert tracks[1]["name"] == "Audio 1" and tracks[2]["name"] == "Audio 2"
        assert tracks[2]["arm"] is False and tracks[1]["mute"] is False
        assert isinstance(tracks[1]["fader"], float)

        await driver.send(SetTrackArm(2, True))
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 2 and e.arm is True)
        await driver.send(SetRecord(True))
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.recording is True)
        m = rec.mark()
        await driver.send(SetRecord(True))  # already on: must not toggle it off, but confirm again
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.recording is True, start=m)
        await driver.send(Play())
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is True)
        await rec.wait_for(lambda e: isinstance(e, PositionChanged) and e.seconds > 0.5)

        await driver.send(AddMarker("Take 1", tag=11))
        first = await rec.wait_for(lambda e: isinstance(e, MarkerAdded) and e.tag == 11)
        await rec.wait_for(lambda e: isinstance(e, PositionChanged) and e.seconds > first.seconds + 0.4)
        await driver.send(AddMarker("Take 2", tag=12))
        second = await rec.wait_for(lambda e: isinstance(e, MarkerAdded) and e.tag == 12)
        await driver.send(Stop())
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is False, start=m)
        assert driver._recording is True or driver._recording is False  # known, not guessed

        assert first.label == "Take 1" and second.label == "Take 2"
        assert 0.5 < first.seconds < second.seconds
        assert first.marker_id is not None and int(first.marker_id) == round(first.seconds * 48000)

        # Ardour's own view, from its saved session file.
        await asyncio.to_thread(ardour.save)
        assert ardour.armed_tracks() == ["Audio 2"]
        marks = sorted(ardour.markers(), key=lambda m: m[1])
        assert len(marks) == 2, marks
        assert abs(marks[0][1] - first.seconds) < 1e-3 and abs(marks[1][1] - second.seconds) < 1e-3
        assert [p.name for p in ardour.take_files()] == ["Take1_Audio 2-1.wav"]
        assert ardour.take_files()[0].stat().st_size > 10_000  # about 1 s of audio was written
        assert driver.stats()["bad"] == 0


async def test_record_toggle_is_never_blind(ardour: ArdourPeer) -> None:
    async with connected(ardour) as (driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.recording is False)
        # Two "on" commands back to back: one toggle only, Ardour ends up recording.
        await driver.send(SetRecord(True))
        await driver.send(SetRecord(True))
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.recording is True)
        await asyncio.sleep(0.5)
        assert driver._recording is True
        await driver.send(SetRecord(False))
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.recording is False)
        # A rename in Ardour is reported as a TrackChanged name.
        ardour_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with ardour_sock:
            ardour_sock.sendto(encode("/strip/name", 1, "Lead Vox"), ("127.0.0.1", ardour.port))
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 1 and e.name == "Lead Vox")


async def test_malformed_feedback_is_counted_and_dropped(ardour: ArdourPeer) -> None:
    async with connected(ardour) as (driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        before = track_state(rec.events)
        stats0 = driver.stats()
        n0 = rec.mark()
        assert driver._endpoint is not None
        target = ("127.0.0.1", driver._endpoint.local_address[1])
        garbage = [
            b"\x00\x01garbage",
            b"#bundle\x00\x00\x00",
            b"/strip/mute\x00,i",  # truncated
            encode("/strip/mute", "one", 1),  # wrong types
            encode("/strip/recenable", 1, 7),  # not 0/1
            encode("/strip/name", 2, 42),
            encode("/strip/fader", 1, "loud"),
            encode("/transport_play", "yes"),
            encode("/position/samples", "-5"),
            encode("/position/samples", "abc"),
            encode("/reply"),
            encode("/strip/mute", 99, 1.0),  # unknown strip
            encode("/strip/solo", 0, 1.0),
            encode("/some/unknown/address", 1),
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                for g in garbage:
                    s.sendto(g, target)
            # A flood of unknown-strip values must not create tracks.
            for i in range(500):
                s.sendto(encode("/strip/mute", 1000 + i, 1.0), target)
        async with asyncio.timeout(WAIT):
            while driver.stats()["rx"] < stats0["rx"] + 3 * len(garbage) + 500:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        st = driver.stats()
        assert st["bad"] - stats0["bad"] == 3 * 12
        assert st["unknown_strip"] - stats0["unknown_strip"] == 3 + 500
        assert st["ignored"] - stats0["ignored"] >= 3
        assert sorted(driver._tracks) == [1, 2]
        assert not [e for e in rec.events[n0:] if isinstance(e, TrackChanged | TracksReset)]
        assert track_state(rec.events) == before
        # Still working: a real command is confirmed by Ardour.
        await driver.send(SetTrackMute(1, True))
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 1 and e.mute is True)


async def test_kill_and_restart_raises_lost_then_resyncs(ardour: ArdourPeer) -> None:
    driver = ArdourOsc("ardour", opts(ardour, heartbeat_timeout=2.5))
    async with asyncio.timeout(WAIT):
        await driver.__aenter__()
    rec = Recorder(driver, wait=WAIT)
    try:
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        await driver.send(SetTrackArm(1, True))
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 1 and e.arm is True)
        ardour.kill()
        async with asyncio.timeout(WAIT):
            with pytest.raises(DeviceLost):
                await rec.task
    finally:
        await rec.stop()
        await driver.__aexit__(None, None, None)

    # While Ardour is down, connecting fails cleanly (the supervisor will retry).
    with pytest.raises(DeviceUnavailable):
        async with asyncio.timeout(WAIT):
            await driver.__aenter__()

    await asyncio.to_thread(ardour.restart)
    async with asyncio.timeout(WAIT * 2):
        while True:  # what the supervisor does: retry with backoff
            try:
                await driver.__aenter__()
                break
            except DeviceUnavailable:
                await asyncio.sleep(0.25)
    rec = Recorder(driver, wait=WAIT)
    try:
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        events: list[Event] = [e for e in rec.events if isinstance(e, Event)]
        assert isinstance(events[0], TracksReset)
        tracks = track_state(events)
        assert tracks[1]["name"] == "Audio 1" and tracks[2]["name"] == "Audio 2"
        assert tracks[1]["arm"] is False  # the unsaved arm was lost with the killed Ardour: resynced
        await driver.send(Play())
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is True)
        await driver.send(Stop())
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is False)
    finally:
        await rec.stop()
        await driver.__aexit__(None, None, None)


async def test_unavailable_when_nothing_listens() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        driver = ArdourOsc("ardour", ArdourOsc.Options(port=port, connect_timeout=0.5))
        with pytest.raises(DeviceUnavailable):
            async with asyncio.timeout(WAIT):
                await driver.__aenter__()
        assert driver._endpoint is None
