"""The real daemon (``python -m bridge run``) publishing to a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from peers.daemon import Daemon, OscClient, cli
from peers.mosquitto import Broker, Seen, Subscriber

pytestmark = pytest.mark.mqtt

T = 20.0  # generous: 2 shared cores, daemon start-up + supervisor backoff


@pytest.fixture
def broker(mosquitto: Broker) -> Broker:
    return mosquitto


def config(broker: Broker, room: str, commands: bool, mqtt_room: bool = True) -> str:
    """``mqtt_room=False`` leaves [mqtt] room out: the driver takes [bridge] room."""
    return (
        f'[bridge]\nroom = "{room}"\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        + (f'room = "{room}"\n' if mqtt_room else "")
        + f"commands = {'true' if commands else 'false'}\n"
    )


async def start(
    tmp: Path, broker: Broker, room: str, commands: bool = True, mqtt_room: bool = True
) -> Daemon:
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    daemon = Daemon(tmp, config(broker, room, commands, mqtt_room))
    return await asyncio.to_thread(daemon.start)


async def stop(daemon: Daemon) -> None:
    await asyncio.to_thread(daemon.stop)
    daemon.kill()


def export_json(data_dir: Path) -> dict:
    result = cli("log", "export", "--format", "json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def retained_state(msgs: list[Seen], root: str) -> dict[str, object]:
    prefix = f"{root}/state/"
    return {
        m.topic.removeprefix(prefix): json.loads(m.payload)
        for m in msgs
        if m.topic.startswith(prefix) and m.payload
    }


async def command(sub: Subscriber, root: str, suffix: str, payload: bytes) -> dict:
    """Publish cmd/<suffix> and wait for the reply on reply/<suffix>."""
    before = len(sub.on(f"{root}/reply/{suffix}"))
    await sub.client.publish(f"{root}/cmd/{suffix}", payload, qos=1)
    hits = await sub.wait_for(lambda m: m.topic == f"{root}/reply/{suffix}", T, count=before + 1)
    return json.loads(hits[-1].payload)


async def test_commands_state_log_and_late_subscriber(tmp_path: Path, broker: Broker) -> None:
    root = "studio-bridge/room-a"
    async with Subscriber(broker, f"{root}/#") as sub:
        daemon = await start(tmp_path, broker, "room-a")
        try:
            await sub.wait_for(lambda m: m.topic == f"{root}/status" and m.payload == b"online", T)
            assert await command(sub, root, "song", b"Blue Monday") == {"ok": True}
            assert await command(sub, root, "track/2/arm", b"1") == {"ok": True}
            assert await command(sub, root, "transport/record", b"true") == {"ok": True}
            reply = await command(sub, root, "take/mark", b'{"label": "keeper", "id": "m-1"}')
            assert reply == {"ok": True, "id": "m-1"}
            bad = await command(sub, root, "transport/record", b"maybe")
            assert bad["ok"] is False and "expected" in bad["error"]
            logs = await sub.wait_for(lambda m: m.topic == f"{root}/log" and b"keeper" in m.payload, T)
            record = json.loads(logs[0].payload)
            assert record["song"] == "Blue Monday" and record["take"] == 1 and isinstance(record["seq"], int)
            await sub.wait_for(lambda m: m.topic == f"{root}/state/take" and m.payload == b"1", T)
            async with Subscriber(broker, f"{root}/state/#") as late:
                await late.wait_for(lambda m: m.topic.endswith("/state/take"), T)
                await late.quiet(0.5)
            state = retained_state(
                [m for m in late.messages if m.retain], root
            )  # what a late subscriber gets
            assert state["song"] == "Blue Monday"
            assert state["track/2/armed"] is True
            assert state["transport/recording"] is True
            assert state["take"] == 1
            assert state["device/mqtt/status"] == "ok"
        finally:
            await stop(daemon)
        # a clean stop says offline (retained)
        await sub.wait_for(lambda m: m.topic == f"{root}/status" and m.payload == b"offline", T)
    takes = export_json(daemon.data_dir)["takes"]
    assert [(t["song"], t["take"], t["label"]) for t in takes] == [("Blue Monday", 1, "keeper")]


async def test_commands_disabled_are_ignored_and_last_will_on_kill9(tmp_path: Path, broker: Broker) -> None:
    root = "studio-bridge/quiet"
    async with Subscriber(broker, f"{root}/#") as sub:
        daemon = await start(tmp_path, broker, "quiet", commands=False)
        try:
            await sub.wait_for(lambda m: m.topic == f"{root}/status" and m.payload == b"online", T)
            await sub.client.publish(f"{root}/cmd/track/3/arm", b"1", qos=1)
            await sub.client.publish(f"{root}/cmd/take/mark", b"", qos=1)
            await sub.wait_for(lambda m: m.topic == f"{root}/cmd/take/mark", T)
            await sub.quiet(1.0)
            assert not any("/reply/" in m.topic for m in sub.messages)
            assert not any(
                m.topic == f"{root}/state/track/3/armed" and m.payload == b"true" for m in sub.messages
            )
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(daemon.proc.wait, 10)
            await sub.wait_for(lambda m: m.topic == f"{root}/status" and m.payload == b"offline", T)
        finally:
            daemon.kill()
    async with Subscriber(broker, f"{root}/status") as late:  # the will is retained
        hits = await late.wait_for(lambda m: True, T)
    assert hits[0].payload == b"offline" and hits[0].retain
    assert export_json(daemon.data_dir)["takes"] == []


async def test_broker_restart_then_state_republished(tmp_path: Path, broker: Broker) -> None:
    root = "studio-bridge/restart"
    daemon = await start(tmp_path, broker, "restart")
    osc = OscClient(daemon.osc_port)
    try:
        async with Subscriber(broker, f"{root}/#") as sub:
            await sub.wait_for(lambda m: m.topic == f"{root}/status" and m.payload == b"online", T)
            assert await asyncio.to_thread(osc.command, "/song", "Before") == ("/ok", ["/song"])
            assert await asyncio.to_thread(osc.command, "/track/4/arm", 1) == ("/ok", ["/track/4/arm"])
            await sub.wait_for(lambda m: m.topic == f"{root}/state/track/4/armed" and m.payload == b"true", T)
        await asyncio.to_thread(broker.restart)  # no persistence: every retained message is gone
        async with Subscriber(broker, f"{root}/#") as sub:
            await sub.wait_for(lambda m: m.topic == f"{root}/status" and m.payload == b"online", T)
            await sub.wait_for(lambda m: m.topic == f"{root}/state/song", T)
            await sub.wait_for(lambda m: m.topic == f"{root}/state/track/4/armed", T)
            state = retained_state(sub.messages, root)
            assert state["song"] == "Before" and state["track/4/armed"] is True
            # and it keeps publishing changes after the reconnect
            assert await asyncio.to_thread(osc.command, "/song", "After") == ("/ok", ["/song"])
            await sub.wait_for(lambda m: m.topic == f"{root}/state/song" and m.payload == b'"After"', T)
    finally:
        osc.close()
        await stop(daemon)


async def test_two_rooms_share_a_broker(tmp_path: Path, broker: Broker) -> None:
    a = await start(tmp_path / "a", broker, "room-a")
    b = await start(tmp_path / "b", broker, "room-b", mqtt_room=False)  # room from [bridge]
    try:
        async with Subscriber(broker, "studio-bridge/+/state/#", "studio-bridge/+/reply/#") as dash:
            await dash.wait_for(
                lambda m: m.topic.endswith("/device/mqtt/status") and m.payload == b'"ok"', T, 2
            )
            assert await command(dash, "studio-bridge/room-a", "song", b"Song A") == {"ok": True}
            assert await command(dash, "studio-bridge/room-b", "song", b"Song B") == {"ok": True}
            assert await command(dash, "studio-bridge/room-a", "track/1/arm", b"1") == {"ok": True}
            await dash.wait_for(lambda m: m.topic == "studio-bridge/room-a/state/track/1/armed", T)
            await dash.quiet(0.5)
        songs = {m.topic: m.payload for m in dash.messages if m.topic.endswith("/state/song")}
        assert songs == {
            "studio-bridge/room-a/state/song": b'"Song A"',
            "studio-bridge/room-b/state/song": b'"Song B"',
        }
        armed_b = [m for m in dash.messages if m.topic == "studio-bridge/room-b/state/track/1/armed"]
        assert all(m.payload == b"false" for m in armed_b)
    finally:
        await stop(a)
        await stop(b)


async def test_password_never_in_daemon_logs(tmp_path: Path, broker: Broker) -> None:
    root = "studio-bridge/secret"
    cfg = config(broker, "secret", commands=False) + 'username = "studio"\npassword = "cfg-s3cret"\n'
    daemon = Daemon(tmp_path, cfg, extra_args=("--log-level", "debug"))
    async with Subscriber(broker, f"{root}/status") as sub:
        await asyncio.to_thread(daemon.start)
        try:
            await sub.wait_for(lambda m: m.payload == b"online", T)  # the test broker ignores credentials
        finally:
            await stop(daemon)
    check = cli("check", "-c", str(daemon.config_path))
    assert check.returncode == 0, check.stderr
    assert "mqtt: connected" in daemon.log()
    assert "cfg-s3cret" not in daemon.log() + check.stdout + check.stderr
