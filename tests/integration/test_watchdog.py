"""systemd's watchdog: the real daemon under a NOTIFY_SOCKET this test owns, with WATCHDOG_USEC.

The keep-alives come from the event loop: when the daemon is frozen (SIGSTOP) they stop, so
systemd would restart it; not asked for, none are sent."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.daemon import Daemon, OscClient

from bridge.watchdog import Watchdog, watchdog_interval

INTERVAL_USEC = 200_000  # keep-alives every 0.1 s


class NotifySocket:
    """A unix datagram socket standing in for systemd's; records what arrives, with times."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sbwd-")  # short: sun_path has 108 bytes
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.got: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.got.append((time.monotonic(), data.decode()))

    def pings(self, since: float = 0.0, until: float = float("inf")) -> int:
        with self._lock:
            return sum(1 for t, m in self.got if m == "WATCHDOG=1" and since <= t < until)

    def messages(self) -> list[str]:
        with self._lock:
            return [m for _, m in self.got]

    def wait_pings(self, count: int, since: float, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pings(since) < count:
            if time.monotonic() > deadline:
                got = self.pings(since)
                raise AssertionError(f"{got} keep-alives, wanted {count}: {self.messages()[-10:]}")
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


def test_keepalives_flow_and_stop_when_the_daemon_is_frozen(tmp_path: Path, notify: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(INTERVAL_USEC)}
    daemon = Daemon(tmp_path, env=env)
    with daemon:
        assert daemon.proc is not None
        t0 = time.monotonic()
        notify.wait_pings(5, t0)
        assert "READY=1" in notify.messages()
        # the daemon still works while pinging
        client = OscClient(daemon.osc_port)
        try:
            assert client.command("/ping") == ("/pong", [])
        finally:
            client.close()
        # frozen: no keep-alive at all for 10 intervals
        daemon.signal(signal.SIGSTOP)
        try:
            time.sleep(0.3)  # a ping already in the socket's queue may still land
            frozen = time.monotonic()
            time.sleep(1.0)
            assert notify.pings(frozen) == 0, notify.messages()[-10:]
        finally:
            daemon.signal(signal.SIGCONT)
        # thawed: the loop runs again, and so do the keep-alives
        thawed = time.monotonic()
        notify.wait_pings(3, thawed)
        assert daemon.stop() == 0
    assert "systemd watchdog: a keep-alive every 0.1 s" in daemon.log()
    assert "STOPPING=1" in notify.messages()


def test_no_keepalives_unless_asked(tmp_path: Path, notify: NotifySocket) -> None:
    # NOTIFY_SOCKET without WATCHDOG_USEC (Type=notify, no WatchdogSec=): READY only
    with Daemon(tmp_path, env={"NOTIFY_SOCKET": notify.path}) as daemon:
        deadline = time.monotonic() + 20
        while "READY=1" not in notify.messages() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        assert daemon.stop() == 0
    assert notify.pings() == 0
    assert "READY=1" in notify.messages()
    assert "watchdog" not in daemon.log()


def test_watchdog_interval_from_the_environment() -> None:
    sock = {"NOTIFY_SOCKET": "/run/systemd/notify"}
    assert watchdog_interval({**sock, "WATCHDOG_USEC": "10000000"}, pid=42) == 5.0
    assert watchdog_interval({**sock, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, pid=42) == 5.0
    # meant for another process (a parent that exec'd us without clearing it)
    assert watchdog_interval({**sock, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "7"}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}, pid=42) is None  # nowhere to send
    assert watchdog_interval({**sock, "WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_interval({**sock, "WATCHDOG_USEC": "soon"}, pid=42) is None
    assert watchdog_interval({}, pid=42) is None


def hang(seconds: float) -> None:
    """Block the calling thread (here: the event loop), as a stuck driver call would."""
    time.sleep(seconds)


async def test_a_blocked_event_loop_sends_no_keepalive(notify: NotifySocket) -> None:
    """The pings are a loop timer, not a thread: while a callback blocks the loop, none go out."""
    dog = Watchdog(0.05, notify.path)
    dog.start()
    try:
        await asyncio.sleep(0.5)
        assert notify.pings() >= 3
        blocked = time.monotonic()
        hang(1.0)
        unblocked = time.monotonic()
        await asyncio.sleep(0.1)  # the receiving thread records what was queued
        # (a ping sent just before the hang may be stamped a little after it began)
        assert notify.pings(blocked + 0.1, unblocked) == 0
        await asyncio.sleep(0.5)
        assert notify.pings(unblocked) >= 3
    finally:
        dog.stop()
    stopped = time.monotonic()
    await asyncio.sleep(0.3)
    assert notify.pings(stopped + 0.05) == 0  # stop() ends them
