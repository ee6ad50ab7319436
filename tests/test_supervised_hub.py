"""The hub with the real SQLite session log and the real supervisor tasks: what is really
about the durable log (a crash and a restart, a write failure the disk reports, the take
sheet and the export read from the file) or about reconnects (the supervisor's backoff).
The hub and ledger logic itself is tested without a loop or a sleep in test_hub.py,
test_hub_talkback.py, test_session_verbs.py and test_ledger.py."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from peers.fake_device import FakeDevice
from peers.recorder import Answers

from bridge import state as S
from bridge.hub import DAW_COMMANDS, Hub
from bridge.log.kinds import RecordKind
from bridge.log.reader import read_records
from bridge.log.takesheet import build_take_sheet
from bridge.log.writer import SessionLog
from bridge.mapping import parse_mapping
from bridge.supervisor import run_device
from bridge.vocab import (
    AddMarker,
    AddNote,
    AddSong,
    CircleTake,
    Command,
    ControlInput,
    FalseStart,
    Feedback,
    MarkerAdded,
    MarkTake,
    NewSession,
    Outbound,
    RenameTake,
    Request,
    SelectTake,
    SetRecord,
    SetSong,
    SetTalkback,
    TalkbackChanged,
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


async def make_hub(path: Path, **kwargs: Any) -> Hub:
    hub = Hub(SessionLog(path), confirm_timeout=0.3, **kwargs)
    await hub.start()
    return hub


async def ask(hub: Hub, command: Command, source: str = "tablet") -> str | None:
    answers = Answers()
    hub.submit(source, Request(command, answers))
    return await answers.next()


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def state(hub: Hub, *keys: str) -> tuple[Any, ...]:
    return tuple(hub.store.get(k) for k in keys)


SELECTED = ("take/selected", "take/selected/circled", "take/selected/false_start", "take/selected/label")


SELECTED = ("take/selected", "take/selected/circled", "take/selected/false_start", "take/selected/label")


class Mixer(FakeDevice):
    """Carries out SetTalkback; confirms at once when ``auto`` (else the test reports)."""

    def __init__(
        self, name: str = "desk", channels: tuple[str, ...] = ("A", "B"), max_on: float = 0.0
    ) -> None:
        super().__init__(name, handles=frozenset({SetTalkback}))
        self.talkback_channels = channels
        self.talkback_max_on = max_on
        self.auto = False
        self.ignore_releases = 0

    async def send(self, message: Outbound) -> None:
        self.sent.append(message)
        if self.auto and isinstance(message, SetTalkback):
            if not message.on and self.ignore_releases:
                self.ignore_releases -= 1
                return
            self.report(TalkbackChanged(message.on, message.channel))


async def talkback_records(hub: Hub) -> list[Any]:
    await settle()
    await hub.log.append(RecordKind.NOTE, text="sync")  # one writer, in order: everything before is durable
    return [r for r in read_records(hub.log.path) if r.kind.startswith("talkback")]


# ------------------------------------------------------------------ reconnects (the supervisor)


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


# ------------------------------------------------------------------ the durable log: crash, restart, export


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


async def test_a_cue_open_at_a_crash_is_closed_at_restart_and_the_mixer_state_wins(tmp_path: Path) -> None:
    """The daemon died with talkback on (kill -9: no session_end): the resumed session ends the
    cue (as of the last record before the crash), talkback starts off, and the mixer's own
    report that it is still on wins (a new cue)."""
    import sqlite3

    path = tmp_path / "log.sqlite3"
    hub = Hub(SessionLog(path), confirm_timeout=0.3)
    await hub.start()
    mixer = Mixer()
    task = asyncio.create_task(run_device(hub, hub.add_device(mixer, "mixer")))
    await settle()
    mixer.report(TalkbackChanged(True, "A"))  # TALK on the console
    await talkback_records(hub)  # durable
    conn = sqlite3.connect(path)  # a crash: the session_end cannot be written
    conn.execute(
        "CREATE TRIGGER crash BEFORE INSERT ON records WHEN NEW.kind IN ('session_end', 'talkback_end') "
        "BEGIN SELECT RAISE(ABORT, 'simulated crash'); END"
    )
    conn.commit()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await hub.log.close()
    conn.execute("DROP TRIGGER crash")
    conn.commit()
    conn.close()
    before = [r for r in read_records(path) if r.kind.startswith("talkback")]
    assert [r.kind for r in before] == ["talkback_start"]

    again = Hub(SessionLog(path), confirm_timeout=0.3)
    await again.start()
    try:
        assert again.store.get(S.TALKBACK) is False
        mixer2 = Mixer()
        task = asyncio.create_task(run_device(again, again.add_device(mixer2, "mixer")))
        await settle()
        mixer2.report(TalkbackChanged(True, "A"))  # it really is still on
        await settle()
        assert again.store.get(S.TALKBACK) is True
        recs = await talkback_records(again)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await again.log.close()
    last = [r for r in read_records(path) if r.seq < recs[1].seq][-1]  # the last before the crash
    assert [(r.kind, r.source, r.amends) for r in recs] == [
        ("talkback_start", "console", None),
        ("talkback_end", "restart", recs[0].seq),
        ("talkback_start", "console", None),
    ]
    assert recs[1].data["closed_at_restart"] is True and recs[1].ts == last.ts
