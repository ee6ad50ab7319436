"""A real mosquitto broker on a free 127.0.0.1 port, plus a small aiomqtt subscriber helper.

    from peers.mosquitto import mosquitto  # noqa: F401

    async def test_x(mosquitto: Broker) -> None:
        ...
        await asyncio.to_thread(mosquitto.restart)   # same port, fresh (no persistence)

The broker runs with a generated config (``listener <port> 127.0.0.1``, ``allow_anonymous
true``, ``persistence false``, ``log_dest stderr``; as root it drops privileges, so it logs to
stderr, captured in ``<tmp>/mosquitto.log``). The fixture finalizer kills it by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from peers.procs import die_with_parent

HOST = "127.0.0.1"


def mosquitto_binary() -> str:
    """Path of the mosquitto binary; skip (or fail under CI) when it is missing."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "mosquitto is not installed (apt-get install mosquitto)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """One mosquitto process; ``stop``/``start``/``restart`` keep the port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = HOST
    binary: str = field(default_factory=mosquitto_binary)
    proc: subprocess.Popen[bytes] | None = None
    #: (ca, cert, key) PEM files: the listener speaks TLS only
    tls: tuple[Path, Path, Path] | None = None

    @property
    def ca_file(self) -> Path | None:
        return self.tls[0] if self.tls else None

    @property
    def conf(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log(self) -> Path:
        return self.workdir / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls = ""
        if self.tls:
            ca, cert, key = self.tls
            tls = f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        self.conf.write_text(
            f"listener {self.port} {self.host}\n{tls}"
            "allow_anonymous true\npersistence false\nlog_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nconnection_messages true\n"
        )
        os.chmod(self.conf, 0o644)
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _accepting(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:  # port still held (TIME_WAIT without SO_REUSEADDR)
                    raise
                time.sleep(0.2)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(signal.SIGKILL)


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is not installed")
        pytest.skip("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)  # mosquitto may read them after dropping root privileges
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=30)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    for name in ("ca.crt", "server.crt", "server.key"):
        os.chmod(directory / name, 0o644)
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@pytest.fixture
def mosquitto_tls() -> Iterator[Broker]:
    """A TLS-only broker; its CA certificate is ``broker.ca_file``."""
    directory = Path(tempfile.mkdtemp(prefix="sb-mqtt-tls-"))
    os.chmod(directory, 0o755)  # traversable for the unprivileged mosquitto user
    try:
        broker = Broker(directory / "broker", tls=make_tls_files(directory / "pki"))
        broker.start()
        try:
            yield broker
        finally:
            broker.stop(signal.SIGKILL)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- subscriber helper


@dataclass
class Seen:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float  # time.perf_counter() on arrival


class Subscriber:
    """Collects every message on ``topics`` (in arrival order) in a background task.

    async with Subscriber(broker, "studio-bridge/#") as sub:
        await sub.wait_for(lambda m: m.topic.endswith("/status"))
    """

    def __init__(self, broker: Broker, *topics: str, client_id: str | None = None) -> None:
        self.broker = broker
        self.topics = topics or ("#",)
        self.client_id = client_id
        self.messages: list[Seen] = []
        self._changed = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Subscriber:
        import aiomqtt

        tls = aiomqtt.TLSParameters(ca_certs=str(self.broker.ca_file)) if self.broker.ca_file else None
        self.client = aiomqtt.Client(
            self.broker.host, self.broker.port, identifier=self.client_id, tls_params=tls
        )
        await self._stack.enter_async_context(self.client)
        for topic in self.topics:
            await self.client.subscribe(topic, qos=1)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        with contextlib.suppress(Exception):
            await self._stack.aclose()

    async def _run(self) -> None:
        import aiomqtt

        with contextlib.suppress(aiomqtt.MqttError):
            async for m in self.client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                self.messages.append(Seen(str(m.topic), payload, m.qos, m.retain, time.perf_counter()))
                self._changed.set()

    def on(self, topic: str) -> list[Seen]:
        return [m for m in self.messages if m.topic == topic]

    async def wait_for(
        self,
        pred: Callable[[Seen], bool],
        timeout: float = 10.0,  # noqa: ASYNC109
        count: int = 1,
    ) -> list[Seen]:
        """Wait until ``count`` messages match ``pred``; returns them."""
        async with asyncio.timeout(timeout):
            while True:
                hits = [m for m in self.messages if pred(m)]
                if len(hits) >= count:
                    return hits
                self._changed.clear()
                await self._changed.wait()

    async def quiet(self, seconds: float) -> None:
        """Let messages arrive for ``seconds`` (used to check that nothing more comes)."""
        await asyncio.sleep(seconds)


@contextlib.asynccontextmanager
async def subscriber(broker: Broker, *topics: str) -> AsyncIterator[Subscriber]:
    async with Subscriber(broker, *topics) as sub:
        yield sub
