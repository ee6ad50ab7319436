"""ArdourOsc against a real headless Ardour 7 (luasession, Dummy backend)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from peers.ardour import ArdourPeer, require_ardour
from peers.recorder import Recorder, track_state

from bridge.devices._osc import encode
from bridge.devices.ardour import ArdourOsc
from bridge.errors import DeviceLost, DeviceUnavailable
from bridge.state import Change, Store
from bridge.vocab import (
    AddMarker,
    Event,
    Locate,
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
        # Starting state learned from Ardour: both tracks with their names, then "no track 3+".
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is False)
        assert [type(e) for e in rec.events[:3]] == [TrackChanged, TrackChanged, TracksReset]
        assert rec.events[2] == TracksReset(first=3)
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
        # "Neither rolling nor stopped" (a locate; a just-started Ardour) is not "rolling": a
        # restarted Ardour sent this and the desk's PLAY LED came on for a stopped Ardour.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(encode("/transport_play", 0.0), target)
            s.sendto(encode("/transport_stop", 0.0), target)
            s.sendto(encode("/transport_play", 0.0), target)
        await asyncio.sleep(0.3)
        assert not [e for e in rec.events[n0:] if isinstance(e, TransportChanged) and e.playing]
        assert driver._playing is False
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
        assert TracksReset(first=3) in events and TracksReset(first=1) not in events
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


async def _relearn(peer: ArdourPeer, store: Store) -> list[Change]:
    """Connect, apply everything the driver reports until its starting picture is complete
    (the TransportChanged after the tracks) to ``store``; return the track changes it made."""
    driver = ArdourOsc("ardour", opts(peer))
    async with asyncio.timeout(WAIT * 2):
        while True:  # what the supervisor does after a restart: retry until Ardour answers
            try:
                await driver.__aenter__()
                break
            except DeviceUnavailable:
                await asyncio.sleep(0.25)
    rec = Recorder(driver, wait=WAIT)
    try:
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
    finally:
        await rec.stop()
        await driver.__aexit__(None, None, None)
    changes: list[Change] = []
    for event in rec.events:
        if isinstance(event, Event):
            changes += store.apply(event)
    return [c for c in changes if c.key.startswith("track/")]


async def test_relearn_changes_only_what_really_differs(ardour: ArdourPeer) -> None:
    """Issue 10.3: re-learning Ardour after a reconnect (and after a kill -9 + restart) must not
    clear and re-set the tracks: the state changes only where Ardour's values differ."""
    store = Store()
    first = await _relearn(ardour, store)
    assert store.get("track/1/name") == "Audio 1" and store.get("track/2/armed") is False
    assert {c.key for c in first} >= {"track/1/name", "track/2/fader"} and all(c.old is None for c in first)

    # Ardour changes while the bridge is away: a mute and an arm from another surface (on this
    # host that is another OSC client that registers itself, as the bridge's next run would).
    async with connected(ardour) as (other, orec):
        await orec.wait_for(lambda e: isinstance(e, TransportChanged))
        await other.send(SetTrackMute(1, True))
        await other.send(SetTrackArm(2, True))
        await orec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 1 and e.mute is True)
        await orec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 2 and e.arm is True)
    again = await _relearn(ardour, store)
    assert sorted(((c.key, c.old, c.new) for c in again), key=lambda c: c[0]) == [
        ("track/1/mute", False, True),
        ("track/2/armed", False, True),
    ]

    # Nothing changed: nothing at all.
    assert await _relearn(ardour, store) == []

    # kill -9 and restart on the saved session: the same values, so no change either.
    await asyncio.to_thread(ardour.save)
    before = store.snapshot()
    ardour.kill()
    await asyncio.to_thread(ardour.restart)
    assert await _relearn(ardour, store) == []
    assert store.snapshot() == before


async def test_fast_restart_is_noticed_by_its_first_answer(ardour: ArdourPeer) -> None:
    """Issue 10.6: a restarted Ardour is noticed from its first answer to the bridge's
    registration query (it does not know the bridge's surface any more), not only by the
    heartbeat timeout; while Ardour is healthy the driver sends nothing."""
    # A heartbeat timeout far beyond this test: only the registration query can notice.
    driver = ArdourOsc("ardour", opts(ardour, heartbeat_timeout=60.0))
    async with asyncio.timeout(WAIT):
        await driver.__aenter__()
    rec = Recorder(driver, wait=WAIT)
    try:
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        tx0 = driver.stats()["tx"]
        await asyncio.sleep(3.5)  # three heartbeats
        # No polling while healthy (at the probe rate that would be 70 queries; a heartbeat
        # late by a few hundred ms on a loaded machine may cost a handful).
        assert driver.stats()["tx"] - tx0 <= 20, driver.stats()
        assert driver.stats()["restarts_seen"] == 0

        ardour.kill()
        await asyncio.to_thread(ardour.start)  # at once, on the same port and session
        async with asyncio.timeout(WAIT * 2):
            with pytest.raises(DeviceLost, match="restarted"):
                await rec.task
        assert driver.stats()["restarts_seen"] == 1 and driver.stats()["probes"] > 0
        # the new Ardour answers already: the supervisor reconnects without its usual pause
        assert driver.retry_delay(0) == 0.0 and driver.retry_delay(0) == 0.25
    finally:
        await rec.stop()
        await driver.__aexit__(None, None, None)
    # The supervisor's next attempt re-registers with the new Ardour at once.
    async with asyncio.timeout(WAIT):
        await driver.__aenter__()
    rec = Recorder(driver, wait=WAIT)
    try:
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        await driver.send(SetTrackMute(2, True))
        await rec.wait_for(lambda e: isinstance(e, TrackChanged) and e.track == 2 and e.mute is True)
    finally:
        await rec.stop()
        await driver.__aexit__(None, None, None)


