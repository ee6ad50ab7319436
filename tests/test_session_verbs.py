"""Session verbs in the hub, against a real SQLite session log: selection, rename, notes, flags
on and off, the song list, automatic takes, the running take's elapsed time, and take numbers
that only the log hands out."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_hub import Answers, settle, start

from bridge.devices.fake import FakeDevice
from bridge.errors import SessionLogError
from bridge.hub import AUTO_TAKE_MERGE, DAW_COMMANDS, Hub
from bridge.log.reader import read_records
from bridge.log.takesheet import build_take_sheet
from bridge.log.writer import SessionLog
from bridge.mapping import parse_mapping
from bridge.vocab import (
    AddMarker,
    AddNote,
    AddSong,
    CircleTake,
    Command,
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


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def make_hub(path: Path, **kwargs: Any) -> Hub:
    hub = Hub(SessionLog(path), confirm_timeout=0.3, **kwargs)
    await hub.start()
    return hub


async def ask(hub: Hub, command: Command, source: str = "tablet") -> str | None:
    answers = Answers()
    hub.submit(source, Request(command, answers))
    return await answers.next()


async def until(check: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait (bounded) until ``check()`` holds: robust on a loaded machine."""
    async with asyncio.timeout(limit):
        while not check():  # noqa: ASYNC110 - a bounded test wait on in-memory state
            await asyncio.sleep(0.01)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def state(hub: Hub, *keys: str) -> tuple[Any, ...]:
    return tuple(hub.store.get(k) for k in keys)


SELECTED = ("take/selected", "take/selected/circled", "take/selected/false_start", "take/selected/label")


@pytest.fixture
async def hub(tmp_path: Path):
    h = await make_hub(tmp_path / "log.sqlite3", auto_take="off")
    yield h
    await h.log.close()


# ------------------------------------------------------------------ selection, flags, rename, notes


async def test_marking_selects_and_flags_act_on_the_selected_take(hub: Hub, tmp_path: Path) -> None:
    assert await ask(hub, SetSong("Blue")) is None
    for label in ("intro", "", "full"):
        assert await ask(hub, MarkTake(label)) is None
    assert state(hub, "take", "take/next", *SELECTED) == (3, 4, 3, False, False, "full")
    assert await ask(hub, SelectTake(1)) is None
    assert state(hub, *SELECTED) == (1, False, False, "intro")
    assert await ask(hub, CircleTake()) is None  # no number: the selected take
    assert state(hub, *SELECTED) == (1, True, False, "intro")
    assert await ask(hub, SelectTake(step=1)) is None
    assert await ask(hub, FalseStart()) is None
    assert state(hub, *SELECTED) == (2, False, True, "")
    assert await ask(hub, FalseStart(2, on=False)) is None  # the false start is undone
    assert state(hub, *SELECTED) == (2, False, False, "")
    assert await ask(hub, RenameTake("false intro")) is None
    assert state(hub, *SELECTED) == (2, False, False, "false intro")
    assert await ask(hub, AddNote("bass buzz")) is None  # on the selected take (2)
    assert await ask(hub, AddNote("great feel", take=3)) is None
    assert await ask(hub, SelectTake(step=1)) is None
    assert await ask(hub, SelectTake(step=1)) == "take 3 is the last take of song 'Blue'"
    assert await ask(hub, SelectTake(9)) == "no take 9 in song 'Blue'"
    assert await ask(hub, RenameTake("x", take=7)) == "no take 7 in song 'Blue'"
    await hub.log.close()

    sheet = build_take_sheet(read_records(tmp_path / "log.sqlite3"))
    assert [(t.take, t.label, t.circled, t.false_start, t.notes) for t in sheet.takes] == [
        (1, "intro", True, False, ()),
        (2, "false intro", False, False, ("bass buzz",)),
        (3, "full", False, False, ("great feel",)),
    ]


