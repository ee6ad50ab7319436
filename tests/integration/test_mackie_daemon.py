"""The real daemon (``python -m bridge run``) with a Mackie surface on real JACK MIDI ports,
played by tests/mcu_emulator_proc.py, and the built-in internal transport (no DAW)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcu_emulator_proc import McuEmulator
from peers.daemon import Daemon, OscClient
from peers.jack import JackServer, unique_name

from bridge.devices.midi import mackie_codec as mc

pytestmark = pytest.mark.jack

T = 20.0  # generous: 2 shared cores
NAMES = ["Kick", "Snare", "OH L", "OH R", "Bass DI", "Gtr", "Keys", "Lead Vox"]


def lcd_image(received: list[bytes]) -> tuple[str, str]:
    buf = [" "] * 112
    for m in received:
        if m[:6] == bytes((0xF0, 0, 0, 0x66, 0x14, 0x12)):
            for i, b in enumerate(m[7:-1]):
                if m[6] + i < 112:
                    buf[m[6] + i] = chr(b)
    text = "".join(buf)
    return text[:56], text[56:]


def last_led(received: list[bytes], note: int) -> int | None:
    """The state of an LED after everything received (None if never sent)."""
    state = None
    for m in received:
        if len(m) == 3 and m[0] == 0x90 and m[1] == note:
            state = m[2]
    return state


@pytest.fixture
def emu(jack_sync: JackServer) -> Iterator[McuEmulator]:
    emulator = McuEmulator(unique_name("XTouch"), jack_sync.env)
    try:
        yield emulator
    finally:
        emulator.stop()


def config(emu: McuEmulator) -> str:
    names = ", ".join(f'"{n}"' for n in NAMES)
    return (
        f"[internal]\ntracks = 16\nnames = [{names}]\n\n"
        f'[devices.desk]\nkind = "mackie"\ninput = "{emu.in_pattern}"\noutput = "{emu.out_pattern}"\n'
        f'api = "jack"\nclient_name = "{unique_name("bridge-desk")}"\n'
    )


async def wait_value(client: OscClient, address: str, want: list[object]) -> None:
    def hit(msg: tuple[str, list[object]]) -> bool:
        return msg[0] == address and msg[1] == want

    await asyncio.to_thread(client.wait_for, hit, T)


async def test_desk_drives_internal_transport_and_survives_replug(
    tmp_path: Path,
    emu: McuEmulator,
    jack_sync: JackServer,
) -> None:
    daemon = Daemon(tmp_path, config(emu), env=jack_sync.env)
    await asyncio.to_thread(daemon.start)
    client = OscClient(daemon.osc_port)
    try:
        # connected: handshake, then the full state with the DAW's track names
        top = "".join(mc.strip_cell(n) for n in NAMES)
        await emu.wait_for(lambda r: lcd_image(r)[0] == top, timeout=T)
        got = emu.received()
        assert got[0] == bytes.fromhex("F0 00 00 66 14 00 F7")
        assert last_led(got, mc.REC_ARM + 1) == mc.LED_OFF
        assert last_led(got, mc.STOP) == mc.LED_ON

        assert await asyncio.to_thread(client.command, "/ping") == ("/pong", [])
        # REC ARM 2 on the desk -> the state -> the OSC API and the desk's LED
        await emu.press(mc.REC_ARM + 1)
        await wait_value(client, "/track/2/arm", [1])
        await emu.wait_for(lambda r: last_led(r, mc.REC_ARM + 1) == mc.LED_ON, timeout=T)
        # RECORD from stop: the internal transport rolls in record
        await emu.press(mc.RECORD)
        await wait_value(client, "/transport/record", [1])
        await emu.wait_for(
            lambda r: (
                last_led(r, mc.RECORD) == mc.LED_ON
                and last_led(r, mc.PLAY) == mc.LED_ON
                and last_led(r, mc.STOP) == mc.LED_OFF
                and lcd_image(r)[1].startswith("REC  ")
            ),
            timeout=T,
        )
        # the timecode display runs with the playhead (a digit other than blank/0 appears)
        await emu.wait_for(
            lambda r: any(m[0] == 0xB0 and 0x40 <= m[1] <= 0x49 and m[2] in range(0x31, 0x3A) for m in r),
            timeout=T,
        )

        # unplug the desk: the bridge keeps running; the state changes meanwhile
        await emu.close_ports()
        # (wait until the bridge noticed: its port watch runs at 2 Hz, see the report on fast replugs)
        await asyncio.to_thread(daemon.wait_for_log, "MIDI port gone", T)
        assert await asyncio.to_thread(client.command, "/track/3/arm", 1) == ("/ok", ["/track/3/arm"])
        # replug: reconnected by name, handshake, the whole current state replayed
        emu.clear()
        await emu.open_ports()
        t0 = time.monotonic()
        await emu.wait_for(
            lambda r: (
                bool(r)
                and r[0] == bytes.fromhex("F0 00 00 66 14 00 F7")
                and last_led(r, mc.REC_ARM + 1) == mc.LED_ON
                and last_led(r, mc.REC_ARM + 2) == mc.LED_ON
                and last_led(r, mc.RECORD) == mc.LED_ON
                and lcd_image(r)[0] == top
            ),
            timeout=T,
        )
        replay = time.monotonic() - t0
        assert replay < 10, f"replayed after {replay:.2f} s"
        # and the desk works again
        await emu.press(mc.STOP)
        await wait_value(client, "/transport/play", [0])
        await emu.wait_for(lambda r: last_led(r, mc.STOP) == mc.LED_ON, timeout=T)
        # a clean shutdown leaves the desk dark: LEDs off, LCD and displays blank
        emu.clear()
        assert await asyncio.to_thread(daemon.stop) == 0
        got = await emu.wait_for(
            lambda r: lcd_image(r) == (" " * 56, " " * 56) and last_led(r, mc.REC_ARM + 1) == mc.LED_OFF,
            timeout=T,
        )
        assert last_led(got, mc.STOP) == mc.LED_OFF and last_led(got, mc.RECORD) == mc.LED_OFF
        assert mc.timecode_digit(0, 0x20) in got
    finally:
        print(daemon.log()[-6000:])  # shown when the test fails
        client.close()
        await asyncio.to_thread(daemon.stop)
        daemon.kill()


async def test_default_track_names_stay_distinct_on_the_lcd(
    tmp_path: Path,
    emu: McuEmulator,
    jack_sync: JackServer,
) -> None:
    """Ardour's default names "Audio 1".."Audio 8" used to read "Audio " on every strip (issue 10
    item 2): the scribble strips the emulated desk decodes show 8 different names, digits kept."""
    names = [f"Audio {n}" for n in range(1, 9)]
    listed = ", ".join(f'"{n}"' for n in names)
    cfg = (
        f"[internal]\ntracks = 8\nnames = [{listed}]\n\n"
        f'[devices.desk]\nkind = "mackie"\ninput = "{emu.in_pattern}"\noutput = "{emu.out_pattern}"\n'
        f'api = "jack"\nclient_name = "{unique_name("bridge-desk")}"\n'
    )
    daemon = Daemon(tmp_path, cfg, env=jack_sync.env)
    await asyncio.to_thread(daemon.start)
    try:

        def cells(r: list[bytes]) -> list[str]:
            top = lcd_image(r)[0]
            return [top[i * 7 : i * 7 + 6] for i in range(8)]

        got = await emu.wait_for(lambda r: all(c.strip() for c in cells(r)), timeout=T)
        shown = cells(got)
        assert len(set(shown)) == 8, shown
        for n, cell in enumerate(shown, start=1):
            assert cell.rstrip().endswith(str(n)) and cell.startswith("Aud"), shown
        assert all(lcd_image(got)[0][i * 7 + 6] == " " for i in range(8))  # the strips stay separated
    finally:
        print(daemon.log()[-4000:])
        await asyncio.to_thread(daemon.stop)
        daemon.kill()
