"""A Mackie Control surface played by a separate process over JACK MIDI (tests only).

    python tests/mcu_emulator_proc.py --client XTouch123 [--model 14|10] [--echo]

Opens the rtmidi JACK clients ``<client>`` (output port ``out``: what the surface sends) and
``<client>-fb`` (input port ``in``: feedback it receives). It answers the Device Query of
its model with a Host Connection Query (serial ``EMU0001`` + challenge ``01 02 03 04``) and,
for a Logic Control (10/11), checks the ``02`` reply against the manual's formula and
confirms (``03``) or rejects (``04``). With ``--echo`` every received message is also sent
back (a MIDI thru loop, for echo-guard tests).

Commands: JSON lines on stdin ``{"op": "send", "msgs": [[0x90, 1, 127], ...], "burst": 0}``,
``{"op": "close"}`` (unplug: delete the JACK clients), ``{"op": "open"}`` (replug),
``{"op": "quit"}``. Replies: JSON lines on stdout: ``{"ready": 1}``, ``{"ok": "<op>", ...}``,
and ``{"rx": [bytes...]}`` for every message received (written by a separate thread, never
from the JACK callback).

:class:`McuEmulator` is the test-side handle (start, send, wait for received bytes, stop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

SERIAL = b"EMU0001"
CHALLENGE = bytes((0x01, 0x02, 0x03, 0x04))


def _response(ch: bytes) -> bytes:
    # the Logic manual's formula, written independently of bridge.devices.midi.mackie_codec
    l1, l2, l3, l4 = ch
    return bytes(
        (
            0x7F & (l1 + (l2 ^ 0x0A) - l4),
            0x7F & ((l3 >> 4) ^ (l1 + l4)),
            0x7F & ((l4 - (l3 << 2)) ^ (l1 | l2)),
            0x7F & (l2 - l3 + (0xF0 ^ (l4 << 4))),
        )
    )


# --------------------------------------------------------------------------- process side


def run(client: str, model: int, echo: bool) -> int:
    import rtmidi

    out_lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    inbox: queue.SimpleQueue[list[int]] = queue.SimpleQueue()
    ports: dict[str, Any] = {}
    lock = threading.Lock()
    hdr = [0xF0, 0x00, 0x00, 0x66, model]

    def writer() -> None:
        while True:
            line = out_lines.get()
            if line is None:
                return
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    full: list[str] = []

    def on_error(_etype: int, text: str, _data: object = None) -> None:
        full.append(text)  # called synchronously from send_message (e.g. JACK ring buffer full)

    def send(msg: list[int]) -> None:
        # never lose a message on the emulator side: when rtmidi's JACK ring buffer is full
        # (the JACK thread is starved on a loaded machine), wait and send it again
        deadline = time.monotonic() + 10
        while True:
            with lock:
                out = ports.get("out")
                if out is None:
                    return
                full.clear()
                out.send_message(msg)
                if not full:
                    return
            if time.monotonic() > deadline:
                sys.stderr.write(f"emulator: gave up sending {msg}: {full}\n")
                return
            time.sleep(0.002)

    def on_midi(event: tuple[list[int], float], _data: object = None) -> None:
        inbox.put(event[0])  # the JACK thread only queues

    def handler() -> None:
        while True:
            msg = inbox.get()
            out_lines.put(json.dumps({"rx": msg}))
            if echo:
                send(msg)
            if msg[:5] == hdr and len(msg) >= 7:
                cmd = msg[5]
                if cmd == 0x00:  # device query
                    send([*hdr, 0x01, *SERIAL, *CHALLENGE, 0xF7])
                elif cmd == 0x02 and model in (0x10, 0x11):
                    ok = bytes(msg[6:13]) == SERIAL and bytes(msg[13:17]) == _response(CHALLENGE)
                    send([*hdr, 0x03 if ok else 0x04, *SERIAL, 0xF7])

    def open_ports() -> None:
        with lock:
            out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=client)
            out.set_error_callback(on_error)
            out.open_virtual_port("out")
            inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=f"{client}-fb", queue_size_limit=65536)
            inp.ignore_types(sysex=False, timing=False, active_sense=False)
            inp.set_callback(on_midi)
            inp.open_virtual_port("in")
            ports["out"], ports["in"] = out, inp

    def close_ports() -> None:
        with lock:
            inp = ports.pop("in", None)
            out = ports.pop("out", None)
            if inp is not None:
                inp.cancel_callback()
                inp.close_port()
                inp.delete()
            if out is not None:
                out.close_port()
                out.delete()

    threading.Thread(target=writer, daemon=True).start()
    threading.Thread(target=handler, daemon=True).start()
    open_ports()
    out_lines.put(json.dumps({"ready": 1}))
    try:
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            op = cmd.get("op")
            try:
                if op == "send":
                    burst = int(cmd.get("burst", 0))
                    n = 0
                    for msg in cmd["msgs"]:
                        send(msg)
                        n += 1
                        if burst and n % burst == 0:
                            time.sleep(0.001)
                    out_lines.put(json.dumps({"ok": "send", "send": 1, "n": n}))
                elif op == "close":
                    close_ports()
                    out_lines.put(json.dumps({"ok": "close", "close": 1}))
                elif op == "open":
                    open_ports()
                    out_lines.put(json.dumps({"ok": "open", "open": 1}))
                elif op == "quit":
                    break
            except Exception as exc:  # report, keep serving
                out_lines.put(json.dumps({"error": f"{op}: {exc!r}"}))
    finally:
        close_ports()
        out_lines.put(None)
    return 0


# --------------------------------------------------------------------------- test side


class McuEmulator:
    """Handle on one emulator process. Received messages are collected as bytes."""

    def __init__(self, client: str, env: dict[str, str], model: int = 0x14, echo: bool = False) -> None:
        self.client = client
        args = [sys.executable, str(Path(__file__).resolve()), "--client", client, "--model", str(model)]
        if echo:
            args.append("--echo")
        self.proc = subprocess.Popen(
            args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.rx: list[bytes] = []
        self._rx_lock = threading.Lock()
        self._replies: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._cmd_lock = threading.Lock()
        self.stderr_tail: deque[str] = deque(maxlen=50)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self._expect("ready", 30)

    # the bridge's port patterns for this surface
    @property
    def in_pattern(self) -> str:
        return f"{self.client}:out"

    @property
    def out_pattern(self) -> str:
        return f"{self.client}-fb:in"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if "rx" in obj:
                with self._rx_lock:
                    self.rx.append(bytes(obj["rx"]))
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
                raise TimeoutError(
                    f"emulator {self.client}: no {key!r} within {timeout} s {''.join(self.stderr_tail)}"
                )
            try:
                obj = self._replies.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if "error" in obj:
                raise RuntimeError(f"emulator {self.client}: {obj['error']}")
            if key in obj:
                return obj

    def _command(self, cmd: dict[str, Any], key: str, timeout: float = 30) -> dict[str, Any]:
        with self._cmd_lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            return self._expect(key, timeout)

    async def send(self, *msgs: bytes | list[int], burst: int = 0) -> int:
        items = [list(m) for m in msgs]
        reply = await asyncio.to_thread(
            self._command, {"op": "send", "msgs": items, "burst": burst}, "send", 60
        )
        return int(reply["n"])

    async def press(self, note: int) -> None:
        await self.send([0x90, note, 0x7F], [0x90, note, 0x00])

    async def close_ports(self) -> None:
        await asyncio.to_thread(self._command, {"op": "close"}, "close")

    async def open_ports(self) -> None:
        await asyncio.to_thread(self._command, {"op": "open"}, "open")

    def received(self) -> list[bytes]:
        with self._rx_lock:
            return list(self.rx)

    def clear(self) -> None:
        with self._rx_lock:
            self.rx.clear()

    async def wait_for(self, pred: Callable[[list[bytes]], bool], timeout: float = 10) -> list[bytes]:  # noqa: ASYNC109
        """Wait until ``pred(received)`` holds; return the received list (raise on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if pred(got):
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"emulator {self.client}: condition not met; received {[m.hex(' ') for m in got][-40:]}"
                )
            await asyncio.sleep(0.02)

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


@pytest.fixture
def jack_sync(jack_server: Any) -> Any:
    """The one shared JACK server (``peers.jack.jack_server``, synchronous mode ``-S``).

    Kept as a name for the Mackie tests. It used to start a second, module-scoped jackd and
    swap ``JACK_DEFAULT_SERVER`` in ``os.environ`` behind the session server's back, so the
    JACK tests passed only in alphabetical file order."""
    return jack_server


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True)
    ap.add_argument("--model", type=lambda s: int(s, 0), default=0x14)
    ap.add_argument("--echo", action="store_true")
    a = ap.parse_args()
    return run(a.client, a.model, a.echo)


if __name__ == "__main__":
    sys.exit(main())
