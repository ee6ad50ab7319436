"""A fake RME TotalMix FX OSC remote, run as a separate process, written from protocols.md §6.2
and the transcription of RME's OSC command table (v1.96) in the code index.

    python tests/peers/fake_totalmix.py --port 0 --remote-port 9001 [--levels 0]

What it models:

* It listens on ``--port`` (TotalMix's "Port incoming") and sends everything to
  ``127.0.0.1:--remote-port`` (the Remote Controller Address and "Port outgoing"), never to
  the sender's port.
* Toggles (``KOSCScaleToggle``): ``/1/mainTalkback``, ``/1/mainDim``, ``/1/mainMono``: a
  received ``1.0`` flips the value and TotalMix re-sends ``0.0`` / ``1.0`` on the same address;
  ``0.0`` (a button release) and other types do nothing.
* Bus selection ``/<page>/busInput|busPlayback|busOutput 1.0`` selects that bus and re-sends the
  three bus buttons.
* Pages: a message whose address starts with another page number than the current one selects
  that page, and TotalMix re-sends every parameter of the new page (page 1: main section, bus
  buttons, 8 fader values and names, master volume with its dB string; page 2: the selected
  channel). The first message of a new remote selects its page too.
* ``--levels HZ`` > 0 sends ``/1/level1Left`` .. ``/1/level8Right`` that often (the peak level
  data TotalMix streams when enabled).
* Unknown addresses and malformed datagrams are ignored (counted).

Control (JSON lines on stdin): ``{"op": "click", "what": "mainTalkback"}`` (clicked in the
TotalMix window: flips and sends feedback), ``{"op": "state"}``, ``{"op": "silent", "on": b}``,
``{"op": "garbage"}`` (a malformed datagram and an unknown address to the remote port),
``{"op": "quit"}``.
"""

from __future__ import annotations

import argparse
import os
import queue
import select
import socket
import sys
import time
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

if not __package__:  # run as a script: make the ``peers`` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from peers.fake_proc import FakeProcess, emit, read_commands

TOGGLES = ("mainTalkback", "mainDim", "mainMono")
BUSES = ("busInput", "busPlayback", "busOutput")


def build(address: str, value: Any) -> bytes:
    b = OscMessageBuilder(address=address)
    b.add_arg(value)
    return bytes(b.build().dgram)


