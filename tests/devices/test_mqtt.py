"""MqttBridge against a real mosquitto (driver alone: fed Feedback/LogEntry, reading what it yields)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.mosquitto import (  # noqa: F401
    Broker,
    Seen,
    Subscriber,
    free_port,
    make_tls_files,
    mosquitto,
    mosquitto_tls,
)

from bridge.devices._mqtt_publish import encode_value
from bridge.devices._mqtt_topics import parse_command
from bridge.devices.base import Device, DeviceContext
from bridge.devices.mqtt import MqttBridge, MqttOptions
from bridge.errors import ConfigError, DeviceLost, DeviceUnavailable
from bridge.vocab import (
    AddNote,
    CircleTake,
    FalseStart,
    Feedback,
    Locate,
    LogEntry,
    MarkTake,
    NewSession,
    Play,
    Request,
    SetRecord,
    SetSong,
    SetTalkback,
    SetTrackArm,
    SetTrackFader,
    SetTrackMute,
    Stop,
)

pytestmark = pytest.mark.mqtt

T = 15.0  # generous bound for every wait (2 shared cores)


@pytest.fixture
def broker(mosquitto: Broker) -> Broker:  # noqa: F811
    return mosquitto


@pytest.fixture
def tls_broker(mosquitto_tls: Broker) -> Broker:  # noqa: F811
    return mosquitto_tls


def make(broker: Broker, **kw: object) -> MqttBridge:
    room = str(kw.pop("room", f"room-{secrets.token_hex(3)}"))
    kw.setdefault("timeout", 5.0)
    opts = MqttOptions(host=broker.host, port=broker.port, room=room, **kw)  # type: ignore[arg-type]
    return MqttBridge("mqtt", opts)


class Running:
    """An open bridge with a reader task collecting what receive() yields."""

    def __init__(self, bridge: MqttBridge) -> None:
        self.bridge = bridge
        self.inbound: asyncio.Queue[object] = asyncio.Queue()
        self.error: BaseException | None = None
        self.lost = asyncio.Event()

    async def _read(self) -> None:
        try:
            async for item in self.bridge.receive():
                await self.inbound.put(item)
        except DeviceLost as exc:
            self.error = exc
            self.lost.set()

    async def next_request(self) -> Request:
        async with asyncio.timeout(T):
            item = await self.inbound.get()
        assert isinstance(item, Request)
        return item


@contextlib.asynccontextmanager
async def running(bridge: MqttBridge) -> AsyncIterator[Running]:
    async with asyncio.timeout(T):
        await bridge.__aenter__()
    run = Running(bridge)
    task = asyncio.create_task(run._read())
    try:
        yield run
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        async with asyncio.timeout(T):
            await bridge.__aexit__(None, None, None)


async def flush(bridge: MqttBridge) -> None:
    async with asyncio.timeout(T):
        await bridge.flush()


def payloads(msgs: list[Seen]) -> list[bytes]:
    return [m.payload for m in msgs]


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("suffix", "payload", "expected"),
    [
        ("transport/play", b"", Play()),
        ("transport/stop", b"1", Stop()),
        ("transport/record", b"1", SetRecord(on=True)),
        ("transport/record", b"", SetRecord(on=True)),
        ("session/new", b"Day 2", NewSession(name="Day 2")),
        ("transport/record", b"false", SetRecord(on=False)),
        ("transport/record", b'{"value": 0}', SetRecord(on=False)),
        ("transport/locate", b"12.5", Locate(seconds=12.5)),
        ("track/2/arm", b"1", SetTrackArm(track=2, on=True)),
        ("track/Lead Vox/mute", b"on", SetTrackMute(track="Lead Vox", on=True)),
        ("track/3/fader", b"0.25", SetTrackFader(track=3, value=0.25)),
        ("song", b"Blue Song", SetSong(name="Blue Song")),
        ("song", b'{"name": "Red Song"}', SetSong(name="Red Song")),
        ("take/mark", b"", MarkTake(label="")),
        ("take/mark", b"{}", MarkTake(label="")),
        ("take/mark", b'{"label": "keeper"}', MarkTake(label="keeper")),
        ("take/circle", b"", CircleTake()),
        ("take/circle", b"4", CircleTake(take=4)),
        ("take/circle", b'{"take": 4, "value": false}', CircleTake(take=4, on=False)),
        ("take/falsestart", b"", FalseStart()),
        ("note", b"bass too loud", AddNote(text="bass too loud")),
        ("note", b'{"text": "tempo drifts", "take": 2}', AddNote(text="tempo drifts", take=2)),
        ("talkback", b"1", SetTalkback(on=True)),
        ("talkback", b'{"value": true, "channel": "B"}', SetTalkback(on=True, channel="B")),
    ],
)
def test_parse_command(suffix: str, payload: bytes, expected: object) -> None:
    assert parse_command(suffix, payload)[0] == expected


@pytest.mark.parametrize(
    ("suffix", "payload"),
    [
        ("transport/record", b"maybe"),
        ("transport/locate", b"-1"),
        ("transport/locate", b"soon"),
        ("track/0/arm", b"1"),
        ("track/2/fader", b"1.5"),
        ("song", b""),
        ("take/mark", b'{"label": "x"'),
        ("take/mark", b"[1, 2]"),
        ("take/circle", b"0"),
        ("transport/explode", b"1"),
        ("note", b"\xff\xfe"),
    ],
)
def test_parse_command_rejects(suffix: str, payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_command(suffix, payload)


def test_correlation_id_and_encoding() -> None:
    assert parse_command("transport/play", b'{"id": "abc"}')[1] == "abc"
    assert parse_command("transport/play", b"1")[1] is None
    assert [encode_value(v) for v in (True, False, 3, 0.5, "Song A", None)] == [
        b"true", b"false", b"3", b"0.5", b'"Song A"', b"",
    ]  # fmt: skip


def test_options_reject_bad_room_and_two_passwords() -> None:
    with pytest.raises(ConfigError):
        MqttBridge("mqtt", MqttOptions(room="a/b"))
    with pytest.raises(ConfigError):
        MqttBridge("mqtt", MqttOptions(password="x", password_env="Y"))
    assert "hunter2" not in repr(MqttOptions(password="hunter2"))


def test_reconnect_delays_are_jittered_and_short_while_the_broker_was_just_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge = MqttBridge("mqtt", MqttOptions(room="x"))
    now = [1000.0]
    monkeypatch.setattr("bridge.devices.mqtt.time.monotonic", lambda: now[0])
    first = [bridge.retry_delay(0) for _ in range(200)]
    assert max(first) <= 0.05 and len(set(first)) > 100  # fast, and not in lockstep
    later = [bridge.retry_delay(attempt) for attempt in range(1, 400)]
    assert max(later) <= bridge.fast_cap and sum(later) / len(later) < 0.3
    now[0] += bridge.fast_for + 1  # gone for more than a minute: back off further
    slow = [bridge.retry_delay(attempt) for attempt in range(400, 800)]
    assert max(slow) <= bridge.max_backoff and max(slow) > bridge.fast_cap
    # other devices keep the plain doubling backoff
    assert [Device.retry_delay(bridge, a) for a in range(6)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0]


def test_take_sheet_records_round_trip_and_a_new_session_starts_a_new_sheet() -> None:
    from bridge.log.records import Record

    bridge = MqttBridge("mqtt", MqttOptions(room="x"))
    one = Record(7, 1, "2026-01-01T10:00:00.000Z", "take_marker", "Song", 1, 1.5, "osc", "keeper", None, {})
    bridge._takesheet.add(LogEntry(7, one.to_json()))
    bridge._takesheet.add(LogEntry(8, {"kind": "note"}))  # not a record: ignored
    assert list(bridge._takesheet.records.values()) == [one]
    two = Record(9, 2, "2026-01-01T11:00:00.000Z", "session_start", None, None, None, "", "Day 2", None, {})
    bridge._takesheet.add(LogEntry(9, two.to_json()))
    bridge._takesheet.add(LogEntry(10, {**one.to_json(), "seq": 10}))  # a late one of session 1
    assert list(bridge._takesheet.records.values()) == [two]


# --------------------------------------------------------------------------- against mosquitto


async def test_unreachable_broker_is_unavailable_without_leaking_secret() -> None:
    bridge = MqttBridge("mqtt", MqttOptions(port=free_port(), password="hunter2", room="x", timeout=3.0))
    with pytest.raises(DeviceUnavailable) as info:
        async with asyncio.timeout(T):
            await bridge.__aenter__()
    assert "hunter2" not in str(info.value)


async def test_retained_state_for_late_subscriber(broker: Broker) -> None:
    bridge = make(broker)
    root = bridge.root
    async with running(bridge):
        for key, value in [
            ("transport/recording", True),
            ("transport/playing", False),
            ("song", "Song A"),
            ("take", 3),
            ("track/2/armed", True),
            ("track/2/name", "Lead Vox"),
            ("track/2/fader", 0.75),
            ("device/reaper/status", "ok"),
        ]:
            await bridge.send(Feedback(key, value))
        await bridge.send(Feedback("track/2/name", None))  # removed key clears the retained message
        await flush(bridge)
        async with Subscriber(broker, f"{root}/#") as late:
            got = await late.wait_for(lambda m: m.topic.startswith(f"{root}/state/"), T, count=7)
            status = await late.wait_for(lambda m: m.topic == f"{root}/status", T)
            await late.quiet(0.3)
        state = {m.topic.removeprefix(f"{root}/state/"): m.payload for m in got}
        assert state == {
            "transport/recording": b"true",
            "transport/playing": b"false",
            "song": b'"Song A"',
            "take": b"3",
            "track/2/armed": b"true",
            "track/2/fader": b"0.75",
            "device/reaper/status": b'"ok"',
        }
        assert all(m.retain for m in got)
        assert status[0].payload == b"online" and status[0].retain


async def test_qos_and_retain_flags(broker: Broker) -> None:
    bridge = make(broker)
    root = bridge.root
    async with Subscriber(broker, f"{root}/#") as live, running(bridge):
        await bridge.send(Feedback("transport/recording", True))
        await bridge.send(Feedback("transport/position", 1.5, continuous=True))
        await bridge.send(LogEntry(7, {"kind": "take_marker", "take": 2, "song": "Song A"}))
        await flush(bridge)
        logged = await live.wait_for(lambda m: m.topic == f"{root}/log", T)
        await live.wait_for(lambda m: m.topic == f"{root}/state/transport/position", T)
        rec = live.on(f"{root}/state/transport/recording")[0]
        pos = live.on(f"{root}/state/transport/position")[0]
        assert (rec.qos, pos.qos, logged[0].qos) == (1, 0, 1)
        assert json.loads(logged[0].payload) == {"seq": 7, "kind": "take_marker", "take": 2, "song": "Song A"}
        async with Subscriber(broker, f"{root}/#") as late:
            await late.wait_for(lambda m: m.topic == f"{root}/state/transport/position", T)
            await late.quiet(0.3)
        assert late.on(f"{root}/state/transport/recording")[0].retain
        assert late.on(f"{root}/state/transport/position")[0].retain
        assert late.on(f"{root}/log") == []  # log records are not retained


async def test_fader_flood_is_coalesced_and_discrete_kept_in_order(broker: Broker) -> None:
    bridge = make(broker)
    root = bridge.root
    faders = [f"track/{n}/fader" for n in (1, 2)]
    sent_discrete: list[bytes] = []
    async with Subscriber(broker, f"{root}/state/#") as sub, running(bridge):
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        for tick in range(150):  # 1.5 s at 9,000 msg/s: 90 messages every 10 ms
            for _ in range(90):
                n += 1
                await bridge.send(Feedback(faders[n % 2], n / 100_000, continuous=True))
                if n % 150 == 0:
                    await bridge.send(Feedback("take", n))
                    sent_discrete.append(str(n).encode())
            await asyncio.sleep(max(0.0, start + (tick + 1) * 0.01 - loop.time()))
        last = {faders[n % 2]: n / 100_000, faders[(n - 1) % 2]: (n - 1) / 100_000}
        await flush(bridge)
        for key, value in last.items():
            topic, payload = f"{root}/state/{key}", encode_value(value)
            await sub.wait_for(lambda m, t=topic, p=payload: m.topic == t and m.payload == p, T)
        await sub.wait_for(lambda m: m.topic == f"{root}/state/take", T, count=len(sent_discrete))
        for key in faders:
            seen = sub.on(f"{root}/state/{key}")
            span = seen[-1].at - seen[0].at
            assert len(seen) <= 20 * span + 3, (len(seen), span)
            times = [m.at for m in seen]
            assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 20
            assert seen[-1].payload == encode_value(last[key])
        assert payloads(sub.on(f"{root}/state/take")) == sent_discrete
        assert bridge.stats()["coalesced"] > 10_000


async def test_commands_become_requests_with_replies(broker: Broker) -> None:
    bridge = make(broker, commands=True)
    root = bridge.root
    async with Subscriber(broker, f"{root}/reply/#") as replies, running(bridge) as run:
        client = replies.client
        await client.publish(f"{root}/cmd/track/2/arm", b"1", qos=1)
        req = await run.next_request()
        assert req.command == SetTrackArm(track=2, on=True)
        req.done(None)
        await client.publish(f"{root}/cmd/take/mark", b'{"label": "keeper", "id": "c-42"}', qos=1)
        req = await run.next_request()
        assert req.command == MarkTake(label="keeper")
        req.done("no song set")
        await client.publish(f"{root}/cmd/transport/play", b"", qos=1)
        assert (await run.next_request()).command == Play()
        arm = await replies.wait_for(lambda m: m.topic == f"{root}/reply/track/2/arm", T)
        mark = await replies.wait_for(lambda m: m.topic == f"{root}/reply/take/mark", T)
        assert json.loads(arm[0].payload) == {"ok": True}
        assert json.loads(mark[0].payload) == {"ok": False, "error": "no song set", "id": "c-42"}
        assert bridge.stats()["commands"] == 3


async def test_retained_commands_are_ignored_at_every_connect(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A retained cmd/ message is replayed by the broker at every subscribe (each bridge start,
    each reconnect after a broker restart): it must never roll the room into record."""
    bridge = make(broker, commands=True)
    root = bridge.root
    caplog.set_level(logging.DEBUG, logger="bridge.devices.mqtt")
    async with Subscriber(broker, f"{root}/reply/#") as sub:
        await sub.client.publish(f"{root}/cmd/transport/record", b"1", qos=1, retain=True)
        await sub.client.publish(f"{root}/cmd/take/mark", b"{}", qos=1, retain=True)
        for connect in (1, 2):  # a start, then a reconnect
            async with running(bridge) as run:
                await sub.client.publish(f"{root}/cmd/transport/stop", b"1", qos=1)  # live: runs
                req = await run.next_request()
                assert req.command == Stop()
                assert run.inbound.empty()
                assert bridge.stats()["retained_commands"] == 2 * connect
        # while connected, a command published with retain set is delivered live (the retain
        # flag is only set on the replay at subscribe): it is carried out
        async with running(bridge) as run:
            await sub.client.publish(f"{root}/cmd/transport/play", b"1", qos=1, retain=True)
            assert (await run.next_request()).command == Play()
            await sub.client.publish(f"{root}/cmd/transport/stop", b"1", qos=1)
            assert (await run.next_request()).command == Stop()
            assert run.inbound.empty()
        await sub.quiet(0.3)
        assert not any(m.topic.endswith(("/record", "/mark")) for m in sub.messages)  # no replies
        for topic in ("transport/record", "take/mark", "transport/play"):  # clean the broker
            await sub.client.publish(f"{root}/cmd/{topic}", b"", qos=1, retain=True)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "retained" in r.message]
    assert len(warnings) == 1 and "cmd/transport/record" in warnings[0].message  # logged once
    assert bridge.stats()["commands"] == 4


