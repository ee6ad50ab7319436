"""A fake generic OSC talkback device (an interface mixer or console with a talk key reachable by
OSC), run as a separate process.

    python tests/peers/fake_osc_talkback.py --port 0 --channels '{"A": "/talk/a", "B": "/talk/b"}'
        [--no-feedback]

* ``<address> ,i 1|0`` engages / releases that talk channel.
* With feedback (the default) the device reports the state on the same address (``,i``) to
  every client it heard from, after a change made remotely or on the device; an address
  without arguments is a get, answered to the sender. ``--no-feedback`` makes it a one-way
  device that never sends anything.
* Anything else is ignored (counted).

Control (JSON lines on stdin): ``{"op": "press", "ch": "A", "on": true}`` (the talk key on the
device), ``{"op": "state"}``, ``{"op": "silent", "on": b}``, ``{"op": "quit"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import socket
import sys
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

if not __package__:  # run as a script: make the ``peers`` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from peers.fake_proc import FakeProcess, emit, read_commands


def build(address: str, value: int) -> bytes:
    b = OscMessageBuilder(address=address)
    b.add_arg(value, arg_type="i")
    return bytes(b.build().dgram)


class Device:
    def __init__(self, port: int, channels: dict[str, str], feedback: bool) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.by_address = {a: ch for ch, a in channels.items()}
        self.channels = channels
        self.state = dict.fromkeys(channels, 0)
        self.feedback = feedback
        self.clients: set[tuple[str, int]] = set()
        self.silent = False
        self.counts = {"sets": 0, "gets": 0, "unknown": 0, "malformed": 0}

    def report(self, ch: str, to: set[tuple[str, int]]) -> None:
        if self.feedback:
            for addr in to:
                self.sock.sendto(build(self.channels[ch], self.state[ch]), addr)

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
        self.clients.add(addr)
        for msg in messages:
            ch = self.by_address.get(msg.address)
            args = list(msg.params)
            if ch is None:
                self.counts["unknown"] += 1
            elif not args:
                self.counts["gets"] += 1
                self.report(ch, {addr})
            elif args[0] in (0, 1) and isinstance(args[0], int):
                self.counts["sets"] += 1
                self.state[ch] = args[0]
                self.report(ch, self.clients)
            else:
                self.counts["unknown"] += 1

    def control(self, cmd: dict[str, Any]) -> bool:
        op = cmd.get("op")
        if op == "quit":
            return False
        if op == "press":
            self.state[cmd["ch"]] = 1 if cmd["on"] else 0
            self.report(cmd["ch"], self.clients)
            emit({"ok": "press"})
        elif op == "state":
            emit({"state": self.state, "counts": self.counts})
        elif op == "silent":
            self.silent = bool(cmd["on"])
            emit({"ok": "silent"})
        else:
            emit({"error": f"unknown op {op!r}"})
        return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--channels", default='{"A": "/talkback"}')
    ap.add_argument("--no-feedback", action="store_true")
    args = ap.parse_args()
    device = Device(args.port, json.loads(args.channels), not args.no_feedback)
    commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    read_commands(commands)
    emit({"ready": device.port})
    device.serve(commands)


class FakeOscTalkback(FakeProcess):
    script = __file__

    def __init__(self, channels: dict[str, str], feedback: bool = True, port: int = 0) -> None:
        args = ["--channels", json.dumps(channels)] + ([] if feedback else ["--no-feedback"])
        super().__init__(port, args)

    def press(self, ch: str, on: bool) -> None:
        self.command({"op": "press", "ch": ch, "on": on}, "press")

    def state(self) -> dict[str, Any]:
        return self.command({"op": "state"}, "state")

    def silent(self, on: bool) -> None:
        self.command({"op": "silent", "on": on}, "silent")


if __name__ == "__main__":
    main()
