"""The MIDI helper process, one per open MIDI link with ports: ``python -m bridge.devices.midi.helper_proc``.

Why a process of its own: python-rtmidi runs the input callback (Python, so it needs the GIL)
inside JACK's process thread, and it makes its blocking JACK calls (open a client, register a
port, connect, close) while holding the GIL. In the daemon, where the event loop, the session
log and several links share one GIL, that meant (measured, see docs/architecture.md):

* a controller that sends while another link opens or closes deadlocks the JACK server: the
  opening thread holds the GIL waiting for the server, the server waits for our process
  thread, which waits for the GIL (jackd -S: "Driver is not running"; without -S our process
  hung for good);
* every busy moment of the daemon's GIL delays JACK's realtime thread, i.e. xruns in the
  studio's JACK graph;
* python-rtmidi's ``cancel_callback`` frees the callback while a JACK thread may be about to
  call it (a crash at close).

Here the GIL is nearly always free (the main thread sleeps in ``select``), input only starts
flowing after every other JACK call of the process is done, and it is disconnected (through
ctypes, which releases the GIL) and drained before anything is closed.

Protocol on stdin/stdout, frames of ``type (1 byte) + length (4 bytes, big endian) + payload``:

* helper -> daemon: ``R`` ready (JSON: ``in_port``, ``out_port``), ``E`` cannot open (text;
  the helper then exits), ``M`` raw MIDI bytes as received (one JACK event), ``L`` the device
  is gone (text; the helper then closes and exits), ``W`` a warning worth logging (text).
* daemon -> helper: ``S`` bytes to send, ``Q`` close and exit (so does end of input).

The helper ignores SIGINT and SIGTERM: Ctrl-C in a terminal reaches the whole process group,
and systemd's default KillMode sends SIGTERM to every process of the service at once, but the
daemon still needs its helpers to turn the surfaces' lights off before it closes them (with a
``Q`` frame, or by ending their input when it dies). SIGUSR1 makes a helper close its ports
and exit (to end one by hand; the daemon then reconnects the device).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct(">cI")
#: Seconds between two checks of the port list while open (<= 2 Hz).
WATCH_INTERVAL = 0.5
#: Seconds before a dropped connection is looked at again (a graph change may be under way).
RECHECK = 0.03
#: Seconds to let JACK finish delivering after our input was disconnected.
DRAIN = 0.05
_F_SETPIPE_SZ = 1031


def frame(kind: bytes, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class OpenError(Exception):
    """The ports cannot be opened (the text is what the daemon reports)."""


def strip_alsa_index(name: str) -> str:
    # ALSA names end in " 20:0" (client:port numbers that change on replug); compare without them.
    return re.sub(r"\s+\d+:\d+$", "", name)


def port_matcher(pattern: str) -> Callable[[str], bool]:
    """Case-insensitive substring match, or a regex (``re.search``) when the pattern starts with 're:'."""
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:], re.IGNORECASE)
        return lambda name: rx.search(name) is not None
    needle = pattern.casefold()
    return lambda name: needle in name.casefold()


def pick_port(kind: str, pattern: str, ports: list[str], own: Callable[[str], bool]) -> tuple[int, int]:
    """(index of the first port matching ``pattern`` that is not one of ours, how many match);
    OpenError lists the ports seen."""
    match = port_matcher(pattern)
    found = [i for i, p in enumerate(ports) if not own(p) and match(p)]
    if not found:
        seen = ", ".join(repr(p) for p in ports if not own(p)) or "none"
        raise OpenError(f"no MIDI {kind} port matches {pattern!r} (ports seen: {seen})")
    return found[0], len(found)


class Writer:
    """Frames to the daemon, from the main thread and from rtmidi's (JACK) thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.broken = False

    def write(self, kind: bytes, payload: bytes) -> None:
        data = memoryview(frame(kind, payload))
        with self.lock:
            if self.broken:
                return
            try:
                while data:
                    n = os.write(self.fd, data)
                    data = data[n:]
            except OSError:
                self.broken = True  # the daemon is gone; the main loop sees end of input


