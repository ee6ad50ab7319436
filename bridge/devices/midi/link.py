"""MIDI ports for drivers: an asyncio link over python-rtmidi (bytes are split into messages
by :class:`bridge.devices.midi.parser.MidiStreamParser`).

* :class:`MidiLink` opens one input and/or one output port **by name pattern** (never by
  index, so a replugged device with a new index is found again) and hands input to asyncio.

The ports themselves live in a small helper process per open link (``helper_proc``; why:
see its docstring). The daemon talks to it over pipes: input arrives as raw chunks that are
queued in a ``collections.deque`` (one event-loop wake-up per burst) and parsed on the event
loop, in :meth:`MidiLink.messages`; output is written to the helper's stdin without waiting.
While a device is absent, the daemon looks for it without starting a helper: through one
shared, never activated JACK client (ctypes), or an rtmidi client without ports for ALSA.

JACK naming: each rtmidi object is its own JACK client. A link named ``nano`` creates the
clients ``nano-in`` (local port ``in``) and ``nano-out`` (local port ``out``); rtmidi connects
them to the matched peer ports. Ports of our own clients are never matched.

The ALSA API (``api="alsa"``) needs the ALSA sequencer (``/dev/snd/seq``); ``"auto"`` picks
ALSA when that device exists and rtmidi was built with it, JACK otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import rtmidi

from bridge.devices._child import spawn_module, spawn_program
from bridge.devices.midi import jackwatch
from bridge.devices.midi.helper_proc import HEADER, OpenError, frame, pick_port
from bridge.devices.midi.jackmidi import native_helper
from bridge.devices.midi.parser import MidiStreamParser
from bridge.errors import DeviceLost, DeviceUnavailable

log = logging.getLogger(__name__)

MidiApi = Literal["jack", "alsa", "auto"]

#: Seconds a helper process gets to open its ports (a cold start of Python and rtmidi included).
OPEN_TIMEOUT = 15.0
#: Seconds a helper process gets to close its ports and exit before it is killed.
CLOSE_TIMEOUT = 3.0


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


_alsa_listers: dict[bool, Any] = {}
_jack_quiet = False


def _alsa_ports(inputs: bool) -> list[str]:
    """ALSA sequencer ports through one rtmidi client without ports (no callback, no thread)."""
    lister = _alsa_listers.get(inputs)
    if lister is None:
        lister = (
            rtmidi.MidiOut(rtmidi.API_LINUX_ALSA, name="studio-bridge-probe")
            if inputs
            else (rtmidi.MidiIn(rtmidi.API_LINUX_ALSA, name="studio-bridge-probe"))
        )
        _alsa_listers[inputs] = lister
    return list(lister.get_ports())


def list_ports(api: int, inputs: bool) -> list[str]:
    """Names of the MIDI ports a link could open: ``inputs`` (ports we can send to) or outputs
    (ports we can receive from). Raises DeviceUnavailable when the MIDI system is not reachable."""
    if api == rtmidi.API_UNIX_JACK:
        global _jack_quiet
        if not _jack_quiet:  # libjack prints to stderr at every probe while JACK is down
            _jack_quiet = jackwatch.route_messages_to_log()
        ports = jackwatch.list_ports(inputs)
        if ports is None:
            server = os.environ.get("JACK_DEFAULT_SERVER", "default")
            raise DeviceUnavailable(f"JACK server {server!r} not reachable (is jackd running as this user?)")
        return ports
    try:
        return _alsa_ports(inputs)
    except (rtmidi.RtMidiError, RuntimeError, OSError) as exc:
        raise DeviceUnavailable(f"ALSA sequencer not usable: {exc}") from exc


_reapers: set[asyncio.Task[None]] = set()


class MidiLink:
    """One input and/or one output port, matched by name pattern (case-insensitive substring,
    or a regex when the pattern starts with 're:'), never by index, so a replugged device
    with a new index is found. api: "jack" | "alsa" | "auto" (rtmidi API_UNIX_JACK / API_LINUX_ALSA).

    A link with neither pattern opens no port and starts no helper; tools and benchmarks then
    inject input with :meth:`inject` and capture output with :meth:`attach_sink`.
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
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stderr_tail: deque[str] = deque(maxlen=10)
        self._sink: Callable[[bytes], None] | None = None
        self._queue: deque[list[int] | bytes] = deque()
        self._parser = MidiStreamParser()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._listener: Callable[[list[bytes]], None] | None = None
        self._listen_error: Exception | None = None
        self._lost: str | None = None
        self._open = False
        self._quiet = False
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
        self._quiet = False
        self._queue.clear()
        self._parser.reset()
        if self.in_pattern is not None or self.out_pattern is not None:
            await self._start_helper()
        self._open = True

    def _own(self, port: str) -> bool:
        return port.split(":", 1)[0].startswith(self.client_name)

    async def _start_helper(self) -> None:
        try:
            api = resolve_api(self.api)
        except ValueError as exc:
            raise DeviceUnavailable(str(exc)) from exc
        # look first (cheap, no JACK client activated): no helper while the device is absent
        peers: dict[str, str | None] = {"input": None, "output": None}
        try:
            for direction, pattern, inputs in (
                ("input", self.in_pattern, False),
                ("output", self.out_pattern, True),
            ):
                if pattern is None:
                    continue
                ports = list_ports(api, inputs=inputs)
                index, count = pick_port(direction, pattern, ports, self._own)
                peers[direction] = ports[index]
                if count > 1:
                    what = f"{count} {direction} ports match {pattern!r}"
                    log.info("%s: %s, using %r", self.client_name, what, ports[index])
        except OpenError as exc:
            raise DeviceUnavailable(str(exc)) from exc
        native = native_helper() if api == rtmidi.API_UNIX_JACK else None
        if native is not None:
            # one JACK client, no Python in JACK's threads (bridge/devices/midi/jackmidi)
            argv = [native, self.client_name, peers["input"] or "-", peers["output"] or "-"]
            proc = await spawn_program(argv, "the native MIDI helper process")
        else:
            cfg = {
                "client_name": self.client_name,
                "in_pattern": self.in_pattern,
                "out_pattern": self.out_pattern,
                "api": api,
                "jack": api == rtmidi.API_UNIX_JACK,
            }
            proc = await spawn_module("bridge.devices.midi.helper_proc", cfg, "the MIDI helper process")
        self._proc = proc
        self._stderr_tail.clear()
        assert proc.stdout is not None and proc.stderr is not None
        self._tasks = [asyncio.ensure_future(self._read_stderr(proc.stderr))]
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                kind, payload = await self._read_frame(proc.stdout)
                while kind in (b"W", b"M"):
                    if kind == b"W":
                        log.info("%s: %s", self.client_name, payload.decode(errors="replace"))
                    else:  # input that came before the ready frame (rtmidi's thread won the race)
                        self._queue.append(payload)
                    kind, payload = await self._read_frame(proc.stdout)
        except (asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
            await self._stop_helper(kill=True)
            tail = " | ".join(self._stderr_tail)
            what = "did not open its ports in time" if isinstance(exc, TimeoutError) else "exited"
            raise DeviceUnavailable(
                f"MIDI helper for {self.client_name!r} {what}: {tail or 'no output'}"
            ) from exc
        except BaseException:
            await self._stop_helper(kill=True)
            raise
        if kind != b"R":
            await self._stop_helper(kill=True)
            raise DeviceUnavailable(payload.decode(errors="replace") or "MIDI helper failed")
        info = json.loads(payload)
        self.in_port = info.get("in_port")
        self.out_port = info.get("out_port")
        self._tasks.append(asyncio.ensure_future(self._read_input(proc.stdout)))
        log.info("%s: MIDI open (in=%r out=%r)", self.client_name, self.in_port, self.out_port)

    @staticmethod
    async def _read_frame(stream: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await stream.readexactly(HEADER.size)
        kind, size = HEADER.unpack(head)
        return kind, await stream.readexactly(size)

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                log.debug("%s helper: %s", self.client_name, line)

    async def _read_input(self, stream: asyncio.StreamReader) -> None:
        q = self._queue
        try:
            while True:
                kind, payload = await self._read_frame(stream)
                if kind == b"M":
                    if self._quiet:
                        continue
                    listener = self._listener
                    if listener is not None and not q:
                        self._deliver(listener, payload)
                        continue
                    q.append(payload)
                    if len(q) == 1:
                        self._wake()
                elif kind == b"L":
                    self._set_lost(payload.decode(errors="replace"))
                    return
                elif kind == b"W":
                    log.warning("%s: %s", self.client_name, payload.decode(errors="replace"))
        except (asyncio.IncompleteReadError, OSError):
            if self._open and self._lost is None:
                proc = self._proc
                if proc is not None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await proc.wait()
                code = proc.returncode if proc is not None else None
                tail = " | ".join(self._stderr_tail)
                self._set_lost(f"MIDI helper process ended (exit {code}){': ' + tail if tail else ''}")

    # ------------------------------------------------------------------ input

    def _on_midi(self, event: tuple[list[int], float], _data: object = None) -> None:
        q = self._queue
        q.append(event[0])
        if len(q) == 1:
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._wake)

    def inject(self, data: bytes | list[int]) -> None:
        """Feed raw bytes as if they came from the input port (any thread)."""
        self._on_midi((list(data) if isinstance(data, bytes) else data, 0.0))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _deliver(self, listener: Callable[[list[bytes]], None], payload: bytes | list[int]) -> None:
        self._received += 1
        batch = self._parser.feed(payload)
        if not batch:
            return
        self._messages += len(batch)
        try:
            listener(batch)
        except Exception as exc:  # the listener's fault ends listen(), as it would end messages()
            self._listener = None
            self._listen_error = exc
            self._wake()

    async def listen(self, listener: Callable[[list[bytes]], None]) -> None:
        """Like :meth:`messages`, but hand each batch to ``listener`` as soon as the helper's
        frame is read, in the reading task: no wake-up of a consumer task per burst. Runs
        until the link is lost (raises DeviceLost) or the listener raises (re-raised here).
        Input injected from another thread (:meth:`inject`) still goes through the queue and
        is delivered here in order."""
        if not self._open or self._loop is None:
            raise DeviceLost(f"MIDI link {self.client_name!r} is not open")
        loop = self._loop
        q = self._queue
        self._listener = listener
        self._listen_error = None
        try:
            while True:
                while q and self._listener is not None:
                    self._deliver(listener, q.popleft())
                error, self._listen_error = self._listen_error, None
                if error is not None:
                    raise error
                if self._lost is not None:
                    raise DeviceLost(self._lost)
                waiter = self._waiter = loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
        finally:
            self._listener = None

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
        """Write one message (or several concatenated) without waiting; raise DeviceLost when
        the link is gone."""
        if self._lost is not None:
            raise DeviceLost(self._lost)
        sink = self._sink
        if sink is not None:
            sink(data)
            self._sent += 1
            return
        proc = self._proc
        if proc is None or self.out_port is None or proc.stdin is None:
            raise DeviceLost(f"MIDI link {self.client_name!r} has no open output")
        if proc.stdin.is_closing():
            raise DeviceLost(f"MIDI link {self.client_name!r}: the helper process is gone")
        proc.stdin.write(frame(b"S", bytes(data)))
        self._sent += 1

    # ------------------------------------------------------------------ closing

    async def _stop_helper(self, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        tasks, self._tasks = self._tasks, []
        if proc is not None:
            if proc.stdin is not None and not proc.stdin.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    if not kill:
                        proc.stdin.write(frame(b"Q", b""))
                    proc.stdin.close()
            if kill and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                log.warning("%s: MIDI helper did not exit, killing it", self.client_name)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _mark_closed(self) -> None:
        self._quiet = True  # input still in the pipe is not delivered any more
        was_open = self._open
        self._open = False
        if was_open:
            self._lost = self._lost or "closed"
            self._wake()
        self.in_port = None
        self.out_port = None

    async def aclose(self) -> None:
        """Close the ports and wait (at most a few seconds) for the helper process to exit."""
        self._mark_closed()
        await self._stop_helper()

    def close(self) -> None:
        """Idempotent; from a running event loop the helper is reaped in the background.
        From the event loop prefer ``await aclose()``."""
        self._mark_closed()
        if self._proc is None and not self._tasks:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            proc, self._proc = self._proc, None
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()  # no loop left to wait for a clean exit
            return
        task = loop.create_task(self._stop_helper())
        _reapers.add(task)
        task.add_done_callback(_reapers.discard)

    @property
    def can_send(self) -> bool:
        """True when :meth:`send` has somewhere to write (an output port or a sink)."""
        return self._sink is not None or (self._proc is not None and self.out_port is not None)

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
