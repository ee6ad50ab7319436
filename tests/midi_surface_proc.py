"""A separate process playing a MIDI controller on JACK (used by tests through peers.jack.MidiPeer).

    python midi_surface_proc.py --client nanoKONTROL2 --port "nanoKONTROL2 MIDI 1" [--no-in]

Opens (python-rtmidi, JACK API) an output client ``<client>`` with port ``<port>`` (what the
controller sends) and an input client ``<client>-fb`` with port ``<port>`` (what the controller
receives: LED feedback). Commands come as JSON lines on stdin, answers go as JSON lines to stdout:

    {"op": "send", "msgs": [[0xB0, 7, 100], ...], "burst": 0}   -> {"ok": "send", "n": 2}
        each item is one JACK MIDI event (any bytes: partial messages, running status, SysEx
        chunks); burst > 0 sends that many events per millisecond (paced with sleep)
    {"op": "close"}  -> {"ok": "close"}   ports and clients deleted (the device is unplugged)
    {"op": "open"}   -> {"ok": "open"}    created again (replugged)
    {"op": "quit"}
Every message received on the input port is printed as {"rx": [bytes...]}.
The process exits when stdin closes or after --seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from typing import Any

os.environ.setdefault("JACK_NO_START_SERVER", "1")

import rtmidi


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Surface:
    def __init__(self, client: str, port: str, with_in: bool) -> None:
        self.client = client
        self.port = port
        self.with_in = with_in
        self.out: Any = None
        self.inp: Any = None
        self.rx: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()

    def open(self) -> None:
        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=self.client)
        self.out.open_virtual_port(self.port)
        if self.with_in:
            # Polled, not a callback: python-rtmidi's callback runs Python (needs the GIL) in
            # JACK's process thread, while close/open below block in JACK holding the GIL, so
            # LED feedback arriving during a replug deadlocked this peer (and, through it, the
            # synchronous-mode jackd of the tests). rtmidi queues input in C++ meanwhile.
            self.inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=f"{self.client}-fb", queue_size_limit=65536)
            self.inp.ignore_types(sysex=False, timing=False, active_sense=False)
            self.inp.open_virtual_port(self.port)
            self._stop_poll = threading.Event()
            self._poller = threading.Thread(target=self._poll, args=(self.inp, self._stop_poll), daemon=True)
            self._poller.start()

    def _poll(self, inp: Any, stop: threading.Event) -> None:
        while not stop.is_set():
            while True:
                ev = inp.get_message()
                if ev is None:
                    break
                self.rx.put(ev[0])
            stop.wait(0.0005)

    def close(self) -> None:
        if self.inp is not None:
            self._stop_poll.set()
            self._poller.join(5)
            self.inp.close_port()
            self.inp.delete()
            self.inp = None
        if self.out is not None:
            self.out.close_port()
            self.out.delete()
            self.out = None

    def send(self, msgs: list[list[int]], burst: int) -> int:
        n = 0
        if burst <= 0:
            for m in msgs:
                self.out.send_message(m)
                n += 1
            return n
        tick = time.perf_counter()
        for i in range(0, len(msgs), burst):
            for m in msgs[i : i + burst]:
                self.out.send_message(m)
                n += 1
            tick += 0.001
            delay = tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True)
    ap.add_argument("--port", required=True)
    ap.add_argument("--no-in", action="store_true")
    ap.add_argument("--seconds", type=float, default=300.0)
    a = ap.parse_args()
    surface = Surface(a.client, a.port, not a.no_in)
    surface.open()

    def printer() -> None:
        while True:
            item = surface.rx.get()
            if item is None:
                return
            emit({"rx": item})

    t_print = threading.Thread(target=printer, daemon=True)
    t_print.start()
    cmds: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def reader() -> None:
        for line in sys.stdin:
            cmds.put(line)
        cmds.put(None)

    threading.Thread(target=reader, daemon=True).start()
    emit({"ready": True})
    deadline = time.monotonic() + a.seconds
    try:
        while True:
            try:
                line = cmds.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            cmd = json.loads(line)
            op = cmd.get("op")
            if op == "send":
                try:
                    n = surface.send(cmd["msgs"], int(cmd.get("burst", 0)))
                except (ValueError, rtmidi.RtMidiError) as exc:
                    emit({"error": f"send failed: {exc}"})
                    continue
                emit({"ok": "send", "n": n})
            elif op == "close":
                surface.close()
                emit({"ok": "close"})
            elif op == "open":
                surface.open()
                emit({"ok": "open"})
            elif op == "quit":
                break
            else:
                emit({"error": f"unknown op {op!r}"})
    finally:
        surface.close()
        surface.rx.put(None)
        t_print.join(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
