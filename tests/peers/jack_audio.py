"""JACK audio peers for tests: a private jackd (dummy driver) and a tone player process.

    from peers.jack_audio import JackAudio, audio_env, jack_audio  # noqa: F401

* ``jack_audio`` (function scope): ``jackd -n <unique> --no-realtime -d dummy -r 48000 -p 256``
  (dummy capture = silence), stopped with SIGTERM after the test. Per test, not per session, because
  JACK allows only 8 servers per machine, shared by every parallel test run: this holds one slot at a
  time, and a test may stop it. It does not touch ``os.environ``; ``audio_env`` sets
  ``JACK_DEFAULT_SERVER``/``JACK_NO_START_SERVER`` for the test, so processes started then
  (PortAudio scans host APIs once, at ``import sounddevice``) join that server.
* ``ToneProcess``: ``python tests/peers/jack_audio.py --tone HZ`` plays a sine through PortAudio on
  the server; ``connect_to()`` wires its output to an input port with ``jack_connect``.

Skips when jackd or libportaudio/sounddevice is missing (fails instead when ``CI`` is set).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    from peers import jack_registry
    from peers.procs import die_with_parent
except ImportError:  # run as a script (the tone player process): tests/peers is on sys.path
    import jack_registry  # type: ignore[no-redef]
    from procs import die_with_parent  # type: ignore[no-redef]

HERE = Path(__file__).resolve()


def _missing(msg: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def need_audio() -> None:
    import shutil

    for binary in ("jackd", "jack_lsp", "jack_connect"):
        if shutil.which(binary) is None:
            _missing(f"{binary} not installed (apt-get install jackd2)")
    if importlib.util.find_spec("sounddevice") is None:
        _missing("sounddevice not installed (pip install 'studio-bridge[audio]')")


@dataclass
class JackAudio:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_START_SERVER="1")

    def ports(self) -> list[str]:
        out = subprocess.run(["jack_lsp"], env=self.env, capture_output=True, text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def connect(self, src: str, dst: str) -> None:
        subprocess.run(["jack_connect", src, dst], env=self.env, check=True, timeout=10, capture_output=True)

    def stop(self) -> None:
        """SIGTERM; jackd may wait its client timeout (5 s) per stuck client before it exits."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: last resort only (a killed jackd leaves its slot in JACK's 8-server registry)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def start_private_jackd(log_dir: Path) -> JackAudio:
    jack_registry.reclaim()
    need_audio()
    name = f"sbtalk-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    log_path = log_dir / f"jackd-{name}.log"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    cmd = ["jackd", "-n", name, "--no-realtime", "-t", "5000", "-d", "dummy", "-r", "48000", "-p", "256"]
    with log_path.open("wb") as logf:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    server = JackAudio(name, proc, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        if subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=10).returncode == 0:
            return server
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"jackd -n {name} did not start: {log_path.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def jack_audio(tmp_path: Path) -> Iterator[JackAudio]:
    server = start_private_jackd(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def audio_env(jack_audio: JackAudio, monkeypatch: pytest.MonkeyPatch) -> JackAudio:
    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_audio.name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    return jack_audio


class ToneProcess:
    """A separate process playing a sine wave into JACK through PortAudio (its own client)."""

    def __init__(self, server: JackAudio, hz: float) -> None:
        self.server = server
        before = set(server.ports())
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "--tone", str(hz)],
            env=server.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=die_with_parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "playing" once the stream runs
        if "playing" not in line:
            self.stop()
            raise RuntimeError(f"tone process failed to start: {line!r}")
        self.out_ports = sorted(p for p in set(server.ports()) - before if ":out" in p)
        if not self.out_ports:
            self.stop()
            raise RuntimeError("tone process has no JACK output port")

    def connect_to(self, port: str) -> None:
        self.server.connect(self.out_ports[0], port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is None
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _play_tone(hz: float) -> None:
    import array
    import math
    import signal

    import sounddevice as sd

    rate = int(sd.query_devices(kind="output")["default_samplerate"])
    period = rate / hz
    n = round(period * 200)  # a whole number of periods (exact for 1000 Hz at 48 kHz)
    table = array.array("h", (round(16384 * math.sin(2 * math.pi * i / period)) for i in range(n))).tobytes()
    table2 = table * 2
    pos = [0]

    def callback(outdata: memoryview, frames: int, time_info: object, status: object) -> None:
        nbytes = frames * 2
        start = pos[0]
        outdata[:] = table2[start : start + nbytes]
        pos[0] = (start + nbytes) % len(table)

    stream = sd.RawOutputStream(samplerate=rate, channels=1, dtype="int16", callback=callback)
    stream.start()
    print("playing", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT}) if hasattr(signal, "sigwait") else time.sleep(3600)
    stream.stop()
    stream.close()
    sd._terminate()
    os._exit(0)


if __name__ == "__main__":
    import signal as _signal

    _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGTERM, _signal.SIGINT})
    _play_tone(float(sys.argv[sys.argv.index("--tone") + 1]))
