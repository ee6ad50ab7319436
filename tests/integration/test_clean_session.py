"""A clean session writes nothing at WARNING or ERROR: start, MIDI devices (a generic controller
and a Mackie surface, each played by a separate process over real JACK MIDI), MQTT (a real
mosquitto), a few commands, SIGTERM. Whoever alerts on ``journalctl -p warning`` must not be
paged by a normal day in the studio."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mcu_emulator_proc import McuEmulator
from peers.daemon import Daemon, OscClient
from peers.jack import JackServer, MidiPeer, PeerFactory, unique_name
from peers.mosquitto import Broker

from bridge.devices.midi import mackie_codec as mc

pytestmark = [pytest.mark.jack, pytest.mark.mqtt]

MAPPING = Path(__file__).resolve().parents[2] / "configs" / "mappings" / "nanokontrol2-tracking.toml"
REC, STOP, MARKER_SET = 45, 42, 60
T = 20.0  # generous: 2 shared cores
#: a log line at WARNING or above ("2026-12-02 07:44:55,123 WARNING bridge.x: ..."), or asyncio's
#: complaints and tracebacks, which come with an ERROR line
LOUD = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) |Traceback|exception was never retrieved")


def wait_until(what: str, check: Callable[[], bool], timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_bytes(peer: MidiPeer, wanted: list[int]) -> None:
    seen: list[list[int]] = []

    def got() -> bool:
        seen.extend(peer.drain())
        return wanted in seen

    wait_until(f"the controller to receive {wanted} (got {seen[-10:]})", got)


def led(emu: McuEmulator, note: int) -> int | None:
    state = None
    for m in emu.received():
        if len(m) == 3 and m[0] == 0x90 and m[1] == note:
            state = m[2]
    return state


@pytest.fixture
def desk(jack_server: JackServer) -> Iterator[McuEmulator]:
    emulator = McuEmulator(unique_name("XTouch"), jack_server.env)
    try:
        yield emulator
    finally:
        emulator.stop()


def test_clean_session_logs_no_warning_or_error(
    tmp_path: Path,
    jack_server: JackServer,
    midi_peer: PeerFactory,
    mosquitto: Broker,
    desk: McuEmulator,
) -> None:
    nano = midi_peer("nanoKONTROL2", "nanoKONTROL2 MIDI 1")
    config = f"""
[bridge]
room = "clean"

[internal]
tracks = 8

[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}

[devices.nano]
kind = "generic_midi"
profile = "korg_nanokontrol2"
mapping = "{MAPPING}"
api = "jack"
input = "nanoKONTROL2:"
output = "nanoKONTROL2-fb:"

[devices.desk]
kind = "mackie"
input = "{desk.in_pattern}"
output = "{desk.out_pattern}"
api = "jack"
client_name = "{unique_name("bridge-desk")}"
"""
    daemon = Daemon(tmp_path, config, env=jack_server.env)
    with daemon:
        client = OscClient(daemon.osc_port)
        try:
            assert client.command("/subscribe")[0] == "/ok"
            for name in ("nano (generic_midi)", "desk (mackie)", "mqtt (mqtt)"):
                daemon.wait_for_log(f"{name}: connected", timeout=T)
            nano.drain()
            nano.send([[0xB0, REC, 127], [0xB0, REC, 0]])  # REC on the controller
            assert client.wait_for(lambda m: m == ("/transport/record", [1]), T)
            wait_bytes(nano, [0xB0, REC, 127])
            wait_until("the desk's RECORD LED", lambda: led(desk, mc.RECORD) == mc.LED_ON)
            assert client.command("/song", "Clean") == ("/ok", ["/song"])
            assert client.command("/take/mark", "one") == ("/ok", ["/take/mark"])
            nano.send([[0xB0, MARKER_SET, 127], [0xB0, MARKER_SET, 0]])  # SET marks take 2
            assert client.wait_for(lambda m: m == ("/take", [2]), T)
            nano.send([[0xB0, STOP, 127], [0xB0, STOP, 0]])
            assert client.wait_for(lambda m: m == ("/transport/record", [0]), T)
            wait_until("the desk's RECORD LED off", lambda: led(desk, mc.RECORD) == mc.LED_OFF)
        finally:
            client.close()
        code = daemon.stop()
    log = daemon.log()
    assert code == 0, log
    assert "stopped in" in log, log
    loud = [line for line in daemon.lines if LOUD.search(line)]
    assert not loud, "a clean session logged:\n" + "\n".join(loud) + "\n--- full log:\n" + log