async def test_commands_ignored_when_disabled(broker: Broker) -> None:
    bridge = make(broker)
    root = bridge.root
    async with Subscriber(broker, f"{root}/#") as sub, running(bridge) as run:
        await sub.client.publish(f"{root}/cmd/transport/play", b"1", qos=1)
        await sub.client.publish(f"{root}/cmd/track/1/arm", b"1", qos=1)
        await sub.wait_for(lambda m: m.topic == f"{root}/cmd/track/1/arm", T)  # the broker had them
        await sub.quiet(0.5)
        assert run.inbound.empty()
        assert [m for m in sub.messages if "/reply/" in m.topic] == []
        assert bridge.stats()["commands"] == 0


async def test_bad_commands_are_counted_and_ignored(broker: Broker) -> None:
    bridge = make(broker, commands=True)
    root = bridge.root
    async with Subscriber(broker, f"{root}/reply/#") as replies, running(bridge) as run:
        pub = replies.client.publish
        await pub(f"{root}/cmd/take/mark", b'{"label": "broken"', qos=1)  # invalid JSON
        await pub(f"{root}/cmd/transport/record", b"maybe", qos=1)  # invalid value
        await pub(f"{root}/cmd/transport/explode", b"1", qos=1)  # unknown command
        await pub(f"{root}/cmd/note", b"x" * 5000, qos=1)  # oversized
        await pub(f"{root}/cmd/transport/stop", b"1", qos=1)  # and still alive
        req = await run.next_request()
        assert req.command == Stop()
        assert run.inbound.empty()
        stats = bridge.stats()
        assert (stats["invalid"], stats["unknown"], stats["oversized"], stats["commands"]) == (2, 1, 1, 1)
        errors = await replies.wait_for(lambda m: b'"ok":false' in m.payload, T, count=3)
        assert {m.topic.removeprefix(f"{root}/reply/") for m in errors} == {
            "take/mark", "transport/record", "transport/explode",
        }  # fmt: skip


