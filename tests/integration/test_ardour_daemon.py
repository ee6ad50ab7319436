"""The whole bridge daemon (``python -m bridge run``) driving a real headless Ardour 7,
commanded over the bridge's OSC API from a plain UDP socket."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.ardour import ArdourPeer, free_udp_port

from bridge.devices._osc import decode, encode

pytestmark = [pytest.mark.ardour, pytest.mark.slow]


class ApiClient:
    """A tablet stand-in: one UDP socket talking to the bridge's OSC API."""

    def __init__(self, port: int) -> None:
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.seen: list[tuple[str, list[Any]]] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, address: str, *args: Any) -> None:
        self.sock.sendto(encode(address, *args), self.addr)

    def wait(self, pred: Any, timeout: float) -> tuple[str, list[Any]] | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
            except OSError:
                return None
            for msg in decode(data):
                self.seen.append(msg)
                if pred(*msg):
                    return msg

    def command(self, address: str, *args: Any, timeout: float = 10.0) -> tuple[str, list[Any]]:
        """Send one command and return its answer (``/ok`` or ``/error`` for this address)."""
        self.send(address, *args)
        reply = self.wait(lambda a, v: a in ("/ok", "/error") and v and v[0] == address, timeout)
        assert reply is not None, f"no answer to {address}"
        return reply

    def ok(self, address: str, *args: Any, timeout: float = 10.0) -> None:
        reply = self.command(address, *args, timeout=timeout)
        assert reply[0] == "/ok", f"{address}: {reply}"

    def status(self, device: str, timeout: float = 3.0) -> str | None:
        self.send("/state")
        key = f"/device/{device}/status"
        reply = self.wait(lambda a, v: a == key, timeout)
        return None if reply is None else str(reply[1][0])

    def wait_status(self, device: str, wanted: str, timeout: float) -> float:
        """Poll the bridge's state until the device has status ``wanted``; return the time taken."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.status(device) == wanted:
                return time.monotonic() - t0
            time.sleep(0.1)
        raise AssertionError(f"{device} never became {wanted} (last: {self.status(device)})")


@pytest.fixture
def bridge(ardour: ArdourPeer, tmp_path: Path) -> Iterator[tuple[ApiClient, Path, subprocess.Popen[bytes]]]:
    cfg = tmp_path / "studio.toml"
    cfg.write_text(
        f'[bridge]\nroom = "test"\n\n[devices.ardour]\nkind = "ardour"\nrole = "daw"\nport = {ardour.port}\n'
    )
    data = tmp_path / "data"
    api_port = free_udp_port()
    log = open(tmp_path / "bridge.log", "wb")  # noqa: SIM115 - handed to the child
    cmd = [sys.executable, "-m", "bridge", "run", "-c", str(cfg), "--osc-port", str(api_port)]
    cmd += ["--data-dir", str(data), "--log-level", "info"]
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()
    client = ApiClient(api_port)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "bridge.log").read_text()
            client.send("/ping")
            if client.wait(lambda a, v: a == "/pong", 0.5):
                break
        else:
            raise AssertionError("bridge did not answer /ping")
        client.wait_status("ardour", "ok", 20)
        yield client, data, proc
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        print((tmp_path / "bridge.log").read_text()[-4000:])


def export(data: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "log", "export", "--format", "json", "--data-dir", str(data)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_daemon_records_marks_and_survives_an_ardour_crash(
    ardour: ArdourPeer,
    bridge: tuple[ApiClient, Path, subprocess.Popen[bytes]],
) -> None:
    client, data, proc = bridge
    client.ok("/track/2/arm", 1)
    client.ok("/transport/record", 1)
    client.ok("/transport/play")
    time.sleep(1.0)
    client.ok("/take/mark")
    time.sleep(0.7)
    client.ok("/take/mark")
    time.sleep(0.5)
    client.ok("/transport/stop")

    # Ardour's own record of what happened.
    ardour.save()
    assert ardour.armed_tracks() == ["Audio 2"]
    assert [p.name for p in ardour.take_files()] == ["Take1_Audio 2-1.wav"]
    marks = sorted(s for _, s in ardour.markers())
    assert len(marks) == 2, ardour.markers()

    # The session log holds both takes with Ardour's positions for them.
    deadline = time.monotonic() + 10
    while True:
        takes = export(data)["takes"]
        if (len(takes) == 2 and all(t["daw_source"] == "daw" for t in takes)) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert [t["take"] for t in takes] == [1, 2]
    assert [t["daw_source"] for t in takes] == ["daw", "daw"], takes
    for take, mark in zip(takes, marks, strict=True):
        assert abs(take["daw_seconds"] - mark) < 2e-3, (takes, marks)
        assert take["marker_id"] is not None

    # Ardour crashes and comes back: the bridge notices and reconnects by itself.
    ardour.kill()
    client.wait_status("ardour", "disconnected", 15)
    ardour.restart()
    t_back = time.monotonic()
    client.wait_status("ardour", "ok", 15)
    resync = time.monotonic() - t_back
    assert proc.poll() is None
    client.ok("/transport/play")
    time.sleep(0.5)
    client.ok("/take/mark")
    client.ok("/transport/stop")
    deadline = time.monotonic() + 10
    while True:
        takes = export(data)["takes"]
        if (len(takes) == 3 and takes[2]["daw_source"] == "daw") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(takes) == 3 and takes[2]["daw_source"] == "daw", takes
    assert takes[2]["daw_seconds"] > 0.2
    print(f"bridge resynced {resync:.2f} s after Ardour answered again")
    assert resync < 5.0  # target 2 s; generous on shared CI cores
