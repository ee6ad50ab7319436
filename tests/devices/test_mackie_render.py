"""The Mackie desk without ports: MackieDesk (state -> bytes) and DeskKeys (bytes -> commands)
driven directly, with a list as the sink, a hand-moved clock and hand-fired timers. No JACK;
tests/devices/test_mackie.py runs the whole driver against an emulated surface."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bridge.devices.midi import mackie_codec as mc
from bridge.devices.midi.mackie import MackieSurface
from bridge.devices.midi.mackie_keys import DeskKeys, DeskOptions
from bridge.devices.midi.mackie_render import DAW_SETTLE, MackieDesk
from bridge.errors import ConfigError, DeviceLost
from bridge.options import parse_options
from bridge.vocab import (
    AddMarker,
    CircleTake,
    FalseStart,
    Inbound,
    Locate,
    MarkTake,
    Play,
    SelectTake,
    SetRecord,
    SetTalkback,
    SetTrackArm,
    SetTrackFader,
    SetTrackMute,
    SetTrackSolo,
    StepSong,
    Stop,
    Value,
)


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


class Timer:
    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """The desk's clock and timers: time moves only in :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[Timer] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for timer in [t for t in self.timers if t.due <= self.now and not t.cancelled]:
            self.timers.remove(timer)
            timer.callback()

    def pending(self) -> list[Timer]:
        return [t for t in self.timers if not t.cancelled]


class Rig:
    def __init__(self, state: dict[str, Value] | None = None, **table: Any) -> None:
        self.options = parse_options(DeskOptions, table, where="devices.desk", file="t")
        self.sent: list[bytes] = []
        self.clock = Clock()
        self.state = state
        lookup = state.get if state is not None else None
        self.desk = MackieDesk(
            "desk",
            self.options,
            self.sent.append,
            clock=self.clock,
            state=lookup,
            call_later=self.clock.call_later,
        )
        self.keys = DeskKeys(self.desk)
        self.desk.attach()
        self.keys.attach()
        self.desk.resync()

    def take(self) -> list[bytes]:
        sent, self.sent[:] = list(self.sent), []
        return sent

    def show(self, **values: Value) -> list[bytes]:
        for key, value in values.items():
            self.desk.show(key.replace("__", "/"), value)
        return self.take()

    def press(self, note: int) -> list[Inbound]:
        return self.keys.handle([bytes((0x90, note, 0x7F)), bytes((0x90, note, 0x00))])

    def lcd(self, sent: list[bytes]) -> tuple[str, str]:
        buf = [" "] * 112
        for m in sent:
            if m[:6] == bytes((0xF0, 0, 0, 0x66, self.desk.model, 0x12)):
                for i, b in enumerate(m[7:-1]):
                    if m[6] + i < 112:
                        buf[m[6] + i] = chr(b)
        text = "".join(buf)
        return text[:56], text[56:]


def test_full_dump_at_connect() -> None:
    rig = Rig()
    got = rig.take()
    for note in [*range(0x00, 0x18), mc.STOP, mc.PLAY, mc.RECORD]:
        expected = mc.LED_ON if note == mc.STOP else mc.LED_OFF  # stopped: STOP lit
        assert mc.led(note, expected) in got, hex(note)
    assert mc.lcd(0x14, 0x00, " " * 56) in got
    assert mc.lcd(0x14, 0x38, mc.lcd_line([f"#{i}" for i in range(1, 9)])) in got
    assert all(mc.fader(i, 0.0) in got for i in range(8))
    assert mc.timecode_digit(9, 0x20) in got and mc.timecode_digit(0, 0x30) in got
    assert rig.desk.stats["resyncs"] == 1 and rig.desk.stats["sent"] == len(got)
    # nothing changed: a value shown again sends nothing
    assert rig.show(track__1__armed=False, transport__playing=False) == []


def test_leds_follow_the_state_not_the_keys() -> None:
    rig = Rig()
    rig.take()
    assert rig.press(mc.REC_ARM + 1) == [SetTrackArm(2, True)]
    assert rig.take() == []  # the LED waits for the DAW
    assert rig.show(track__2__armed=True) == [hx("90 01 7F")]
    assert rig.press(mc.REC_ARM + 1) == [SetTrackArm(2, False)]  # toggles against the mirror
    assert rig.press(mc.SOLO + 2) == [SetTrackSolo(3, True)]
    assert rig.press(mc.MUTE) == [SetTrackMute(1, True)]
    # names: one LCD cell each, 6 characters (abbreviated) + a space
    assert rig.show(track__1__name="Kick", track__2__name="Snare Drum") == [
        hx("F0 00 00 66 14 12 00") + b"Kick   " + hx("F7"),
        hx("F0 00 00 66 14 12 07") + b"SnrDrm " + hx("F7"),
    ]
    assert rig.show(track__1__fader=1.0) == [hx("E0 7F 7F"), mc.vpot_ring(0, 11, mode=2)]


