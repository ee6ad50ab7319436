"""A fake Behringer X32 console, run as a separate process, written from protocols.md §6.1 and
P. Maillot's X32 emulator (``X32.c``: client table, ``XREMOTE_TIME``, ``Xsend``).

    python tests/peers/fake_x32.py [--port 0] [--expiry 10]

What it models (and no more):

* UDP OSC; every reply goes to the sender's address and port.
* ``/info`` -> ``/info ,ssss <server version> <name> <model> <console version>``, ``/xinfo``,
  ``/status`` -> ``,sss "active" <ip> <name>``.
* ``/xremote`` registers (or renews) the sender for ``--expiry`` seconds (10); at most 4
  clients, an expired slot is reused. Only registered, unexpired clients get pushed changes;
  ``/unsubscribe`` removes the sender.
* Parameters: ``/-stat/talk/A|B`` (int 0/1), ``/config/talk/enable``, ``/config/talk/source``,
  ``/config/talk/A|B/level`` (float), ``/dim``, ``/latch`` (int), ``/destmap`` (int), and a
  few channel parameters (``/ch/01/mix/fader`` float, ``/ch/01/mix/on`` int). An address
  without arguments is a get, answered to the sender only. A set with the right type changes
  the value and, if it changed, is pushed to the *other* subscribed clients only (the
  emulator does not echo a set to its sender). A wrong type, an unknown address or a
  malformed datagram gets no answer (counted).

The test drives it through JSON lines on stdin (answers on stdout):

    {"op": "press", "ch": "A", "on": true}   TALK pressed / released on the console surface
    {"op": "set", "address": "/ch/01/mix/fader", "value": 0.5}   a change made on the surface
    {"op": "state"}    -> {"state": {...params}, "clients": [[host, port, seconds_left], ...],
                           "counts": {"xremote": n, "malformed": n, "unknown": n, ...}}
    {"op": "silent", "on": true}   stop answering anything (a hung console)
    {"op": "times"}    -> {"times": [...]}: time.monotonic() of each talk change over the network
    {"op": "garbage", "host": h, "port": p}   send a malformed datagram and an unknown message
    {"op": "quit"}
Startup prints {"ready": <port>}.
"""

from __future__ import annotations

import argparse
import os
import queue
import select
import socket
import sys
import threading
import time
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

if not __package__:  # run as a script: make the ``peers`` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from peers.fake_proc import FakeProcess, emit, read_commands

MAX_CLIENTS = 4


def _params() -> dict[str, tuple[str, Any]]:
    p: dict[str, tuple[str, Any]] = {
        "/-stat/talk/A": ("i", 0),
        "/-stat/talk/B": ("i", 0),
        "/config/talk/enable": ("i", 1),
        "/config/talk/source": ("i", 0),
        "/ch/01/mix/fader": ("f", 0.75),
        "/ch/01/mix/on": ("i", 1),
    }
    for ch, dest in (("A", 0x3F), ("B", 0x100)):
        p[f"/config/talk/{ch}/level"] = ("f", 0.5)
        p[f"/config/talk/{ch}/dim"] = ("i", 1)
        p[f"/config/talk/{ch}/latch"] = ("i", 0)
        p[f"/config/talk/{ch}/destmap"] = ("i", dest)
    return p


def build(address: str, tag: str | None = None, value: Any = None) -> bytes:
    b = OscMessageBuilder(address=address)
    if tag is not None:
        b.add_arg(value, arg_type=tag)
    return bytes(b.build().dgram)


def build_strings(address: str, *values: str) -> bytes:
    b = OscMessageBuilder(address=address)
    for v in values:
        b.add_arg(v, arg_type="s")
    return bytes(b.build().dgram)


