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


def wait_bytes(
    peer: MidiPeer, *wanted: list[int], timeout: float = 10.0, daemon: Daemon | None = None
) -> None:
    """Wait until the controller has received every message in ``wanted`` (on failure, with
    ``daemon``'s log)."""
    deadline = time.monotonic() + timeout
    seen: list[list[int]] = []
    while time.monotonic() < deadline:
        seen += peer.drain()
        if all(w in seen for w in wanted):
            return
        time.sleep(0.02)
    log = f"\ndaemon log:\n{daemon.log()}" if daemon is not None else ""
    raise AssertionError(f"controller never received {wanted}; got {seen[-20:]}{log}")


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
            wait_bytes(peer, [0xB0, REC, 127], [0xB0, STRIP2_REC, 127], timeout=10, daemon=daemon)
            # STOP: recording ends and the REC LED goes dark
            peer.send([[0xB0, STOP, 127], [0xB0, STOP, 0]])
            assert client.wait_for(lambda m: m == ("/transport/record", [0]), 10)
            wait_bytes(peer, [0xB0, REC, 0])
        finally:
            client.close()
        assert daemon.stop() == 0
    # lights off on shutdown
    wait_bytes(peer, [0xB0, STRIP2_REC, 0])


@pytest.mark.jack
def test_double_taps_in_a_flood_are_all_counted_by_the_daemon(
    tmp_path: Path,
    jack_server: JackServer,
    midi_peer: PeerFactory,
) -> None:
    """Issue 10 item 1, through the whole daemon: REC marks a take and toggles record; its LED follows
    record, so after every press that lit it the next press arrives, together with the release before
    it, within the echo window of that LED-on. 1,000 msg/s of fader moves around it. Counted at the
    state: the take number equals the number of presses, and the fader ends where it was left."""
    peer = midi_peer("nanoKONTROL2", "nanoKONTROL2 MIDI 1")
    mapping = tmp_path / "taps.toml"
    mapping.write_text(
        '[[binding]]\ncontrol = "transport.rec"\ncommand = "take.mark"\n\n'
        '[[binding]]\ncontrol = "transport.rec"\ncommand = "transport.record"\nglue = "toggle"\n'
        'feedback = "transport/recording"\n\n'
        '[[binding]]\ncontrol = "strip1.fader"\ncommand = "track.fader"\ntrack = 1\n'
    )
    config = f"""
[internal]
tracks = 8

[devices.nano]
kind = "generic_midi"
profile = "korg_nanokontrol2"
mapping = "{mapping}"
api = "jack"
input = "nanoKONTROL2:"
output = "nanoKONTROL2-fb:"
echo_window = 0.1                  # the echo guard on, as for a controller that might echo
"""
    taps, gap = 100, 30
    msgs: list[list[int]] = [[0xB0, REC, 127]]
    for t in range(taps):
        msgs += [[0xB0, 0, (t * 31 + i) % 128] for i in range(gap)]  # strip 1 fader, 1 message per ms
        msgs += [[0xB0, REC, 0], [0xB0, REC, 127]]  # release + next press: back to back
    msgs += [[0xB0, REC, 0], [0xB0, 0, 77]]
    with Daemon(tmp_path, config) as daemon:
        client = OscClient(daemon.osc_port)
        try:
            daemon.wait_for_log("nano (generic_midi): connected")
            client.command("/subscribe")
            assert peer.send(msgs, burst=1) == len(msgs)
            want = taps + 1
            deadline = time.monotonic() + 30
            take = None
            while time.monotonic() < deadline:
                take = client.latest("/take")
                if take == [want]:
                    break
                time.sleep(0.2)
            assert take == [want], f"take {take}, {want} presses: {want - (take or [0])[0]} lost"
            assert client.wait_for(lambda m: m == ("/track/1/fader", [pytest.approx(77 / 127)]), 10)
        finally:
            client.close()
        assert daemon.stop() == 0