def test_transport_leds_and_the_recording_line() -> None:
    rig = Rig()
    rig.take()
    got = [*rig.press(mc.PLAY), *rig.press(mc.STOP), *rig.press(mc.RECORD), *rig.press(mc.MARKER)]
    assert got == [Play(), Stop(), SetRecord(True), MarkTake()]
    assert rig.press(mc.BUTTONS["user_a"]) == [SetTalkback(True, "A"), SetTalkback(False, "A")]
    # record enabled while stopped: RECORD flashes; rolling: on, STOP goes dark
    assert hx("90 5F 01") in rig.show(transport__recording=True)
    assert set(rig.show(transport__playing=True)) >= {hx("90 5F 7F"), hx("90 5E 7F"), hx("90 5D 00")}
    sent = rig.show(song="Blue Song", take=4)
    assert rig.lcd(sent)[1] == "REC  Blue Song  take 4".ljust(56)
    assert rig.press(mc.RECORD) == [SetRecord(False)]
    assert rig.show(talkback=True) == [hx("90 66 7F")]


def test_cursor_keys_songs_takes_and_toggles() -> None:
    rig = Rig(keys={"f2": "circle_take_toggle", "f3": "false_start_toggle"})
    rig.show(take__selected__circled=True)
    got: list[Inbound] = []
    for name in ("down", "up", "left", "right", "f2", "f3"):
        got += rig.press(mc.BUTTONS[name])
    assert got == [
        StepSong(1),
        StepSong(-1),
        SelectTake(step=-1),
        SelectTake(step=1),
        CircleTake(None, False),
        FalseStart(None, True),
    ]
    f2, f3 = mc.BUTTONS["f2"], mc.BUTTONS["f3"]
    assert rig.show(take__selected__circled=False, take__selected__false_start=True) == [
        bytes((0x90, f2, 0x00)),
        bytes((0x90, f3, 0x7F)),
    ]


def test_local_actions_compute_from_the_mirror() -> None:
    rig = Rig(seek_seconds=5, keys={"f1": "talkback_latch", "f4": "locate_start", "f5": "add_marker"})
    rig.show(transport__position=12.5)
    assert rig.press(mc.REWIND) == [Locate(7.5)]
    assert rig.press(mc.FAST_FWD) == [Locate(17.5)]
    assert rig.press(mc.BUTTONS["f4"]) == [Locate(0.0)]
    assert rig.press(mc.BUTTONS["f5"]) == [AddMarker("marker")]
    assert rig.press(mc.BUTTONS["f1"]) == [SetTalkback(True, "A")]
    rig.show(talkback=True)
    assert rig.press(mc.BUTTONS["f1"]) == [SetTalkback(False, "A")]
    assert rig.press(mc.BUTTONS["f8"]) == []  # unbound
    assert rig.desk.stats["ignored"] >= 1
    assert rig.keys.action("record") == SetRecord(True)
    assert rig.keys.action("explode") is None


def test_touch_guard_coalescing_and_settle() -> None:
    rig = Rig(touch_guard=0.3)
    rig.take()
    assert rig.keys.handle([hx("E0 00 40")]) == []  # untouched pitch bend is not user input
    assert rig.desk.stats["untouched_dropped"] == 1
    moves = [bytes((0xE0, 0x00, v)) for v in range(0x10, 0x50)]
    assert rig.keys.handle([hx("90 68 7F"), *moves]) == [SetTrackFader(1, (0x4F << 7) / 16383)]
    assert not [m for m in rig.show(track__1__fader=0.25) if m[0] == 0xE0]  # the hand is on it
    rig.keys.handle([hx("90 68 00")])
    rig.clock.advance(0.2)
    assert rig.show(track__1__fader=0.25) == []  # within the guard (the ring already shows it)
    rig.clock.advance(0.2)
    assert rig.take() == [mc.fader(0, 0.25)]  # then once, the truth
    assert rig.show(track__1__fader=0.25) == []


