"""TotalMixTalkback against the fake TotalMix FX (tests/peers/fake_totalmix.py, a separate process):
/1/mainTalkback is a toggle whose feedback goes to the remote port, never to the sender."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from peers.fake_totalmix import FakeTotalMix
from peers.recorder import Recorder

from bridge.config import parse_config
from bridge.devices.totalmix import TotalMixTalkback
from bridge.errors import ConfigError, DeviceLost, DeviceUnavailable
from bridge.vocab import SetTalkback, TalkbackChanged

WAIT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def rig(
    levels: float = 0.0, **kw: Any
) -> AsyncIterator[tuple[FakeTotalMix, TotalMixTalkback, Recorder]]:
    local = free_port()
    mixer = FakeTotalMix(remote_port=local, levels=levels).start()
    try:
        opts = TotalMixTalkback.Options(port=mixer.port, local_host="127.0.0.1", local_port=local, **kw)
        driver = TotalMixTalkback("totalmix", opts)
        async with asyncio.timeout(WAIT):
            await driver.__aenter__()
        rec = Recorder(driver, wait=WAIT)
        try:
            yield mixer, driver, rec
        finally:
            await rec.stop()
            await driver.__aexit__(None, None, None)
    finally:
        mixer.stop()


def talk(on: bool) -> Any:
    return lambda e: isinstance(e, TalkbackChanged) and e.on is on and e.channel == "A"


async def state(mixer: FakeTotalMix) -> dict[str, Any]:
    return await asyncio.to_thread(mixer.state)


async def test_connect_learns_the_state_from_a_page_refresh() -> None:
    async with rig() as (mixer, driver, rec):
        await rec.wait_for(talk(False))
        s = await state(mixer)
        assert s["counts"]["page_sends"] >= 2 and s["state"]["page"] == 1
        assert s["counts"]["toggled"] == 0  # learning the state never toggles
        assert driver.stats()["ignored"] > 20  # the rest of the page burst
        assert driver.talkback_channels == ("A",)


async def test_engage_toggles_once_and_is_confirmed_by_the_feedback() -> None:
    async with rig() as (mixer, driver, rec):
        await rec.wait_for(talk(False))
        m = rec.mark()
        driver.send_now(SetTalkback(True))
        ev = await rec.wait_for(talk(True), start=m)
        assert ev.assumed is False
        s = await state(mixer)
        assert s["state"]["toggles"]["mainTalkback"] == 1.0 and s["counts"]["toggled"] == 1
        # already on: never toggle blind, the known state confirms it
        m = rec.mark()
        driver.send_now(SetTalkback(True))
        await rec.wait_for(talk(True), start=m)
        await asyncio.sleep(0.2)
        assert (await state(mixer))["counts"]["toggled"] == 1
        m = rec.mark()
        driver.send_now(SetTalkback(False))
        await rec.wait_for(talk(False), start=m)
        s = await state(mixer)
        assert s["state"]["toggles"]["mainTalkback"] == 0.0 and s["counts"]["toggled"] == 2


async def test_push_to_talk_released_before_the_feedback_is_two_confirmed_toggles() -> None:
    async with rig() as (mixer, driver, rec):
        await rec.wait_for(talk(False))
        m = rec.mark()
        driver.send_now(SetTalkback(True))
        driver.send_now(SetTalkback(False))  # before TotalMix answered the first toggle
        await rec.wait_for(talk(True), start=m)
        await rec.wait_for(talk(False), start=m + 1)
        await asyncio.sleep(0.3)
        s = await state(mixer)
        assert s["state"]["toggles"]["mainTalkback"] == 0.0 and s["counts"]["toggled"] == 2
        for _ in range(5):  # a burst of presses and releases ends where the last one says
            driver.send_now(SetTalkback(True))
            driver.send_now(SetTalkback(False))
        driver.send_now(SetTalkback(True))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (await state(mixer))["state"]["toggles"]["mainTalkback"] != 1.0:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert (await state(mixer))["state"]["toggles"]["mainTalkback"] == 1.0
        assert driver.reported["A"] is True


async def test_talkback_clicked_in_totalmix_is_reported() -> None:
    async with rig() as (mixer, _driver, rec):
        await rec.wait_for(talk(False))
        m = rec.mark()
        await asyncio.to_thread(mixer.click)
        await rec.wait_for(talk(True), start=m)
        await asyncio.to_thread(mixer.click)
        await rec.wait_for(talk(False), start=m + 1)


async def test_garbage_is_counted_and_ignored() -> None:
    async with rig() as (mixer, driver, rec):
        await rec.wait_for(talk(False))
        await asyncio.sleep(0.5)  # the connect refresh burst is over
        before = driver.stats()
        await asyncio.to_thread(mixer.garbage)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the three datagrams, counted in the order sent
            s = driver.stats()
            if s["bad"] >= before["bad"] + 2 and s["ignored"] >= before["ignored"] + 1:
                break
            await asyncio.sleep(0.05)
        s = driver.stats()
        assert s["bad"] == before["bad"] + 2  # the broken bundle and the string-valued talkback
        assert s["ignored"] == before["ignored"] + 1  # the unknown address
        assert not any(isinstance(e, TalkbackChanged) and e.on for e in rec.events)


async def test_silent_totalmix_is_lost_after_a_toggle() -> None:
    async with rig(answer_timeout=0.3) as (mixer, driver, rec):
        await rec.wait_for(talk(False))
        await asyncio.to_thread(mixer.silent, True)
        driver.send_now(SetTalkback(True))
        with pytest.raises(AssertionError, match=r"TotalMix FX at 127\.0\.0\.1:\d+ did not"):
            await rec.wait_for(lambda e: False)
        assert isinstance(rec.error, DeviceLost)


async def test_idle_probe_refreshes_and_a_dead_totalmix_is_lost() -> None:
    async with rig(probe_interval=0.5, answer_timeout=0.3) as (mixer, driver, rec):
        await rec.wait_for(talk(False))
        await asyncio.sleep(1.3)
        assert driver.stats()["probes"] >= 1 and rec.error is None
        await asyncio.to_thread(mixer.kill)
        with pytest.raises(AssertionError, match="did not answer /2/busInput"):
            await rec.wait_for(lambda e: False, within=5)


async def test_totalmix_not_running_is_unavailable() -> None:
    driver = TotalMixTalkback(
        "tm", TotalMixTalkback.Options(port=free_port(), local_port=free_port(), connect_timeout=0.5)
    )
    with pytest.raises(DeviceUnavailable, match="did not report the talkback state"):
        await driver.__aenter__()
    await driver.__aexit__(None, None, None)


def test_options_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=re.escape("devices.tm.refresh: expected a list of OSC addresses")):
        parse_config({"devices": {"tm": {"kind": "totalmix", "refresh": ["busInput"]}}}, None)
    cfg = parse_config({"devices": {"tm": {"kind": "totalmix", "role": "mixer"}}}, None)
    assert cfg.devices["tm"].options.port == 7001 and cfg.devices["tm"].options.local_port == 9001
