"""The daemon with a TotalMix FX, a generic OSC and a generic MIDI (JACK) talkback device, each a
separate process: a tablet press engages the mixer and the cue's duration is the mixer's; a
press on the mixer itself is logged; a one-way device's cue is marked assumed."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.daemon import Daemon, OscClient, cli, free_udp_port
from peers.fake_osc_talkback import FakeOscTalkback
from peers.fake_totalmix import FakeTotalMix
from peers.jack import JackServer, MidiPeer, PeerFactory, unique_name

pytestmark = pytest.mark.slow


def cues(data_dir: Path) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    result = cli("log", "show", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    recs = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    ends = {r["amends"]: r for r in recs if r["kind"] == "talkback_end"}
    return [(r, ends.get(r["seq"])) for r in recs if r["kind"] == "talkback_start"]


def wait_ok(client: OscClient, device: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        client.send("/state")
        last = client.value(f"/device/{device}/status")[0]
        if last == "ok":
            return
        time.sleep(0.1)
    raise AssertionError(f"{device} never became ok (last {last})")


def fresh(client: OscClient) -> None:
    client.latest("/")
    client.seen.clear()


def press_and_release(tablet: OscClient, hold: float, address: str = "/talkback") -> None:
    assert tablet.command(address, 1) == ("/ok", [address])
    time.sleep(hold)
    assert tablet.command(address, 0) == ("/ok", [address])


def test_totalmix(tmp_path: Path) -> None:
    local = free_udp_port()
    with FakeTotalMix(remote_port=local, levels=20.0) as mixer:
        config = (
            '[devices.totalmix]\nkind = "totalmix"\nrole = "mixer"\nhost = "127.0.0.1"\n'
            f'port = {mixer.port}\nlocal_host = "127.0.0.1"\nlocal_port = {local}\n'
        )
        with Daemon(tmp_path, config) as daemon:
            tablet = OscClient(daemon.osc_port)
            try:
                wait_ok(tablet, "totalmix")
                assert tablet.command("/subscribe")[0] == "/ok"
                press_and_release(tablet, 0.4)
                assert mixer.talkback() == 0.0 and mixer.state()["counts"]["toggled"] == 2
                # latching from the tablet's toggle button: TotalMix stays on
                assert tablet.command("/talkback/toggle", 1.0) == ("/ok", ["/talkback/toggle"])
                assert mixer.talkback() == 1.0
                assert tablet.command("/talkback/toggle", 1.0) == ("/ok", ["/talkback/toggle"])
                assert mixer.talkback() == 0.0
                # clicked in TotalMix itself
                fresh(tablet)
                mixer.click()
                assert tablet.wait_for(lambda m: m == ("/talkback", [1]), 5.0)
                time.sleep(0.3)
                mixer.click()
                assert tablet.wait_for(lambda m: m == ("/talkback", [0]), 5.0)
                # TotalMix has one talkback: channel B is refused at once
                reply = tablet.command("/talkback/B", 1)
                assert reply[0] == "/error" and "no talk channel B (it has A)" in reply[1][1]
            finally:
                tablet.close()
    found = cues(daemon.data_dir)
    assert [s["source"] for s, _ in found] == ["osc", "osc", "console"]
    assert all(e is not None and e["data"]["confirmed"] for _, e in found)
    assert 0.35 <= found[0][1]["data"]["duration"] <= 1.5  # type: ignore[index]
    assert 0.25 <= found[2][1]["data"]["duration"] <= 1.5  # type: ignore[index]


@pytest.mark.parametrize("feedback", [True, False])
def test_generic_osc(tmp_path: Path, feedback: bool) -> None:
    channels = {"A": "/talk/a", "B": "/talk/b"}
    with FakeOscTalkback(channels, feedback=feedback) as device:
        fb = (
            'feedback = { A = "/talk/a", B = "/talk/b" }\nquery = ["/talk/a", "/talk/b"]\n'
            if feedback
            else ""
        )
        config = (
            '[devices.desk]\nkind = "talkback_osc"\nrole = "mixer"\nhost = "127.0.0.1"\n'
            f'port = {device.port}\nlocal_host = "127.0.0.1"\n'
            'address = { A = "/talk/a", B = "/talk/b" }\n' + fb
        )
        with Daemon(tmp_path, config) as daemon:
            tablet = OscClient(daemon.osc_port)
            try:
                wait_ok(tablet, "desk")
                assert tablet.command("/subscribe")[0] == "/ok"
                assert tablet.command("/talkback/B", 1) == ("/ok", ["/talkback/B"])
                deadline = time.monotonic() + 5
                while device.state()["state"]["B"] != 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert device.state()["state"]["B"] == 1
                time.sleep(0.3)
                assert tablet.command("/talkback/B", 0) == ("/ok", ["/talkback/B"])
                tablet.send("/state")
                assert tablet.value("/talkback/assumed") == [0 if feedback else 1]
                if feedback:
                    fresh(tablet)
                    device.press("A", True)
                    assert tablet.wait_for(lambda m: m == ("/talkback", [1]), 5.0)
                    device.press("A", False)
                    assert tablet.wait_for(lambda m: m == ("/talkback", [0]), 5.0)
            finally:
                tablet.close()
    found = cues(daemon.data_dir)
    expected = [("osc", "B"), ("console", "A")] if feedback else [("osc", "B")]
    assert [(s["source"], s["data"]["channel"]) for s, _ in found] == expected
    start, end = found[0]
    assert end is not None and 0.25 <= end["data"]["duration"] <= 1.5
    assert start["data"]["assumed"] is (not feedback) and start["data"]["confirmed"] is feedback


@contextlib.contextmanager
def echoing(console: MidiPeer) -> Iterator[None]:
    """The emulated console reports every talk message it gets back as its new state."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for msg in console.received(1, timeout=0.2):
                console.send([msg])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


@pytest.mark.jack
def test_generic_midi(
    tmp_path: Path,
    jack_server: JackServer,
    midi_peer: PeerFactory,
) -> None:
    client = unique_name("desk")
    console = midi_peer(client, "desk")
    config = (
        '[devices.desk]\nkind = "talkback_midi"\nrole = "mixer"\napi = "jack"\n'
        f'output = "{client}-fb:desk"\ninput = "{client}:desk"\n'
        'on = { A = "B0 50 7F" }\noff = { A = "B0 50 00" }\n'
    )
    with Daemon(tmp_path, config) as daemon:
        tablet = OscClient(daemon.osc_port)
        try:
            wait_ok(tablet, "desk")
            assert tablet.command("/subscribe")[0] == "/ok"
            with echoing(console):
                press_and_release(tablet, 0.4)
            # the talk key on the console
            fresh(tablet)
            console.send([[0xB0, 0x50, 0x7F]])
            assert tablet.wait_for(lambda m: m == ("/talkback", [1]), 5.0)
            time.sleep(0.3)
            console.send([[0xB0, 0x50, 0x00]])
            assert tablet.wait_for(lambda m: m == ("/talkback", [0]), 5.0)
            # a console that does not answer: the press fails, quickly and clearly
            reply = tablet.command("/talkback", 1)
            assert reply[0] == "/error" and "did not answer talk A" in reply[1][1]
        finally:
            tablet.close()
    found = cues(daemon.data_dir)
    assert [s["source"] for s, _ in found] == ["osc", "console"]
    assert 0.35 <= found[0][1]["data"]["duration"] <= 1.5  # type: ignore[index]
    assert found[0][1]["data"]["confirmed"] is True  # type: ignore[index]
