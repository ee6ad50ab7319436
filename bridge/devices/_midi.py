"""MIDI ports for drivers: a byte-stream parser and an asyncio link over python-rtmidi.

* :class:`MidiStreamParser` turns raw bytes (in any chunking) into complete MIDI messages.
* :class:`MidiLink` opens one input and/or one output port **by name pattern** (never by
  index, so a replugged device with a new index is found again) and hands input to asyncio.

Hot path: the rtmidi callback (which, with the JACK API, runs inside JACK's realtime
process thread) only appends the raw byte list to a ``collections.deque`` and, when that
append made the deque non-empty, calls ``loop.call_soon_threadsafe`` once: one wake-up per
burst. Parsing happens on the event loop, in :meth:`MidiLink.messages`.

JACK naming: each rtmidi object is its own JACK client. A link named ``nano`` creates the
clients ``nano-in`` (local port ``in``) and ``nano-out`` (local port ``out``); rtmidi connects
them to the matched peer ports. Ports of our own clients are never matched.

The ALSA API (``api="alsa"``) needs the ALSA sequencer (``/dev/snd/seq``); ``"auto"`` picks
ALSA when that device exists and rtmidi was built with it, JACK otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import rtmidi

from bridge.devices._jackwatch import JackWatch
from bridge.errors import DeviceLost, DeviceUnavailable

log = logging.getLogger(__name__)

MidiApi = Literal["jack", "alsa", "auto"]

#: Longest SysEx kept (bytes); longer ones are dropped as garbage.
MAX_SYSEX = 65536
#: Seconds between two checks of the port list while a link is open (<= 2 Hz).
WATCH_INTERVAL = 0.5

# Data bytes following each status byte (0x80-0xEF by high nibble; 0xF1-0xF6 system common).
_CHANNEL_LEN = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}
_COMMON_LEN = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF4: 0, 0xF5: 0, 0xF6: 0}


class MidiStreamParser:
    """Bytes -> complete MIDI messages. Handles running status (also across calls), SysEx
    reassembly across chunks, realtime bytes (F8-FF) interleaved anywhere, stray data bytes
    and truncated SysEx (counted in .dropped and discarded).

    ``dropped`` counts discarded items: each stray data byte, each SysEx cut short by a
    status byte (or longer than :data:`MAX_SYSEX`), each channel/common message cut short,
    each stray ``F7`` and each undefined system common byte (F4, F5).
    """

    __slots__ = ("_buf", "_need", "_running", "_skip", "_sysex", "dropped")

    def __init__(self) -> None:
        self.dropped = 0
        self._running = 0  # running status (0x80-0xEF) or 0
        self._buf: list[int] = []  # message being assembled (status first), empty when idle
        self._need = 0  # data bytes still expected for _buf
        self._sysex: bytearray | None = None  # SysEx being assembled
        self._skip = False  # inside an oversized SysEx (already counted): swallow its bytes

    def reset(self) -> None:
        """Forget any partial message and the running status (after a reconnect)."""
        self._running = 0
        self._buf = []
        self._need = 0
        self._sysex = None
        self._skip = False

    def feed(self, data: bytes | list[int]) -> list[bytes]:
        # Fast path: one complete 3-byte channel message while idle (what rtmidi usually delivers).
        if len(data) == 3 and not self._buf and self._sysex is None and not self._skip:
            s = data[0]
            if 0x80 <= s < 0xF0 and (s & 0xE0) != 0xC0 and data[1] < 0x80 and data[2] < 0x80:
                self._running = s
                return [bytes(data)]
        out: list[bytes] = []
        for b in data:
            if b >= 0xF8:  # realtime: never interrupts anything
                out.append(bytes((b,)))
            elif self._skip:
                if b >= 0x80:
                    self._skip = False
                    if b != 0xF7:
                        self._status(b, out)
            elif self._sysex is not None:
                if b < 0x80:
                    if len(self._sysex) >= MAX_SYSEX:
                        self._sysex = None
                        self._skip = True
                        self.dropped += 1
                    else:
                        self._sysex.append(b)
                elif b == 0xF7:
                    self._sysex.append(b)
                    out.append(bytes(self._sysex))
                    self._sysex = None
                else:  # a status byte ends a truncated SysEx
                    self._sysex = None
                    self.dropped += 1
                    self._status(b, out)
            elif b < 0x80:
                if self._buf:
                    self._buf.append(b)
                    self._need -= 1
                    if self._need == 0:
                        out.append(bytes(self._buf))
                        self._buf = []
                elif self._running:
                    need = _CHANNEL_LEN[self._running >> 4]
                    if need == 1:
                        out.append(bytes((self._running, b)))
                    else:
                        self._buf = [self._running, b]
                        self._need = need - 1
                else:
                    self.dropped += 1
            else:
                self._status(b, out)
        return out

    def _status(self, b: int, out: list[bytes]) -> None:
        if self._buf:  # previous message cut short
            self._buf = []
            self.dropped += 1
        if b == 0xF0:
            self._sysex = bytearray((0xF0,))
            self._running = 0
        elif b < 0xF0:
            self._running = b
            self._buf = [b]
            self._need = _CHANNEL_LEN[b >> 4]
        elif b == 0xF7 or b in (0xF4, 0xF5):  # stray end of SysEx / undefined
            self._running = 0
            self.dropped += 1
        else:  # system common clears running status
            self._running = 0
            need = _COMMON_LEN[b]
            if need == 0:
                out.append(bytes((b,)))
            else:
                self._buf = [b]
                self._need = need


def resolve_api(api: str) -> int:
    """rtmidi API constant for ``"jack"``, ``"alsa"`` or ``"auto"``."""
    compiled = rtmidi.get_compiled_api()
    if api == "jack":
        return int(rtmidi.API_UNIX_JACK)
    if api == "alsa":
        return int(rtmidi.API_LINUX_ALSA)
    if api != "auto":
        raise ValueError(f"unknown MIDI api {api!r}")
    if rtmidi.API_LINUX_ALSA in compiled and os.path.exists("/dev/snd/seq"):
        return int(rtmidi.API_LINUX_ALSA)
    return int(rtmidi.API_UNIX_JACK)


def port_matcher(pattern: str) -> Callable[[str], bool]:
    """Case-insensitive substring match, or a regex (``re.search``) when the pattern starts with 're:'."""
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:], re.IGNORECASE)
        return lambda name: rx.search(name) is not None
    needle = pattern.casefold()
    return lambda name: needle in name.casefold()


def check_pattern(pattern: str) -> str | None:
    """Options check: None if ``pattern`` is usable, else what is expected."""
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as exc:
            return f"a valid regular expression after 're:' ({exc})"
    elif not pattern:
        return "a non-empty port name pattern"
    return None


def _strip_alsa_index(name: str) -> str:
    # ALSA names end in " 20:0" (client:port numbers that change on replug); compare without them.
    return re.sub(r"\s+\d+:\d+$", "", name)


class MidiLink:
    """One input and/or one output port, matched by name pattern (case-insensitive substring,
    or a regex when the pattern starts with 're:'), never by index, so a replugged device
    with a new index is found. api: "jack" | "alsa" | "auto" (rtmidi API_UNIX_JACK / API_LINUX_ALSA).

    A link with neither pattern opens no port at all; tools and benchmarks then inject input
    with :meth:`inject` and capture output with :meth:`attach_sink`.
    """

    def __init__(
        self, client_name: str, in_pattern: str | None, out_pattern: str | None, api: str = "auto"
    ) -> None:
        self.client_name = client_name
        self.in_pattern = in_pattern
        self.out_pattern = out_pattern
        self.api = api
        self.in_port: str | None = None  # full name of the matched peer ports
        self.out_port: str | None = None
        self._in: Any = None
        self._out: Any = None
        self._jack_watch: JackWatch | None = None
        self._sink: Callable[[bytes], None] | None = None
        self._queue: deque[list[int] | bytes] = deque()
        self._parser = MidiStreamParser()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._lost: str | None = None
        self._open = False
        self._received = 0
        self._messages = 0
        self._sent = 0

    # ------------------------------------------------------------------ opening

    async def open(self) -> None:
        """Open the ports; raise DeviceUnavailable if a pattern matches no port (lists the ports seen)."""
        if self._open:
            return
        self._loop = asyncio.get_running_loop()
        self._waiter = None
        self._lost = None
        self._queue.clear()
        self._parser.reset()
        if self.in_pattern is not None or self.out_pattern is not None:
            await asyncio.to_thread(self._open_ports)
        self._open = True
        if self._in is not None or self._out is not None:
            self._watch = self._loop.call_later(WATCH_INTERVAL, self._watch_tick)

    def _own(self, port: str) -> bool:
        return port.split(":", 1)[0].startswith(self.client_name)

    def _pick(self, kind: str, pattern: str, ports: list[str]) -> int:
        match = port_matcher(pattern)
        found = [i for i, p in enumerate(ports) if not self._own(p) and match(p)]
        if not found:
            seen = ", ".join(repr(p) for p in ports if not self._own(p)) or "none"
            raise DeviceUnavailable(f"no MIDI {kind} port matches {pattern!r} (ports seen: {seen})")
        if len(found) > 1:
            log.info(
                "%s: %d %s ports match %r, using %r",
                self.client_name,
                len(found),
                kind,
                pattern,
                ports[found[0]],
            )
        return found[0]

    def _open_ports(self) -> None:
        try:
            api = resolve_api(self.api)
        except ValueError as exc:
            raise DeviceUnavailable(str(exc)) from exc
        try:
            if self.in_pattern is not None:
                midi_in = rtmidi.MidiIn(api, name=f"{self.client_name}-in", queue_size_limit=4096)
                self._in = midi_in
                midi_in.set_error_callback(self._on_error)
                ports = midi_in.get_ports()
                index = self._pick("input", self.in_pattern, ports)
                midi_in.ignore_types(sysex=False, timing=False, active_sense=False)
                midi_in.set_callback(self._on_midi)
                midi_in.open_port(index, "in")
                self.in_port = ports[index]
            if self.out_pattern is not None:
                midi_out = rtmidi.MidiOut(api, name=f"{self.client_name}-out")
                self._out = midi_out
                midi_out.set_error_callback(self._on_error)
                ports = midi_out.get_ports()
                index = self._pick("output", self.out_pattern, ports)
                midi_out.open_port(index, "out")
                self.out_port = ports[index]
            if api == rtmidi.API_UNIX_JACK:
                # JACK drops our connection when the peer re-registers its port; the name check
                # alone misses a fast replug, so also ask JACK about our own ports' connections
                self._jack_watch = JackWatch(f"{self.client_name}-watch")
        except DeviceUnavailable:
            self._release()
            raise
        except (rtmidi.RtMidiError, RuntimeError, OSError) as exc:
            self._release()
            raise DeviceUnavailable(f"cannot open MIDI ports for {self.client_name!r}: {exc}") from exc
        log.info("%s: MIDI open (in=%r out=%r)", self.client_name, self.in_port, self.out_port)

    # ------------------------------------------------------------------ input

    def _on_midi(self, event: tuple[list[int], float], _data: object = None) -> None:
        # Runs in rtmidi's thread (JACK: the realtime process thread). Keep it trivial.
        q = self._queue
        q.append(event[0])
        if len(q) == 1:
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._wake)

    def inject(self, data: bytes | list[int]) -> None:
        """Feed raw bytes as if they came from the input port (any thread; same path as rtmidi's)."""
        self._on_midi((list(data) if isinstance(data, bytes) else data, 0.0))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _on_error(self, etype: int, message: str, _data: object = None) -> None:
        # rtmidi errors can come from any thread; check the port list on the loop.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._check_ports, f"rtmidi error {etype}: {message}")

    async def messages(self) -> AsyncIterator[list[bytes]]:
        """Yield batches of complete messages; raise DeviceLost when the port vanishes."""
        if not self._open or self._loop is None:
            raise DeviceLost(f"MIDI link {self.client_name!r} is not open")
        loop = self._loop
        q = self._queue
        parser = self._parser
        while True:
            if self._lost is not None:
                raise DeviceLost(self._lost)
            if not q:
                waiter = self._waiter = loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
            if self._lost is not None:
                raise DeviceLost(self._lost)
            batch: list[bytes] = []
            chunks = 0
            while True:
                try:
                    chunk = q.popleft()
                except IndexError:
                    break
                chunks += 1
                batch.extend(parser.feed(chunk))
            self._received += chunks
            if batch:
                self._messages += len(batch)
                yield batch

    # ------------------------------------------------------------------ port watch

    def _watch_tick(self) -> None:
        self._watch = None
        if not self._open or self._lost is not None:
            return
        self._check_ports("")
        if self._open and self._lost is None and self._loop is not None:
            self._watch = self._loop.call_later(WATCH_INTERVAL, self._watch_tick)

    def _check_ports(self, why: str) -> None:
        if not self._open or self._lost is not None:
            return
        gone: list[str] = []
        try:
            if self._in is not None and self.in_port is not None:
                names = {_strip_alsa_index(p) for p in self._in.get_ports()}
                if _strip_alsa_index(self.in_port) not in names:
                    gone.append(self.in_port)
            if self._out is not None and self.out_port is not None:
                names = {_strip_alsa_index(p) for p in self._out.get_ports()}
                if _strip_alsa_index(self.out_port) not in names:
                    gone.append(self.out_port)
        except (rtmidi.RtMidiError, RuntimeError, OSError) as exc:
            gone.append(f"port list failed: {exc}")
        watch = self._jack_watch
        if not gone and watch is not None:
            for ours, peer in (
                (f"{self.client_name}-in:in", self.in_port),
                (f"{self.client_name}-out:out", self.out_port),
            ):
                if peer is not None and watch.connected(ours) is False:
                    gone.append(f"{peer} (connection dropped: the port was closed and opened again)")
        if gone:
            self._set_lost(f"MIDI port gone: {', '.join(gone)}" + (f" ({why})" if why else ""))
        elif why:
            log.warning("%s: %s (ports still present)", self.client_name, why)

    def _set_lost(self, reason: str) -> None:
        if self._lost is None:
            log.warning("%s: %s", self.client_name, reason)
            self._lost = reason
            self._wake()

    # ------------------------------------------------------------------ output

    def attach_sink(self, sink: Callable[[bytes], None] | None) -> None:
        """Send to ``sink`` instead of an output port (benchmarks and tools)."""
        self._sink = sink

    def send(self, data: bytes) -> None:
        """Write one message (or several concatenated); raise DeviceLost on failure."""
        if self._lost is not None:
            raise DeviceLost(self._lost)
        sink = self._sink
        if sink is not None:
            sink(data)
            self._sent += 1
            return
        out = self._out
        if out is None:
            raise DeviceLost(f"MIDI link {self.client_name!r} has no open output")
        try:
            out.send_message(data)
        except (rtmidi.RtMidiError, RuntimeError, ValueError, OSError) as exc:
            self._check_ports(f"send failed: {exc}")
            raise DeviceLost(f"MIDI send to {self.out_port!r} failed: {exc}") from exc
        self._sent += 1

    # ------------------------------------------------------------------ closing

    def _release(self) -> None:
        watch, self._jack_watch = self._jack_watch, None
        if watch is not None:
            watch.close()
        midi_in, self._in = self._in, None
        midi_out, self._out = self._out, None
        for port in (midi_in, midi_out):
            if port is None:
                continue
            try:
                if port is midi_in:
                    port.cancel_callback()
                port.close_port()
                port.delete()  # closes the JACK client now, not at interpreter exit
            except Exception as exc:  # closing must never raise
                log.debug("%s: error while closing MIDI port: %s", self.client_name, exc)

    def quiet(self) -> None:
        """Stop delivering input (the first step of closing)."""
        if self._in is not None:
            try:
                self._in.cancel_callback()
            except Exception as exc:  # closing must never raise
                log.debug("%s: cancel_callback failed: %s", self.client_name, exc)

    async def aclose(self) -> None:
        """Close from the event loop without the JACK close deadlock.

        rtmidi's close_port()/delete() hold the GIL while JACK waits for its process thread,
        which may be inside our Python input callback waiting for the GIL. So: stop the
        callback, let the process thread leave Python for a few JACK periods, then close."""
        if self._in is not None:
            self.quiet()
            await asyncio.sleep(0.05)
        self.close()

    def close(self) -> None:
        """Idempotent; calls rtmidi delete()/close_port so JACK is not stalled.
        From the event loop prefer ``await aclose()``."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        was_open = self._open
        self._open = False
        self._release()
        if was_open:
            self._lost = self._lost or "closed"
            self._wake()
        self.in_port = None
        self.out_port = None

    @property
    def can_send(self) -> bool:
        """True when :meth:`send` has somewhere to write (an output port or a sink)."""
        return self._sink is not None or self._out is not None

    @property
    def is_open(self) -> bool:
        return self._open and self._lost is None

    def stats(self) -> dict[str, int]:
        """received (raw chunks from the port), messages (parsed), dropped (bad bytes), sent."""
        return {
            "received": self._received,
            "messages": self._messages,
            "dropped": self._parser.dropped,
            "sent": self._sent,
        }