class Helper:
    def __init__(self, cfg: dict[str, Any], writer: Writer) -> None:
        self.client_name: str = cfg["client_name"]
        self.in_pattern: str | None = cfg.get("in_pattern")
        self.out_pattern: str | None = cfg.get("out_pattern")
        self.api: int = int(cfg["api"])
        self.jack: bool = bool(cfg["jack"])
        self.writer = writer
        self.midi_in: Any = None
        self.midi_out: Any = None
        self.watch: Any = None
        self.in_port: str | None = None
        self.out_port: str | None = None
        self.our_in = f"{self.client_name}-in:in"  # our own ports' real names (see _new_port)
        self.our_out = f"{self.client_name}-out:out"
        self.errors: list[str] = []
        self._pinned: int | None = None

    def _own(self, port: str) -> bool:
        return port.split(":", 1)[0].startswith(self.client_name)

    def _pick(self, kind: str, pattern: str, ports: list[str]) -> int:
        index, count = pick_port(kind, pattern, ports, self._own)
        if count > 1:
            text = f"{count} {kind} ports match {pattern!r}, using {ports[index]!r}"
            self.writer.write(b"W", text.encode())
        return index

    def _on_midi(self, event: tuple[list[int], float], _data: object = None) -> None:
        # JACK's process thread: hand the bytes over and return
        if self._pinned != threading.get_ident():
            self._pin_thread_state()
        self.writer.write(b"M", bytes(event[0]))

    def _pin_thread_state(self) -> None:
        """Keep this (JACK) thread's Python thread state alive between callbacks.

        python-rtmidi enters Python from JACK's process thread with ``PyGILState_Ensure`` and
        leaves with ``PyGILState_Release``. For a thread Python did not create, that allocates
        and frees a whole thread state on every MIDI event (page faults and ``munmap`` in the
        realtime thread: measured as about 8 % of the MIDI path's CPU). One extra, never
        released ``PyGILState_Ensure`` here keeps the count above zero, so later callbacks
        reuse the state. It is freed with the process (one per helper, one JACK thread)."""
        import ctypes

        ctypes.pythonapi.PyGILState_Ensure.restype = ctypes.c_int
        ctypes.pythonapi.PyGILState_Ensure()
        self._pinned = threading.get_ident()

    def _on_error(self, etype: int, message: str, _data: object = None) -> None:
        self.errors.append(f"rtmidi error {etype}: {message}")

    def open(self) -> None:
        import rtmidi

        from bridge.devices.midi.jackwatch import JackWatch

        try:
            # Order matters: input must not flow before the last blocking JACK call of ours,
            # so the output client, the watch client and the input client come first and the
            # input port is connected last.
            if self.jack:
                self.watch = JackWatch(f"{self.client_name}-watch")
            if self.out_pattern is not None:
                out = rtmidi.MidiOut(self.api, name=f"{self.client_name}-out")
                self.midi_out = out
                out.set_error_callback(self._on_error)
                ports = out.get_ports()
                index = self._pick("output", self.out_pattern, ports)
                before = self._own_ports(False)
                out.open_port(index, "out")
                self.out_port = ports[index]
                self.our_out = self._new_port(before, False, "out")
            if self.in_pattern is not None:
                inp = rtmidi.MidiIn(self.api, name=f"{self.client_name}-in", queue_size_limit=4096)
                self.midi_in = inp
                inp.set_error_callback(self._on_error)
                ports = inp.get_ports()
                index = self._pick("input", self.in_pattern, ports)
                inp.ignore_types(sysex=False, timing=False, active_sense=False)
                inp.set_callback(self._on_midi)
                before = self._own_ports(True)
                inp.open_port(index, "in")
                self.in_port = ports[index]
                self.our_in = self._new_port(before, True, "in")
        except (rtmidi.RtMidiError, RuntimeError, OSError) as exc:
            raise OpenError(f"cannot open MIDI ports for {self.client_name!r}: {exc}") from exc

    def _own_ports(self, inputs: bool) -> set[str]:
        ports = self.watch.midi_ports(inputs) if self.watch is not None else None
        return set(ports or ())

    def _new_port(self, before: set[str], inputs: bool, suffix: str) -> str:
        """Our port's real name: the one that appeared with our client's name. JACK names a
        client ``<name>-01`` when ``<name>`` is still taken (the helper of an earlier connect
        not yet gone), and checking that other client's port once took a live link for a
        dropped one."""
        prefix = f"{self.client_name}-{suffix}"
        new = [p for p in self._own_ports(inputs) - before if p.split(":", 1)[0].startswith(prefix)]
        return new[0] if len(new) == 1 else f"{prefix}:{suffix}"

    def send(self, data: bytes) -> str | None:
        """Send; the reason the device is gone if that failed."""
        out = self.midi_out
        if out is None:
            return f"MIDI link {self.client_name!r} has no open output"
        self.errors.clear()
        try:
            out.send_message(data)
        except Exception as exc:  # rtmidi raises its own errors, ValueError for bad data
            lost = self.check(f"send failed: {exc}")
            if lost is None:
                self.writer.write(b"W", f"MIDI send to {self.out_port!r} failed: {exc}".encode())
            return lost
        if self.errors:  # e.g. JACK's ring buffer full: the message is lost, say so
            self.writer.write(b"W", f"MIDI send to {self.out_port!r}: {'; '.join(self.errors)}".encode())
            self.errors.clear()
        return None

    def check(self, why: str = "") -> str | None:
        """The reason the device is gone, or None while its ports are there and connected."""
        gone: list[str] = []
        try:
            if self.midi_in is not None and self.in_port is not None:
                names = {strip_alsa_index(p) for p in self.midi_in.get_ports()}
                if strip_alsa_index(self.in_port) not in names:
                    gone.append(self.in_port)
            if self.midi_out is not None and self.out_port is not None:
                names = {strip_alsa_index(p) for p in self.midi_out.get_ports()}
                if strip_alsa_index(self.out_port) not in names:
                    gone.append(self.out_port)
        except Exception as exc:  # rtmidi errors, OSError
            gone.append(f"port list failed: {exc}")
        watch = self.watch
        if not gone and watch is not None:
            for ours, peer in ((self.our_in, self.in_port), (self.our_out, self.out_port)):
                if peer is not None and watch.connected(ours) is False:
                    # look again a little later, as the native helper does: a graph change
                    # under way must not be taken for our connection being dropped
                    time.sleep(RECHECK)
                    if watch.connected(ours) is False:
                        gone.append(f"{peer} (connection dropped: the port was closed and opened again)")
        if gone:
            return f"MIDI port gone: {', '.join(gone)}" + (f" ({why})" if why else "")
        if self.errors:
            self.writer.write(b"W", f"{'; '.join(self.errors)} (ports still present)".encode())
            self.errors.clear()
        return None

    def close(self) -> None:
        inp, self.midi_in = self.midi_in, None
        out, self.midi_out = self.midi_out, None
        watch, self.watch = self.watch, None
        if inp is not None:
            # stop the input at the source first (ctypes: the GIL is released meanwhile), then
            # give JACK a few periods to finish any callback already under way
            if watch is not None and self.in_port is not None:
                watch.disconnect(self.in_port, f"{self.client_name}-in:in")
            time.sleep(DRAIN)
        for port in (inp, out):
            if port is None:
                continue
            try:
                port.close_port()
                port.delete()  # closes the JACK client now, not at interpreter exit
            except Exception as exc:  # closing must never raise
                sys.stderr.write(f"{self.client_name}: error while closing a MIDI port: {exc}\n")
        if watch is not None:
            watch.close()