async def test_rename_records_have_the_shape_export_reads(hub: Hub, tmp_path: Path) -> None:
    assert await ask(hub, MarkTake("first")) is None
    assert await ask(hub, RenameTake("keeper")) is None
    await hub.log.close()
    records = read_records(tmp_path / "log.sqlite3")
    marker = next(r for r in records if r.kind == "take_marker")
    rename = next(r for r in records if r.kind == "take_rename")
    assert (rename.amends, rename.song, rename.take, rename.text) == (marker.seq, "", 1, "keeper")
    assert build_take_sheet(records).takes[0].label == "keeper"


async def test_a_resumed_session_keeps_flags_labels_selection_and_songs(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    hub = await make_hub(path, auto_take="off", songs=["Blue", "Gold"])
    assert await ask(hub, SetSong("Red")) is None
    assert await ask(hub, AddSong("Green")) is None
    assert await ask(hub, MarkTake("one")) is None
    assert await ask(hub, MarkTake("two")) is None
    assert await ask(hub, CircleTake(2)) is None
    assert await ask(hub, RenameTake("two!", take=2)) is None
    # an unclean stop: the session_end record cannot be written, so the next start resumes
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER crash BEFORE INSERT ON records WHEN NEW.kind = 'session_end' "
        "BEGIN SELECT RAISE(ABORT, 'simulated crash'); END"
    )
    conn.commit()
    await hub.log.close()
    conn.execute("DROP TRIGGER crash")
    conn.commit()
    conn.close()

    again = await make_hub(path, auto_take="off", songs=["Blue", "Gold"])
    try:
        assert state(again, "song", "take", "take/next", *SELECTED) == ("Red", 2, 3, 2, True, False, "two!")
        assert json.loads(str(again.store.get("songs"))) == ["Blue", "Gold", "Red", "Green"]
        assert await ask(again, FalseStart(1)) is None  # amends the take marked before the restart
    finally:
        await again.log.close()
    records = read_records(path)
    one = next(r for r in records if r.kind == "take_marker" and r.take == 1)
    flag = [r for r in records if r.kind == "take_flag"][-1]
    assert flag.amends == one.seq
    sheet = build_take_sheet(r for r in records if r.session == one.session)
    assert [(t.label, t.circled, t.false_start) for t in sheet.takes] == [
        ("one", False, True),
        ("two!", True, False),
    ]


