"""SIGHUP while take marks stream in: a reload that touches ``[osc]`` keeps the subscribers when
bind and port stay, and never loses an answer (a logged mark whose ``/ok`` is lost makes a
retrying client mark a duplicate take)."""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

from peers.daemon import Daemon, OscClient

from bridge.devices._osc import decode, encode

BASE = '[internal]\ntracks = 8\n\n[osc]\nbind = "{bind}"\nclient_ttl = {ttl}\n'


class MarkStream:
    """A tablet hammering /take/mark (one socket, a datagram every ``gap`` s) and counting the
    answers it gets; a reader thread collects them."""

    def __init__(self, port: int, gap: float = 0.002) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = port
        self.gap = gap
        self.sent = 0
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._stop_reading = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._read),
        ]
        for t in self._threads:
            t.daemon = True
            t.start()

    def _send(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # ICMP of a moment without a socket
                self.sock.sendto(encode("/take/mark", f"m{self.sent}"), ("127.0.0.1", self.port))
                self.sent += 1
            time.sleep(self.gap)

    def _read(self) -> None:
        while not self._stop_reading.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                continue  # ConnectionRefused of a datagram sent while nothing listened
            for address, args in decode(data):
                if args and args[0] == "/take/mark":
                    if address == "/ok":
                        self.ok += 1
                    elif address == "/error":
                        self.errors.append(str(args[1:]))

    def finish(self, settle: float = 3.0) -> None:
        """Stop sending; wait until the answers stop coming (longer than any durable write)."""
        self._stop.set()
        self._threads[0].join(5)
        last, deadline = (self.ok, len(self.errors)), time.monotonic() + 20
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < settle:
            time.sleep(0.1)
            now = (self.ok, len(self.errors))
            if now != last:
                last, quiet_since = now, time.monotonic()
        self._stop_reading.set()
        self._threads[1].join(5)
        self.sock.close()


def logged_marks(data_dir: Path) -> int:
    db = sqlite3.connect(data_dir / "session-log.sqlite3")
    try:
        return int(db.execute("SELECT count(*) FROM records WHERE kind='take_marker'").fetchone()[0])
    finally:
        db.close()


def reload(daemon: Daemon, config: str, count: int) -> None:
    assert daemon.config_path is not None
    daemon.config_path.write_text(config)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while sum("config reloaded" in line for line in daemon.lines) < count:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.01)


def test_a_reload_of_osc_keeps_subscribers_and_every_answer(tmp_path: Path) -> None:
    with Daemon(tmp_path, BASE.format(bind="0.0.0.0", ttl=3600.0)) as daemon:
        listener = OscClient(daemon.osc_port)  # subscribes once, then only listens
        try:
            assert listener.command("/subscribe") == ("/ok", ["/subscribe"])
            stream = MarkStream(daemon.osc_port)
            time.sleep(0.2)
            for i in range(1, 7):  # client_ttl and allow change; bind and port stay
                extra = '\nallow = ["127.0.0.0/8"]\n' if i % 2 else ""
                reload(daemon, BASE.format(bind="0.0.0.0", ttl=3600.0 - i) + extra, i)
                time.sleep(0.15)
            stream.finish()
            # the listener still gets feedback, without subscribing again
            listener.seen.clear()
            tablet = OscClient(daemon.osc_port)
            try:
                assert tablet.command("/song", "After the reload") == ("/ok", ["/song"])
            finally:
                tablet.close()
            assert listener.wait_for(lambda m: m == ("/song", ["After the reload"]), 10)
            # and every logged mark was answered
            logged = logged_marks(daemon.data_dir)
            assert stream.ok == logged, f"{logged} logged, {stream.ok} answered /ok ({stream.sent} sent)"
            assert not stream.errors, stream.errors[:5]
            assert logged > 100
        finally:
            listener.close()
        assert "osc: [osc] applied in place" in daemon.log()
        assert daemon.stop() == 0


def test_a_new_bind_moves_the_api_and_loses_no_answer(tmp_path: Path) -> None:
    with Daemon(tmp_path, BASE.format(bind="0.0.0.0", ttl=3600.0)) as daemon:
        stream = MarkStream(daemon.osc_port)
        time.sleep(0.2)
        for i in range(1, 7):  # the socket is replaced each time, on the same port
            reload(daemon, BASE.format(bind="127.0.0.1" if i % 2 else "0.0.0.0", ttl=3600.0), i)
            time.sleep(0.15)
        stream.finish()
        logged = logged_marks(daemon.data_dir)
        print(f"{stream.sent} sent, {logged} logged, {stream.ok} /ok, {len(stream.errors)} /error")
        assert stream.ok == logged, f"{logged} marks logged, {stream.ok} answered /ok ({stream.sent} sent)"
        # what was taken but not carried out is said so (the client sends it again: no duplicate)
        assert all("not carried out" in e for e in stream.errors), stream.errors[:5]
        assert logged > 100
        client = OscClient(daemon.osc_port)
        try:
            assert client.command("/ping") == ("/pong", [])
        finally:
            client.close()
        log = daemon.log()
        assert "retrying" not in log and "Address already in use" not in log, log
        assert daemon.stop() == 0


def test_a_stop_while_marks_stream_answers_every_logged_mark(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, BASE.format(bind="0.0.0.0", ttl=3600.0))
    with daemon:
        stream = MarkStream(daemon.osc_port)
        time.sleep(0.5)
        assert daemon.stop() == 0
        stream.finish(settle=1.0)
    logged = logged_marks(daemon.data_dir)
    assert stream.ok == logged, f"{logged} logged, {stream.ok} answered /ok ({stream.sent} sent)"
    # a clean stop is no fault: nothing in the journal at WARNING or ERROR
    faults = [line for line in daemon.lines if " ERROR " in line or " WARNING " in line]
    assert not faults, daemon.log()[-3000:]
    assert all("not carried out" in e for e in stream.errors), stream.errors[:5]
    assert logged > 50
