"""The hub end to end with in-memory devices and a real SQLite session log in tmp_path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from peers.recorder import Answers

from bridge.devices.fake import FakeDevice
from bridge.hub import DAW_COMMANDS, Hub
from bridge.log.reader import read_records
from bridge.log.writer import SessionLog
from bridge.mapping import parse_mapping
from bridge.supervisor import run_device
from bridge.vocab import (
    ControlInput,
    Feedback,
    MarkerAdded,
    MarkTake,
    Play,
    Request,
    SetRecord,
    SetSong,
    SetTrackArm,
    TrackChanged,
    TransportChanged,
)


@pytest.fixture
async def hub(tmp_path: Path):
    h = Hub(SessionLog(tmp_path / "log.sqlite3"), confirm_timeout=0.3)
    await h.start()
    task = asyncio.create_task(h.run())
    yield h
    task.cancel()
    await h.log.close()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def start(hub: Hub, device: FakeDevice, role: str | None = None, mapping=None) -> asyncio.Task[None]:
    slot = hub.add_device(device, role, mapping)
    task = asyncio.create_task(run_device(hub, slot))
    await settle()
    return task


async def test_command_answered_when_daw_confirms(hub: Hub) -> None:
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    task = await start(hub, daw, "daw")
    answers = Answers()
    hub.submit("tablet", Request(Play(), answers))
    await settle()
    assert daw.sent == [Play()]
    assert answers.results == []  # not before the DAW reported it
    daw.report(TransportChanged(playing=True))
    assert await answers.next() is None
    task.cancel()


async def test_unconfirmed_command_times_out_and_nothing_fires_late(hub: Hub) -> None:
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    task = await start(hub, daw, "daw")
    answers = Answers()
    hub.submit("tablet", Request(SetRecord(True), answers))
    error = await answers.next()
    assert error is not None and "did not confirm" in error
    task.cancel()


async def test_disconnected_daw_fails_at_once(hub: Hub) -> None:
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    task = await start(hub, daw, "daw")
    daw.lose("cable pulled")
    await settle()
    assert hub.store.get("device/daw/status") == "disconnected"
    answers = Answers()
    hub.submit("tablet", Request(Play(), answers))
    error = await answers.next(limit=0.1)
    assert error == "daw 'daw' is disconnected"
    task.cancel()


async def test_track_names_resolved_before_routing(hub: Hub) -> None:
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    task = await start(hub, daw, "daw")
    daw.report(TrackChanged(7, name="Lead Vox"))
    await settle()
    answers = Answers()
    hub.submit("tablet", Request(SetTrackArm("Lead Vox", True), answers))
    await settle()
    assert daw.sent[-1] == SetTrackArm(7, True)
    daw.report(TrackChanged(7, arm=True))
    assert await answers.next() is None
    hub.submit("tablet", Request(SetTrackArm("Nobody", True), answers))
    assert await answers.next() == "no track named 'Nobody'"
    task.cancel()


async def test_marks_are_durable_numbered_and_tied_to_daw_markers(hub: Hub, tmp_path: Path) -> None:
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    task = await start(hub, daw, "daw")
    answers = Answers()
    hub.submit("tablet", Request(SetSong("Blue"), answers))
    assert await answers.next() is None
    for _ in range(3):
        hub.submit("tablet", Request(MarkTake(), answers))
        assert await answers.next() is None
    markers = [m for m in daw.sent if type(m).__name__ == "AddMarker"]
    assert [m.label for m in markers] == ["Blue T1", "Blue T2", "Blue T3"]
    daw.report(MarkerAdded("mark1", 12.5, "mark1", markers[1].tag))
    await settle()
    records = read_records(tmp_path / "log.sqlite3")
    takes = [r for r in records if r.kind == "take_marker"]
    assert [r.take for r in takes] == [1, 2, 3]
    daw_marker = [r for r in records if r.kind == "daw_marker"]
    assert daw_marker[0].amends == takes[1].seq and daw_marker[0].daw_seconds == 12.5
    task.cancel()


async def test_mapped_surface_gets_feedback_and_resync_after_reconnect(hub: Hub) -> None:
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    await start(hub, daw, "daw")
    studio_map = parse_mapping({"binding": [{"control": "rec", "command": "transport.record"}]}, "m.toml")
    nano = FakeDevice("nano", feedback="mapped")
    task = await start(hub, nano, None, studio_map)
    assert nano.sent == [Feedback("rec", 0.0)]  # initial picture
    nano.report(ControlInput("rec", 1.0))
    await settle()
    assert daw.sent[-1] == SetRecord(True)
    assert nano.sent == [Feedback("rec", 0.0)]  # a press alone never lights the LED
    daw.report(TransportChanged(recording=True))
    await settle()
    assert nano.sent[-1] == Feedback("rec", 1.0)
    # the surface drops and comes back: everything is sent again
    nano.sent.clear()
    nano.lose("gone")
    await asyncio.sleep(0.6)  # the supervisor reconnects after its first backoff step
    assert nano.opened == 2
    assert hub.store.get("device/nano/status") == "ok"
    assert Feedback("rec", 1.0) in nano.sent
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert nano.sent[-1] == Feedback("rec", 0.0)  # lights off on shutdown


async def test_log_records_missed_while_down_are_replayed(hub: Hub) -> None:
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    await start(hub, daw, "daw")
    bus = FakeDevice("bus", feedback="state")
    bus.wants_log = True  # type: ignore[misc]
    task = await start(hub, bus)
    answers = Answers()
    hub.submit("tablet", Request(MarkTake("before"), answers))
    assert await answers.next() is None
    await settle()
    seen = [
        m.record["text"]
        for m in bus.sent
        if type(m).__name__ == "LogEntry" and m.record["kind"] == "take_marker"
    ]
    assert seen == ["before"]
    # the bus drops; a take is marked while it is down
    bus.lose("broker gone")
    await asyncio.sleep(0.05)
    assert hub.store.get("device/bus/status") == "disconnected"
    hub.submit("tablet", Request(MarkTake("during"), answers))
    assert await answers.next() is None
    bus.sent.clear()
    await asyncio.sleep(0.6)  # reconnect
    assert hub.store.get("device/bus/status") == "ok"
    replayed = [
        m.record["text"]
        for m in bus.sent
        if type(m).__name__ == "LogEntry" and m.record["kind"] == "take_marker"
    ]
    assert replayed == ["during"]
    task.cancel()