def test_vpots_trim_the_fader() -> None:
    rig = Rig(vpot_step=0.1)
    rig.show(track__2__fader=0.5)
    (cmd,) = rig.keys.handle([hx("B0 11 01"), hx("B0 11 02")])  # +3 ticks, summed
    assert isinstance(cmd, SetTrackFader) and cmd.track == 2 and cmd.value == pytest.approx(0.8)
    (cmd,) = rig.keys.handle([hx("B0 11 41")])  # -1 from what was just commanded
    assert isinstance(cmd, SetTrackFader) and cmd.value == pytest.approx(0.7)
    assert Rig(vpot_step=0).keys.handle([hx("B0 11 01")]) == []


def test_echo_guard_once_the_output_loops_back() -> None:
    rig = Rig(echo_window=2.0)
    dump = rig.take()
    assert not rig.keys.looped
    assert rig.keys.handle(dump) == []  # our own SysEx / CCs back: a loop, no commands
    assert rig.keys.looped and rig.desk.stats["looped"] == 1
    lit = rig.show(track__1__armed=True)
    assert rig.keys.handle(lit) == []  # the LED's echo is no press
    fader = rig.show(track__3__fader=0.5)
    assert rig.keys.handle([fader[0]]) == []  # the motor fader's echo
    assert rig.desk.stats["echo_dropped"] >= 2
    assert rig.keys.handle([bytes((0x90, mc.REC_ARM, 0x7F))]) == [SetTrackArm(1, False)]  # a real press
    rig.keys.attach()  # the next connect starts trusting the input again
    assert not rig.keys.looped


def test_a_double_press_is_no_echo_on_a_normal_link() -> None:
    rig = Rig()
    rig.take()
    lit = rig.show(track__1__armed=True)
    assert rig.keys.handle(lit) == [SetTrackArm(1, False)]


def test_banking() -> None:
    rig = Rig()
    for t in range(1, 11):
        rig.desk.show(f"track/{t}/name", f"Trk{t}")
    rig.desk.show("track/10/armed", True)
    rig.take()
    assert rig.press(mc.BANK_RIGHT) == []
    got = rig.take()
    assert rig.lcd(got)[0].startswith("Trk9   Trk10  ")
    assert hx("90 01 7F") in got and mc.assignment("9")[1] in got
    assert rig.press(mc.MUTE + 1) == [SetTrackMute(10, True)]
    rig.press(mc.BANK_RIGHT)  # no tracks beyond 10: stays
    assert rig.desk.bank == 8
    rig.press(mc.CHANNEL_LEFT)
    assert rig.press(mc.REC_ARM) == [SetTrackArm(8, True)]
    assert rig.desk.bank == 7


def test_extender_strip_offset() -> None:
    rig = Rig(extender=True, strip_offset=8)
    got = rig.take()
    assert rig.desk.model == mc.MODEL_MCU_XT
    assert rig.lcd(got)[1] == mc.lcd_line([f"#{i}" for i in range(9, 17)])
    assert not [m for m in got if m[0] == 0xB0 and m[1] >= mc.TIMECODE_CC]  # no displays on an XT
    assert rig.press(mc.REC_ARM) == [SetTrackArm(9, True)]


def test_timecode_shows_position_or_take() -> None:
    rig = Rig(fps=30)
    rig.take()
    sent = rig.show(transport__position=83.5)
    codes = mc.timecode_codes(mc.format_position(83.5, 30), mc.POSITION_DOTS)
    assert {mc.timecode_digit(d, c) for d, c in enumerate(codes)} >= set(sent) and sent
    take = Rig(display="take", assignment="take", state={"take/next": 12})
    take.desk.show("take/next", 12)
    shown = take.take()
    for d, c in enumerate(mc.timecode_codes(mc.format_take(12))):
        assert mc.timecode_digit(d, c) in shown
    assert mc.assignment("12")[0] in shown


def test_daw_offline_is_shown_and_only_differences_come_back() -> None:
    rig = Rig(model="xtouch")
    for key, value in (
        ("daw/status", "ok"),
        ("track/1/name", "Audio 1"),
        ("track/1/armed", True),
        ("track/1/fader", 0.5),
        ("transport/recording", True),
        ("talkback", True),
    ):
        rig.desk.show(key, value)
    shown = rig.take()
    got = rig.show(daw__status="disconnected")
    top, bottom = rig.lcd(shown + got)
    assert top.startswith("DAW offline - reconnecting") and bottom.startswith("#1     #2")
    for note in (mc.REC_ARM, mc.STOP, mc.RECORD):
        assert mc.led(note, mc.LED_OFF) in got, hex(note)
    assert mc.xtouch_colors(0x14, [mc.COLOR_WHITE] * 8) in got
    assert not [m for m in got if m[0] & 0xF0 == 0xE0]  # no motor moves
    assert not [m for m in got if m[:2] == bytes((0x90, 0x66))]  # talkback stays lit
    assert rig.show(track__2__armed=True, track__3__armed=True) == []  # stale: nothing lights
    top, _ = rig.lcd(shown + got + rig.show(daw__status="bad_config"))
    assert top.startswith("DAW offline - check the bridge config")
    # back; its re-report follows at once: track 3 is not armed in the DAW any more
    assert rig.show(daw__status="ok", track__3__armed=False) == []
    rig.clock.advance(DAW_SETTLE)
    back = rig.take()
    for note in (mc.REC_ARM, mc.REC_ARM + 1, mc.STOP):
        assert mc.led(note, mc.LED_ON) in back, hex(note)
    assert mc.led(mc.RECORD, mc.LED_FLASH) in back
    assert not [m for m in back if m[1] == mc.REC_ARM + 2]
    leds = [m for m in back if m[0] == 0x90]
    assert len(leds) == len(set(leds)) == 4


