"""X32Talkback against the fake X32 console (tests/peers/fake_x32.py), a separate process on
loopback that keeps the console's /xremote client table with its 10 s expiry."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from peers.fake_x32 import FakeX32, build
from peers.recorder import Recorder

from bridge.config import parse_config
from bridge.devices.x32 import X32Talkback
from bridge.errors import ConfigError, DeviceLost, DeviceUnavailable
from bridge.vocab import SetTalkback, TalkbackChanged

WAIT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def console() -> Any:
    fake = FakeX32().start()
    try:
        yield fake
    finally:
        fake.stop()


@contextlib.asynccontextmanager
async def rig(console: FakeX32, **kw: Any) -> AsyncIterator[tuple[X32Talkback, Recorder]]:
    opts = X32Talkback.Options(host="127.0.0.1", port=console.port, local_host="127.0.0.1", **kw)
    driver = X32Talkback("x32", opts)
    async with asyncio.timeout(WAIT):
        await driver.__aenter__()
    rec = Recorder(driver, wait=WAIT)
    try:
        yield driver, rec
    finally:
        await rec.stop()
        await driver.__aexit__(None, None, None)


def talk(on: bool, ch: str = "A") -> Any:
    return lambda e: isinstance(e, TalkbackChanged) and e.on is on and e.channel == ch


async def test_connect_reads_state_and_config_and_subscribes(console: FakeX32) -> None:
    await asyncio.to_thread(console.press, "B", True)  # B already on at the console
    async with rig(console) as (driver, rec):
        await rec.wait_for(talk(False, "A"))
        await rec.wait_for(talk(True, "B"))
        assert driver.config["/config/talk/A/dim"] == 1
        assert driver.config["/config/talk/B/destmap"] == 0x100
        assert driver.info[2] == "X32"
        state = await asyncio.to_thread(console.state)
        port = driver._endpoint.local_address[1]  # type: ignore[union-attr]
        assert [c[1] for c in state["clients"]] == [port]
        assert state["clients"][0][2] > 8.0  # subscribed for ~10 s


async def test_engage_is_confirmed_by_the_console(console: FakeX32) -> None:
    async with rig(console) as (driver, rec):
        await rec.wait_for(talk(False, "A"))
        m = rec.mark()
        driver.send_now(SetTalkback(True, "A"))
        ev = await rec.wait_for(talk(True, "A"), start=m)
        assert ev.assumed is False
        assert (await asyncio.to_thread(console.state))["state"]["/-stat/talk/A"] == 1
        m = rec.mark()
        driver.send_now(SetTalkback(False, "A"))
        await rec.wait_for(talk(False, "A"), start=m)
        assert (await asyncio.to_thread(console.state))["state"]["/-stat/talk/A"] == 0


async def test_talk_pressed_on_the_console_is_reported(console: FakeX32) -> None:
    async with rig(console) as (_driver, rec):
        await rec.wait_for(talk(False, "B"))
        m = rec.mark()
        await asyncio.to_thread(console.press, "B", True)
        await rec.wait_for(talk(True, "B"), start=m)
        await asyncio.to_thread(console.press, "B", False)
        await rec.wait_for(talk(False, "B"), start=m)


@pytest.mark.slow
async def test_subscription_outlives_the_10s_expiry_by_renewal(console: FakeX32) -> None:
    """The console drops a subscriber 10 s after its last /xremote; the driver renews it."""
    # a client that subscribes once and never renews stops getting changes after 10 s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as lazy:
        lazy.bind(("127.0.0.1", 0))
        lazy.settimeout(0.5)
        lazy.sendto(build("/xremote"), ("127.0.0.1", console.port))
        async with rig(console) as (driver, rec):
            await rec.wait_for(talk(False, "A"))
            await asyncio.to_thread(console.press, "A", True)
            assert lazy.recv(1024).startswith(b"/-stat/talk/A")  # subscribed: it gets the push
            await asyncio.sleep(10.8)
            m = rec.mark()
            await asyncio.to_thread(console.press, "A", False)
            await rec.wait_for(talk(False, "A"), start=m)  # the driver's subscription is alive
            with pytest.raises(TimeoutError):
                lazy.recv(1024)  # the lazy client's expired
            assert driver.stats()["renewals"] >= 3


async def test_garbage_and_unknown_datagrams_are_counted_and_ignored(console: FakeX32) -> None:
    async with rig(console) as (driver, rec):
        await rec.wait_for(talk(False, "A"))
        port = driver._endpoint.local_address[1]  # type: ignore[union-attr]
        before = driver.stats()
        await asyncio.to_thread(console.garbage, "127.0.0.1", port)
        await asyncio.to_thread(console.set, "/ch/01/mix/fader", 0.25)  # pushed, not talkback
        # and a datagram from somewhere else than the console
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.sendto(build("/-stat/talk/A", "i", 1), ("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            s = driver.stats()
            if s["bad"] >= before["bad"] + 2 and s["ignored"] >= before["ignored"] + 2 and s["foreign"] >= 1:
                break
            await asyncio.sleep(0.05)
        s = driver.stats()
        assert s["bad"] >= before["bad"] + 2  # the malformed datagram and the wrong-typed talk state
        assert s["ignored"] >= before["ignored"] + 2  # an unknown address and the fader move
        assert s["foreign"] == 1
        assert not any(isinstance(e, TalkbackChanged) and e.on for e in rec.events)
        m = rec.mark()
        driver.send_now(SetTalkback(True, "A"))  # still works
        await rec.wait_for(talk(True, "A"), start=m)


async def test_a_console_that_stops_answering_is_lost_at_the_first_command(console: FakeX32) -> None:
    async with rig(console, answer_timeout=0.3) as (driver, rec):
        await rec.wait_for(talk(False, "A"))
        await asyncio.to_thread(console.silent, True)
        started = time.monotonic()
        driver.send_now(SetTalkback(True, "A"))
        with pytest.raises(AssertionError, match=r"did not answer /-stat/talk/A within 0\.3 s"):
            await rec.wait_for(lambda e: False)
        assert isinstance(rec.error, DeviceLost)
        assert time.monotonic() - started < 3.0


async def test_a_console_that_is_not_there_is_unavailable() -> None:
    port = free_port()
    driver = X32Talkback("x32", X32Talkback.Options(host="127.0.0.1", port=port, connect_timeout=0.6))
    expected = re.escape(f"X32 at 127.0.0.1:{port} did not answer /info within 0.6 s")
    with pytest.raises(DeviceUnavailable, match=expected):
        await driver.__aenter__()
    await driver.__aexit__(None, None, None)


async def test_unknown_channel_is_refused(console: FakeX32) -> None:
    async with rig(console, channels=["A"]) as (driver, rec):
        await rec.wait_for(talk(False, "A"))
        assert not any(isinstance(e, TalkbackChanged) and e.channel == "B" for e in rec.events)
        with pytest.raises(Exception, match="no talk channel B"):
            driver.send_now(SetTalkback(True, "B"))


def test_options_are_checked_one_line_each() -> None:
    base = {"devices": {"desk": {"kind": "x32", "role": "mixer", "host": "10.0.0.32"}}}
    cfg = parse_config(base, None)
    assert cfg.devices["desk"].options.renew_interval == 4.0
    for key, value, expected in [
        ("renew_interval", 10.0, "devices.desk.renew_interval: expected a number of seconds 0.5-9"),
        ("channels", ["C"], 'devices.desk.channels: expected a list of talk channels "A" and/or "B"'),
        ("max_on", 0.5, "devices.desk.max_on: expected 0 (no limit) or a number of seconds 1-86400"),
        ("port", 0, "devices.desk.port: expected an integer 1-65535"),
    ]:
        table = {"devices": {"desk": dict(base["devices"]["desk"], **{key: value})}}
        with pytest.raises(ConfigError, match=re.escape(expected)) as info:
            parse_config(table, None)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"devices\.desk\.host: required"):
        parse_config({"devices": {"desk": {"kind": "x32"}}}, None)