class TotalMix:
    def __init__(self, port: int, remote_port: int, levels: float) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.remote = ("127.0.0.1", remote_port)
        self.levels = levels
        self.toggles = dict.fromkeys(TOGGLES, 0.0)
        self.bus = "busOutput"
        self.page: int | None = None
        self.silent = False
        self.counts = {"malformed": 0, "unknown": 0, "toggled": 0, "page_sends": 0, "sent": 0}

    def send(self, address: str, value: Any) -> None:
        self.sock.sendto(build(address, value), self.remote)
        self.counts["sent"] += 1

    def send_page(self, page: int) -> None:
        self.counts["page_sends"] += 1
        for b in BUSES:
            self.send(f"/{page}/{b}", 1.0 if b == self.bus else 0.0)
        if page == 1:
            for t in TOGGLES:
                self.send(f"/1/{t}", self.toggles[t])
            for i in range(1, 9):
                self.send(f"/1/volume{i}", 0.8)
                self.send(f"/1/volume{i}Val", "0.0")
                self.send(f"/1/trackname{i}", f"AN {i}")
            self.send("/1/mastervolume", 0.7)
            self.send("/1/mastervolumeVal", "-10.5 dB")
        elif page == 2:
            self.send("/2/volume", 0.8)
            self.send("/2/trackname", "AN 1")
            self.send("/2/mute", 0.0)

    def serve(self, commands: queue.SimpleQueue[dict[str, Any]]) -> None:
        next_levels = time.monotonic()
        while True:
            timeout = 0.05
            ready, _, _ = select.select([self.sock], [], [], timeout)
            while True:
                try:
                    cmd = commands.get_nowait()
                except queue.Empty:
                    break
                if not self.control(cmd):
                    return
            if ready:
                data, _addr = self.sock.recvfrom(65536)
                if not self.silent:
                    self.datagram(data)
            if self.levels > 0 and not self.silent and time.monotonic() >= next_levels:
                next_levels = time.monotonic() + 1.0 / self.levels
                for i in range(1, 9):
                    self.send(f"/1/level{i}Left", 0.1)
                    self.send(f"/1/level{i}Right", 0.1)

    def datagram(self, data: bytes) -> None:
        try:
            messages = [m.message for m in OscPacket(data).messages]
        except Exception:
            self.counts["malformed"] += 1
            return
        for msg in messages:
            self.message(msg.address, list(msg.params))

    def message(self, address: str, args: list[Any]) -> None:
        parts = address.strip("/").split("/")
        page = int(parts[0]) if parts and parts[0].isdigit() else None
        name = parts[1] if page is not None and len(parts) == 2 else None
        value = args[0] if args else None
        pressed = isinstance(value, float) and value == 1.0
        known = False
        if page == 1 and name in TOGGLES:
            known = True
            if pressed:
                self.toggles[name] = 0.0 if self.toggles[name] else 1.0
                self.counts["toggled"] += 1
                self.send(address, self.toggles[name])
        elif page in (1, 2) and name in BUSES:
            known = True
            if pressed:
                self.bus = name
                for b in BUSES:
                    self.send(f"/{page}/{b}", 1.0 if b == self.bus else 0.0)
        if page is not None and page != self.page and page in (1, 2):
            self.page = page
            self.send_page(page)
            known = True
        if not known:
            self.counts["unknown"] += 1

    def control(self, cmd: dict[str, Any]) -> bool:
        op = cmd.get("op")
        if op == "quit":
            return False
        if op == "click":
            what = cmd["what"]
            self.toggles[what] = 0.0 if self.toggles[what] else 1.0
            self.send(f"/1/{what}", self.toggles[what])
            emit({"ok": "click"})
        elif op == "state":
            state = {"toggles": self.toggles, "bus": self.bus, "page": self.page}
            emit({"state": state, "counts": self.counts})
        elif op == "silent":
            self.silent = bool(cmd["on"])
            emit({"ok": "silent"})
        elif op == "garbage":
            self.sock.sendto(b"#bundle\x00broken", self.remote)
            self.sock.sendto(build("/1/mainTalkback", "on"), self.remote)  # wrong type
            self.sock.sendto(build("/1/nosuchthing", 1.0), self.remote)
            emit({"ok": "garbage"})
        else:
            emit({"error": f"unknown op {op!r}"})
        return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--remote-port", type=int, required=True)
    ap.add_argument("--levels", type=float, default=0.0)
    args = ap.parse_args()
    mixer = TotalMix(args.port, args.remote_port, args.levels)
    commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    read_commands(commands)
    emit({"ready": mixer.port})
    mixer.serve(commands)


class FakeTotalMix(FakeProcess):
    """Test side of the fake TotalMix."""

    script = __file__

    def __init__(self, remote_port: int, port: int = 0, levels: float = 0.0) -> None:
        super().__init__(port, ["--remote-port", str(remote_port), "--levels", str(levels)])

    def click(self, what: str = "mainTalkback") -> None:
        self.command({"op": "click", "what": what}, "click")

    def state(self) -> dict[str, Any]:
        return self.command({"op": "state"}, "state")

    def talkback(self) -> float:
        return float(self.state()["state"]["toggles"]["mainTalkback"])

    def silent(self, on: bool) -> None:
        self.command({"op": "silent", "on": on}, "silent")

    def garbage(self) -> None:
        self.command({"op": "garbage"}, "garbage")


if __name__ == "__main__":
    main()