def test_resync_reads_the_state_again() -> None:
    state: dict[str, Value] = {"track/1/armed": True}
    rig = Rig(state=state)
    rig.desk.show("track/1/armed", True)
    rig.take()
    state["track/1/armed"] = False
    rig.desk.resync()
    got = rig.take()
    assert mc.led(mc.REC_ARM, mc.LED_OFF) in got and rig.desk.stats["resyncs"] == 2


def test_a_rebooted_unit_is_answered_and_replayed() -> None:
    rig = Rig()
    rig.take()
    query = mc.host_connection_query(mc.MODEL_MCU, b"EMU0001", b"\x01\x02\x03\x04")
    assert rig.keys.handle([query]) == []
    assert rig.desk.stats["resyncs"] == 2 and mc.led(mc.STOP, mc.LED_ON) in rig.take()
    logic = Rig(model="logic")
    logic.take()
    logic.keys.handle([mc.host_connection_query(mc.MODEL_LOGIC, b"EMU0001", b"\x01\x02\x03\x04")])
    reply = logic.take()[0]
    assert reply == mc.host_connection_reply(mc.MODEL_LOGIC, b"EMU0001", b"\x01\x02\x03\x04")


def test_blackout_and_detach() -> None:
    rig = Rig(model="xtouch")
    rig.show(track__1__armed=True)
    rig.desk.blackout()
    out = rig.take()
    assert mc.led(mc.REC_ARM, mc.LED_OFF) in out and mc.lcd(0x14, 0, " " * 112) in out
    assert mc.xtouch_colors(0x14, [mc.COLOR_OFF] * 8) in out and mc.fader(7, 0.0) in out
    # a touch released just before the link went: its settle never writes
    rig.keys.handle([hx("90 68 7F"), hx("90 68 00")])
    rig.desk.detach()
    assert rig.clock.pending() == []
    rig.clock.advance(1.0)
    assert rig.take() == []


def test_a_sink_that_fails_reaches_the_caller() -> None:
    def lost(_data: bytes) -> None:
        raise DeviceLost("Mackie link is closed")

    desk = MackieDesk("desk", DeskOptions(), lost, call_later=Clock().call_later)
    with pytest.raises(DeviceLost):
        desk.show("track/1/armed", True)
    desk.blackout()  # logged, never raised: the desk is being left anyway


def test_options_validation() -> None:
    with pytest.raises(ConfigError, match=r"devices\.desk\.keys"):
        parse_options(MackieSurface.Options, {"keys": {"f1": "explode"}}, where="devices.desk", file="t")
    with pytest.raises(ConfigError, match=r"devices\.desk\.keys"):
        parse_options(MackieSurface.Options, {"keys": {"nokey": "play"}}, where="devices.desk", file="t")
    opts = parse_options(
        MackieSurface.Options, {"keys": {"f1": "talkback", "0x56": "add_marker"}}, where="d", file="t"
    )
    driver = MackieSurface("desk", opts)
    assert driver.desk.actions[0x36] == "talkback" and driver.desk.actions[0x56] == "add_marker"
    assert driver.desk.actions[mc.PLAY] == "play"


def test_example_config_is_valid() -> None:
    import tomllib
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "mackie-room.toml"
    table = dict(tomllib.loads(path.read_text())["devices"]["desk"])
    assert table.pop("kind") == "mackie"
    opts = parse_options(MackieSurface.Options, table, where="devices.desk", file=str(path))
    driver = MackieSurface("desk", opts)
    assert driver.desk.is_xtouch and driver.desk.actions[0x36] == "talkback"
    assert driver.desk.actions[mc.CYCLE] == "locate_start"
