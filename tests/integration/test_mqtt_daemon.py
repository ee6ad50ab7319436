"""The real daemon (``python -m bridge run``) publishing to a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import signal
import time
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


async def test_retained_record_command_never_rolls_the_room(tmp_path: Path, broker: Broker) -> None:
    """Issue 9 item 8: a retained cmd/transport/record 1 used to put the room into record at
    every bridge start (and every reconnect), even after the engineer had stopped it."""
    root = "studio-bridge/retained"
    async with Subscriber(broker, f"{root}/#") as sub:
        await sub.client.publish(f"{root}/cmd/transport/record", b"1", qos=1, retain=True)
        try:
            for run in (1, 2):  # two daemon starts against the same broker
                online = len([m for m in sub.on(f"{root}/status") if m.payload == b"online"])
                daemon = await start(tmp_path / f"run{run}", broker, "retained")
                try:
                    await sub.wait_for(
                        lambda m: m.topic == f"{root}/status" and m.payload == b"online", T, count=online + 1
                    )
                    # a live command is carried out (and proves the subscription is up)
                    assert await command(sub, root, "song", f"Run {run}".encode()) == {"ok": True}
                    await sub.quiet(0.5)
                    async with Subscriber(broker, f"{root}/state/#") as late:
                        await late.wait_for(lambda m: m.topic.endswith("/state/transport/recording"), T)
                        await late.quiet(0.3)
                    state = retained_state(late.messages, root)
                    assert state["transport/recording"] is False
                    assert state["transport/on_air"] is False
                    assert state["song"] == f"Run {run}"
                finally:
                    await stop(daemon)
                assert daemon.log().count("retained command ignored") == 1
                records = export_json(daemon.data_dir)
                assert not [t for t in records["takes"]], records
            assert not sub.on(f"{root}/reply/transport/record")
        finally:
            await sub.client.publish(f"{root}/cmd/transport/record", b"", qos=1, retain=True)


async def test_full_state_at_connect_talkback_included(tmp_path: Path, broker: Broker) -> None:
    """Issue 9 item 9: state/talkback was only published once talkback had been used, so Home
    Assistant's Talkback sensor showed *unknown* and a late subscriber learnt nothing. Every
    key with a defined default is published at connect, before anything happened."""
    root = "studio-bridge/fresh"
    daemon = await start(tmp_path, broker, "fresh", commands=False)
    try:
        async with Subscriber(broker, f"{root}/#") as sub:
            await sub.wait_for(lambda m: m.topic == f"{root}/state/device/mqtt/status", T)
            await sub.quiet(0.5)  # let the rest of the dump arrive
        async with Subscriber(broker, f"{root}/#") as late:  # a dashboard opened now
            await late.wait_for(lambda m: m.topic == f"{root}/state/device/mqtt/status", T)
            await late.quiet(0.3)
        assert all(m.retain for m in late.messages)
        state = retained_state(late.messages, root)
        assert state["talkback"] is False
        assert (state["transport/playing"], state["transport/recording"]) == (False, False)
        assert state["transport/on_air"] is False
        assert state["take"] == 0 and state["take/next"] == 1 and state["song"] == ""
        assert isinstance(state["session"], str) and state["session"]
        assert state["device/mqtt/status"] == "ok" and state["device/osc/status"] == "ok"
        # OSC /state shows the same default (one store for every output)
        osc = OscClient(daemon.osc_port)
        try:
            assert await asyncio.to_thread(osc.command, "/state") == ("/ok", ["/state"])
            assert await asyncio.to_thread(osc.value, "/talkback") == [0]
        finally:
            osc.close()
    finally:
        await stop(daemon)


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


#: From the broker accepting connections again to the state being back on it. The design
#: goal is < 1 s (retries at most 0.5 s apart, jittered); the bound leaves room for a loaded
#: 2-core machine. Before: 1.4 s after a 1 s outage, 1.8 s after 2 s, 6.9 s after 9 s.
REPUBLISHED_WITHIN = 2.5
TAKESHEET_SETTLE = 1.0  # > TAKESHEET_INTERVAL: the last coalesced take sheet is out


async def test_reconnect_soon_after_the_broker_answers_again(tmp_path: Path, broker: Broker) -> None:
    """Issue 9 item 10: the documented "repopulated within a second" of the broker coming back,
    for outages of 1, 2 and 9 s (the broker restarted on the same port, no persistence); one
    WARNING per outage, an INFO summary when back, no ERROR, and a clean stop says nothing."""
    root = "studio-bridge/outage"
    daemon = await start(tmp_path, broker, "outage", commands=False)
    took: dict[float, float] = {}
    try:
        async with Subscriber(broker, f"{root}/state/device/mqtt/status") as sub:
            await sub.wait_for(lambda m: m.payload == b'"ok"', T)
        for outage in (1.0, 2.0, 9.0):
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(outage)
            await asyncio.to_thread(broker.start)  # returns once the port accepts connections
            back = time.perf_counter()
            async with Subscriber(broker, f"{root}/state/talkback", f"{root}/status") as sub:
                hits = await sub.wait_for(lambda m: m.topic.endswith("/state/talkback"), T)
                await sub.wait_for(lambda m: m.topic.endswith("/status") and m.payload == b"online", T)
            took[outage] = hits[0].at - back
    finally:
        await stop(daemon)
    assert all(t < REPUBLISHED_WITHIN for t in took.values()), took
    lines = daemon.log().splitlines()
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line]
    warnings = [line for line in lines if " WARNING " in line]
    assert len(warnings) == 3 and all("mqtt (mqtt)" in w and "connection lost" in w for w in warnings)
    assert sum("mqtt: connected to" in line and "again after" in line for line in lines) == 3


async def test_clean_stop_while_the_broker_is_down_says_nothing_loud(tmp_path: Path, broker: Broker) -> None:
    root = "studio-bridge/downstop"
    daemon = await start(tmp_path, broker, "downstop")
    try:
        async with Subscriber(broker, f"{root}/state/device/mqtt/status") as sub:
            await sub.wait_for(lambda m: m.payload == b'"ok"', T)
    finally:
        await stop(daemon)  # a clean stop with the broker up
    assert not [line for line in daemon.log().splitlines() if " WARNING " in line or " ERROR " in line]
    daemon = await start(tmp_path / "second", broker, "downstop")
    try:
        async with Subscriber(broker, f"{root}/state/device/mqtt/status") as sub:
            await sub.wait_for(lambda m: m.payload == b'"ok"', T)
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(daemon.wait_for_log, "connection lost", T)
        await asyncio.sleep(0.5)  # a few reconnect attempts
    finally:
        await stop(daemon)  # and with the broker gone
    loud = [line for line in daemon.log().splitlines() if " WARNING " in line or " ERROR " in line]
    assert len(loud) == 1 and "connection lost" in loud[0], loud  # the loss itself, once


async def test_take_sheet_for_a_dashboard_opened_mid_session(tmp_path: Path, broker: Broker) -> None:
    """Issue 11 item 5: a retained take sheet per room, updated on each change (coalesced), so
    a dashboard opened mid-session rebuilds the list; the same takes as ``log export``."""
    root = "studio-bridge/sheet"
    daemon = await start(tmp_path, broker, "sheet")
    osc = OscClient(daemon.osc_port)
    try:
        async with Subscriber(broker, f"{root}/#") as sub:
            await sub.wait_for(lambda m: m.topic == f"{root}/status" and m.payload == b"online", T)
            assert await command(sub, root, "song", b"Blue Monday") == {"ok": True}
            assert await command(sub, root, "take/mark", b'{"label": "intro"}') == {"ok": True}
            assert await command(sub, root, "take/mark", b'{"label": "keeper"}') == {"ok": True}
            assert await command(sub, root, "take/circle", b"") == {"ok": True}
            before = len(sub.on(f"{root}/takesheet"))
            for i in range(40):  # a burst of notes and fader moves: a few publishes, not 40
                osc.send("/note", f"note {i}")
                osc.send("/track/1/fader", i / 40)
            await sub.wait_for(lambda m: m.topic == f"{root}/takesheet" and b"note 39" in m.payload, T)
            await sub.quiet(1.0)
            burst = len(sub.on(f"{root}/takesheet")) - before
            assert 1 <= burst <= 8, burst
        async with Subscriber(broker, f"{root}/takesheet") as late:  # opened mid-session
            hits = await late.wait_for(lambda m: True, T)
        assert hits[0].retain
        sheet = json.loads(hits[0].payload)
        exported = export_json(daemon.data_dir)
        assert sheet["format"] == exported["format"] and sheet["session"] == exported["session"]
        assert sheet["takes"] == exported["takes"]
        assert [(t["song"], t["take"], t["label"], t["circled"]) for t in sheet["takes"]] == [
            ("Blue Monday", 1, "intro", False),
            ("Blue Monday", 2, "keeper", True),
        ]
        assert len(sheet["takes"][1]["notes"]) == 40
        # the bridge dies (power cut): started again, it resumes the session and publishes
        # its sheet built from the log, the takes from before it started included
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(daemon.proc.wait, 10)
    finally:
        osc.close()
        await stop(daemon)
    again = Daemon(tmp_path, config(broker, "sheet", True), data_dir=daemon.data_dir)
    await asyncio.to_thread(again.start)
    try:
        await asyncio.to_thread(again.wait_for_log, "mqtt: connected", T)
        async with Subscriber(broker, f"{root}/takesheet") as late:
            hits = await late.wait_for(lambda m: True, T)
            await late.quiet(TAKESHEET_SETTLE)
        resumed = json.loads(late.messages[-1].payload)
        assert resumed["session"] == sheet["session"]
        assert [t["label"] for t in resumed["takes"]] == ["intro", "keeper"]
        assert resumed["takes"] == export_json(daemon.data_dir)["takes"]
    finally:
        await stop(again)


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


async def test_take_verbs_toggles_and_song_list_over_the_bus(tmp_path: Path, broker: Broker) -> None:
    root = "studio-bridge/room-v"
    await asyncio.to_thread(tmp_path.mkdir, parents=True, exist_ok=True)
    text = config(broker, "room-v", True).replace("[bridge]\n", '[bridge]\nsongs = ["Intro"]\n')

    def state_is(key: str, payload: bytes):
        return sub.wait_for(lambda m: m.topic == f"{root}/state/{key}" and m.payload == payload, T)

    async with Subscriber(broker, f"{root}/#") as sub:
        daemon = await asyncio.to_thread(Daemon(tmp_path, text).start)
        try:
            await sub.wait_for(lambda m: m.topic == f"{root}/status" and m.payload == b"online", T)
            assert await command(sub, root, "song/add", b"Outro") == {"ok": True}
            await state_is("songs", json.dumps('["Intro", "Outro"]').encode())
            assert await command(sub, root, "song/next", b"") == {"ok": True}
            await state_is("song", b'"Intro"')
            for _ in range(2):
                assert await command(sub, root, "take/mark", b"") == {"ok": True}
            await state_is("take/selected", b"2")
            assert await command(sub, root, "take/circle/toggle", b"") == {"ok": True}
            await state_is("take/selected/circled", b"true")
            assert await command(sub, root, "take/select", b"1") == {"ok": True}
            await state_is("take/selected", b"1")
            assert await command(sub, root, "take/falsestart", b"") == {"ok": True}
            await state_is("take/selected/false_start", b"true")
            assert await command(sub, root, "take/falsestart", b'{"take": 1, "value": false}') == {"ok": True}
            await state_is("take/selected/false_start", b"false")
            reply = await command(sub, root, "take/rename", b'{"take": 2, "label": "keeper"}')
            assert reply == {"ok": True}
            bad = await command(sub, root, "take/select", b"9")
            assert bad == {"ok": False, "error": "no take 9 in song 'Intro'"}
        finally:
            await stop(daemon)
    takes = export_json(daemon.data_dir)["takes"]
    assert [(t["take"], t["label"], t["circled"], t["false_start"]) for t in takes] == [
        (1, "", False, False),
        (2, "keeper", True, False),
    ]
