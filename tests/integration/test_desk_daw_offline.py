"""The engineer's hardware against a real headless Ardour 7, through the whole daemon: a Mackie
desk (tests/mcu_emulator_proc.py) and a nanoKONTROL2 (tests/midi_surface_proc.py), both
separate processes on real JACK MIDI ports. Ardour is killed (kill -9) and restarted.

One test on purpose: Ardour is heavy on a small machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcu_emulator_proc import McuEmulator
from peers.ardour import ArdourPeer, require_ardour
from peers.daemon import Daemon, OscClient
from peers.jack import JackServer, MidiPeer, unique_name

from bridge.devices.midi import mackie_codec as mc

pytestmark = [pytest.mark.ardour, pytest.mark.jack, pytest.mark.slow]

T = 30.0  # generous: Ardour, jackd, the daemon and two surfaces on 2 shared cores
HEARTBEAT_TIMEOUT = 2.5  # the Ardour driver's default: silence before the DAW counts as lost
NANO_REC, NANO_CYCLE = 45, 46
OFFLINE_TEXT = "DAW offline - reconnecting"  # the desk's upper LCD line while the DAW is away


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
    state = None
    for m in received:
        if len(m) == 3 and m[0] == 0x90 and m[1] == note:
            state = m[2]
    return state


def last_cc(received: list[list[int]], cc: int) -> int | None:
    state = None
    for m in received:
        if len(m) == 3 and m[0] == 0xB0 and m[1] == cc:
            state = m[2]
    return state


class Nano:
    """What the nanoKONTROL2 peer received, collected."""

    def __init__(self, peer: MidiPeer) -> None:
        self.peer = peer
        self.rx: list[list[int]] = []

    async def wait_for(self, pred: object, timeout: float) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            self.rx += self.peer.drain()
            if pred(self.rx):  # type: ignore[operator]
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nanoKONTROL2: condition not met; received {self.rx[-30:]}")
            await asyncio.sleep(0.02)


@pytest.fixture
def ardour8(tmp_path: Path) -> Iterator[ArdourPeer]:
    """Ardour with 8 tracks "Audio 1".."Audio 8" (its default names)."""
    require_ardour()
    peer = ArdourPeer(tmp_path / "ardour", tracks=8)
    peer.root.mkdir(parents=True)
    peer.create()
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()
        peer.kill()


def config(ardour: ArdourPeer, emu: McuEmulator, nano: MidiPeer, mapping: Path) -> str:
    return f"""
[devices.ardour]
kind = "ardour"
role = "daw"
port = {ardour.port}
heartbeat_timeout = {HEARTBEAT_TIMEOUT}

[devices.desk]
kind = "mackie"
input = "{emu.in_pattern}"
output = "{emu.out_pattern}"
api = "jack"
client_name = "{unique_name("bridge-desk")}"