async def test_connect_waits_for_a_starting_ardour_and_registers_on_its_first_answer(
    tmp_path: Any,
) -> None:
    """While Ardour is not up yet, connecting polls its registration (cheap queries) and
    registers as soon as a (new) Ardour answers, within one connect attempt."""
    require_ardour()
    peer = ArdourPeer(tmp_path / "late")
    peer.root.mkdir(parents=True)
    peer.create()
    driver = ArdourOsc("ardour", opts(peer, connect_timeout=60.0))
    attempt = asyncio.create_task(driver.__aenter__())
    try:
        await asyncio.sleep(0.5)
        assert not attempt.done()
        polls = driver.stats()["probes"]
        assert polls >= 2  # polling while Ardour is away...
        await asyncio.to_thread(peer.start)
        async with asyncio.timeout(WAIT * 2):
            await attempt  # ...and connected once it answered
        rec = Recorder(driver, wait=WAIT)
        try:
            await rec.wait_for(lambda e: isinstance(e, TransportChanged))
            assert track_state(rec.events)[1]["name"] == "Audio 1"
        finally:
            await rec.stop()
    finally:
        if not attempt.done():
            attempt.cancel()
        await driver.__aexit__(None, None, None)
        peer.stop()
        peer.kill()


async def test_100_marks_are_logged_at_ardours_own_marker_positions(ardour: ArdourPeer) -> None:
    """Issue 10.7: every logged marker position is the sample of Ardour's marker, as Ardour saves
    it: 100 marks while rolling, at varied moments inside Ardour's 1024-sample cycles."""
    n = 100
    async with connected(ardour) as (driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged))
        await driver.send(Play())
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is True)
        await rec.wait_for(lambda e: isinstance(e, PositionChanged) and e.seconds > 0.3)
        for i in range(1, n + 1):
            await driver.send(AddMarker(f"T{i}", tag=i))
            await rec.wait_for(lambda e, i=i: isinstance(e, MarkerAdded) and e.tag == i)
            await asyncio.sleep(0.011 + (i * 7 % 23) / 1000)  # 11-33 ms: all phases of a cycle
        await driver.send(Stop())
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is False)

        def logged() -> dict[int, MarkerAdded]:
            last: dict[int, MarkerAdded] = {}
            for e in rec.events:
                if isinstance(e, MarkerAdded) and e.tag is not None:
                    last[e.tag] = e  # a later report for the same take wins (as in the log)
            return last

        async with asyncio.timeout(WAIT * 3):  # markers read back after the stop, if any
            while len(logged()) < n or any(m.marker_id is None for m in logged().values()):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        final = logged()
        read_back = driver.stats().get("markers_read_back", 0)

    await asyncio.to_thread(ardour.save)
    saved = ardour.marker_samples()
    assert len(saved) == n, saved
    ours = [int(final[i].marker_id or -1) for i in range(1, n + 1)]
    theirs = [sample for _, sample in saved]  # by position = in the order they were made
    wrong = [(i + 1, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    assert not wrong, (
        f"{len(wrong)} of {n} logged positions differ from Ardour's (take, ours, Ardour's): {wrong}"
    )
    assert all(final[i].seconds == int(final[i].marker_id or 0) / 48000 for i in range(1, n + 1))
    assert [name for name, _ in saved] == [f"T{i}" for i in range(1, n + 1)]  # named with the take
    assert read_back < n  # (how many needed the read-back: printed on failure)
    print(f"{read_back} of {n} markers were read back after the stop")


async def test_a_split_marker_is_read_back_exactly_and_the_playhead_returns(ardour: ArdourPeer) -> None:
    """The rare path of issue 10.7, made to happen: a marker whose bracket gave two samples is
    read back from Ardour once stopped (locate to it by name, read), then reported again with
    Ardour's exact sample, and the playhead goes back where it was."""
    from bridge.devices._ardour_markers import ArdourMarker

    async with connected(ardour) as (driver, rec):
        await rec.wait_for(lambda e: isinstance(e, TransportChanged) and e.playing is False)
        await driver.send(Locate(1.0))
        await rec.wait_for(lambda e: isinstance(e, PositionChanged) and e.seconds == 1.0)
        await driver.send(AddMarker("R1", tag=7))
        first = await rec.wait_for(lambda e: isinstance(e, MarkerAdded) and e.tag == 7)
        assert first.marker_id == "48000"  # stopped: both playheads agree
        await driver.send(Locate(2.0))
        await rec.wait_for(lambda e: isinstance(e, PositionChanged) and e.seconds == 2.0)
        m = rec.mark()
        # as if Ardour's cycle had ended inside the bundle: 48000 or 49024
        driver._markers.unresolved.append((ArdourMarker("R1", 7, 0.0), 48000, 49024))
        driver._markers.start()
        again = await rec.wait_for(lambda e: isinstance(e, MarkerAdded) and e.tag == 7, start=m)
        assert (again.marker_id, again.seconds) == ("48000", 1.0)
        await rec.wait_for(lambda e: isinstance(e, PositionChanged) and e.seconds == 2.0, start=m)
        assert driver._samples == 96000 and not driver._markers.unresolved
