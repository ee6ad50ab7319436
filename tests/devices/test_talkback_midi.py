"""MidiTalkback (kind talkback_midi) through real JACK MIDI ports against a console emulated by a
separate process (tests/midi_surface_proc.py through peers.jack)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from peers.jack import JackServer, PeerFactory, unique_name
from peers.recorder import Recorder

from bridge.config import parse_config
from bridge.devices.talkback_midi import MidiTalkback, MidiTalkbackOptions
from bridge.errors import ConfigError, DeviceUnavailable
from bridge.vocab import SetTalkback, TalkbackChanged

ON_A, OFF_A = [0xB0, 0x50, 0x7F], [0xB0, 0x50, 0x00]
ON_B, OFF_B = [0x90, 0x3C, 0x7F], [0x80, 0x3C, 0x00]


def options(client: str, feedback: bool = True, **kw: Any) -> MidiTalkbackOptions:
    return MidiTalkbackOptions(
        output=f"{client}-fb:desk",  # the console's input port
        input=f"{client}:desk" if feedback else None,  # the console's output port
        api="jack",
        client_name=unique_name("tbm"),
        on={"A": "B0 50 7F", "B": "90 3C 7F"},
        off={"A": "B0 50 00", "B": "80 3C 00"},
        **kw,
    )


def talk(on: bool, ch: str = "A") -> Any:
    return lambda e: isinstance(e, TalkbackChanged) and e.on is on and e.channel == ch


@pytest.mark.jack
async def test_commands_are_confirmed_by_the_consoles_feedback(
    jack_server: JackServer, midi_peer: PeerFactory
) -> None:
    client = unique_name("desk")
    console = midi_peer(client, "desk")
    drv = MidiTalkback("desk", options(client))
    async with asyncio.timeout(40):
        async with drv:
            rec = Recorder(drv, wait=10)
            try:
                drv.send_now(SetTalkback(True, "A"))
                assert await console.areceived(1) == [ON_A]
                assert not any(isinstance(e, TalkbackChanged) for e in rec.events)  # not yet confirmed
                await console.asend([ON_A])  # the console reports talk A on
                ev = await rec.wait_for(talk(True, "A"))
                assert ev.assumed is False
                # TALK B pressed on the console itself
                await console.asend([[0xB0, 0x07, 0x64], ON_B])  # a fader move (ignored), then B on
                await rec.wait_for(talk(True, "B"))
                drv.send_now(SetTalkback(False, "B"))
                assert await console.areceived(1) == [OFF_B]
                await console.asend([OFF_B])
                await rec.wait_for(talk(False, "B"))
                assert drv.stats()["ignored"] == 1
            finally:
                await rec.stop()


@pytest.mark.jack
async def test_a_console_that_does_not_answer_is_lost(
    jack_server: JackServer, midi_peer: PeerFactory
) -> None:
    client = unique_name("desk")
    console = midi_peer(client, "desk")
    drv = MidiTalkback("desk", options(client, answer_timeout=0.3))
    async with asyncio.timeout(40):
        async with drv:
            rec = Recorder(drv, wait=10)
            try:
                drv.send_now(SetTalkback(True, "A"))
                assert await console.areceived(1) == [ON_A]
                with pytest.raises(AssertionError, match=r"did not answer talk A within 0\.3 s"):
                    await rec.wait_for(lambda e: False)
            finally:
                await rec.stop()


@pytest.mark.jack
async def test_without_feedback_the_state_is_assumed(jack_server: JackServer, midi_peer: PeerFactory) -> None:
    client = unique_name("desk")
    console = midi_peer(client, "desk")
    drv = MidiTalkback("desk", options(client, feedback=False))
    async with asyncio.timeout(40):
        async with drv:
            rec = Recorder(drv, wait=10)
            try:
                drv.send_now(SetTalkback(True, "A"))
                ev = await rec.wait_for(talk(True, "A"))
                assert ev.assumed is True
                drv.send_now(SetTalkback(False, "A"))
                await rec.wait_for(talk(False, "A"))
                assert await console.areceived(2) == [ON_A, OFF_A]
            finally:
                await rec.stop()


@pytest.mark.jack
async def test_missing_port_is_unavailable(jack_server: JackServer) -> None:
    drv = MidiTalkback("desk", options("no-such-console"))
    with pytest.raises(DeviceUnavailable):
        await drv.__aenter__()
    await drv.__aexit__(None, None, None)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"on": {"A": "zz"}}, 'devices.tb.on: expected hex bytes like "B0 50 7F" (got "zz")'),
        ({"on": {"A": "50 7F"}}, "devices.tb.on: expected MIDI bytes starting with a status byte"),
        ({"off": {"B": "B0 50 00"}}, "devices.tb.off: needs the same talk channels as on (A)"),
        ({"query": "F0 7E"}, "devices.tb.query: expected a SysEx message ending in F7"),
        ({"feedback_on": {"A": "B0 50 7F"}}, "devices.tb.feedback_on: needs an input port"),
    ],
)
def test_option_errors_are_one_line(table: dict[str, Any], message: str) -> None:
    base = {"kind": "talkback_midi", "role": "mixer", "output": "Console"}
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        parse_config({"devices": {"tb": {**base, **table}}}, None)
    assert "\n" not in str(info.value)
