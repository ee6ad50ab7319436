"""The daemon with an X32 as its mixer (tests/peers/fake_x32.py, a separate process on loopback):
talkback from a tablet and from the console itself, a console killed and restarted, the
stuck-talkback release, a console that does not answer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from peers.daemon import Daemon, OscClient, cli, free_udp_port
from peers.fake_x32 import FakeX32

pytestmark = pytest.mark.slow


def room(port: int, **options: Any) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
    return (
        "[devices.x32]\n"
        'kind = "x32"\n'
        'role = "mixer"\n'
        'host = "127.0.0.1"\n'
        'local_host = "127.0.0.1"\n'
        f"port = {port}\n" + extra
    )


def records(data_dir: Path) -> list[dict[str, Any]]:
    result = cli("log", "show", "--json", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def cues(data_dir: Path) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    recs = records(data_dir)
    ends = {r["amends"]: r for r in recs if r["kind"] == "talkback_end"}
    return [(r, ends.get(r["seq"])) for r in recs if r["kind"] == "talkback_start"]


def status(client: OscClient, device: str = "x32") -> str:
    client.send("/state")
    return str(client.value(f"/device/{device}/status")[0])


def wait_status(client: OscClient, wanted: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = status(client)
        if last == wanted:
            return
        time.sleep(0.1)
    raise AssertionError(f"x32 never became {wanted} (last {last})")


def fresh(client: OscClient) -> None:
    """Forget the feedback received so far (the next wait_for sees only what comes next)."""
    client.latest("/")
    client.seen.clear()


def wait_console(console: FakeX32, address: str, value: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if console.state()["state"][address] == value:
            return
        time.sleep(0.05)
    raise AssertionError(f"console {address} never became {value}")


def test_tablet_and_console_talkback_are_cues_timed_by_the_console(tmp_path: Path) -> None:
    with FakeX32() as console, Daemon(tmp_path, room(console.port)) as daemon:
        tablet = OscClient(daemon.osc_port)
        try:
            wait_status(tablet, "ok")
            assert tablet.command("/subscribe")[0] == "/ok"
            # pressed on the tablet: the console engages, the bridge answers /ok once it reported it
            assert tablet.command("/talkback", 1) == ("/ok", ["/talkback"])
            assert console.state()["state"]["/-stat/talk/A"] == 1
            time.sleep(0.4)
            assert tablet.command("/talkback", 0) == ("/ok", ["/talkback"])
            assert console.state()["state"]["/-stat/talk/A"] == 0
            # TALK pressed on the console itself reaches the tablet and the log
            fresh(tablet)
            console.press("A", True)
            assert tablet.wait_for(lambda m: m == ("/talkback", [1]), 5.0)
            time.sleep(0.3)
            console.press("A", False)
            assert tablet.wait_for(lambda m: m == ("/talkback", [0]), 5.0)
            # channel B (the live room) from the console
            fresh(tablet)
            console.press("B", True)
            assert tablet.wait_for(lambda m: m == ("/talkback/B", [1]), 5.0)
            console.press("B", False)
            assert tablet.wait_for(lambda m: m == ("/talkback/B", [0]), 5.0)
        finally:
            tablet.close()
    found = cues(daemon.data_dir)
    assert [(s["source"], s["data"]["channel"]) for s, _ in found] == [
        ("osc", "A"),
        ("console", "A"),
        ("console", "B"),
    ]
    for start, end in found:
        assert end is not None
        assert start["data"]["mixer"] == "x32" and start["data"]["confirmed"] is True
        assert end["data"]["confirmed"] is True
    tablet_cue = found[0][1]
    assert tablet_cue is not None and 0.35 <= tablet_cue["data"]["duration"] <= 1.5
    assert tablet_cue["source"] == "osc"
    assert 0.25 <= found[1][1]["data"]["duration"] <= 1.5  # type: ignore[index]
    sheet = json.loads(cli("log", "export", "--format", "json", "--data-dir", str(daemon.data_dir)).stdout)
    assert [c["source"] for c in sheet["talkback"]] == ["osc", "console", "console"]


def test_console_killed_and_restarted_is_reconnected_and_resynced(tmp_path: Path) -> None:
    console = FakeX32().start()
    try:
        with Daemon(tmp_path, room(console.port, renew_interval=1.0, answer_timeout=0.5)) as daemon:
            tablet = OscClient(daemon.osc_port)
            try:
                wait_status(tablet, "ok")
                assert tablet.command("/subscribe")[0] == "/ok"
                assert tablet.command("/talkback", 1) == ("/ok", ["/talkback"])
                port = console.port
                console.kill()
                wait_status(tablet, "disconnected", timeout=10)
                # no console: talkback fails at once, with the reason
                started = time.monotonic()
                reply = tablet.command("/talkback", 0)
                assert reply[0] == "/error" and "mixer 'x32' is disconnected" in reply[1][1]
                assert "did not answer" in reply[1][1]
                assert time.monotonic() - started < 1.0
                # the console comes back (talk A off after its restart, B left on by an engineer)
                fresh(tablet)
                console = FakeX32(port=port).start()
                console.press("B", True)
                wait_status(tablet, "ok", timeout=15)
                # its state replayed into the bridge: A off ends the open cue, B on
                assert tablet.wait_for(lambda m: m == ("/talkback", [0]), 5.0)
                assert tablet.wait_for(lambda m: m == ("/talkback/B", [1]), 5.0)
                # subscribed again, and renewed
                clients = console.state()["clients"]
                assert len(clients) == 1
                first = console.state()["counts"]["xremote"]
                time.sleep(2.5)
                assert console.state()["counts"]["xremote"] >= first + 2
                fresh(tablet)
                console.press("B", False)
                assert tablet.wait_for(lambda m: m == ("/talkback/B", [0]), 5.0)
                assert tablet.command("/talkback", 1) == ("/ok", ["/talkback"])
                assert tablet.command("/talkback", 0) == ("/ok", ["/talkback"])
            finally:
                tablet.close()
        assert "WARNING" in daemon.log() and "x32 (x32)" in daemon.log()
    finally:
        console.stop()
    found = cues(daemon.data_dir)
    assert [(s["source"], s["data"]["channel"], e is not None) for s, e in found] == [
        ("osc", "A", True),  # ended by the console's report after the restart
        ("console", "B", True),
        ("osc", "A", True),
    ]


def test_stuck_talkback_is_released_and_logged(tmp_path: Path) -> None:
    with FakeX32() as console, Daemon(tmp_path, room(console.port, max_on=1.0)) as daemon:
        tablet = OscClient(daemon.osc_port)
        try:
            wait_status(tablet, "ok")
            assert tablet.command("/subscribe")[0] == "/ok"
            assert tablet.command("/talkback", 1) == ("/ok", ["/talkback"])
            started = time.monotonic()
            fresh(tablet)
            assert tablet.wait_for(lambda m: m == ("/talkback", [0]), 5.0)
            assert 0.9 <= time.monotonic() - started <= 3.0
            wait_console(console, "/-stat/talk/A", 0)
            daemon.wait_for_log("talkback A on x32 for more than max_on = 1 s: releasing it")
            # a press released in time is not touched
            assert tablet.command("/talkback", 1) == ("/ok", ["/talkback"])
            assert tablet.command("/talkback", 0) == ("/ok", ["/talkback"])
            time.sleep(1.3)
        finally:
            tablet.close()
    (_, first_end), (_, second_end) = cues(daemon.data_dir)
    assert first_end is not None and first_end["source"] == "auto_release"
    assert first_end["data"]["auto_released"] is True and first_end["data"]["max_on"] == 1.0
    assert "max_on" in first_end["text"]
    assert 0.9 <= first_end["data"]["duration"] <= 3.0
    assert second_end is not None and "auto_released" not in second_end["data"]
    assert second_end["source"] == "osc"


def test_a_mixer_that_does_not_answer_fails_talkback_at_once(tmp_path: Path) -> None:
    port = free_udp_port()  # nothing listens there
    with Daemon(tmp_path, room(port, connect_timeout=0.5)) as daemon:
        tablet = OscClient(daemon.osc_port)
        try:
            wait_status(tablet, "disconnected")
            started = time.monotonic()
            reply = tablet.command("/talkback", 1)
            assert time.monotonic() - started < 1.0  # at once: no wait for confirm_timeout (2 s)
            assert reply[0] == "/error"
            assert reply[1][1].startswith("mixer 'x32' is disconnected: X32 at 127.0.0.1")
            assert "did not answer /info" in reply[1][1]
        finally:
            tablet.close()
    assert cues(daemon.data_dir) == []


def test_a_console_that_goes_silent_fails_the_press_quickly(tmp_path: Path) -> None:
    with FakeX32() as console, Daemon(tmp_path, room(console.port, answer_timeout=0.3)) as daemon:
        tablet = OscClient(daemon.osc_port)
        try:
            wait_status(tablet, "ok")
            console.silent(True)
            started = time.monotonic()
            reply = tablet.command("/talkback", 1)
            took = time.monotonic() - started
            assert reply[0] == "/error" and "x32" in reply[1][1] and "did not answer" in reply[1][1]
            assert took < 1.5  # answer_timeout, not the 2 s confirm_timeout
        finally:
            tablet.close()
    assert cues(daemon.data_dir) == []


def test_shutdown_releases_what_the_bridge_engaged_and_unsubscribes(tmp_path: Path) -> None:
    with FakeX32() as console:
        daemon = Daemon(tmp_path, room(console.port)).start()
        tablet = OscClient(daemon.osc_port)
        try:
            wait_status(tablet, "ok")
            assert tablet.command("/talkback", 1) == ("/ok", ["/talkback"])
            console.press("B", True)  # the engineer's own talk B is left alone
            wait_console(console, "/-stat/talk/B", 1)
            assert daemon.stop() == 0
        finally:
            tablet.close()
            daemon.kill()
        state = console.state()
        assert state["state"]["/-stat/talk/A"] == 0 and state["state"]["/-stat/talk/B"] == 1
        assert state["clients"] == []
    assert "WARNING" not in daemon.log() and "ERROR" not in daemon.log()