async def test_an_earlier_sessions_take_is_flagged_renamed_and_selected_for_real(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """QA: takes of the morning session, circled / renamed / noted in the afternoon (or after a
    graceful restart, which ends the session): answered /ok but shown on no take sheet, and
    selection showed label "" circled 0. They amend the real marker and show on its sheet."""
    path = tmp_path / "session-log.sqlite3"
    hub = await make_hub(path, auto_take="off")
    assert await ask(hub, SetSong("Blue")) is None
    assert await ask(hub, MarkTake("morning 1")) is None
    assert await ask(hub, MarkTake("morning 2")) is None
    assert await ask(hub, NewSession("Afternoon")) is None
    assert await ask(hub, SetSong("Blue")) is None
    assert await ask(hub, CircleTake(2)) is None
    assert await ask(hub, RenameTake("morning 2 best", take=2)) is None
    assert await ask(hub, AddNote("keeper", take=2)) is None
    assert await ask(hub, SelectTake(2)) is None
    assert state(hub, *SELECTED) == (2, True, False, "morning 2 best")
    assert await ask(hub, SelectTake(1)) is None
    assert state(hub, *SELECTED) == (1, False, False, "morning 1")
    await hub.log.close()  # a graceful stop: the next start is a new session

    again = await make_hub(path, auto_take="off")
    try:
        assert await ask(again, SetSong("Blue")) is None
        assert await ask(again, SelectTake(2)) is None
        assert state(again, *SELECTED) == (2, True, False, "morning 2 best")
        assert await ask(again, FalseStart(1)) is None
        assert await ask(again, SelectTake(1)) is None
        assert state(again, *SELECTED) == (1, False, True, "morning 1")
    finally:
        await again.log.close()

    morning = read_records(path, 1, amending=True)
    markers = {r.take: r.seq for r in morning if r.kind == "take_marker"}
    assert all(r.amends == markers[r.take] for r in morning if r.kind in ("take_flag", "take_rename", "note"))
    sheet = build_take_sheet(morning)
    assert [(t.take, t.label, t.circled, t.false_start, t.notes) for t in sheet.takes] == [
        (1, "morning 1", False, True, ()),
        (2, "morning 2 best", True, False, ("keeper",)),
    ]
    assert build_take_sheet(read_records(path, 2, amending=True)).takes == ()
    from bridge.cli import main  # what the producer runs: `log export 1`

    capsys.readouterr()
    assert main(["log", "export", "1", "--format", "json", "--data-dir", str(tmp_path)]) == 0
    exported = json.loads(capsys.readouterr().out)["takes"]
    assert [(t["take"], t["label"], t["circled"]) for t in exported] == [
        (1, "morning 1", False),
        (2, "morning 2 best", True),
    ]


# ------------------------------------------------------------------ the song list


async def test_song_list_from_config_set_add_next_previous(tmp_path: Path) -> None:
    hub = await make_hub(tmp_path / "log.sqlite3", auto_take="off", songs=["Blue", "Gold"])
    try:
        songs = lambda: json.loads(str(hub.store.get("songs")))  # noqa: E731
        assert songs() == ["Blue", "Gold"] and hub.store.get("song") == ""
        assert await ask(hub, StepSong(1)) is None  # no song yet: next is the first
        assert hub.store.get("song") == "Blue"
        assert await ask(hub, StepSong(1)) is None
        assert hub.store.get("song") == "Gold"
        assert await ask(hub, StepSong(1)) == "'Gold' is the last song of the list"
        assert await ask(hub, SetSong("Red")) is None  # a song set by name joins the list
        assert songs() == ["Blue", "Gold", "Red"]
        assert await ask(hub, AddSong("Green")) is None
        assert await ask(hub, AddSong("Green")) is None  # already there: nothing new
        assert songs() == ["Blue", "Gold", "Red", "Green"] and hub.store.get("song") == "Red"
        assert await ask(hub, StepSong(-1)) is None
        assert hub.store.get("song") == "Gold"
        assert await ask(hub, MarkTake()) is None
        assert await ask(hub, StepSong(1)) is None  # take numbers are per song
        assert state(hub, "song", "take", "take/next", "take/selected") == ("Red", 0, 1, 0)
        assert await ask(hub, StepSong(-1)) is None
        assert state(hub, "song", "take", "take/next", "take/selected") == ("Gold", 1, 2, 1)
    finally:
        await hub.log.close()


async def test_empty_song_list_is_a_clear_error(hub: Hub) -> None:
    assert await ask(hub, StepSong(1)) == "no song list (add songs with song.add or [bridge] songs)"


async def test_mapping_song_next_previous_buttons(hub: Hub) -> None:
    assert await ask(hub, AddSong("A")) is None
    assert await ask(hub, AddSong("B")) is None
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
    pad = FakeDevice("pad", feedback="mapped")
    task = await start(hub, pad, None, studio_map)
    for control, song in (("next", "A"), ("next", "B"), ("prev", "A")):
        pad.report(ControlInput(control, 1.0))
        pad.report(ControlInput(control, 0.0))
        await until(lambda song=song: hub.store.get("song") == song)
    assert await ask(hub, MarkTake()) is None
    pad.report(ControlInput("circle", 1.0))  # lights from take/selected/circled
    await until(lambda: hub.store.get("take/selected/circled") is True)
    pad.report(ControlInput("circle", 1.0))  # a toggle un-circles
    await until(lambda: hub.store.get("take/selected/circled") is False)
    await stop(task)


# ------------------------------------------------------------------ automatic takes and elapsed time


async def test_recording_starts_a_take_and_a_mark_right_after_is_that_take(tmp_path: Path) -> None:
    clock = Clock()
    hub = Hub(SessionLog(tmp_path / "log.sqlite3"), clock=clock, confirm_timeout=0.3)
    await hub.start()
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    task = await start(hub, daw, "daw")
    try:
        assert await ask(hub, SetSong("Blue")) is None
        daw.report(TransportChanged(recording=True))  # record-enabled while stopped: not yet
        await settle()
        assert hub.store.get("take") == 0
        daw.report(TransportChanged(playing=True))  # roll in record: a take starts
        await until(lambda: state(hub, "take", "take/next", "take/selected") == (1, 2, 1))
        assert [m.label for m in daw.sent if isinstance(m, AddMarker)] == ["Blue T1"]
        clock.now += AUTO_TAKE_MERGE / 2
        assert await ask(hub, MarkTake("verse")) is None  # sent as recording started: same take
        assert state(hub, "take", "take/next", "take/label", "take/selected/label") == (
            1,
            2,
            "verse",
            "verse",
        )
        clock.now += 60
        assert await ask(hub, MarkTake("chorus")) is None  # inside a long pass: a new take
        assert state(hub, "take", "take/next") == (2, 3)
        daw.report(TransportChanged(recording=False))  # punch out
        await settle()
        clock.now += 10
        daw.report(TransportChanged(recording=True))  # punch in: another take
        await until(lambda: state(hub, "take", "take/next") == (3, 4))
        daw.report(TransportChanged(playing=False, recording=False))
        await settle()
        clock.now += 30
        assert await ask(hub, MarkTake("pickup")) is None  # an explicit mark before rolling ...
        clock.now += AUTO_TAKE_MERGE / 2
        daw.report(TransportChanged(playing=True, recording=True))  # ... is the take that starts
        await until(lambda: hub.store.get("transport/on_air") is True)
        await settle()
        assert state(hub, "take", "take/next", "take/label") == (4, 5, "pickup")
    finally:
        await stop(task)
        await hub.log.close()
    records = read_records(tmp_path / "log.sqlite3")
    markers = [(r.take, r.text, r.data["auto"]) for r in records if r.kind == "take_marker"]
    assert markers == [(1, "", True), (2, "chorus", False), (3, "", True), (4, "pickup", False)]
    sheet = build_take_sheet(records)
    assert [t.label for t in sheet.takes] == ["verse", "chorus", "", "pickup"]


async def test_a_mark_after_a_false_start_stopped_is_a_new_take(tmp_path: Path) -> None:
    """Recording rolled and stopped again within AUTO_TAKE_MERGE (a false start); the producer
    flags it and marks the next take: that is take 2, not a rename of the stopped take 1."""
    clock = Clock()
    hub = Hub(SessionLog(tmp_path / "log.sqlite3"), clock=clock, confirm_timeout=0.3)
    await hub.start()
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    task = await start(hub, daw, "daw")
    try:
        assert await ask(hub, SetSong("Blue")) is None
        daw.report(TransportChanged(playing=True, recording=True))
        await settle()
        assert state(hub, "take", "take/next") == (1, 2)
        clock.now += AUTO_TAKE_MERGE / 4
        daw.report(TransportChanged(playing=False, recording=False))
        await settle()
        assert await ask(hub, FalseStart()) is None
        clock.now += AUTO_TAKE_MERGE / 4
        assert await ask(hub, MarkTake("next one")) is None
        assert state(hub, "take", "take/next", "take/label") == (2, 3, "next one")
    finally:
        await stop(task)
        await hub.log.close()
    sheet = build_take_sheet(read_records(tmp_path / "log.sqlite3"))
    assert [(t.take, t.label, t.false_start) for t in sheet.takes] == [(1, "", True), (2, "next one", False)]


async def test_auto_take_off(tmp_path: Path) -> None:
    hub = await make_hub(tmp_path / "log.sqlite3", auto_take="off")
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    task = await start(hub, daw, "daw")
    daw.report(TransportChanged(playing=True, recording=True))
    await until(lambda: hub.store.get("transport/on_air") is True)
    await settle()
    assert state(hub, "take", "take/next") == (0, 1)
    await stop(task)
    await hub.log.close()


async def test_elapsed_follows_the_daw_position_while_rolling(hub: Hub) -> None:
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    task = await start(hub, daw, "daw")
    daw.report(PositionChanged(10.0))
    await until(lambda: hub.store.get("transport/position") == 10.0)
    assert await ask(hub, MarkTake()) is None
    assert hub.store.get("take/elapsed") == 0.0
    daw.report(PositionChanged(12.0))  # stopped: the elapsed time does not move
    await settle()
    assert hub.store.get("take/elapsed") == 0.0
    daw.report(TransportChanged(playing=True))
    daw.report(PositionChanged(10.5))
    daw.report(PositionChanged(13.25))
    await until(lambda: hub.store.get("take/elapsed") == 3.25)
    await stop(task)


# ------------------------------------------------------------------ take numbers never lie


class FlakyLog(SessionLog):
    """A real SessionLog whose appends of some kinds fail while ``failing`` is set (a write
    failure, seen at the log interface: the future fails with SessionLogError)."""

    failing: set[str] = set()

    def append(self, kind: str, **fields: Any) -> asyncio.Future[Any]:  # type: ignore[override]
        if kind in self.failing:
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(
                0.01, fut.set_exception, SessionLogError("simulated disk full")
            )
            return fut
        return super().append(kind, **fields)


async def test_refused_marks_take_no_number_and_drop_no_marker(tmp_path: Path) -> None:
    slog = FlakyLog(tmp_path / "log.sqlite3")
    slog.failing = set()
    hub = Hub(slog, confirm_timeout=0.3, auto_take="off")
    await hub.start()
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    tablet = FakeDevice("tablet", feedback="state")
    tasks = [await start(hub, daw, "daw"), await start(hub, tablet)]
    try:
        assert await ask(hub, SetSong("Blue")) is None
        for _ in range(2):
            assert await ask(hub, MarkTake()) is None
        assert state(hub, "take", "take/next") == (2, 3)
        slog.failing = {"take_marker"}
        tablet.sent.clear()
        answers = Answers()
        for _ in range(3):  # three marks queued behind each other, all refused
            hub.submit("tablet", Request(MarkTake(), answers))
        results = [await answers.next() for _ in range(3)]
        assert all(r is not None and "simulated disk full" in r for r in results)
        assert await ask(hub, CircleTake()) is None  # the selected take is still take 2
        await settle()
        assert state(hub, "take", "take/next", "take/selected") == (2, 3, 2)
        shown = [m.value for m in tablet.sent if getattr(m, "control", None) in ("take", "take/next")]
        assert shown == []  # no surface was shown a number the log does not hold
        assert [m.label for m in daw.sent if isinstance(m, AddMarker)] == ["Blue T1", "Blue T2"]
        slog.failing = set()  # the disk has room again
        assert await ask(hub, MarkTake("after")) is None
        assert state(hub, "take", "take/next", "take/selected") == (3, 4, 3)
        assert [m.label for m in daw.sent if isinstance(m, AddMarker)][-1] == "Blue T3 after"
    finally:
        for task in tasks:
            await stop(task)
        await hub.log.close()
    takes = [r.take for r in read_records(tmp_path / "log.sqlite3") if r.kind == "take_marker"]
    assert takes == [1, 2, 3]


async def test_a_real_write_failure_then_restart_continues_the_log_numbering(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    hub = await make_hub(path, auto_take="off")
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    task = await start(hub, daw, "daw")
    assert await ask(hub, MarkTake()) is None
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER full BEFORE INSERT ON records WHEN NEW.kind = 'take_marker' "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    conn.commit()
    for _ in range(2):
        error = await ask(hub, MarkTake())
        assert error is not None and ("disk is full" in error or "accepts no more records" in error)
    assert state(hub, "take", "take/next") == (1, 2)
    assert [m.label for m in daw.sent if isinstance(m, AddMarker)] == ["T1"]
    await stop(task)
    await hub.log.close()
    conn.execute("DROP TRIGGER full")
    conn.commit()
    conn.close()
    again = await make_hub(path, auto_take="off")
    try:
        assert state(again, "take", "take/next") == (1, 2)
        assert await ask(again, MarkTake()) is None
        assert state(again, "take", "take/next") == (2, 3)
    finally:
        await again.log.close()
    # The log recovers by itself after the failure, so the first session may have ended cleanly
    # and the restart opened a second one: the numbering continues across the file.
    records = [r for sid in (1, 2) for r in read_records(path, sid)]
    assert [r.take for r in records if r.kind == "take_marker"] == [1, 2]