async def test_home_assistant_discovery(broker: Broker) -> None:
    bridge = make(broker, homeassistant=True, commands=True, room="studio-b")
    node = "studio_bridge_studio-b"
    async with running(bridge):
        async with Subscriber(broker, "homeassistant/#") as ha:
            got = await ha.wait_for(lambda m: m.topic.endswith("/config"), T, count=8)
        configs = {m.topic: json.loads(m.payload) for m in got}
        assert all(m.retain for m in got)
        on_air = configs[f"homeassistant/binary_sensor/{node}/on_air/config"]
        assert on_air["state_topic"] == "studio-bridge/studio-b/state/transport/on_air"
        assert (on_air["payload_on"], on_air["payload_off"]) == ("true", "false")
        assert on_air["availability_topic"] == "studio-bridge/studio-b/status"
        assert on_air["device"]["identifiers"] == [node]
        assert configs[f"homeassistant/sensor/{node}/song/config"]["state_topic"].endswith("/state/song")
        talkback = configs[f"homeassistant/binary_sensor/{node}/talkback/config"]
        assert talkback["state_topic"].endswith("/state/talkback")
        assert configs[f"homeassistant/button/{node}/record/config"]["command_topic"] == (
            "studio-bridge/studio-b/cmd/transport/record"
        )
        mark = configs[f"homeassistant/button/{node}/mark_take/config"]
        assert mark["command_topic"].endswith("/cmd/take/mark")
        unique = [c["unique_id"] for c in configs.values()]
        assert len(set(unique)) == 8 and all("studio-b" in u for u in unique)
        # HA 2025.10 deprecated object_id (ignored from 2026.4): default_entity_id instead,
        # "<domain>.<object id>", a valid entity id (lower case, digits, _)
        assert not any("object_id" in c for c in configs.values())
        for topic, c in configs.items():
            domain = topic.split("/")[1]
            assert re.fullmatch(rf"{domain}\.[a-z0-9_]+", c["default_entity_id"]), c
        assert on_air["default_entity_id"] == "binary_sensor.studio_bridge_studio_b_on_air"
        assert talkback["default_entity_id"] == "binary_sensor.studio_bridge_studio_b_talkback"
        assert configs[f"homeassistant/button/{node}/record/config"]["default_entity_id"] == (
            "button.studio_bridge_studio_b_record"
        )
        assert len({c["default_entity_id"] for c in configs.values()}) == 8
    # Without commands the buttons are withdrawn (empty retained config).
    bridge = make(broker, homeassistant=True, room="studio-b")
    async with running(bridge):
        async with Subscriber(broker, "homeassistant/#") as ha:
            got = await ha.wait_for(lambda m: m.topic.endswith("/config"), T, count=4)
            await ha.quiet(0.5)
        assert not any("/button/" in m.topic for m in ha.messages)


