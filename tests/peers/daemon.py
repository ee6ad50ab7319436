"""Run the real daemon as a subprocess and talk to it over real UDP (loopback only).

from peers.daemon import Daemon, OscClient, free_udp_port

with Daemon(tmp_path, config="...toml text...") as d:     # or config=None: built-in default
    client = OscClient(d.osc_port)
    assert client.command("/ping") == ("/pong", [])
    assert client.command("/take/mark") == ("/ok", ["/take/mark"])
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bridge.devices._osc import decode, encode
from peers.procs import die_with_parent

REPLIES = ("/ok", "/error", "/pong")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bridge ARGS`` and return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


class Daemon:
    def __init__(
        self,
        tmp: Path,
        config: str | None = None,
        *,
        osc_port: int | None = None,
        web_port: int | None = None,
        data_dir: Path | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        self.tmp = tmp
        self.osc_port = osc_port or free_udp_port()
        #: the web console's TCP port (every daemon gets its own, so parallel tests never collide)
        self.web_port = web_port or free_tcp_port()
        self.data_dir = data_dir or tmp / "data"
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = tmp / "studio.toml"
            self.config_path.write_text(config)
        self.extra_args = extra_args
        self.env = env
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def args(self) -> list[str]:
        args = [sys.executable, "-m", "bridge", "run", "--osc-port", str(self.osc_port)]
        args += ["--web-port", str(self.web_port)]
        args += ["--data-dir", str(self.data_dir)]
        if self.config_path is not None:
            args += ["-c", str(self.config_path)]
        return args + list(self.extra_args)

    def start(self) -> Daemon:
        env = dict(os.environ, **(self.env or {}))
        self._ready.clear()
        self.proc = subprocess.Popen(
            self.args,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
            preexec_fn=die_with_parent,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if not self._ready.wait(self.ready_timeout):
            self.kill()
            raise AssertionError("daemon did not become ready:\n" + self.log())
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if "bridge.app: ready in" in line:
                self._ready.set()

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.02)
        raise AssertionError(f"log line {text!r} not seen:\n{self.log()}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        if self._reader is not None:
            self._reader.join(5)
        if code < 0:  # killed by a signal (a crash): what it said last, for the failure report
            print(f"daemon ended by signal {-code}; its last output:\n" + "\n".join(self.lines[-60:]))
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        self.kill()


class OscClient:
    """A tablet stand-in: one UDP socket on loopback, talking OSC to the daemon."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.target = (host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, 0))
        self.sock.settimeout(timeout)
        self.seen: list[tuple[str, list[Any]]] = []  # everything received that was not awaited

    def close(self) -> None:
        self.sock.close()

    def send(self, address: str, *args: Any) -> None:
        self.sock.sendto(encode(address, *args), self.target)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    def recv(self) -> tuple[str, list[Any]]:
        data = self.sock.recv(65536)
        return decode(data)[0]

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> tuple[str, list[Any]]:
        deadline = time.monotonic() + timeout
        for msg in self.seen:
            if predicate(msg):
                self.seen.remove(msg)
                return msg
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching OSC message; seen {self.seen[-20:]}")
            self.sock.settimeout(remaining)
            try:
                msg = self.recv()
            except TimeoutError:
                continue
            if predicate(msg):
                return msg
            self.seen.append(msg)

    def command(self, address: str, *args: Any, timeout: float = 5.0) -> tuple[str, list[Any]]:
        """Send a command and return its reply (/ok, /error or /pong) for that address."""
        self.send(address, *args)

        def is_reply(msg: tuple[str, list[Any]]) -> bool:
            if msg[0] == "/pong":
                return address == "/ping"
            return msg[0] in ("/ok", "/error") and bool(msg[1]) and msg[1][0] == address

        return self.wait_for(is_reply, timeout)

    def value(self, address: str, timeout: float = 5.0) -> list[Any]:
        """Wait for the next feedback message on ``address`` and return its arguments."""
        return self.wait_for(lambda m: m[0] == address, timeout)[1]

    def latest(self, address: str) -> list[Any] | None:
        """Drain what arrived so far and return the latest args seen for ``address``."""
        self.sock.settimeout(0.05)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            while True:
                self.seen.append(self.recv())
        found = [m for m in self.seen if m[0] == address]
        return found[-1][1] if found else None
