"""The real daemon as a subprocess, driven over real UDP, its log read back with the CLI."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from peers.daemon import Daemon, OscClient, cli, free_udp_port
from peers.fake_device import daemon_env

from bridge.devices._osc import encode


def export_json(data_dir: Path, session: str | None = None) -> dict:
    args = ["log", "export", "--format", "json", "--data-dir", str(data_dir)]
    if session:
        args.insert(2, session)
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_default_config_session_end_to_end(tmp_path: Path) -> None:
    """No config: song, record, three takes, a talkback cue, stop, SIGTERM, export."""
    daemon = Daemon(tmp_path).start()
    client = OscClient(daemon.osc_port)
    try:
        assert client.command("/ping") == ("/pong", [])
        assert client.command("/song", "Blue Monday") == ("/ok", ["/song"])
        assert client.command("/transport/record", 1) == ("/ok", ["/transport/record"])
        for label in ("", "tight", "best"):
            assert client.command("/take/mark", label) == ("/ok", ["/take/mark"])
        assert client.command("/talkback", 1) == ("/ok", ["/talkback"])
        time.sleep(0.3)
        assert client.command("/talkback", 0) == ("/ok", ["/talkback"])
        assert client.command("/transport/stop") == ("/ok", ["/transport/stop"])
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 2.5, "graceful stop must take under 2 s"
    finally:
        client.close()
        daemon.kill()

    sheet = export_json(daemon.data_dir)
    takes = sheet["takes"]
    assert [(t["song"], t["take"]) for t in takes] == [
        ("Blue Monday", 1),
        ("Blue Monday", 2),
        ("Blue Monday", 3),
    ]
    assert [t["label"] for t in takes] == ["", "tight", "best"]
    assert all(t["daw_seconds"] is not None for t in takes)
    cues = sheet["talkback"]
    assert len(cues) == 1
    assert 0.25 <= cues[0]["duration"] <= 2.0

    # the CSV take sheet has the same takes
    result = cli("log", "export", "--format", "csv", "--data-dir", str(daemon.data_dir))
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert any("Blue Monday" in row and "3" in row for row in rows)

    # the session was ended cleanly: the next start is a new session
    listing = cli("log", "list", "--data-dir", str(daemon.data_dir))
    assert listing.returncode == 0 and "not ended" not in listing.stdout


def test_feedback_reaches_clients(tmp_path: Path) -> None:
    with Daemon(tmp_path, config='[bridge]\nauto_take = "off"\n') as daemon:
        tablet = OscClient(daemon.osc_port)
        other = OscClient(daemon.osc_port)
        try:
            assert other.command("/subscribe")[0] == "/ok"
            assert tablet.command("/song", "Intro") == ("/ok", ["/song"])
            assert other.wait_for(lambda m: m == ("/song", ["Intro"]))
            assert tablet.command("/track/2/arm", 1) == ("/ok", ["/track/2/arm"])
            assert other.wait_for(lambda m: m == ("/track/2/arm", [1]))
            assert tablet.command("/transport/record") == ("/ok", ["/transport/record"])
            assert other.wait_for(lambda m: m == ("/transport/record", [1]))
            # position feedback while rolling, at most ~10 per second
            other.latest("/transport/position")
            other.seen.clear()
            time.sleep(1.0)
            positions = [m for m in other.seen if m[0] == "/transport/position"]
            other.latest("/transport/position")
            positions = [m for m in other.seen if m[0] == "/transport/position"]
            assert 3 <= len(positions) <= 13
            assert client_state_has(tablet, ("/take/next", [1]))
        finally:
            tablet.close()
            other.close()


def client_state_has(client: OscClient, message: tuple[str, list]) -> bool:
    client.send("/state")
    client.wait_for(lambda m: m == message)
    return True


def test_kill9_during_burst_keeps_every_acknowledged_mark(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    client = OscClient(daemon.osc_port, timeout=2.0)
    acked = 0
    stop = threading.Event()

    def killer() -> None:
        # let a good part of the burst through, then pull the plug
        while acked < 150 and not stop.is_set():
            time.sleep(0.001)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)

    try:
        assert client.command("/song", "Crash") == ("/ok", ["/song"])
        thread = threading.Thread(target=killer)
        thread.start()
        # keep up to 16 marks in flight, like a fast tablet would
        sent = 0
        in_flight = 0
        while sent < 500:
            while in_flight < 16 and sent < 500:
                client.send("/take/mark", f"m{sent}")
                sent += 1
                in_flight += 1
            try:
                msg = client.recv()
            except (TimeoutError, ConnectionRefusedError):
                break
            if msg == ("/ok", ["/take/mark"]):
                acked += 1
                in_flight -= 1
        stop.set()
        thread.join(5)
        assert daemon.proc is not None
        daemon.proc.wait(5)
    finally:
        client.close()
        daemon.kill()
    assert 0 < acked < 500, f"the kill should land mid-burst (acked {acked})"

    # the file opens cleanly and holds every acknowledged mark, numbered 1..n without gaps
    db = sqlite3.connect(daemon.data_dir / "session-log.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    takes = [r[0] for r in db.execute("SELECT take FROM records WHERE kind='take_marker' ORDER BY seq")]
    db.close()
    assert len(takes) >= acked
    assert takes == list(range(1, len(takes) + 1))

    # restart: the same session is reopened and the numbering continues
    daemon2 = Daemon(tmp_path, osc_port=free_udp_port(), data_dir=daemon.data_dir).start()
    client = OscClient(daemon2.osc_port)
    try:
        assert "resumed" in daemon2.wait_for_log("ready in")
        assert client.command("/take/mark", "after") == ("/ok", ["/take/mark"])
        assert daemon2.stop() == 0
    finally:
        client.close()
        daemon2.kill()
    sheet = export_json(daemon.data_dir)
    numbers = [t["take"] for t in sheet["takes"] if t["song"] == "Crash"]
    assert numbers == list(range(1, len(takes) + 2))
    assert sheet["takes"][-1]["label"] == "after"


def test_kill9_while_talkback_is_held_closes_the_cue_at_restart(tmp_path: Path) -> None:
    """QA: ``kill -9`` with talkback held left a talkback_start with no end (a cue with an empty
    end in the export). The restarted daemon ends it as of the last record before the kill."""
    daemon = Daemon(tmp_path).start()
    client = OscClient(daemon.osc_port)
    try:
        assert client.command("/song", "Blue") == ("/ok", ["/song"])
        assert client.command("/talkback", 1) == ("/ok", ["/talkback"])
        time.sleep(0.3)
        assert client.command("/note", "still talking") == ("/ok", ["/note"])  # the last record
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)  # mid-press
        daemon.proc.wait(10)
    finally:
        client.close()
        daemon.kill()

    daemon2 = Daemon(tmp_path, osc_port=free_udp_port(), data_dir=daemon.data_dir).start()
    client = OscClient(daemon2.osc_port)
    try:
        assert "resumed" in daemon2.wait_for_log("ready in")
        client.send("/state")
        assert client.wait_for(lambda m: m[0] == "/talkback")[1] == [0]
        assert daemon2.stop() == 0
    finally:
        client.close()
        daemon2.kill()
    sheet = export_json(daemon.data_dir, "1")
    [cue] = sheet["talkback"]
    assert cue["end"] is not None and cue["end"] > cue["start"]
    assert 0.25 <= cue["duration"] < 30
    shown = cli("log", "show", "1", "--json", "--data-dir", str(daemon.data_dir))
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    note = next(r for r in records if r["kind"] == "note")
    [end] = [r for r in records if r["kind"] == "talkback_end"]
    assert end["ts"] == note["ts"] and end["data"]["closed_at_restart"] is True
    assert end["source"] == "restart" and end["amends"] == cue["seq"]
    assert "was closed (as of" in daemon2.log()


def test_bad_input_is_counted_and_never_crashes(tmp_path: Path) -> None:
    config = """