async def test_broker_restart_lost_then_reconnect_republishes(broker: Broker) -> None:
    bridge = make(broker)
    root = bridge.root
    async with running(bridge) as run:
        await bridge.send(Feedback("transport/recording", True))
        await bridge.send(LogEntry(1, {"kind": "note", "text": "before"}))
        await flush(bridge)
        await asyncio.to_thread(broker.stop)
        async with asyncio.timeout(T):
            await run.lost.wait()
        assert isinstance(run.error, DeviceLost)
        # While the broker is down: log records are kept, send() never blocks.
        async with asyncio.timeout(1.0):
            await bridge.send(LogEntry(2, {"kind": "note", "text": "during"}))
            await bridge.send(Feedback("song", "stale"))
    with pytest.raises(DeviceUnavailable):
        async with asyncio.timeout(T):
            await bridge.__aenter__()
    await asyncio.to_thread(broker.start)
    async with Subscriber(broker, f"{root}/#") as sub, running(bridge):
        # the core's full dump after (re)connect
        await bridge.send(Feedback("transport/recording", True))
        await bridge.send(Feedback("song", "Song B"))
        await sub.wait_for(lambda m: m.topic == f"{root}/status" and m.payload == b"online", T)
        await sub.wait_for(lambda m: m.topic == f"{root}/state/song", T)
        logs = await sub.wait_for(lambda m: m.topic == f"{root}/log", T)
        await sub.quiet(0.3)
        assert [json.loads(m.payload)["text"] for m in sub.on(f"{root}/log")] == ["during"]
        assert payloads(sub.on(f"{root}/state/song")) == [b'"Song B"']
        assert sub.on(f"{root}/state/transport/recording")[-1].payload == b"true"
        assert logs


