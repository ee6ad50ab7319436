"""JACK MIDI peers for tests: a private jackd (dummy driver) per test session, and emulated controllers.

Use in a test module::

    from peers.jack import jack_server, midi_peer  # noqa: F401

    @pytest.mark.jack
    async def test_x(jack_server: JackServer, midi_peer: PeerFactory) -> None:
        peer = midi_peer("nanoKONTROL2", "nanoKONTROL2 MIDI 1")   # a separate process
        link = MidiLink(unique_name("t"), "nanoKONTROL2", "nanoKONTROL2", api="jack")
        await link.open()
        await peer.asend([[0xB0, 0, 127]])

* ``jack_server`` (session scope): ``jackd -n <unique> --no-realtime -d dummy -p 256``; it sets
  ``JACK_DEFAULT_SERVER=<unique>`` and ``JACK_NO_START_SERVER=1`` in ``os.environ`` (restored
  after the session) so every rtmidi client of this process and of the peers joins it.
  Skips when jackd is missing (fails instead when ``CI`` is set).
* ``midi_peer`` (function scope): a factory starting ``tests/midi_surface_proc.py`` processes
  (each with its own rtmidi JACK clients ``<client>`` = output port ``<port>`` and
  ``<client>-fb`` = input port ``<port>``); all are stopped (by PID) at the end of the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from peers import jack_registry
from peers.procs import die_with_parent

SURFACE_PROC = Path(__file__).resolve().parent.parent / "midi_surface_proc.py"
_counter = itertools.count(1)


def unique_name(prefix: str) -> str:
    """A JACK client name no other test (or parallel run) uses."""
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"


def need_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not installed (apt-get install jackd2)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@dataclass
class JackServer:
    name: str
    pid: int
    period: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def ports(self) -> list[str]:
        out = subprocess.run(["jack_lsp"], env=self.env, capture_output=True, text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def connections(self) -> str:
        out = subprocess.run(["jack_lsp", "-c"], env=self.env, capture_output=True, text=True, timeout=10)
        return out.stdout

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_jackd(name: str, period: int, log_path: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    jackd = need_binary("jackd")
    jack_registry.reclaim()
    need_binary("jack_lsp")
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    # -S (synchronous mode): in the default asynchronous mode, without realtime scheduling, JACK
    # was seen to duplicate or swap MIDI events between clients under load
    cmd = [
        jackd,
        "-n",
        name,
        "-S",
        "--no-realtime",
        "-t",
        "5000",
        "-d",
        "dummy",
        "-r",
        "48000",
        "-p",
        str(period),
    ]
    with log_path.open("wb") as logf:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        r = subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=10)
        if r.returncode == 0:
            return proc, env
        time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError(f"jackd -n {name} did not start: {log_path.read_text(errors='replace')[-2000:]}")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JackServer]:
    name = f"sbt-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    period = 256
    log_path = tmp_path_factory.mktemp("jack") / f"jackd-{name}.log"
    proc, env = start_jackd(name, period, log_path)
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ["JACK_DEFAULT_SERVER"] = name
    os.environ["JACK_NO_START_SERVER"] = "1"
    try:
        yield JackServer(name=name, pid=proc.pid, period=period, log_path=log_path, env=env)
    finally:
        stop_process(proc)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class MidiPeer:
    """A controller emulated by a separate process (tests/midi_surface_proc.py) on JACK."""

    def __init__(self, client: str, port: str, env: dict[str, str], with_in: bool = True) -> None:
        self.client = client
        self.port = port
        args = [sys.executable, str(SURFACE_PROC), "--client", client, "--port", port]
        if not with_in:
            args.append("--no-in")
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        self._replies: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._rx: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.stderr_tail: deque[str] = deque(maxlen=50)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self._expect("ready", 30)

    @property
    def out_port(self) -> str:
        """Full JACK name of the port the controller sends on."""
        return f"{self.client}:{self.port}"

    @property
    def in_port(self) -> str:
        """Full JACK name of the port the controller receives feedback on."""
        return f"{self.client}-fb:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if "rx" in obj:
                self._rx.put(obj["rx"])
            else:
                self._replies.put(obj)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line)

    def _expect(self, key: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                err = "".join(self.stderr_tail)[-2000:]
                raise TimeoutError(f"peer {self.client}: no {key!r} reply within {timeout} s {err}")
            try:
                obj = self._replies.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if "error" in obj:
                raise RuntimeError(f"peer {self.client}: {obj['error']}")
            if key in obj or obj.get("ok") == key:
                return obj

    def _command(self, cmd: dict[str, Any], key: str, timeout: float) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            return self._expect(key, timeout)

    def send(self, msgs: list[list[int]] | list[bytes], burst: int = 0, timeout: float = 60) -> int:
        """Send each item as one JACK MIDI event (``burst`` events per ms if > 0); returns the count."""
        items = [list(m) for m in msgs]
        return int(self._command({"op": "send", "msgs": items, "burst": burst}, "send", timeout)["n"])

    async def asend(self, msgs: list[list[int]] | list[bytes], burst: int = 0, timeout: float = 60) -> int:  # noqa: ASYNC109
        return await asyncio.to_thread(self.send, msgs, burst, timeout)

    def close_ports(self, timeout: float = 20) -> None:
        """Unplug: delete the peer's JACK clients."""
        self._command({"op": "close"}, "close", timeout)

    def open_ports(self, timeout: float = 20) -> None:
        """Replug: create the peer's JACK clients again (new port ids)."""
        self._command({"op": "open"}, "open", timeout)

    async def aclose_ports(self) -> None:
        await asyncio.to_thread(self.close_ports)

    async def aopen_ports(self) -> None:
        await asyncio.to_thread(self.open_ports)

    def received(self, n: int, timeout: float = 10) -> list[list[int]]:
        """Wait until ``n`` messages arrived on the peer's input (fewer if the time runs out)."""
        got: list[list[int]] = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                got.append(self._rx.get(timeout=min(left, 0.5)))
            except queue.Empty:
                continue
        return got

    async def areceived(self, n: int, timeout: float = 10) -> list[list[int]]:  # noqa: ASYNC109
        return await asyncio.to_thread(self.received, n, timeout)

    def drain(self) -> list[list[int]]:
        """Everything received so far, without waiting."""
        got: list[list[int]] = []
        with contextlib.suppress(queue.Empty):
            while True:
                got.append(self._rx.get_nowait())
        return got

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()


PeerFactory = Callable[..., MidiPeer]


@pytest.fixture
def midi_peer(jack_server: JackServer) -> Iterator[PeerFactory]:
    peers: list[MidiPeer] = []

    def make(client: str, port: str, with_in: bool = True) -> MidiPeer:
        peer = MidiPeer(client, port, jack_server.env, with_in=with_in)
        peers.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in peers:
            peer.stop()


async def wait_for_port(
    server: JackServer,
    name: str,
    present: bool = True,
    timeout: float = 10,  # noqa: ASYNC109
) -> None:
    """Wait until a JACK port (full name) appears (or disappears)."""
    async with asyncio.timeout(timeout):
        while True:
            ports = await asyncio.to_thread(server.ports)
            if (name in ports) == present:
                return
            await asyncio.sleep(0.1)