[devices.nano]
kind = "generic_midi"
profile = "korg_nanokontrol2"
mapping = "{mapping}"
api = "jack"
input = "{nano.client}:"
output = "{nano.client}-fb:"
client_name = "{unique_name("sb-nano")}"
"""


async def test_desk_shows_ardour_gone_within_a_second_and_comes_back(
    tmp_path: Path,
    ardour8: ArdourPeer,
    jack_sync: JackServer,
) -> None:
    """Issue 10 items 2 and 4 with a real Ardour: its default track names stay apart on the desk's
    LCD; REC ARM and RECORD on the desk are confirmed by Ardour before they light; Ardour is killed:
    within 1 s of the bridge losing it the desk says so and no transport / arm LED claims anything,
    on the desk nor on the nanoKONTROL2 (whose mapping also lights a "DAW online" LED); Ardour comes
    back and so does the picture."""
    emu = McuEmulator(unique_name("XTouch"), jack_sync.env)
    nano_peer = MidiPeer(unique_name("nanoK"), "nanoKONTROL2 MIDI 1", jack_sync.env)
    nano = Nano(nano_peer)
    mapping = tmp_path / "nano.toml"
    mapping.write_text(
        '[[binding]]\ncontrol = "transport.rec"\ncommand = "transport.record"\n\n'
        '[[binding]]\ncontrol = "transport.cycle"\nfeedback = "daw/online"\n'
    )
    daemon = Daemon(tmp_path, config(ardour8, emu, nano_peer, mapping), env=jack_sync.env)
    client: OscClient | None = None
    try:
        await asyncio.to_thread(daemon.start)
        client = OscClient(daemon.osc_port)
        osc = client
        assert await asyncio.to_thread(osc.command, "/subscribe") == ("/ok", ["/subscribe"])

        # Ardour's names, 8 distinct cells on the scribble strips (they read "Audio " before)
        names = "".join(mc.strip_cell(f"Audio {n}") for n in range(1, 9))
        await emu.wait_for(lambda r: lcd_image(r)[0] == names, timeout=T)
        assert names.startswith("Audio1 Audio2 ")
        await nano.wait_for(lambda r: last_cc(r, NANO_CYCLE) == 127, T)  # the DAW is online

        # REC ARM 1 and RECORD on the desk: lit once Ardour confirmed
        await emu.press(mc.REC_ARM)
        await emu.wait_for(lambda r: last_led(r, mc.REC_ARM) == mc.LED_ON, timeout=T)
        await emu.press(mc.RECORD)
        await emu.wait_for(  # record means "record now": Ardour rolls in record
            lambda r: last_led(r, mc.RECORD) == mc.LED_ON and last_led(r, mc.PLAY) == mc.LED_ON, timeout=T
        )
        await nano.wait_for(lambda r: last_cc(r, NANO_REC) == 127, T)

        # Ardour crashes
        def daw_lost(m: tuple[str, list[object]]) -> bool:
            return m == ("/daw/status", ["disconnected"])

        def desk_dark(r: list[bytes]) -> bool:
            return (
                lcd_image(r)[0].startswith(OFFLINE_TEXT)
                and last_led(r, mc.REC_ARM) == mc.LED_OFF
                and last_led(r, mc.RECORD) == mc.LED_OFF
                and last_led(r, mc.STOP) == mc.LED_OFF
                and last_led(r, mc.PLAY) == mc.LED_OFF
            )

        def wait_lost() -> float:
            osc.wait_for(daw_lost, T)
            return time.monotonic()  # when the bridge said the DAW is lost

        assert not desk_dark(emu.received())
        status_task = asyncio.create_task(asyncio.to_thread(wait_lost))
        t_kill = time.monotonic()
        await asyncio.to_thread(ardour8.kill)
        await emu.wait_for(desk_dark, timeout=T)
        t_desk = time.monotonic()
        t_status = await status_task
        await nano.wait_for(lambda r: last_cc(r, NANO_REC) == 0 and last_cc(r, NANO_CYCLE) == 0, 5)
        t_nano = time.monotonic()
        lost_after = t_desk - t_kill
        print(
            f"kill -> bridge lost the DAW {t_status - t_kill:.2f} s, -> desk dark {lost_after:.2f} s, "
            f"-> nano dark {t_nano - t_kill:.2f} s"
        )
        # the bridge knows Ardour is gone after heartbeat_timeout of silence (Ardour beats every 1 s);
        # the desk shows it within 1 s of that
        assert lost_after < HEARTBEAT_TIMEOUT + 1.0, f"desk dark {lost_after:.2f} s after the kill"
        assert t_desk - t_status < 1.0
        assert t_nano - t_kill < HEARTBEAT_TIMEOUT + 1.0 + 1.0  # + the drain loop's own polling

        # Ardour comes back: names, transport LEDs and the nano's DAW LED are shown again
        emu.clear()
        await asyncio.to_thread(ardour8.restart)
        await emu.wait_for(
            lambda r: lcd_image(r)[0] == names and last_led(r, mc.STOP) == mc.LED_ON, timeout=T
        )
        await nano.wait_for(lambda r: last_cc(r, NANO_CYCLE) == 127, T)
        assert await asyncio.to_thread(osc.command, "/ping") == ("/pong", [])
    finally:
        print(daemon.log()[-6000:])
        if client is not None:
            client.close()
        await asyncio.to_thread(daemon.stop)
        daemon.kill()
        emu.stop()
        nano_peer.stop()
