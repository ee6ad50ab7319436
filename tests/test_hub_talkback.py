"""The hub's talkback with a mixer (an in-memory stand-in; the drivers are tested against fake
consoles in tests/devices and tests/integration): cues from the mixer's confirmed on and off,
who pressed, channel B apart from A, the stuck-talkback release, fail-fast errors. On the
in-memory log with a fake clock and timer: no event loop, no timed wait (the crash-and-restart
case against the SQLite file is in test_supervised_hub.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from peers.fake_device import FakeDevice
from peers.recorder import DirectDevice, HubRig

from bridge import state as S
from bridge.hub import Hub
from bridge.log.memory import MemoryLog
from bridge.log.records import Record
from bridge.vocab import AudioCaptured, DeviceStatus, Feedback, Outbound, SetTalkback, TalkbackChanged


class Mixer(DirectDevice):
    """Carries out SetTalkback; confirms at once when ``auto`` (else the test reports)."""

    def __init__(
        self, hub: Hub, name: str = "desk", channels: tuple[str, ...] = ("A", "B"), max_on: float = 0.0
    ) -> None:
        super().__init__(name, handles=frozenset({SetTalkback}))
        self.hub = hub
        self.talkback_channels = channels
        self.talkback_max_on = max_on
        self.auto = False
        self.ignore_releases = 0

    def send_nowait(self, message: Outbound) -> bool:
        self.sent.append(message)
        if self.auto and isinstance(message, SetTalkback):
            if not message.on and self.ignore_releases:
                self.ignore_releases -= 1
                return True
            self.report(TalkbackChanged(message.on, message.channel))
        return True

    def report(self, item: Any) -> None:  # what the supervisor does with what receive() yields
        self.hub.submit(self.name, item)


@pytest.fixture
def rig() -> Iterator[HubRig]:
    r = HubRig()
    yield r
    r.close()


def mixer_of(rig: HubRig, **kwargs: Any) -> Mixer:
    mixer = Mixer(rig.hub, **kwargs)
    rig.add(mixer, "mixer")
    return mixer


def talkback_records(rig: HubRig) -> list[Record]:
    rig.log.flush()
    return [r for r in rig.log.records if r.kind.startswith("talkback")]


def test_cue_is_timed_by_the_mixers_confirmations_and_names_who_pressed(rig: HubRig) -> None:
    rig.hub.confirm_timeout = 2.0
    mixer = mixer_of(rig)
    mixer.report(TalkbackChanged(False, "A"))  # the mixer's first report after connecting
    pressed = rig.submit(SetTalkback(True))
    assert mixer.sent == [SetTalkback(True)] and pressed.results == []  # not before the mixer says so
    rig.clock.now += 0.2  # the mixer takes its time (within confirm_timeout)
    mixer.report(TalkbackChanged(True, "A"))
    assert pressed.results == [None]
    rig.clock.now += 2.0
    released = rig.submit(SetTalkback(False))
    rig.clock.now += 1.0  # the mixer is slow to release
    mixer.report(TalkbackChanged(False, "A"))
    assert released.results == [None]
    # TALK pressed on the console itself
    rig.clock.now += 5
    mixer.report(TalkbackChanged(True, "A"))
    rig.clock.now += 1.5
    mixer.report(TalkbackChanged(False, "A"))
    recs = talkback_records(rig)
    assert [(r.kind, r.source) for r in recs] == [
        ("talkback_start", "tablet"),
        ("talkback_end", "tablet"),
        ("talkback_start", "console"),
        ("talkback_end", "console"),
    ]  # the first "off" report opened no cue and logged nothing
    # confirmed on -> confirmed off (3 s), not press -> release (2.2 s)
    assert recs[1].data["duration"] == 3.0
    assert recs[3].data["duration"] == 1.5
    assert recs[0].data == {"channel": "A", "mixer": "desk", "confirmed": True, "assumed": False}
    assert recs[1].amends == recs[0].seq and recs[3].amends == recs[2].seq


def test_a_press_confirmed_after_confirm_timeout_is_the_consoles(rig: HubRig) -> None:
    mixer = mixer_of(rig)
    pressed = rig.submit(SetTalkback(True))
    rig.timer.advance(0.5)
    assert pressed.results == ["desk did not confirm SetTalkback within 0.3 s"]
    mixer.report(TalkbackChanged(True, "A"))  # late: pressed on the desk as far as we know
    assert [r.source for r in talkback_records(rig)] == ["console"]


def test_channel_b_is_its_own_state_and_cue(rig: HubRig) -> None:
    mixer = mixer_of(rig)
    mixer.auto = True
    assert rig.ask(SetTalkback(True, "B")) is None
    assert rig.hub.store.get(S.talkback_key("B")) is True
    assert rig.hub.store.get(S.TALKBACK) is not True  # the artist's talkback (A) is not engaged
    assert rig.ask(SetTalkback(True, "A")) is None
    assert rig.ask(SetTalkback(False, "B")) is None
    assert rig.hub.store.get(S.TALKBACK) is True and rig.hub.store.get("talkback/B") is False
    recs = talkback_records(rig)
    assert [(r.kind, r.data["channel"]) for r in recs] == [
        ("talkback_start", "B"),
        ("talkback_start", "A"),
        ("talkback_end", "B"),
    ]
    assert recs[2].amends == recs[0].seq


def test_unknown_channel_and_down_mixer_fail_at_once(rig: HubRig) -> None:
    mixer = mixer_of(rig, channels=("A",))
    assert rig.ask(SetTalkback(True, "B")) == "mixer 'desk' has no talk channel B (it has A)"
    assert rig.ask(SetTalkback(True, "Z")) == "no talk channel 'Z' (channels: A, B)"
    rig.hub.device_down("desk", DeviceStatus.DISCONNECTED, "the console did not answer /status within 1 s")
    error = rig.ask(SetTalkback(True))
    assert error == "mixer 'desk' is disconnected: the console did not answer /status within 1 s"
    assert mixer.sent == []


def test_a_mixer_lost_while_pressing_says_why(rig: HubRig) -> None:
    mixer_of(rig)
    pressed = rig.submit(SetTalkback(True))
    rig.hub.device_down("desk", DeviceStatus.DISCONNECTED, "no answer")
    assert pressed.results == ["device 'desk' is disconnected: no answer"]


def test_unconfirmed_press_fails_after_confirm_timeout(rig: HubRig) -> None:
    mixer_of(rig)
    answers = rig.submit(SetTalkback(True))
    rig.timer.advance(0.3)
    assert answers.results == ["desk did not confirm SetTalkback within 0.3 s"]
    assert talkback_records(rig) == []


def test_stuck_talkback_is_released_at_max_on_and_logged(rig: HubRig) -> None:
    mixer = mixer_of(rig, max_on=0.2)
    mixer.auto = True
    assert rig.ask(SetTalkback(True)) is None
    assert rig.timer.armed[0] == pytest.approx(0.2)  # (then the press's confirmation timeout)
    rig.timer.advance(0.19)
    assert SetTalkback(False) not in mixer.sent
    rig.timer.advance(0.02)
    assert SetTalkback(False) in mixer.sent
    assert rig.hub.store.get(S.TALKBACK) is False
    recs = talkback_records(rig)
    assert [(r.kind, r.source) for r in recs] == [
        ("talkback_start", "tablet"),
        ("talkback_end", "auto_release"),
    ]
    assert recs[1].data["auto_released"] is True and recs[1].data["max_on"] == 0.2
    assert "max_on" in recs[1].text


def test_a_release_in_time_cancels_the_stuck_timer(rig: HubRig) -> None:
    mixer = mixer_of(rig, max_on=0.3)
    mixer.auto = True
    assert rig.ask(SetTalkback(True)) is None
    assert rig.ask(SetTalkback(False)) is None
    assert rig.ask(SetTalkback(True, "B")) is None  # B on, A stays off
    rig.timer.advance(0.15)
    assert rig.ask(SetTalkback(False, "B")) is None
    rig.timer.advance(0.4)
    assert mixer.sent.count(SetTalkback(False)) == 1 and mixer.sent.count(SetTalkback(False, "B")) == 1
    recs = talkback_records(rig)
    assert not any(r.data.get("auto_released") for r in recs)


def test_a_release_the_mixer_ignores_is_retried(rig: HubRig, caplog: pytest.LogCaptureFixture) -> None:
    rig.hub.confirm_timeout = 0.1
    mixer = mixer_of(rig, max_on=0.1)
    mixer.auto = True
    mixer.ignore_releases = 1
    assert rig.ask(SetTalkback(True)) is None
    rig.timer.advance(0.1)  # max_on: released, the mixer ignores it
    assert mixer.sent.count(SetTalkback(False)) == 1 and rig.hub.store.get(S.TALKBACK) is True
    rig.timer.advance(0.1)  # not confirmed: retried every max(1, confirm_timeout) s
    assert rig.timer.armed == [pytest.approx(1.0)]
    rig.timer.advance(1.0)
    assert rig.hub.store.get(S.TALKBACK) is False
    assert mixer.sent.count(SetTalkback(False)) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "could not be released" in errors[0].getMessage()
    recs = talkback_records(rig)
    assert recs[-1].data.get("auto_released") is True


def test_without_a_mixer_the_press_is_the_fact(rig: HubRig) -> None:
    pressed = rig.submit(SetTalkback(True))
    assert pressed.results == [] and rig.hub.store.get(S.TALKBACK) is True  # answered once logged
    rig.log.flush()
    assert pressed.results == [None]
    rig.clock.now += 1.0
    assert rig.ask(SetTalkback(False)) is None
    recs = talkback_records(rig)
    assert [(r.kind, r.source) for r in recs] == [("talkback_start", "tablet"), ("talkback_end", "tablet")]
    assert recs[1].data["duration"] == 1.0 and recs[0].data["mixer"] is None


def test_without_a_mixer_talkback_works_while_the_log_cannot_write() -> None:
    log = MemoryLog()
    rig = HubRig(log)
    try:
        log.refuse("disk I/O error")
        assert rig.ask(SetTalkback(True)) is None  # the press took effect: not logged
        assert rig.hub.store.get(S.TALKBACK) is True
        log.recover()
        log.fail_next("disk full")
        assert rig.ask(SetTalkback(False)) == "session log write failed: disk full"
        assert rig.hub.store.get(S.TALKBACK) is False
    finally:
        rig.close()


def test_the_recorders_wav_amends_the_confirmed_cue(rig: HubRig) -> None:
    mixer = mixer_of(rig)
    mixer.auto = True
    recorder = rig.add(FakeDevice("talkback_mic", feedback="state"))
    for on in (True, False):
        assert rig.ask(SetTalkback(on)) is None
    # the recorder saw the confirmed state, and reports the file after the release
    seen = rig.queued("talkback_mic")
    assert Feedback("talkback", True) in seen and Feedback("talkback", False) in seen
    rig.hub.submit(recorder.name, AudioCaptured("/data/talkback/x_talkback.wav", 1.25))
    assert rig.ask(SetTalkback(True, "B")) is None  # a B cue does not steal A's file
    recs = talkback_records(rig)
    start_a = next(r for r in recs if r.kind == "talkback_start" and r.data["channel"] == "A")
    audio = next(r for r in recs if r.kind == "talkback_audio")
    assert audio.amends == start_a.seq and audio.text == "/data/talkback/x_talkback.wav"


def test_a_cue_open_at_a_crash_is_closed_at_restart_and_the_mixer_state_wins() -> None:
    """The daemon died with talkback on (no session_end): the resumed session ends the cue
    (as of the last record before the crash), talkback starts off, and the mixer's own report
    that it is still on wins (a new cue)."""
    first = HubRig()
    mixer = mixer_of(first)
    mixer.report(TalkbackChanged(True, "A"))  # TALK on the console
    first.log.flush()
    first.clock.now += 3
    first.hub.submit("desk", TalkbackChanged(True, "B"))  # the last record before the crash
    first.log.flush()
    first.close()  # killed: the log is not closed

    again = HubRig(MemoryLog(first.log.records))
    try:
        assert again.hub.store.get(S.TALKBACK) is False
        mixer2 = mixer_of(again)
        mixer2.report(TalkbackChanged(True, "A"))  # it really is still on
        assert again.hub.store.get(S.TALKBACK) is True
        recs = talkback_records(again)
    finally:
        again.close()
    ends = [r for r in recs if r.kind == "talkback_end"]
    assert [(r.source, r.amends, r.data["channel"]) for r in ends] == [
        ("restart", recs[0].seq, "A"),
        ("restart", recs[1].seq, "B"),
    ]
    assert all(r.data["closed_at_restart"] is True and r.ts == recs[1].ts for r in ends)
    assert [(r.kind, r.source) for r in recs[4:]] == [("talkback_start", "console")]
