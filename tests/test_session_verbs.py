"""Session verbs through the hub, on the in-memory session log with a fake clock: selection,
rename, notes, flags on and off, the song list, automatic takes, the running take's elapsed
time, and take numbers that only the log hands out. No timed wait; no event loop but for the new
session (``Hub`` starts it as a task). The same against the SQLite file (a crash and a
restart, a disk that fills up, the export): test_supervised_hub.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from peers.fake_device import FakeDevice
from peers.recorder import Answers, DirectDevice, HubRig

from bridge.hub import DAW_COMMANDS, Hub
from bridge.ledger import AUTO_TAKE_MERGE
from bridge.log.memory import MemoryLog
from bridge.log.takesheet import build_take_sheet
from bridge.mapping import parse_mapping
from bridge.vocab import (
    AddMarker,
    AddNote,
    AddSong,
    CircleTake,
    ControlInput,
    FalseStart,
    MarkTake,
    NewSession,
    PositionChanged,
    RenameTake,
    Request,
    SelectTake,
    SetSong,
    StepSong,
    TransportChanged,
)

SELECTED = ("take/selected", "take/selected/circled", "take/selected/false_start", "take/selected/label")


@pytest.fixture
def rig() -> Iterator[HubRig]:
    r = HubRig(auto_take="off")
    yield r
    r.close()


def with_daw(rig: HubRig) -> DirectDevice:
    daw = DirectDevice("daw", handles=DAW_COMMANDS)
    rig.add(daw, "daw")
    return daw


def markers(daw: FakeDevice) -> list[str]:
    return [m.label for m in daw.sent if isinstance(m, AddMarker)]


# ------------------------------------------------------------------ selection, flags, rename, notes


def test_marking_selects_and_flags_act_on_the_selected_take(rig: HubRig) -> None:
    assert rig.ask(SetSong("Blue")) is None
    for label in ("intro", "", "full"):
        assert rig.ask(MarkTake(label)) is None
    assert rig.get("take", "take/next", *SELECTED) == (3, 4, 3, False, False, "full")
    assert rig.ask(SelectTake(1)) is None
    assert rig.get(*SELECTED) == (1, False, False, "intro")
    assert rig.ask(CircleTake()) is None  # no number: the selected take
    assert rig.get(*SELECTED) == (1, True, False, "intro")
    assert rig.ask(SelectTake(step=1)) is None
    assert rig.ask(FalseStart()) is None
    assert rig.get(*SELECTED) == (2, False, True, "")
    assert rig.ask(FalseStart(2, on=False)) is None  # the false start is undone
    assert rig.get(*SELECTED) == (2, False, False, "")
    assert rig.ask(RenameTake("false intro")) is None
    assert rig.get(*SELECTED) == (2, False, False, "false intro")
    assert rig.ask(AddNote("bass buzz")) is None  # on the selected take (2)
    assert rig.ask(AddNote("great feel", take=3)) is None
    assert rig.ask(SelectTake(step=1)) is None
    assert rig.ask(SelectTake(step=1)) == "take 3 is the last take of song 'Blue'"
    assert rig.ask(SelectTake(9)) == "no take 9 in song 'Blue'"
    assert rig.ask(RenameTake("x", take=7)) == "no take 7 in song 'Blue'"

    sheet = build_take_sheet(rig.log.records)
    assert [(t.take, t.label, t.circled, t.false_start, t.notes) for t in sheet.takes] == [
        (1, "intro", True, False, ()),
        (2, "false intro", False, False, ("bass buzz",)),
        (3, "full", False, False, ("great feel",)),
    ]


def test_rename_records_have_the_shape_export_reads(rig: HubRig) -> None:
    assert rig.ask(MarkTake("first")) is None
    assert rig.ask(RenameTake("keeper")) is None
    records = rig.log.records
    marker = next(r for r in records if r.kind == "take_marker")
    rename = next(r for r in records if r.kind == "take_rename")
    assert (rename.amends, rename.song, rename.take, rename.text) == (marker.seq, "", 1, "keeper")
    assert build_take_sheet(records).takes[0].label == "keeper"


def test_a_resumed_session_keeps_flags_labels_selection_and_songs() -> None:
    first = HubRig(auto_take="off", songs=["Blue", "Gold"])
    assert first.ask(SetSong("Red")) is None
    assert first.ask(AddSong("Green")) is None
    assert first.ask(MarkTake("one")) is None
    assert first.ask(MarkTake("two")) is None
    assert first.ask(CircleTake(2)) is None
    assert first.ask(RenameTake("two!", take=2)) is None
    first.close()  # an unclean stop: no session_end, so the next start resumes

    log = MemoryLog(first.log.records)
    again = HubRig(log, auto_take="off", songs=["Blue", "Gold"])
    try:
        assert again.get("song", "take", "take/next", *SELECTED) == ("Red", 2, 3, 2, True, False, "two!")
        assert json.loads(str(again.hub.store.get("songs"))) == ["Blue", "Gold", "Red", "Green"]
        assert again.ask(FalseStart(1)) is None  # amends the take marked before the restart
    finally:
        again.close()
    one = next(r for r in log.records if r.kind == "take_marker" and r.take == 1)
    flag = log.of_kind("take_flag")[-1]
    assert flag.amends == one.seq
    sheet = build_take_sheet(r for r in log.records if r.session == one.session)
    assert [(t.label, t.circled, t.false_start) for t in sheet.takes] == [
        ("one", False, True),
        ("two!", True, False),
    ]


async def test_a_new_session_keeps_the_earlier_takes() -> None:
    """The one hub test with a running loop: a new session is the log's coroutine, run as a
    task. ``Answers.next`` waits for the answer (an event, not a timed wait)."""
    log = MemoryLog(auto_flush=True)
    hub = Hub(log, auto_take="off")
    await hub.start()

    async def ask(command: Any) -> str | None:
        answers = Answers()
        hub.submit("tablet", Request(command, answers))
        return await answers.next()

    assert await ask(SetSong("Blue")) is None
    assert await ask(MarkTake("morning 1")) is None
    assert await ask(MarkTake("morning 2")) is None
    assert await ask(NewSession("Afternoon")) is None
    assert hub.store.get("session") == "Afternoon" and hub.store.get("song") == ""
    assert await ask(SetSong("Blue")) is None
    assert (hub.store.get("take"), hub.store.get("take/next")) == (2, 3)
    assert await ask(CircleTake(2)) is None
    assert await ask(SelectTake(2)) is None
    assert hub.store.get("take/selected/circled") is True
    flag = log.of_kind("take_flag")[0]
    marker = next(r for r in log.of_kind("take_marker") if r.take == 2)
    assert flag.amends == marker.seq and flag.session == 2 and marker.session == 1
    log.refuse("disk I/O error")
    error = await ask(NewSession("Evening"))
    assert error is not None and error.startswith("could not start a new session: not written")
    log.recover()
    assert await ask(MarkTake()) is None and hub.store.get("take") == 3
    await log.close()


# ------------------------------------------------------------------ the song list


def test_song_list_from_config_set_add_next_previous() -> None:
    rig = HubRig(auto_take="off", songs=["Blue", "Gold"])
    try:
        songs = lambda: json.loads(str(rig.hub.store.get("songs")))  # noqa: E731
        assert songs() == ["Blue", "Gold"] and rig.hub.store.get("song") == ""
        assert rig.ask(StepSong(1)) is None  # no song yet: next is the first
        assert rig.hub.store.get("song") == "Blue"
        assert rig.ask(StepSong(1)) is None
        assert rig.hub.store.get("song") == "Gold"
        assert rig.ask(StepSong(1)) == "'Gold' is the last song of the list"
        assert rig.ask(SetSong("Red")) is None  # a song set by name joins the list
        assert songs() == ["Blue", "Gold", "Red"]
        assert rig.ask(AddSong("Green")) is None
        assert rig.ask(AddSong("Green")) is None  # already there: nothing new
        assert songs() == ["Blue", "Gold", "Red", "Green"] and rig.hub.store.get("song") == "Red"
        assert rig.ask(StepSong(-1)) is None
        assert rig.hub.store.get("song") == "Gold"
        assert rig.ask(MarkTake()) is None
        assert rig.ask(StepSong(1)) is None  # take numbers are per song
        assert rig.get("song", "take", "take/next", "take/selected") == ("Red", 0, 1, 0)
        assert rig.ask(StepSong(-1)) is None
        assert rig.get("song", "take", "take/next", "take/selected") == ("Gold", 1, 2, 1)
        rig.hub.songs = ["Next"]  # a reload: the list the next session starts with
        assert rig.hub.ledger.songs == ["Next"] and songs() == ["Blue", "Gold", "Red", "Green"]
    finally:
        rig.close()


def test_empty_song_list_is_a_clear_error(rig: HubRig) -> None:
    assert rig.ask(StepSong(1)) == "no song list (add songs with song.add or [bridge] songs)"


def test_mapping_song_next_previous_buttons(rig: HubRig) -> None:
    assert rig.ask(AddSong("A")) is None
    assert rig.ask(AddSong("B")) is None
    studio_map = parse_mapping(
        {
            "binding": [
                {"control": "next", "command": "song.next"},
                {"control": "prev", "command": "song.previous"},
                {"control": "circle", "command": "take.circle", "glue": "toggle"},
            ]
        },
        "m.toml",
    )
    rig.add(FakeDevice("pad", feedback="mapped"), None, studio_map)
    for control, song in (("next", "A"), ("next", "B"), ("prev", "A")):
        rig.hub.submit("pad", ControlInput(control, 1.0))
        rig.hub.submit("pad", ControlInput(control, 0.0))
        assert rig.hub.store.get("song") != song  # not before the record is durable
        rig.log.flush()
        assert rig.hub.store.get("song") == song
    assert rig.ask(MarkTake()) is None
    rig.hub.submit("pad", ControlInput("circle", 1.0))  # lights from take/selected/circled
    rig.log.flush()
    assert rig.hub.store.get("take/selected/circled") is True
    rig.hub.submit("pad", ControlInput("circle", 1.0))  # a toggle un-circles
    rig.log.flush()
    assert rig.hub.store.get("take/selected/circled") is False


# ------------------------------------------------------------------ automatic takes and elapsed time


def test_recording_starts_a_take_and_a_mark_right_after_is_that_take() -> None:
    rig = HubRig()
    daw = with_daw(rig)

    def report(**transport: bool) -> None:
        rig.hub.submit("daw", TransportChanged(**transport))
        rig.log.flush()

    try:
        assert rig.ask(SetSong("Blue")) is None
        report(recording=True)  # record-enabled while stopped: not yet
        assert rig.hub.store.get("take") == 0
        rig.hub.submit("daw", TransportChanged(playing=True))  # roll in record: a take starts
        assert rig.get("take", "take/next") == (0, 1)  # once its record is durable
        rig.log.flush()
        assert rig.get("take", "take/next", "take/selected") == (1, 2, 1)
        assert markers(daw) == ["Blue T1"]
        rig.clock.now += AUTO_TAKE_MERGE / 2
        assert rig.ask(MarkTake("verse")) is None  # sent as recording started: same take
        assert rig.get("take", "take/next", "take/label", "take/selected/label") == (1, 2, "verse", "verse")
        rig.clock.now += 60
        assert rig.ask(MarkTake("chorus")) is None  # inside a long pass: a new take
        assert rig.get("take", "take/next") == (2, 3)
        report(recording=False)  # punch out
        rig.clock.now += 10
        report(recording=True)  # punch in: another take
        assert rig.get("take", "take/next") == (3, 4)
        report(playing=False, recording=False)
        rig.clock.now += 30
        assert rig.ask(MarkTake("pickup")) is None  # an explicit mark before rolling ...
        rig.clock.now += AUTO_TAKE_MERGE / 2
        report(playing=True, recording=True)  # ... is the take that starts
        assert rig.hub.store.get("transport/on_air") is True
        assert rig.get("take", "take/next", "take/label") == (4, 5, "pickup")
    finally:
        rig.close()
    records = rig.log.records
    marks = [(r.take, r.text, r.data["auto"]) for r in records if r.kind == "take_marker"]
    assert marks == [(1, "", True), (2, "chorus", False), (3, "", True), (4, "pickup", False)]
    sheet = build_take_sheet(records)
    assert [t.label for t in sheet.takes] == ["verse", "chorus", "", "pickup"]


def test_a_mark_after_a_false_start_stopped_is_a_new_take() -> None:
    """Recording rolled and stopped again within AUTO_TAKE_MERGE (a false start); the producer
    flags it and marks the next take: that is take 2, not a rename of the stopped take 1."""
    rig = HubRig()
    with_daw(rig)
    try:
        assert rig.ask(SetSong("Blue")) is None
        rig.hub.submit("daw", TransportChanged(playing=True, recording=True))
        rig.log.flush()
        assert rig.get("take", "take/next") == (1, 2)
        rig.clock.now += AUTO_TAKE_MERGE / 4
        rig.hub.submit("daw", TransportChanged(playing=False, recording=False))
        assert rig.ask(FalseStart()) is None
        rig.clock.now += AUTO_TAKE_MERGE / 4
        assert rig.ask(MarkTake("next one")) is None
        assert rig.get("take", "take/next", "take/label") == (2, 3, "next one")
    finally:
        rig.close()
    sheet = build_take_sheet(rig.log.records)
    assert [(t.take, t.label, t.false_start) for t in sheet.takes] == [(1, "", True), (2, "next one", False)]


def test_auto_take_off(rig: HubRig) -> None:
    with_daw(rig)
    rig.hub.submit("daw", TransportChanged(playing=True, recording=True))
    rig.log.flush()
    assert rig.hub.store.get("transport/on_air") is True
    assert rig.get("take", "take/next") == (0, 1)
    assert [r.kind for r in rig.log.records if r.kind != "device_status"][-1] == "transport"


def test_elapsed_follows_the_daw_position_while_rolling(rig: HubRig) -> None:
    with_daw(rig)
    rig.hub.submit("daw", PositionChanged(10.0))
    assert rig.hub.store.get("transport/position") == 10.0
    assert rig.ask(MarkTake()) is None
    assert rig.hub.store.get("take/elapsed") == 0.0
    rig.hub.submit("daw", PositionChanged(12.0))  # stopped: the elapsed time does not move
    assert rig.hub.store.get("take/elapsed") == 0.0
    rig.hub.submit("daw", TransportChanged(playing=True))
    rig.hub.submit("daw", PositionChanged(10.5))
    rig.hub.submit("daw", PositionChanged(13.25))
    assert rig.hub.store.get("take/elapsed") == 3.25


# ------------------------------------------------------------------ take numbers never lie


def test_refused_marks_take_no_number_and_drop_no_marker(rig: HubRig) -> None:
    daw = with_daw(rig)
    tablet = rig.add(FakeDevice("tablet", feedback="state"))
    assert rig.ask(SetSong("Blue")) is None
    for _ in range(2):
        assert rig.ask(MarkTake()) is None
    assert rig.get("take", "take/next") == (2, 3)
    rig.log.fail_kinds = {"take_marker"}
    rig.queued("tablet")
    answers = Answers()
    for _ in range(3):  # three marks queued behind each other, all refused
        rig.hub.submit("tablet", Request(MarkTake(), answers))
    assert len(rig.log.pending) == 1  # one in flight, two waiting behind it
    rig.log.flush()
    assert answers.results == ["session log write failed: simulated disk full"] * 3
    assert rig.ask(CircleTake()) is None  # the selected take is still take 2
    assert rig.get("take", "take/next", "take/selected") == (2, 3, 2)
    shown = [m.value for m in rig.queued("tablet") if getattr(m, "control", None) in ("take", "take/next")]
    assert shown == []  # no surface was shown a number the log does not hold
    assert tablet.sent == []
    assert markers(daw) == ["Blue T1", "Blue T2"]
    rig.log.fail_kinds = set()  # the disk has room again
    assert rig.ask(MarkTake("after")) is None
    assert rig.get("take", "take/next", "take/selected") == (3, 4, 3)
    assert markers(daw)[-1] == "Blue T3 after"
    assert [r.take for r in rig.log.of_kind("take_marker")] == [1, 2, 3]


def test_a_refusing_log_then_a_restart_continues_the_numbering(rig: HubRig) -> None:
    daw = with_daw(rig)
    assert rig.ask(MarkTake()) is None
    rig.log.refuse("database or disk is full")
    for _ in range(2):
        error = rig.ask(MarkTake())
        assert error is not None and "disk is full" in error
    assert rig.get("take", "take/next") == (1, 2)
    assert markers(daw) == ["T1"]
    rig.log.recover()
    again = HubRig(MemoryLog(rig.log.records), auto_take="off")
    try:
        assert again.get("take", "take/next") == (1, 2)
        assert again.ask(MarkTake()) is None
        assert again.get("take", "take/next") == (2, 3)
    finally:
        again.close()