[osc]
bind = "127.0.0.1"
allow = ["127.0.0.1/32"]
"""
    with Daemon(tmp_path, config) as daemon:
        client = OscClient(daemon.osc_port)
        outsider = OscClient(daemon.osc_port)
        outsider.sock.close()
        import socket

        outsider.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        outsider.sock.bind(("127.0.0.2", 0))
        outsider.sock.settimeout(0.5)
        try:
            # malformed packets
            for junk in (
                b"",
                b"\x00\x01\x02",
                b"/no/typetag\0",
                b"/bad\0\0\0\0,i\0\0\x01",
                b"#bundle\0garbage",
                b"\xff" * 100,
            ):
                client.send_raw(junk)
            # wrong argument types
            assert client.command("/track/2/arm", "banana")[0] == "/error"
            assert client.command("/transport/locate", "soon")[0] == "/error"
            assert client.command("/take/circle", -3)[0] == "/error"
            assert client.command("/track/0/arm", 1)[0] == "/error"
            # unknown addresses
            assert client.command("/launch/missiles", 1) == (
                "/error",
                ["/launch/missiles", "unknown address"],
            )
            # a 64 KiB datagram (as large as UDP allows)
            client.send_raw(encode("/note", "x" * 65000))
            client.send_raw(b"/" + b"a" * 65000)
            # a client outside the allowlist is ignored: no reply at all
            outsider.send("/ping")
            with pytest.raises(TimeoutError):
                outsider.recv()
            # a flood of 10,000 packets (mixed garbage and unknown addresses)
            for i in range(10_000):
                client.send_raw(b"\x00garbage" if i % 2 else encode("/flood", i))
                if i % 100 == 99:
                    time.sleep(0.002)  # bursts of 100, as a misbehaving app on a LAN would send
            time.sleep(0.5)
            client.latest("/error")  # read the flood's /error replies so our buffer has room
            client.seen.clear()
            assert client.command("/ping", timeout=10) == ("/pong", [])
            client.seen.clear()
            client.send("/stats")
            stats_args = client.value("/stats")
            stats = dict(zip(stats_args[::2], stats_args[1::2], strict=True))
            # the kernel may drop some datagrams of a flood; what arrives is all counted
            assert stats["malformed"] >= 5_000 * 0.8
            assert stats["unknown_address"] >= 5_000 * 0.8
            assert stats["bad_args"] >= 4
            assert stats["oversized"] == 2  # the 64 KiB datagrams
            assert stats["denied"] == 1
            # still fully working
            assert client.command("/take/mark") == ("/ok", ["/take/mark"])
        finally:
            client.close()
            outsider.close()
        assert daemon.stop() == 0
    text = daemon.log()
    assert "malformed packet" in text
    assert "not in the allowlist" in text
    assert "more like this" in text  # the flood is summarised, not logged line by line
    assert "dropped input so far: malformed" in text
    assert text.count("malformed packet") <= 10
    assert "Traceback" not in text


BROKEN_CONFIGS = [
    ('[osc]\nport = "abc"\n', 'osc.port: expected an integer 1-65535, got "abc"'),
    ("[osc]\nport = 70000\n", "osc.port: expected an integer 1-65535, got 70000"),
    ('[devices.desk]\nkind = "teleporter"\n', "devices.desk.kind: unknown device kind 'teleporter'"),
    ("[devices.desk]\nport = 1\n", "devices.desk.kind: required"),
    (
        '[devices.x]\nkind = "internal"\nrole = "boss"\n',
        "devices.x.role: expected one of daw, mixer, talkback",
    ),
    (
        '[bridge]\nlog_level = "loud"\n',
        'bridge.log_level: expected one of "debug", "info", "warning", "error"',
    ),
    ("[bridge\nroom = 1\n", "not valid TOML"),
    ('[osc]\nallow = ["not-a-net"]\n', "osc.allow: expected IP networks"),
    ("[osc]\nprot = 9000\n", "osc.prot: unknown key"),
    ('[roles]\ndaw = "nothing"\n', 'roles.daw: expected the name of a configured device, got "nothing"'),
    ("[internal]\ntracks = 0\n", "internal.tracks: expected a number 1-512, got 0"),
    ("[wat]\nx = 1\n", "wat: unknown section"),
    ('[bridge]\nauto_take = "always"\n', 'bridge.auto_take: expected one of "record", "off", got "always"'),
    (
        '[bridge]\nsongs = ["Blue", "Blue"]\n',
        'bridge.songs: expected an array of different song names ("Blue" is there twice), got an array',
    ),
    ('[bridge]\nsongs = ["Blue", " "]\n', 'bridge.songs: expected an array of song names ("" is not one)'),
    ('[bridge]\nsongs = "Blue"\n', 'bridge.songs: expected an array of strings, got "Blue"'),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN_CONFIGS)
def test_broken_config_one_line_error_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "studio.toml"
    path.write_text(text)
    for command in (["check", "-c", str(path)], ["run", "-c", str(path), "--data-dir", str(tmp_path / "d")]):
        result = cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert expected in lines[0], lines[0]
        assert "studio.toml" in lines[0]


def test_check_accepts_the_example_configs() -> None:
    configs = sorted(Path(__file__).parents[2].joinpath("configs").glob("*.toml"))
    assert configs, "configs/ has example configs"
    for path in configs:
        result = cli("check", "-c", str(path))
        assert result.returncode == 0, (path, result.stderr)


def test_sighup_reload_adds_and_removes_devices(tmp_path: Path) -> None:
    config = "[bridge]\nroom = 'a'\n"
    with Daemon(tmp_path, config, env=daemon_env()) as daemon:
        client = OscClient(daemon.osc_port)
        try:
            assert client.command("/song", "Keep") == ("/ok", ["/song"])
            assert client.command("/take/mark") == ("/ok", ["/take/mark"])
            assert daemon.config_path is not None
            # add a fake surface device and reload
            daemon.config_path.write_text(config + "[devices.spare]\nkind = 'fake'\n")
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log("config reloaded: 1 added")
            # a broken config is refused and the running one kept
            daemon.config_path.write_text("[osc]\nport = 'x'\n")
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log("config not reloaded")
            daemon.config_path.write_text(config)
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log("1 removed")
            # the session went on: numbering continues
            assert client.command("/take/mark") == ("/ok", ["/take/mark"])
            client.send("/state")
            assert client.wait_for(lambda m: m == ("/take", [2]))
        finally:
            client.close()
        assert daemon.stop() == 0


def test_osc_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("0.0.0.0", 0))
        port = blocker.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "bridge", "run", "--osc-port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    assert result.returncode == 1
    assert "OSC API could not start" in result.stderr
    assert "in use" in result.stderr


def test_damaged_log_gives_clear_error_and_way_out(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "session-log.sqlite3").write_bytes(b"this is not a database" * 100)
    result = cli("run", "--osc-port", str(free_udp_port()), "--data-dir", str(data), "--exit-when-ready")
    assert result.returncode == 2
    assert "session-log.sqlite3" in result.stderr and "log recover" in result.stderr
    fixed = cli("log", "recover", "--data-dir", str(data))
    assert fixed.returncode == 0, fixed.stderr
    assert list(data.glob("session-log.sqlite3.damaged-*"))
    again = cli("run", "--osc-port", str(free_udp_port()), "--data-dir", str(data), "--exit-when-ready")
    assert again.returncode == 0, again.stderr


def test_check_finds_a_missing_controller_profile(tmp_path: Path) -> None:
    (tmp_path / "map.toml").write_text('[[binding]]\ncontrol = "play"\ncommand = "transport.play"\n')
    path = tmp_path / "studio.toml"
    path.write_text('[devices.nano]\nkind = "generic_midi"\nprofile = "nope.toml"\nmapping = "map.toml"\n')
    result = cli("check", "-c", str(path))
    assert result.returncode == 2
    assert "nope.toml" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_touchosc_style_buttons_press_and_release(tmp_path: Path) -> None:
    """Tablet buttons send 1.0 on press and 0.0 on release: one tap is one action."""
    with Daemon(tmp_path) as daemon:
        tablet = OscClient(daemon.osc_port)
        try:
            assert tablet.command("/song", "Tap") == ("/ok", ["/song"])
            for _ in range(2):  # two taps of a momentary "mark" button
                assert tablet.command("/take/mark", 1.0) == ("/ok", ["/take/mark"])
                assert tablet.command("/take/mark", 0.0) == ("/ok", ["/take/mark"])
            tablet.send("/state")
            assert tablet.wait_for(lambda m: m == ("/take", [2]))
            # a float is a button value, an int a take number
            assert tablet.command("/take/circle", 1.0) == ("/ok", ["/take/circle"])
            assert tablet.command("/take/circle", 0.0) == ("/ok", ["/take/circle"])
            assert tablet.command("/take/circle", 1) == ("/ok", ["/take/circle"])
            assert tablet.command("/take/circle", 9)[0] == "/error"
            # momentary buttons on toggles
            assert tablet.command("/transport/record/toggle", 1.0) == ("/ok", ["/transport/record/toggle"])
            assert tablet.command("/transport/record/toggle", 0.0) == ("/ok", ["/transport/record/toggle"])
            tablet.send("/state")
            assert tablet.wait_for(lambda m: m == ("/transport/record", [1]))
            assert tablet.command("/track/2/arm/toggle", 1.0) == ("/ok", ["/track/2/arm/toggle"])
            assert tablet.command("/track/name/arm/toggle", "Track 3", 1.0)[0] == "/ok"
            assert tablet.command("/track/name/arm/toggle", "Nobody", 1.0)[0] == "/error"
            tablet.send("/state")
            assert tablet.wait_for(lambda m: m == ("/track/2/arm", [1]))
            assert tablet.wait_for(lambda m: m == ("/track/3/arm", [1]))
            assert tablet.command("/transport/record/toggle", 1.0) == ("/ok", ["/transport/record/toggle"])
            tablet.send("/state")
            assert tablet.wait_for(lambda m: m == ("/transport/record", [0]))
            assert tablet.command("/transport/stop", 1.0) == ("/ok", ["/transport/stop"])
        finally:
            tablet.close()
        assert daemon.stop() == 0
    sheet = export_json(daemon.data_dir)
    takes = sheet["takes"]
    assert [t["take"] for t in takes] == [1, 2]
    assert [t["label"] for t in takes] == ["", ""]
    assert [t["circled"] for t in takes] == [True, True]


def test_take_buttons_light_and_every_take_verb_over_osc(tmp_path: Path) -> None:
    """Issue 11: circle / false-start buttons light from the selected take, one-argument toggle
    buttons flip them, a false start can be undone, takes can be selected, renamed and noted by
    number, a button value is never a note, and the song list drives /song."""
    config = '[bridge]\nauto_take = "off"\nsongs = ["Blue", "Gold"]\n'
    with Daemon(tmp_path, config=config) as daemon:
        tablet = OscClient(daemon.osc_port)
        try:
            ok = lambda address, *args: tablet.command(address, *args) == ("/ok", [address])  # noqa: E731
            lit = lambda address, value: tablet.wait_for(lambda m: m == (address, [value]))  # noqa: E731
            assert ok("/subscribe")
            assert lit("/songs", '["Blue", "Gold"]')
            assert ok("/song/next", 1.0) and ok("/song/next", 0.0)
            assert lit("/song", "Blue")
            for _ in range(3):
                assert ok("/take/mark", 1.0)
            assert lit("/take/selected", 3)
            reply = tablet.command("/note", 1.0)
            assert reply[0] == "/error" and "button value" in reply[1][1]
            assert ok("/take/select", 2) and lit("/take/selected", 2)
            assert ok("/take/circle/toggle", 1.0) and lit("/take/selected/circled", 1)
            assert ok("/take/circle/toggle", 0.0)  # the release does nothing
            assert ok("/take/circle/toggle", 1.0) and lit("/take/selected/circled", 0)
            assert ok("/take/falsestart", 2) and lit("/take/selected/false_start", 1)
            assert ok("/take/falsestart", 2, 0) and lit("/take/selected/false_start", 0)
            assert ok("/take/falsestart/toggle", 1.0) and lit("/take/selected/false_start", 1)
            assert ok("/take/falsestart/toggle", 1.0) and lit("/take/selected/false_start", 0)
            assert ok("/take/rename", "keeper") and lit("/take/selected/label", "keeper")
            assert ok("/note", 3, "great ending")
            assert ok("/note", "on the selected take")
            assert ok("/take/select/previous", 1.0) and lit("/take/selected", 1)
            assert ok("/song/add", "Red") and lit("/songs", '["Blue", "Gold", "Red"]')
            assert ok("/song/previous", 1.0) is False  # Blue is the first song
            assert ok("/song/pick", "Gold") and lit("/song", "Gold")
            assert tablet.command("/take/select", 1)[0] == "/error"  # Gold has no take yet
        finally:
            tablet.close()
        assert daemon.stop() == 0
    sheet = export_json(daemon.data_dir)
    takes = sheet["takes"]
    assert [(t["take"], t["label"], t["circled"], t["false_start"]) for t in takes] == [
        (1, "", False, False),
        (2, "keeper", False, False),
        (3, "", False, False),
    ]
    assert [t["notes"] for t in takes] == [[], ["on the selected take"], ["great ending"]]