class Console:
    def __init__(self, port: int, expiry: float) -> None:
        self.expiry = expiry
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.params = _params()
        self.clients: list[tuple[tuple[str, int], float]] = []  # (addr, expires at)
        self.silent = False
        self.counts = {"xremote": 0, "malformed": 0, "unknown": 0, "gets": 0, "sets": 0, "pushed": 0}
        self.lock = threading.Lock()
        #: time.monotonic() of every talk state change made over the network (for benchmarks;
        #: CLOCK_MONOTONIC is one clock for every process of the machine)
        self.talk_changes: list[float] = []

    # -------------------------------------------------------------- network
    def serve(self, commands: queue.SimpleQueue[dict[str, Any]]) -> None:
        while True:
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            while True:
                try:
                    cmd = commands.get_nowait()
                except queue.Empty:
                    break
                if not self.control(cmd):
                    return
            if ready:
                data, addr = self.sock.recvfrom(65536)
                if not self.silent:
                    self.datagram(data, (addr[0], addr[1]))

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            messages = [m.message for m in OscPacket(data).messages]
        except Exception:
            self.counts["malformed"] += 1
            return
        for msg in messages:
            self.message(msg.address, list(msg.params), addr)

    def message(self, address: str, args: list[Any], addr: tuple[str, int]) -> None:
        if address == "/info":
            self.sock.sendto(build_strings("/info", "V2.07", "Fake X32", "X32", "4.06"), addr)
        elif address == "/xinfo":
            self.sock.sendto(build_strings("/xinfo", "127.0.0.1", "Fake X32", "X32", "4.06"), addr)
        elif address == "/status":
            self.sock.sendto(build_strings("/status", "active", "127.0.0.1", "Fake X32"), addr)
        elif address == "/xremote":
            self.counts["xremote"] += 1
            self.subscribe(addr)
        elif address == "/unsubscribe":
            self.clients = [(a, t) for a, t in self.clients if a != addr]
        elif address in self.params:
            tag, value = self.params[address]
            if not args:
                self.counts["gets"] += 1
                self.sock.sendto(build(address, tag, value), addr)
                return
            new = args[0]
            ok = (tag == "i" and isinstance(new, int) and not isinstance(new, bool)) or (
                tag == "f" and isinstance(new, float)
            )
            if address.startswith("/-stat/talk/") and new not in (0, 1):
                ok = False
            if not ok:
                self.counts["unknown"] += 1
                return
            self.counts["sets"] += 1
            if new != value:
                self.params[address] = (tag, new)
                if address.startswith("/-stat/talk/"):
                    self.talk_changes.append(time.monotonic())
                self.push(address, exclude=addr)
        else:
            self.counts["unknown"] += 1

    def subscribe(self, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        for i, (a, _t) in enumerate(self.clients):
            if a == addr:
                self.clients[i] = (a, now + self.expiry)
                return
        if len(self.clients) < MAX_CLIENTS:
            self.clients.append((addr, now + self.expiry))
            return
        for i, (_a, t) in enumerate(self.clients):
            if t < now:  # replace an outdated record
                self.clients[i] = (addr, now + self.expiry)
                return

    def push(self, address: str, exclude: tuple[str, int] | None = None) -> None:
        tag, value = self.params[address]
        data = build(address, tag, value)
        now = time.monotonic()
        for a, t in self.clients:
            if a != exclude and t > now:
                self.sock.sendto(data, a)
                self.counts["pushed"] += 1

    # -------------------------------------------------------------- control
    def control(self, cmd: dict[str, Any]) -> bool:
        op = cmd.get("op")
        if op == "quit":
            return False
        if op == "press":
            address = f"/-stat/talk/{cmd['ch']}"
            value = 1 if cmd["on"] else 0
            if self.params[address][1] != value:
                self.params[address] = ("i", value)
                self.push(address)
            emit({"ok": "press"})
        elif op == "set":
            address = cmd["address"]
            tag, _ = self.params[address]
            self.params[address] = (tag, cmd["value"])
            self.push(address)
            emit({"ok": "set"})
        elif op == "state":
            now = time.monotonic()
            emit(
                {
                    "state": {k: v for k, (_t, v) in self.params.items()},
                    "clients": [[a[0], a[1], round(t - now, 3)] for a, t in self.clients],
                    "counts": dict(self.counts),
                }
            )
        elif op == "silent":
            self.silent = bool(cmd["on"])
            emit({"ok": "silent"})
        elif op == "times":
            emit({"times": self.talk_changes})
            self.talk_changes = []
        elif op == "garbage":
            target = (cmd["host"], int(cmd["port"]))
            self.sock.sendto(b"\x00garbage\xff" * 3, target)
            self.sock.sendto(build("/-stat/unknown/thing", "i", 7), target)
            self.sock.sendto(build("/-stat/talk/A", "s", "loud"), target)  # wrong type
            emit({"ok": "garbage"})
        else:
            emit({"error": f"unknown op {op!r}"})
        return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--expiry", type=float, default=10.0)
    args = ap.parse_args()
    console = Console(args.port, args.expiry)
    commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    read_commands(commands)
    emit({"ready": console.port})
    console.serve(commands)


# --------------------------------------------------------------------------- test side


class FakeX32(FakeProcess):
    """Starts and drives the fake console process (kill / restart it on the same port)."""

    script = __file__

    def __init__(self, port: int = 0, expiry: float = 10.0) -> None:
        super().__init__(port, ["--expiry", str(expiry)])

    def press(self, ch: str, on: bool) -> None:
        self.command({"op": "press", "ch": ch, "on": on}, "press")

    def set(self, address: str, value: Any) -> None:
        self.command({"op": "set", "address": address, "value": value}, "set")

    def state(self) -> dict[str, Any]:
        return self.command({"op": "state"}, "state")

    def silent(self, on: bool) -> None:
        self.command({"op": "silent", "on": on}, "silent")

    def talk_changes(self) -> list[float]:
        """Monotonic times of the talk state changes made over the network since the last call."""
        return [float(t) for t in self.command({"op": "times"}, "times")["times"]]

    def garbage(self, host: str, port: int) -> None:
        self.command({"op": "garbage", "host": host, "port": port}, "garbage")


if __name__ == "__main__":
    main()
