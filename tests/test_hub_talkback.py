"""The hub's talkback with a mixer (an in-memory stand-in; the drivers are tested against fake
consoles in tests/devices and tests/integration): cues from the mixer's confirmed on and off,
who pressed, channel B apart from A, the stuck-talkback release, fail-fast errors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from peers.recorder import Answers

from bridge import state as S
from bridge.devices.fake import FakeDevice
from bridge.hub import Hub
from bridge.log.kinds import RecordKind
from bridge.log.reader import read_records
from bridge.log.writer import SessionLog
from bridge.supervisor import run_device
from bridge.vocab import AudioCaptured, Feedback, Outbound, Request, SetTalkback, TalkbackChanged


class Clock:
    """The monotonic clock, which a test can move forward (``clock.now += 2``)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.now


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


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.005)


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    clock = Clock()
    hub = Hub(SessionLog(tmp_path / "log.sqlite3"), clock=clock, confirm_timeout=0.3)
    await hub.start()
    tasks: list[asyncio.Task[None]] = []

    async def add(device: FakeDevice, role: str | None = "mixer") -> None:
        tasks.append(asyncio.create_task(run_device(hub, hub.add_device(device, role))))
        await settle()

    yield hub, clock, add
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await hub.log.close()


async def talkback_records(hub: Hub) -> list[Any]:
    await settle()
    await hub.log.append(RecordKind.NOTE, text="sync")  # one writer, in order: everything before is durable
    return [r for r in read_records(hub.log.path) if r.kind.startswith("talkback")]


async def test_cue_is_timed_by_the_mixers_confirmations_and_names_who_pressed(rig: Any) -> None:
    hub, clock, add = rig
    hub.confirm_timeout = 2.0
    mixer = Mixer()
    await add(mixer)
    mixer.report(TalkbackChanged(False, "A"))  # the mixer's first report after connecting
    await settle()
    pressed = Answers()
    hub.submit("tablet", Request(SetTalkback(True), pressed))
    await settle()
    assert mixer.sent == [SetTalkback(True)] and pressed.results == []  # not before the mixer says so
    clock.now += 0.2  # the mixer takes its time (within confirm_timeout)
    mixer.report(TalkbackChanged(True, "A"))
    assert await pressed.next() is None
    clock.now += 2.0
    released = Answers()
    hub.submit("tablet", Request(SetTalkback(False), released))
    await settle()
    clock.now += 1.0  # the mixer is slow to release
    mixer.report(TalkbackChanged(False, "A"))
    assert await released.next() is None
    # TALK pressed on the console itself
    clock.now += 5
    mixer.report(TalkbackChanged(True, "A"))
    await settle()
    clock.now += 1.5
    mixer.report(TalkbackChanged(False, "A"))
    await settle()
    recs = await talkback_records(hub)
    assert [(r.kind, r.source) for r in recs] == [
        ("talkback_start", "tablet"),
        ("talkback_end", "tablet"),
        ("talkback_start", "console"),
        ("talkback_end", "console"),
    ]  # the first "off" report opened no cue and logged nothing
    # confirmed on -> confirmed off (3 s + real time), not press -> release (2.2 s + real time)
    assert 3.0 <= recs[1].data["duration"] < 3.5
    assert 1.5 <= recs[3].data["duration"] < 2.0
    assert recs[0].data == {"channel": "A", "mixer": "desk", "confirmed": True, "assumed": False}
    assert recs[1].amends == recs[0].seq and recs[3].amends == recs[2].seq


async def test_channel_b_is_its_own_state_and_cue(rig: Any) -> None:
    hub, _clock, add = rig
    mixer = Mixer()
    mixer.auto = True
    await add(mixer)
    answers = Answers()
    hub.submit("tablet", Request(SetTalkback(True, "B"), answers))
    assert await answers.next() is None
    assert hub.store.get(S.talkback_key("B")) is True
    assert hub.store.get(S.TALKBACK) is not True  # the artist's talkback (A) is not engaged
    hub.submit("tablet", Request(SetTalkback(True, "A"), answers))
    assert await answers.next() is None
    hub.submit("tablet", Request(SetTalkback(False, "B"), answers))
    assert await answers.next() is None
    assert hub.store.get(S.TALKBACK) is True and hub.store.get("talkback/B") is False
    recs = await talkback_records(hub)
    assert [(r.kind, r.data["channel"]) for r in recs] == [
        ("talkback_start", "B"),
        ("talkback_start", "A"),
        ("talkback_end", "B"),
    ]
    assert recs[2].amends == recs[0].seq


async def test_unknown_channel_and_down_mixer_fail_at_once(rig: Any) -> None:
    hub, _clock, add = rig
    mixer = Mixer(channels=("A",))
    await add(mixer)
    answers = Answers()
    hub.submit("tablet", Request(SetTalkback(True, "B"), answers))
    assert await answers.next(limit=0.1) == "mixer 'desk' has no talk channel B (it has A)"
    hub.submit("tablet", Request(SetTalkback(True, "Z"), answers))
    assert await answers.next(limit=0.1) == "no talk channel 'Z' (channels: A, B)"
    mixer.lose("the console did not answer /status within 1 s")
    await settle()
    hub.submit("tablet", Request(SetTalkback(True), answers))
    error = await answers.next(limit=0.1)
    assert error == "mixer 'desk' is disconnected: the console did not answer /status within 1 s"
    assert mixer.sent == []