@contextlib.contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler (asyncio's ERROR lines: "Exception in
    callback ...", "Future exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


async def test_connection_loss_logs_no_error(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9 item 11: a lost broker connection logged an ``add_writer ... Bad file
    descriptor`` traceback, "Future exception was never retrieved (MqttCodeError)" and paho's
    "failed to receive on socket" at ERROR. A loss is reported once, as DeviceLost."""
    caplog.set_level(logging.INFO)
    bridge = make(broker)
    with loop_errors() as errors:
        # 1. The connection drops while a publish is being handed to paho: the socket is closed
        # in the same loop iteration in which paho asks for write readiness. Which iteration
        # that is depends on the publisher's steps: try each alignment.
        for spins in range(4):
            async with running(bridge) as run:
                await bridge.send(Feedback("song", "a"))
                await flush(bridge)
                await bridge.send(Feedback("song", f"b{spins}"))
                for _ in range(spins):
                    await asyncio.sleep(0)
                broker.stop(signal.SIGKILL)  # blocking on purpose: the reset is queued, unread
                time.sleep(0.1)  # noqa: ASYNC251 - not yielding to the loop is the point
                async with asyncio.timeout(T):
                    await run.lost.wait()
            await asyncio.to_thread(broker.start)
        # 2. The broker stalls (a publish times out: DeviceLost), then dies while the driver
        # closes the connection: nothing reads aiomqtt's disconnect reason any more.
        stalled = make(broker, timeout=1.0)
        async with running(stalled) as run:
            assert broker.proc is not None and stalled._client is not None
            disconnected = stalled._client._disconnected
            os.kill(broker.proc.pid, signal.SIGSTOP)
            await stalled.send(Feedback("song", "never acknowledged"))
            async with asyncio.timeout(T):
                await run.lost.wait()

            async def kill_while_closing() -> None:
                await asyncio.sleep(0.3)
                await asyncio.to_thread(broker.stop, signal.SIGKILL)

            killer = asyncio.create_task(kill_while_closing())
        await killer
        await asyncio.sleep(0.3)
        gc.collect()
    # the flag asyncio checks when the future is collected ("Future exception was never
    # retrieved"): the driver read the reason (the loss was reported as DeviceLost)
    assert not (disconnected.done() and disconnected._log_traceback)  # type: ignore[attr-defined]
    assert errors == []
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]


async def test_clean_exit_publishes_offline_and_rooms_stay_apart(broker: Broker) -> None:
    a, b = make(broker, room="room-a"), make(broker, room="room-b")
    async with Subscriber(broker, "studio-bridge/+/state/#", "studio-bridge/+/status") as dash:
        async with running(a), running(b):
            await a.send(Feedback("song", "A song"))
            await b.send(Feedback("song", "B song"))
            await flush(a)
            await flush(b)
            await dash.wait_for(lambda m: m.topic.endswith("/state/song"), T, count=2)
        await dash.wait_for(lambda m: m.payload == b"offline", T, count=2)
    assert payloads(dash.on("studio-bridge/room-a/state/song")) == [b'"A song"']
    assert payloads(dash.on("studio-bridge/room-b/state/song")) == [b'"B song"']
    assert a.client_id != b.client_id


async def test_secrets_stay_out_of_logs_and_errors(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SB_TEST_MQTT_PASSWORD", "env-s3cret")
    secret_file = tmp_path / "mqtt.secret"
    secret_file.write_text("file-s3cret\n")
    # the test broker allows anonymous clients and ignores credentials: the connect succeeds
    bridge = make(broker, username="studio", password_env="SB_TEST_MQTT_PASSWORD")
    async with running(bridge):
        await bridge.send(Feedback("song", "x"))
        await flush(bridge)
    ctx = DeviceContext(config_dir=tmp_path)
    gone = MqttBridge(
        "mqtt", MqttOptions(port=free_port(), password_file="mqtt.secret", room="r", timeout=3.0), ctx
    )
    with pytest.raises(DeviceUnavailable) as info:
        async with asyncio.timeout(T):
            await gone.__aenter__()
    missing = MqttBridge(
        "mqtt", MqttOptions(port=broker.port, password_env="SB_TEST_UNSET_VARIABLE", room="r")
    )
    with pytest.raises(ConfigError, match="SB_TEST_UNSET_VARIABLE"):
        await missing.__aenter__()
    text = caplog.text + str(info.value) + repr(bridge.opts) + repr(gone.opts)
    assert "env-s3cret" not in text and "file-s3cret" not in text
    assert "connected" in caplog.text  # the log was captured at all


async def test_tls_with_the_broker_ca_and_rejects_an_unknown_ca(tls_broker: Broker, tmp_path: Path) -> None:
    broker = tls_broker
    assert broker.ca_file is not None
    bridge = make(broker, tls=True, ca_file=str(broker.ca_file))
    async with Subscriber(broker, f"{bridge.root}/state/#") as sub, running(bridge):
        await bridge.send(Feedback("transport/recording", True))
        hits = await sub.wait_for(lambda m: m.topic.endswith("/state/transport/recording"), T)
    assert hits[0].payload == b"true"
    # a CA that did not sign the broker's certificate: refused, reported as unavailable
    other = await asyncio.to_thread(make_tls_files, tmp_path / "other-pki")
    stranger = make(broker, tls=True, ca_file=str(other[0]))
    with pytest.raises(DeviceUnavailable):
        async with asyncio.timeout(T):
            await stranger.__aenter__()
    # a missing CA file is a configuration error (the supervisor stops retrying), not an outage
    with pytest.raises(ConfigError, match="ca_file"):
        await make(broker, tls=True, ca_file=str(tmp_path / "missing.pem")).__aenter__()


async def test_stale_retained_state_from_an_earlier_run_is_cleared(broker: Broker) -> None:
    bridge = make(broker, stale_window=0.5)
    root = bridge.root
    async with Subscriber(broker, f"{root}/#") as earlier:  # what a previous run left on the broker
        for key, payload in (("track/9/armed", b"true"), ("song", b'"Old"'), ("device/gone/status", b'"ok"')):
            await earlier.client.publish(f"{root}/state/{key}", payload, qos=1, retain=True)
    async with running(bridge):
        await bridge.send(Feedback("song", "New"))  # the core's dump: track 9 and device "gone" are no more
        await bridge.send(Feedback("take", 2))
        await asyncio.sleep(1.0)
        await flush(bridge)
        async with Subscriber(broker, f"{root}/state/#") as late:
            await late.wait_for(lambda m: m.topic.endswith("/state/take"), T)
            await late.quiet(0.3)
    state = {m.topic.removeprefix(f"{root}/state/"): m.payload for m in late.messages}
    assert state == {"song": b'"New"', "take": b"2"}


async def test_queue_overflow_keeps_logs_and_final_state(broker: Broker) -> None:
    bridge = make(broker, max_queue=100)
    root = bridge.root
    async with Subscriber(broker, f"{root}/log", f"{root}/state/#") as sub, running(bridge):
        final: dict[str, bool] = {}
        for i in range(2000):  # far faster than any broker: send() never waits
            key = f"track/{i % 5 + 1}/armed"
            final[key] = i % 3 == 0
            await bridge.send(Feedback(key, final[key]))
            if i % 200 == 0:
                await bridge.send(LogEntry(i, {"kind": "note", "text": f"n{i}"}))
        await flush(bridge)
        logs = await sub.wait_for(lambda m: m.topic == f"{root}/log", T, count=10)
        assert [json.loads(m.payload)["seq"] for m in logs] == list(range(0, 2000, 200))
        assert bridge.stats()["overflows"] > 0
        assert len(sub.messages) < 2000
        async with Subscriber(broker, f"{root}/state/#") as late:
            await late.wait_for(lambda m: True, T, count=5)
            await late.quiet(0.3)
        assert {m.topic.removeprefix(f"{root}/state/"): m.payload for m in late.messages} == {
            k: encode_value(v) for k, v in final.items()
        }
