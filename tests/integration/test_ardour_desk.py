"""The real daemon with a real headless Ardour 7 as the DAW and a Mackie desk on real JACK MIDI
ports, played by a separate process (tests/mcu_emulator_proc.py): Ardour is killed (-9) and
restarted, and the desk must not see the re-learn (issue 10.3)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from mcu_emulator_proc import McuEmulator
from peers.ardour import ArdourPeer
from peers.daemon import Daemon, OscClient
from peers.jack import JackServer, unique_name

from bridge.devices.midi import mackie_codec as mc

pytestmark = [pytest.mark.jack, pytest.mark.ardour, pytest.mark.slow]

T = 20.0  # generous: 2 shared cores
LCD_HDR = bytes((0xF0, 0, 0, 0x66, 0x14, 0x12))


@pytest.fixture
def emu(jack_sync: JackServer) -> Iterator[McuEmulator]:
    emulator = McuEmulator(unique_name("XTouch"), jack_sync.env)
    try:
        yield emulator
    finally:
        emulator.stop()


def config(emu: McuEmulator, peer: ArdourPeer) -> str:
    return (
        f'[devices.ardour]\nkind = "ardour"\nrole = "daw"\nport = {peer.port}\n\n'
        f'[devices.desk]\nkind = "mackie"\ninput = "{emu.in_pattern}"\noutput = "{emu.out_pattern}"\n'
        f'api = "jack"\nclient_name = "{unique_name("bridge-desk")}"\n'
    )


class Desk:
    """What the desk shows, folded from the messages it received."""

    def __init__(self) -> None:
        self.faders: dict[int, bytes] = {}  # channel -> last E<ch> message
        self.leds: dict[int, int] = {}  # note -> velocity
        self.lcd = [" "] * 112

    def apply(self, m: bytes) -> None:
        if len(m) == 3 and 0xE0 <= m[0] <= 0xE8:
            self.faders[m[0] & 0x0F] = m
        elif len(m) == 3 and m[0] == 0x90:
            self.leds[m[1]] = m[2]
        elif m[:6] == LCD_HDR:
            for i, b in enumerate(m[7:-1]):
                if m[6] + i < 112:
                    self.lcd[m[6] + i] = chr(b)

    @classmethod
    def of(cls, messages: list[bytes]) -> Desk:
        desk = cls()
        for m in messages:
            desk.apply(m)
        return desk

    def text(self) -> str:
        return "".join(self.lcd)


def relearn_flicker(before: Desk, after: list[bytes]) -> list[str]:
    """Messages after the restart that show a value other than the one the desk showed before
    the kill, for a value Ardour still has (the test restores the same saved session): a motor
    fader sent elsewhere, a LED switched to another state, LCD characters overwritten with
    others. Re-sending the same value (e.g. restoring the desk after an offline display) is fine."""
    bad: list[str] = []
    for m in after:
        if len(m) == 3 and 0xE0 <= m[0] <= 0xE8 and (m[0] & 0x0F) in before.faders:
            if m != before.faders[m[0] & 0x0F]:
                bad.append(f"fader {m.hex(' ')} (was {before.faders[m[0] & 0x0F].hex(' ')})")
        elif len(m) == 3 and m[0] == 0x90 and m[1] in before.leds:
            if m[2] != before.leds[m[1]]:
                bad.append(f"LED {m.hex(' ')} (was {before.leds[m[1]]:02x})")
        elif m[:6] == LCD_HDR:
            text = "".join(chr(b) for b in m[7:-1])
            old = before.text()[m[6] : m[6] + len(text)]
            if text != old:
                bad.append(f"LCD @{m[6]}: {text!r} (was {old!r})")
    return bad


async def wait_status(port: int, wanted: str) -> None:
    deadline = time.monotonic() + T
    while time.monotonic() < deadline:
        c = OscClient(port)
        try:
            c.send("/state")
            msg = await asyncio.to_thread(c.wait_for, lambda m: m[0] == "/device/ardour/status", 3.0)
        finally:
            c.close()
        if msg[1] == [wanted]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"ardour never became {wanted}")


async def test_desk_sees_no_relearn_when_ardour_restarts(
    tmp_path: pytest.TempPathFactory,
    emu: McuEmulator,
    ardour: ArdourPeer,
    jack_sync: JackServer,
) -> None:
    daemon = Daemon(tmp_path, config(emu, ardour), env=jack_sync.env)  # type: ignore[arg-type]
    await asyncio.to_thread(daemon.start)
    client = OscClient(daemon.osc_port)
    try:
        # The desk shows Ardour's tracks; arm track 2 and mute track 1, and save them in Ardour
        # so that the restarted Ardour has the same values.
        await emu.wait_for(lambda r: Desk.of(r).text().startswith("Audio1 Audio2"), timeout=T)
        assert await asyncio.to_thread(client.command, "/track/2/arm", 1) == ("/ok", ["/track/2/arm"])
        assert await asyncio.to_thread(client.command, "/track/1/mute", 1) == ("/ok", ["/track/1/mute"])
        await emu.wait_for(
            lambda r: (
                Desk.of(r).leds.get(mc.REC_ARM + 1) == mc.LED_ON
                and Desk.of(r).leds.get(mc.MUTE + 0) == mc.LED_ON
            ),
            timeout=T,
        )
        await asyncio.to_thread(ardour.save)
        await asyncio.sleep(1.0)  # let the desk settle
        before = Desk.of(emu.received())
        assert 0 in before.faders and 1 in before.faders, before.faders  # both faders were placed
        assert before.faders[0] != bytes((0xE0, 0, 0))  # at Ardour's unity gain, not the bottom

        ardour.kill()
        await wait_status(daemon.osc_port, "disconnected")
        await asyncio.sleep(1.0)  # whatever the desk does while the DAW is away, it has done
        start = len(emu.received())
        await asyncio.to_thread(ardour.start)
        await wait_status(daemon.osc_port, "ok")
        await asyncio.sleep(2.0)  # the re-learn and anything the desk gets from it
        after = emu.received()[start:]

        flicker = relearn_flicker(before, after)
        assert not flicker, f"the re-learn reached the desk: {flicker}; after: {[m.hex(' ') for m in after]}"
        final = Desk.of(emu.received())
        assert final.faders[0] == before.faders[0] and final.leds[mc.REC_ARM + 1] == mc.LED_ON
        assert final.text()[:56] == before.text()[:56]
        # and the desk still drives the restarted Ardour
        await emu.press(mc.REC_ARM + 0)
        await emu.wait_for(lambda r: Desk.of(r).leds.get(mc.REC_ARM + 0) == mc.LED_ON, timeout=T)
    finally:
        print(daemon.log()[-6000:])  # shown when the test fails
        client.close()
        await asyncio.to_thread(daemon.stop)
        daemon.kill()
