"""OscTalkback (kind talkback_osc) against a fake OSC talkback device (a separate process)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from peers.fake_osc_talkback import FakeOscTalkback
from peers.recorder import Recorder

from bridge.config import parse_config
from bridge.devices.talkback_osc import OscTalkback, same_value
from bridge.errors import ConfigError, DeviceLost
from bridge.vocab import SetTalkback, TalkbackChanged

WAIT = 10.0
CHANNELS = {"A": "/talk/a", "B": "/talk/b"}


@contextlib.asynccontextmanager
async def rig(
    feedback: bool = True, **kw: Any
) -> AsyncIterator[tuple[FakeOscTalkback, OscTalkback, Recorder]]:
    device = FakeOscTalkback(CHANNELS, feedback=feedback).start()
    try:
        fb = {"feedback": dict(CHANNELS), "query": list(CHANNELS.values())} if feedback else {}
        opts = OscTalkback.Options(
            host="127.0.0.1", port=device.port, local_host="127.0.0.1", address=dict(CHANNELS), **fb, **kw
        )
        OscTalkback.validate(opts, None)  # type: ignore[arg-type]
        driver = OscTalkback("desk", opts)
        async with asyncio.timeout(WAIT):
            await driver.__aenter__()
        rec = Recorder(driver, wait=WAIT)
        try:
            yield device, driver, rec
        finally:
            await rec.stop()
            await driver.__aexit__(None, None, None)
    finally:
        device.stop()


def talk(on: bool, ch: str = "A") -> Any:
    return lambda e: isinstance(e, TalkbackChanged) and e.on is on and e.channel == ch


async def test_with_feedback_commands_are_confirmed_and_key_presses_reported() -> None:
    async with rig() as (device, driver, rec):
        await rec.wait_for(talk(False, "A"))
        await rec.wait_for(talk(False, "B"))
        m = rec.mark()
        driver.send_now(SetTalkback(True, "B"))
        ev = await rec.wait_for(talk(True, "B"), start=m)
        assert ev.assumed is False
        assert (await asyncio.to_thread(device.state))["state"] == {"A": 0, "B": 1}
        m = rec.mark()
        await asyncio.to_thread(device.press, "A", True)  # the talk key on the device
        await rec.wait_for(talk(True, "A"), start=m)


async def test_without_feedback_the_state_is_assumed() -> None:
    async with rig(feedback=False) as (device, driver, rec):
        assert driver.reported == {"A": None, "B": None}
        driver.send_now(SetTalkback(True, "A"))
        ev = await rec.wait_for(talk(True, "A"))
        assert ev.assumed is True
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (await asyncio.to_thread(device.state))["state"]["A"] != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert (await asyncio.to_thread(device.state))["state"]["A"] == 1


async def test_a_device_that_stops_answering_is_lost() -> None:
    async with rig(answer_timeout=0.3) as (device, driver, rec):
        await rec.wait_for(talk(False, "A"))
        await asyncio.to_thread(device.silent, True)
        driver.send_now(SetTalkback(True, "A"))
        with pytest.raises(AssertionError, match=r"did not answer /talk/a within 0\.3 s"):
            await rec.wait_for(lambda e: False)
        assert isinstance(rec.error, DeviceLost)


def test_values_compare_as_osc_values() -> None:
    assert same_value(1, 1.0) and same_value(1.0, 1) and not same_value(1, True)
    assert same_value(True, True) and not same_value(0, False) and same_value("on", "on")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mode": "toggle"}, "devices.desk.feedback: mode toggle needs a feedback address for channel A"),
        ({"query": ["/talkback"]}, "devices.desk.query: a query needs feedback addresses"),
        ({"address": {"C": "/x"}}, "devices.desk.address: expected talk channels A and/or B as keys"),
        ({"address": {"A": "talk"}}, 'devices.desk.address: expected OSC addresses starting with "/"'),
        ({"feedback": {"B": "/b"}}, "devices.desk.feedback: channel B has a feedback address but no address"),
        ({"probe_interval": 2.0}, "devices.desk.probe_interval: probing needs a query"),
        ({"on": [1]}, "devices.desk.on: expected true or false or an integer or a number or a string"),
    ],
)
def test_inconsistent_options_are_one_line_errors(table: dict[str, Any], message: str) -> None:
    base = {"kind": "talkback_osc", "role": "mixer", "host": "10.0.0.9", "port": 8000}
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        parse_config({"devices": {"desk": {**base, **table}}}, None)
    assert "\n" not in str(info.value) and str(info.value).startswith("<built-in default>: devices.desk.")