def _serve(helper: Helper, writer: Writer, stdin: int) -> None:
    buf = bytearray()
    next_check = time.monotonic() + WATCH_INTERVAL
    while True:
        timeout = max(0.0, next_check - time.monotonic())
        ready, _, _ = select.select([stdin], [], [], timeout)
        if ready:
            chunk = os.read(stdin, 1 << 16)
            if not chunk:
                return  # the daemon closed our input (or died)
            buf += chunk
            while len(buf) >= HEADER.size:
                kind, size = HEADER.unpack_from(buf)
                if len(buf) < HEADER.size + size:
                    break
                payload = bytes(buf[HEADER.size : HEADER.size + size])
                del buf[: HEADER.size + size]
                if kind == b"Q":
                    return
                if kind == b"S":
                    lost = helper.send(payload)
                    if lost:
                        writer.write(b"L", lost.encode())
                        return
        if writer.broken:
            return
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + WATCH_INTERVAL
            lost = helper.check()
            if lost:
                writer.write(b"L", lost.encode())
                return


def _terminate(_sig: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _terminate)
    out_fd = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the frame stream
    try:
        import fcntl

        fcntl.fcntl(out_fd, _F_SETPIPE_SZ, 1 << 20)  # room for bursts while the daemon is busy
    except OSError:
        pass
    writer = Writer(out_fd)
    helper = Helper(cfg, writer)
    try:
        try:
            helper.open()
        except OpenError as exc:
            writer.write(b"E", str(exc).encode())
            return 3
        writer.write(b"R", json.dumps({"in_port": helper.in_port, "out_port": helper.out_port}).encode())
        _serve(helper, writer, sys.stdin.fileno())
    finally:
        helper.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