async def test_unconfirmed_press_fails_after_confirm_timeout(rig: Any) -> None:
    hub, _clock, add = rig
    mixer = Mixer()
    await add(mixer)
    answers = Answers()
    hub.submit("tablet", Request(SetTalkback(True), answers))
    error = await answers.next()
    assert error is not None and "did not confirm SetTalkback" in error
    assert await talkback_records(hub) == []


async def test_stuck_talkback_is_released_at_max_on_and_logged(rig: Any) -> None:
    hub, _clock, add = rig
    mixer = Mixer(max_on=0.2)
    mixer.auto = True
    await add(mixer)
    answers = Answers()
    hub.submit("tablet", Request(SetTalkback(True), answers))
    assert await answers.next() is None
    await asyncio.sleep(0.5)
    assert SetTalkback(False) in mixer.sent
    assert hub.store.get(S.TALKBACK) is False
    recs = await talkback_records(hub)
    assert [(r.kind, r.source) for r in recs] == [
        ("talkback_start", "tablet"),
        ("talkback_end", "auto_release"),
    ]
    assert recs[1].data["auto_released"] is True and recs[1].data["max_on"] == 0.2
    assert "max_on" in recs[1].text


async def test_a_release_in_time_cancels_the_stuck_timer(rig: Any) -> None:
    hub, _clock, add = rig
    mixer = Mixer(max_on=0.3)
    mixer.auto = True
    await add(mixer)
    answers = Answers()
    hub.submit("tablet", Request(SetTalkback(True), answers))
    assert await answers.next() is None
    hub.submit("tablet", Request(SetTalkback(False), answers))
    assert await answers.next() is None
    hub.submit("tablet", Request(SetTalkback(True, "B"), answers))  # B on, A stays off
    assert await answers.next() is None
    await asyncio.sleep(0.15)
    hub.submit("tablet", Request(SetTalkback(False, "B"), answers))
    assert await answers.next() is None
    await asyncio.sleep(0.4)
    assert mixer.sent.count(SetTalkback(False)) == 1 and mixer.sent.count(SetTalkback(False, "B")) == 1
    recs = await talkback_records(hub)
    assert not any(r.data.get("auto_released") for r in recs)


async def test_a_release_the_mixer_ignores_is_retried(rig: Any, caplog: pytest.LogCaptureFixture) -> None:
    hub, _clock, add = rig
    hub.confirm_timeout = 0.1
    mixer = Mixer(max_on=0.1)
    mixer.auto = True
    mixer.ignore_releases = 1
    await add(mixer)
    answers = Answers()
    hub.submit("tablet", Request(SetTalkback(True), answers))
    assert await answers.next() is None
    deadline = asyncio.get_running_loop().time() + 5
    while hub.store.get(S.TALKBACK) is not False and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert hub.store.get(S.TALKBACK) is False
    assert mixer.sent.count(SetTalkback(False)) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "could not be released" in errors[0].getMessage()
    recs = await talkback_records(hub)
    assert recs[-1].data.get("auto_released") is True


async def test_without_a_mixer_the_press_is_the_fact(rig: Any) -> None:
    hub, clock, _add = rig
    answers = Answers()
    hub.submit("tablet", Request(SetTalkback(True), answers))
    assert await answers.next() is None
    clock.now += 1.0
    hub.submit("tablet", Request(SetTalkback(False), answers))
    assert await answers.next() is None
    recs = await talkback_records(hub)
    assert [(r.kind, r.source) for r in recs] == [("talkback_start", "tablet"), ("talkback_end", "tablet")]
    assert recs[1].data["duration"] == pytest.approx(1.0, abs=0.1) and recs[0].data["mixer"] is None


async def test_the_recorders_wav_amends_the_confirmed_cue(rig: Any) -> None:
    hub, _clock, add = rig
    mixer = Mixer()
    mixer.auto = True
    await add(mixer)
    recorder = FakeDevice("talkback_mic", feedback="state")
    await add(recorder, role=None)
    answers = Answers()
    for on in (True, False):
        hub.submit("tablet", Request(SetTalkback(on), answers))
        assert await answers.next() is None
    # the recorder saw the confirmed state, and reports the file after the release
    assert Feedback("talkback", True) in recorder.sent and Feedback("talkback", False) in recorder.sent
    recorder.report(AudioCaptured("/data/talkback/x_talkback.wav", 1.25))
    hub.submit("tablet", Request(SetTalkback(True, "B"), answers))  # a B cue does not steal A's file
    assert await answers.next() is None
    await settle()
    recs = await talkback_records(hub)
    start_a = next(r for r in recs if r.kind == "talkback_start" and r.data["channel"] == "A")
    audio = next(r for r in recs if r.kind == "talkback_audio")
    assert audio.amends == start_a.seq and audio.text == "/data/talkback/x_talkback.wav"


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
