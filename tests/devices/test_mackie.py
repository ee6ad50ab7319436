"""MackieSurface over real JACK MIDI ports, against an emulated surface in a separate process
(tests/mcu_emulator_proc.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from mcu_emulator_proc import McuEmulator
from peers.jack import JackServer, unique_name

from bridge.devices.midi import mackie_codec as mc
from bridge.devices.midi.mackie import MackieSurface
from bridge.errors import DeviceLost, DeviceUnavailable
from bridge.options import parse_options
from bridge.vocab import (
    CircleTake,
    FalseStart,
    Feedback,
    Inbound,
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
)

pytestmark = pytest.mark.jack

EmuFactory = Callable[..., McuEmulator]


@pytest.fixture
def emulator(jack_sync: JackServer) -> Iterator[EmuFactory]:
    started: list[McuEmulator] = []

    def make(model: int = 0x14, echo: bool = False) -> McuEmulator:
        emu = McuEmulator(unique_name("XTouch"), jack_sync.env, model=model, echo=echo)
        started.append(emu)
        return emu

    try:
        yield make
    finally:
        for emu in started:
            emu.stop()


def options(emu: McuEmulator, **kw: Any) -> MackieSurface.Options:
    table: dict[str, Any] = {"input": emu.in_pattern, "output": emu.out_pattern, "api": "jack"}
    table.update(kw)
    table.setdefault("client_name", unique_name("bridge-mcu"))
    opts: MackieSurface.Options = parse_options(MackieSurface.Options, table, where="devices.desk", file="t")
    return opts


class Running:
    """A connected driver with its receive() loop pumping into a queue."""

    def __init__(self, driver: MackieSurface) -> None:
        self.driver = driver
        self.inbound: asyncio.Queue[Inbound] = asyncio.Queue()
        self.error: BaseException | None = None
        self.lost = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        try:
            async for item in self.driver.receive():
                self.inbound.put_nowait(item)
        except DeviceLost as exc:
            self.error = exc
            self.lost.set()

    async def enter(self) -> None:
        async with asyncio.timeout(20):
            await self.driver.__aenter__()
        self.lost.clear()
        self.task = asyncio.create_task(self._pump())

    async def exit(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.driver.__aexit__(None, None, None)

    async def next(self, timeout: float = 10) -> Inbound:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            return await self.inbound.get()

    async def quiet(self, seconds: float = 0.4) -> list[Inbound]:
        await asyncio.sleep(seconds)
        got = []
        while not self.inbound.empty():
            got.append(self.inbound.get_nowait())
        return got


@contextlib.asynccontextmanager
async def connected(emu: McuEmulator, **kw: Any) -> AsyncIterator[Running]:
    run = Running(MackieSurface("desk", options(emu, **kw)))
    await run.enter()
    try:
        yield run
    finally:
        await run.exit()


async def settle(emu: McuEmulator, seconds: float = 0.4) -> list[bytes]:
    """Wait until nothing new arrived for ``seconds``; return everything received."""
    async with asyncio.timeout(20):
        last = -1
        while True:
            n = len(emu.received())
            if n == last:
                return emu.received()
            last = n
            await asyncio.sleep(seconds)


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


def lcd_image(received: list[bytes], model: int = 0x14) -> tuple[str, str]:
    """Apply every LCD SysEx the surface received to a blank 2 x 56 display."""
    buf = [" "] * 112
    for m in received:
        if m[:6] == bytes((0xF0, 0, 0, 0x66, model, 0x12)):
            for i, b in enumerate(m[7:-1]):
                if m[6] + i < 112:
                    buf[m[6] + i] = chr(b)
    text = "".join(buf)
    return text[:56], text[56:]


# --------------------------------------------------------------------------- tests


async def test_handshake_and_full_dump(emulator: EmuFactory) -> None:
    emu = emulator()
    async with connected(emu) as run:
        got = await settle(emu)
        assert got[0] == hx("F0 00 00 66 14 00 F7")  # device query first
        for note in [*range(0x00, 0x18), mc.STOP, mc.PLAY, mc.RECORD]:
            expected = mc.LED_ON if note == mc.STOP else mc.LED_OFF  # stopped: STOP lit
            assert mc.led(note, expected) in got, hex(note)
        assert mc.lcd(0x14, 0x00, " " * 56) in got
        assert mc.lcd(0x14, 0x38, mc.lcd_line([f"#{i}" for i in range(1, 9)])) in got
        assert all(mc.fader(i, 0.0) in got for i in range(8))
        assert mc.timecode_digit(9, 0x20) in got and mc.timecode_digit(0, 0x30) in got
        assert run.driver.stats()["resyncs"] == 1


async def test_rec_arm_led_only_from_state_lcd_and_reconnect(emulator: EmuFactory) -> None:
    emu = emulator()
    run = Running(MackieSurface("desk", options(emu)))
    await run.enter()
    try:
        await settle(emu)
        emu.clear()
        # press REC ARM 2 -> absolute command from the mirror; the LED stays dark
        await emu.press(mc.REC_ARM + 1)
        assert await run.next() == SetTrackArm(2, True)
        await asyncio.sleep(0.3)
        assert emu.received() == []
        # the DAW confirms -> exactly one LED message
        await run.driver.send(Feedback("track/2/armed", True))
        assert await emu.wait_for(lambda r: len(r) >= 1) == [hx("90 01 7F")]
        assert await settle(emu, 0.3) == [hx("90 01 7F")]
        # next press toggles against the mirror
        await emu.press(mc.REC_ARM + 1)
        assert await run.next() == SetTrackArm(2, False)
        # names -> one LCD cell each, 6 characters (abbreviated) + space
        emu.clear()
        await run.driver.send(Feedback("track/1/name", "Kick"))
        await run.driver.send(Feedback("track/2/name", "Snare Drum"))
        await run.driver.send(Feedback("track/1/fader", 1.0))
        got = await emu.wait_for(lambda r: len(r) >= 4)
        assert got[:2] == [
            hx("F0 00 00 66 14 12 00") + b"Kick   " + hx("F7"),
            hx("F0 00 00 66 14 12 07") + b"SnrDrm " + hx("F7"),  # abbreviated
        ]
        assert got[2:4] == [hx("E0 7F 7F"), mc.vpot_ring(0, 11, mode=2)]
        assert await settle(emu, 0.3) == got[:4]

        # unplug: the emulator deletes its JACK clients -> DeviceLost
        await emu.close_ports()
        async with asyncio.timeout(15):
            await run.lost.wait()
        assert isinstance(run.error, DeviceLost)
        await run.exit()
        # replug and reconnect like the supervisor (retry every 0.25 s)
        emu.clear()
        await emu.open_ports()
        t0 = time.monotonic()
        async with asyncio.timeout(20):
            while True:
                try:
                    await run.enter()
                    break
                except DeviceUnavailable:
                    await asyncio.sleep(0.25)
        want = [
            hx("F0 00 00 66 14 00 F7"),
            hx("90 01 7F"),
            hx("F0 00 00 66 14 12 00") + b"Kick   SnrDrm " + b" " * 42 + hx("F7"),
            hx("E0 7F 7F"),
            mc.vpot_ring(0, 11, mode=2),
        ]
        await emu.wait_for(lambda r: all(w in r for w in want), timeout=10)
        replay = time.monotonic() - t0
        assert replay < 5.0, f"state replayed after {replay:.2f} s"
        assert run.driver.stats()["resyncs"] == 2
        # and it works again
        await emu.press(mc.MUTE + 0)
        assert await run.next() == SetTrackMute(1, True)
    finally:
        await run.exit()


async def test_transport_buttons_and_leds(emulator: EmuFactory) -> None:
    emu = emulator()
    async with connected(emu) as run:
        await settle(emu)
        emu.clear()
        for note in (mc.PLAY, mc.STOP, mc.RECORD, mc.MARKER, mc.SOLO + 2, 0x66):
            await emu.send([0x90, note, 0x7F], [0x90, note, 0x00])
        got = [await run.next() for _ in range(7)]
        assert got == [
            Play(),
            Stop(),
            SetRecord(True),
            MarkTake(),
            SetTrackSolo(3, True),
            SetTalkback(True, "A"),
            SetTalkback(False, "A"),
        ]
        # record enabled while stopped: RECORD flashes; rolling: on; STOP goes dark
        await run.driver.send(Feedback("transport/recording", True))
        await emu.wait_for(lambda r: hx("90 5F 01") in r)
        await run.driver.send(Feedback("transport/playing", True))
        await emu.wait_for(lambda r: all(m in r for m in (hx("90 5F 7F"), hx("90 5E 7F"), hx("90 5D 00"))))
        # lower LCD line shows song and take while recording
        await run.driver.send(Feedback("song", "Blue Song"))
        await run.driver.send(Feedback("take", 4))
        line = "REC  Blue Song  take 4".ljust(56)
        await emu.wait_for(lambda r: lcd_image(r)[1] == line)
        await emu.press(mc.RECORD)
        assert await run.next() == SetRecord(False)  # computed from the mirror


async def test_desk_sets_the_song_and_selects_takes(emulator: EmuFactory) -> None:
    """Cursor keys: song list and take selection; circle / false start toggles from the mirror."""
    emu = emulator()
    keys = {"f2": "circle_take_toggle", "f3": "false_start_toggle"}
    async with connected(emu, keys=keys) as run:
        await settle(emu)
        await run.driver.send(Feedback("take/selected/circled", True))
        for name in ("down", "up", "left", "right", "f2", "f3"):
            await emu.send([0x90, mc.BUTTONS[name], 0x7F], [0x90, mc.BUTTONS[name], 0x00])
        got = [await run.next() for _ in range(6)]
        assert got == [
            StepSong(1),
            StepSong(-1),
            SelectTake(step=-1),
            SelectTake(step=1),
            CircleTake(None, False),
            FalseStart(None, True),
        ]
        # the circle key lights from the selected take; the false-start key stays dark
        f2, f3 = mc.BUTTONS["f2"], mc.BUTTONS["f3"]
        await emu.wait_for(lambda r: bytes((0x90, f2, 0x7F)) in r)
        emu.clear()
        await run.driver.send(Feedback("take/selected/circled", False))
        await run.driver.send(Feedback("take/selected/false_start", True))
        await emu.wait_for(lambda r: bytes((0x90, f2, 0x00)) in r and bytes((0x90, f3, 0x7F)) in r)


async def test_touch_guard_and_fader_coalescing(emulator: EmuFactory) -> None:
    emu = emulator()
    async with connected(emu, touch_guard=0.3) as run:
        await settle(emu)
        emu.clear()
        # untouched pitch bend is not user input
        await emu.send([0xE0, 0x00, 0x40])
        assert await run.quiet(0.4) == []
        # touch, move many times in one burst -> few commands, the last value wins
        moves = [[0xE0, 0x00, v] for v in range(0x10, 0x50)]
        await emu.send([0x90, 0x68, 0x7F], *moves)
        got: list[Inbound] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            item = await run.next()
            got.append(item)
            assert isinstance(item, SetTrackFader) and item.track == 1
            if item.value == pytest.approx((0x4F << 7) / 16383):
                break
        assert 1 <= len(got) <= len(moves)
        # the DAW confirms while the hand is on the fader: no motor move
        await run.driver.send(Feedback("track/1/fader", 0.25))
        await asyncio.sleep(0.3)
        assert not [m for m in emu.received() if m[0] == 0xE0]
        # release: nothing within the guard, then exactly one move to the truth
        await emu.send([0x90, 0x68, 0x00])
        t0 = time.monotonic()
        await emu.wait_for(lambda r: any(m[0] == 0xE0 for m in r))
        assert time.monotonic() - t0 >= 0.2
        await asyncio.sleep(0.3)
        assert [m for m in emu.received() if m[0] == 0xE0] == [mc.fader(0, 0.25)]


async def test_echo_guard_loopback(emulator: EmuFactory) -> None:
    emu = emulator(echo=True)  # every message the bridge sends comes back on its input
    async with connected(emu, echo_window=2.0) as run:
        await settle(emu)
        assert await run.quiet(0.3) == []  # the full dump echoed back produced no commands
        assert run.driver.keys.looped  # detected from our own device query / LCD SysEx coming back
        await run.driver.send(Feedback("track/1/armed", True))
        await run.driver.send(Feedback("transport/playing", True))
        await run.driver.send(Feedback("track/3/fader", 0.5))
        await emu.wait_for(lambda r: hx("E2 00 40") in r)
        assert await run.quiet(0.5) == []
        assert run.driver.stats()["echo_dropped"] >= 3
        # a real press is still seen
        await emu.send([0x90, mc.REC_ARM + 0, 0x7F])
        assert await run.next() == SetTrackArm(1, False)


async def test_bad_input_and_flood_lose_no_button(emulator: EmuFactory) -> None:
    emu = emulator()
    async with connected(emu) as run:
        await settle(emu)
        # stray data bytes, a truncated SysEx (rtmidi's JACK input glues the following events to
        # it until an F7 comes; the stream parser then splits them again), running status
        await emu.send(
            [0x05, 0x06],
            [0xF0, 0x00, 0x00, 0x66],
            [0x90, mc.REC_ARM + 3, 0x7F],
            [0x90, 0x68, 0x7F],
            [0xF0, 0x00, 0x00, 0x66, 0x14, 0x14, 0x56, 0x31, 0xF7],
        )
        assert await run.next() == SetTrackArm(4, True)
        await emu.send([0xE0, 0x00, 0x10], [0x00, 0x20])  # second move by running status
        item = await run.next()
        assert isinstance(item, SetTrackFader)
        # 10,000 messages: fader moves and V-Pot turns around 100 button presses
        msgs: list[list[int]] = []
        presses = 0
        for i in range(10_000):
            if i % 100 == 50:
                msgs.append([0x90, mc.REC_ARM + 2, 0x7F])
                presses += 1
            elif i % 2:
                msgs.append([0xE0, i & 0x7F, (i >> 7) & 0x7F])
            else:
                msgs.append([0xB0, 0x11, 0x41])
        t0 = time.monotonic()
        await emu.send(*msgs, burst=10)  # ~10 messages per ms
        arms = 0
        try:
            async with asyncio.timeout(60):
                while arms < presses:
                    item = await run.next(timeout=60)
                    if isinstance(item, SetTrackArm):
                        assert item == SetTrackArm(3, True)
                        arms += 1
        finally:
            print("driver stats", run.driver.stats(), "emulator stderr", "".join(emu.stderr_tail)[-2000:])
        assert arms == presses
        extra = await run.quiet(0.5)
        assert not [x for x in extra if isinstance(x, SetTrackArm)]
        assert run.driver.stats()["dropped"] >= 2
        print(f"flood of 10000 handled in {time.monotonic() - t0:.2f} s")


async def test_banking(emulator: EmuFactory) -> None:
    emu = emulator()
    async with connected(emu) as run:
        for t in range(1, 11):
            await run.driver.send(Feedback(f"track/{t}/name", f"Trk{t}"))
        await run.driver.send(Feedback("track/10/armed", True))
        await settle(emu)
        emu.clear()
        await emu.send([0x90, mc.BANK_RIGHT, 0x7F])
        top = hx("F0 00 00 66 14 12 00") + b"Trk9   Trk10  " + b" " * 42 + hx("F7")
        got = await emu.wait_for(lambda r: top in r and hx("90 01 7F") in r)
        assert mc.assignment("9")[1] in got
        await emu.press(mc.MUTE + 1)
        assert await run.next() == SetTrackMute(10, True)
        await emu.send([0x90, mc.BANK_RIGHT, 0x7F])  # no tracks beyond 10: stays
        await emu.send([0x90, mc.CHANNEL_LEFT, 0x7F])
        await emu.press(mc.REC_ARM + 0)
        assert await run.next() == SetTrackArm(8, True)
        assert run.driver.desk.bank == 7


async def test_logic_control_challenge(emulator: EmuFactory) -> None:
    emu = emulator(model=0x10)
    async with connected(emu, model="logic") as run:
        got = await settle(emu)
        assert got[0] == hx("F0 00 00 66 10 00 F7")
        assert got[1] == hx("F0 00 00 66 10 02") + b"EMU0001" + mc.challenge_response(
            b"\x01\x02\x03\x04"
        ) + hx("F7")
        assert run.driver.stats()["resyncs"] == 1
        assert any(m[:6] == hx("F0 00 00 66 10 12") for m in got)


async def test_missing_port_is_unavailable(jack_sync: JackServer) -> None:
    opts = parse_options(
        MackieSurface.Options,
        {"input": "no-such-surface", "api": "jack", "client_name": unique_name("bridge-mcu")},
        where="devices.desk",
        file="t",
    )
    with pytest.raises(DeviceUnavailable):
        async with asyncio.timeout(20):
            await MackieSurface("desk", opts).__aenter__()


async def test_daw_offline_is_shown_and_everything_comes_back(emulator: EmuFactory) -> None:
    """Issue 10 item 4: while the DAW is away no LED claims its state and the LCD says so; when it is
    back the desk shows the state again, sending only what differs from what it shows."""
    emu = emulator()
    async with connected(emu, model="xtouch") as run:
        drv = run.driver
        for key, value in (
            ("daw/status", "ok"),
            ("track/1/name", "Audio 1"),
            ("track/2/name", "Audio 2"),
            ("track/1/armed", True),
            ("track/1/fader", 0.5),
            ("transport/playing", False),
            ("transport/recording", True),
            ("talkback", True),
        ):
            await drv.send(Feedback(key, value))  # type: ignore[arg-type]
        shown = await settle(emu)
        assert mc.led(mc.REC_ARM, mc.LED_ON) in shown and mc.led(mc.STOP, mc.LED_ON) in shown
        assert mc.led(mc.RECORD, mc.LED_FLASH) in shown and mc.led(0x66, mc.LED_ON) in shown
        emu.clear()

        await drv.send(Feedback("daw/status", "disconnected"))
        got = await settle(emu)
        top, bottom = lcd_image(shown + got)
        assert top.startswith("DAW offline - reconnecting"), top
        assert bottom.startswith("#1     #2")
        for note in (mc.REC_ARM, mc.STOP, mc.RECORD):
            assert mc.led(note, mc.LED_OFF) in got, hex(note)
        assert mc.xtouch_colors(0x14, [mc.COLOR_WHITE] * 8) in got  # strip 1 no longer red
        assert not [m for m in got if m[0] & 0xF0 == 0xE0]  # no motor fader moves
        assert not [m for m in got if m[:2] == bytes((0x90, 0x66))]  # talkback stays lit
        # the DAW's (stale) state changes meanwhile: nothing lights up
        emu.clear()
        await drv.send(Feedback("track/2/armed", True))
        await drv.send(Feedback("track/3/armed", True))
        await drv.send(Feedback("daw/status", "connecting"))
        assert await settle(emu) == []

        # back; its re-report follows at once: track 3 is not armed in the DAW any more
        await drv.send(Feedback("daw/status", "ok"))
        await drv.send(Feedback("track/3/armed", False))
        back = await settle(emu)
        top, _ = lcd_image(shown + got + back)
        assert top.startswith("Audio1 Audio2 "), top
        for note, state in ((mc.REC_ARM, mc.LED_ON), (mc.REC_ARM + 1, mc.LED_ON), (mc.STOP, mc.LED_ON)):
            assert mc.led(note, state) in back, hex(note)
        assert mc.led(mc.RECORD, mc.LED_FLASH) in back
        assert not [m for m in back if m[1] == mc.REC_ARM + 2]  # never lit for a value the DAW dropped
        assert not [m for m in back if m[0] & 0xF0 == 0xE0]  # faders were not touched: not re-sent
        leds = [m for m in back if m[0] == 0x90]
        assert len(leds) == len(set(leds)) == 4  # each LED that changed, once; nothing else
