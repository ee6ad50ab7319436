"""A generic MIDI controller (an emulated nanoKONTROL2 over real JACK MIDI) driving the real daemon."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from peers.daemon import Daemon, OscClient
from peers.jack import JackServer, MidiPeer, PeerFactory

MAPPING = Path(__file__).resolve().parents[2] / "configs" / "mappings" / "nanokontrol2-tracking.toml"
REC, PLAY, STOP, MARKER_SET = 45, 41, 42, 60
STRIP2_REC = 65


def wait_bytes(peer: MidiPeer, *wanted: list[int], timeout: float = 10.0) -> None:
    """Wait until the controller has received every message in ``wanted``."""
    deadline = time.monotonic() + timeout
    seen: list[list[int]] = []
    while time.monotonic() < deadline:
        seen += peer.drain()
        if all(w in seen for w in wanted):
            return
        time.sleep(0.02)
    raise AssertionError(f"controller never received {wanted}; got {seen[-20:]}")


@pytest.mark.jack
def test_nanokontrol2_drives_the_daemon_and_leds_follow_the_state(
    tmp_path: Path,
    jack_server: JackServer,
    midi_peer: PeerFactory,
) -> None:
    peer = midi_peer("nanoKONTROL2", "nanoKONTROL2 MIDI 1")
    config = f"""
[internal]
tracks = 8

[devices.nano]
kind = "generic_midi"
profile = "korg_nanokontrol2"
mapping = "{MAPPING}"
api = "jack"
input = "nanoKONTROL2:"
output = "nanoKONTROL2-fb:"
"""
    with Daemon(tmp_path, config) as daemon:
        client = OscClient(daemon.osc_port)
        try:
            client.command("/subscribe")
            daemon.wait_for_log("nano (generic_midi): connected")
            peer.drain()
            # REC on the controller: the internal transport records, and only then the REC LED lights
            peer.send([[0xB0, REC, 127], [0xB0, REC, 0]])
            assert client.wait_for(lambda m: m == ("/transport/record", [1]), 10)
            wait_bytes(peer, [0xB0, REC, 127])
            # R button of strip 2 arms track 2; its LED follows
            peer.send([[0xB0, STRIP2_REC, 127], [0xB0, STRIP2_REC, 0]])
            assert client.wait_for(lambda m: m == ("/track/2/arm", [1]), 10)
            wait_bytes(peer, [0xB0, STRIP2_REC, 127])
            # SET marker marks a take
            peer.send([[0xB0, MARKER_SET, 127], [0xB0, MARKER_SET, 0]])
            assert client.wait_for(lambda m: m == ("/take", [1]), 10)
            # the controller is unplugged and plugged back: its LEDs are replayed
            peer.close_ports()
            daemon.wait_for_log("nano (generic_midi): ", timeout=10)
            assert client.wait_for(lambda m: m == ("/device/nano/status", ["disconnected"]), 10)
            peer.drain()
            peer.open_ports()
            wait_bytes(peer, [0xB0, REC, 127], [0xB0, STRIP2_REC, 127], timeout=10)
            # a replug with no pause at all (faster than the port-list check): still replayed
            peer.close_ports()
            peer.open_ports()
            wait_bytes(peer, [0xB0, REC, 127], [0xB0, STRIP2_REC, 127], timeout=10)
            # STOP: recording ends and the REC LED goes dark
            peer.send([[0xB0, STOP, 127], [0xB0, STOP, 0]])
            assert client.wait_for(lambda m: m == ("/transport/record", [0]), 10)
            wait_bytes(peer, [0xB0, REC, 0])
        finally:
            client.close()
        assert daemon.stop() == 0
    # lights off on shutdown
    wait_bytes(peer, [0xB0, STRIP2_REC, 0])
