"""The hub's routing with in-memory devices, the in-memory session log, a fake clock and a fake
timer: no event loop, no timed wait (``peers.recorder.HubRig``). The same paths with the real
SQLite log and the supervisor's reconnects: test_supervised_hub.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peers.fake_device import FakeDevice
from peers.recorder import DirectDevice, HubRig

from bridge.hub import DAW_COMMANDS
from bridge.log.memory import MemoryLog
from bridge.mapping import parse_mapping
from bridge.vocab import (
    AddMarker,
    ControlInput,
    DeviceStatus,
    Feedback,
    LogEntry,
    MarkerAdded,
    MarkTake,
    Play,
    SetRecord,
    SetSong,
    SetTalkback,
    SetTrackArm,
    SetTrackFader,
    Stop,
    TalkbackChanged,
    TrackChanged,
    TransportChanged,
)


@pytest.fixture
def rig() -> Iterator[HubRig]:
    r = HubRig()
    yield r
    r.close()


def daw_of(rig: HubRig, name: str = "daw", **kwargs: object) -> DirectDevice:
    daw = DirectDevice(name, handles=DAW_COMMANDS, **kwargs)  # type: ignore[arg-type]
    rig.add(daw, "daw")
    return daw


def test_command_answered_when_daw_confirms(rig: HubRig) -> None:
    daw = daw_of(rig)
    answers = rig.submit(Play())
    assert daw.sent == [Play()]
    assert answers.results == []  # not before the DAW reported it
    rig.hub.submit("daw", TransportChanged(playing=True))
    assert answers.results == [None]
    assert rig.timer.armed == [pytest.approx(0.3)]  # the timeout is still armed; firing it answers nothing
    rig.timer.advance(1.0)
    assert answers.results == [None]


def test_unconfirmed_command_times_out_and_nothing_fires_late(rig: HubRig) -> None:
    daw = daw_of(rig)
    answers = rig.submit(SetRecord(True))
    assert daw.sent == [SetRecord(True)] and rig.timer.armed == [pytest.approx(0.3)]
    rig.timer.advance(0.29)
    assert answers.results == []
    rig.timer.advance(0.02)
    assert answers.results == ["daw did not confirm SetRecord within 0.3 s"]
    rig.hub.submit("daw", TransportChanged(recording=True))  # late: nobody is answered again
    assert answers.results == ["daw did not confirm SetRecord within 0.3 s"]
    assert rig.timer.armed == []


def test_each_pending_command_times_out_at_its_own_deadline(rig: HubRig) -> None:
    daw_of(rig)
    first = rig.submit(SetRecord(True))
    rig.clock.now += 0.2
    second = rig.submit(Play())
    rig.timer.advance(0.15)
    assert first.results == ["daw did not confirm SetRecord within 0.3 s"] and second.results == []
    rig.timer.advance(0.2)
    assert second.results == ["daw did not confirm Play within 0.3 s"]


def test_disconnected_daw_fails_at_once(rig: HubRig) -> None:
    daw = daw_of(rig)
    pending = rig.submit(SetRecord(True))
    rig.hub.device_down("daw", DeviceStatus.DISCONNECTED, "cable pulled")
    assert rig.hub.store.get("device/daw/status") == "disconnected"
    assert pending.results == ["device 'daw' is disconnected"]
    assert rig.ask(Play()) == "daw 'daw' is disconnected"
    assert daw.sent == [SetRecord(True)]


def test_removing_a_device_answers_its_pending_commands(rig: HubRig) -> None:
    daw = daw_of(rig)
    mixer = DirectDevice("desk", handles=frozenset({SetTalkback}))
    rig.add(mixer, "mixer")
    play = rig.submit(Play())
    talk = rig.submit(SetTalkback(True))
    rig.hub.remove_device("daw")
    assert play.results == ["device 'daw' was removed"] and talk.results == []
    assert rig.hub.store.get("device/daw/status") == "stopped" and "daw" not in rig.hub.roles
    assert rig.ask(Play()) == "no device has the role daw"
    rig.hub.submit("desk", TalkbackChanged(True))
    assert talk.results == [None]
    assert daw.sent == [Play()]


def test_routing_by_role(rig: HubRig) -> None:
    assert rig.ask(Play()) == "no device has the role daw"
    daw = DirectDevice("daw", handles=frozenset({Play}))
    rig.add(daw, "daw")
    assert rig.ask(SetTrackArm(1, True)) == "daw 'daw' cannot arm tracks"
    assert rig.ask(SetTrackFader(1, 0.5)) == "daw 'daw' cannot move faders"
    mixer = DirectDevice("desk", handles=frozenset({SetTalkback}))
    talkback = DirectDevice("tb", handles=frozenset({SetTalkback}))
    rig.add(mixer, "mixer")
    rig.add(talkback, "talkback")
    rig.submit(SetTalkback(True))
    assert talkback.sent == [SetTalkback(True)] and mixer.sent == []  # talkback before mixer
    rig.hub.remove_device("tb")
    rig.submit(SetTalkback(False))
    assert mixer.sent == [SetTalkback(False)]
    rig.submit(Play(), source="pad")  # from any surface: to the daw
    assert daw.sent == [Play()]


def test_direct_send_and_the_queued_path(rig: HubRig) -> None:
    daw = daw_of(rig)
    slot = rig.hub.slots["daw"]
    assert slot.direct
    rig.submit(Play())
    assert daw.sent == [Play()] and len(slot.outbox) == 0  # sent at once, nothing queued
    daw.refuse_direct = True  # the direct path fails: the writer sends it (and reports)
    rig.submit(Stop())
    assert daw.sent == [Play()] and rig.queued("daw") == [Stop()]
    plain = FakeDevice("plain", handles=DAW_COMMANDS)  # no send_nowait: always queued
    rig.hub.remove_device("daw")
    rig.add(plain, "daw")
    assert not rig.hub.slots["plain"].direct
    rig.submit(Play())
    assert plain.sent == [] and rig.queued("plain") == [Play()]


def test_track_names_resolved_before_routing(rig: HubRig) -> None:
    daw = daw_of(rig)
    rig.hub.submit("daw", TrackChanged(7, name="Lead Vox"))
    answers = rig.submit(SetTrackArm("Lead Vox", True))
    assert daw.sent[-1] == SetTrackArm(7, True)
    rig.hub.submit("daw", TrackChanged(7, arm=True))
    assert answers.results == [None]
    assert rig.ask(SetTrackArm("Nobody", True)) == "no track named 'Nobody'"
    assert rig.ask(SetTrackArm(0, True)) == "track numbers start at 1, got 0"


def test_a_daw_that_reports_all_tracks_refuses_an_unknown_one(rig: HubRig) -> None:
    daw = DirectDevice("daw", handles=DAW_COMMANDS)
    daw.reports_all_tracks = True  # type: ignore[misc]
    rig.add(daw, "daw")
    for n in (1, 2, 3, 5):
        rig.hub.submit("daw", TrackChanged(n, name=f"t{n}"))
    assert rig.ask(SetTrackArm(9, True)) == "no track 9 in daw (it has tracks 1-3, 5)"


def test_marks_are_durable_numbered_and_tied_to_daw_markers(rig: HubRig) -> None:
    daw = daw_of(rig)
    assert rig.ask(SetSong("Blue")) is None
    for _ in range(3):
        answers = rig.submit(MarkTake())
        assert answers.results == [] and rig.get("take")[0] in (0, 1, 2)  # nothing before durable
        rig.log.flush()
        assert answers.results == [None]
    markers = [m for m in daw.sent if isinstance(m, AddMarker)]
    assert [m.label for m in markers] == ["Blue T1", "Blue T2", "Blue T3"]
    rig.hub.submit("daw", MarkerAdded("mark1", 12.5, "mark1", markers[1].tag))
    rig.log.flush()
    takes = rig.log.of_kind("take_marker")
    assert [r.take for r in takes] == [1, 2, 3] and [m.tag for m in markers] == [r.seq for r in takes]
    daw_marker = rig.log.of_kind("daw_marker")
    assert daw_marker[0].amends == takes[1].seq and daw_marker[0].daw_seconds == 12.5


def test_mapped_surface_gets_feedback_and_resync_after_reconnect(rig: HubRig) -> None:
    daw = daw_of(rig)
    studio_map = parse_mapping({"binding": [{"control": "rec", "command": "transport.record"}]}, "m.toml")
    rig.add(FakeDevice("nano", feedback="mapped"), None, studio_map)
    assert rig.queued("nano") == [Feedback("rec", 0.0)]  # initial picture
    rig.hub.submit("nano", ControlInput("rec", 1.0))
    assert daw.sent[-1] == SetRecord(True)
    assert rig.queued("nano") == []  # a press alone never lights the LED
    rig.hub.submit("daw", TransportChanged(recording=True))
    assert rig.queued("nano") == [Feedback("rec", 1.0)]
    # the surface drops and comes back: everything is sent again
    rig.hub.device_down("nano", DeviceStatus.DISCONNECTED, "gone")
    rig.hub.submit("daw", TransportChanged(recording=False))
    rig.hub.submit("daw", TransportChanged(recording=True))
    assert rig.queued("nano") == []  # nothing for a device that is down
    rig.hub.device_up("nano")
    assert rig.hub.store.get("device/nano/status") == "ok"
    assert Feedback("rec", 1.0) in rig.queued("nano")


def test_log_records_missed_while_down_are_replayed(rig: HubRig) -> None:
    daw_of(rig)
    bus = FakeDevice("bus", feedback="state")
    bus.wants_log = True  # type: ignore[misc]
    rig.add(bus)

    def marked(messages: list[object]) -> list[object]:
        return [
            m.record["text"]
            for m in messages
            if isinstance(m, LogEntry) and m.record["kind"] == "take_marker"
        ]

    assert rig.ask(MarkTake("before")) is None
    assert marked(rig.queued("bus")) == ["before"]
    rig.hub.device_down("bus", DeviceStatus.DISCONNECTED, "broker gone")
    assert rig.hub.store.get("device/bus/status") == "disconnected"
    assert rig.ask(MarkTake("during")) is None
    assert marked(rig.queued("bus")) == []
    rig.hub.device_up("bus")
    assert rig.hub.store.get("device/bus/status") == "ok"
    assert marked(rig.queued("bus")) == ["during"]


def test_the_log_status_is_state() -> None:
    log = MemoryLog()
    rig = HubRig(log)
    try:
        assert rig.get("log/status", "log/reason") == ("ok", "")
        log.refuse("disk I/O error")
        assert rig.get("log/status", "log/reason") == ("failing", "disk I/O error")
        assert (
            rig.ask(MarkTake())
            == "session log write failed: not written: the session log cannot write (disk I/O error)"
        )
        assert rig.get("log/unwritten", "take") == (1, 0)
        log.recover()
        assert rig.get("log/status") == ("ok",)
        assert rig.ask(MarkTake()) is None and rig.get("take") == (1,)
    finally:
        rig.close()


def test_a_closed_log_still_answers(rig: HubRig, caplog: pytest.LogCaptureFixture) -> None:
    """A command that reaches the ledger after the log was closed (the bridge is stopping: a
    DAW's answer, a command in flight) is answered "not carried out", so the client sends it
    again to the next run; that is no fault, so the journal has no ERROR for it, and one line."""
    import asyncio

    asyncio.run(rig.log.close())
    with caplog.at_level("DEBUG"):
        first = rig.ask(MarkTake())
        second = rig.ask(MarkTake())  # the mark in flight did not stay busy
    stopping = "not carried out: the session log is closed (the bridge is stopping); send it again"
    assert first == second == stopping
    assert not [r for r in caplog.records if r.levelno >= 30], caplog.text
    assert len([r for r in caplog.records if "session log closed" in r.getMessage()]) == 1, caplog.text
