"""MIDI ports for drivers: one asyncio link per device (bytes are split into messages by
:class:`bridge.devices.midi.parser.MidiStreamParser`).

* :class:`MidiLink` opens one input and/or one output port **by name pattern** (never by
  index, so a replugged device with a new index is found again) and hands input to asyncio.

The ports themselves live in a helper process per open link: for JACK the native one
(:mod:`bridge.devices.midi.jackmidi`, one JACK client named after the link with ports ``in``
and ``out``), otherwise or when forced (``STUDIO_BRIDGE_MIDI_HELPER=python``) the Python one
(:mod:`.helper_proc`, rtmidi clients ``<link>-in`` and ``<link>-out``). The daemon talks to it
over pipes. Input frames are read in the event loop's reader callback (:mod:`.frames`) and,
while a driver :meth:`~MidiLink.listen` s, handed to it right there, one loop wake-up per burst;
otherwise they are queued for :meth:`MidiLink.messages`. Output is written to the helper's stdin
without waiting. While a device is absent, the daemon looks for it without starting a helper
(:mod:`.ports`). Ports of our own clients are never matched.

The ALSA API (``api="alsa"``) needs the ALSA sequencer (``/dev/snd/seq``); ``"auto"`` picks
ALSA when that device exists and rtmidi was built with it, JACK otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable

import rtmidi

from bridge.devices._child import spawn_module, spawn_program
from bridge.devices.midi.frames import FrameReader
from bridge.devices.midi.helper_proc import OpenError, frame, pick_port
from bridge.devices.midi.jackmidi import native_helper
from bridge.devices.midi.parser import MidiStreamParser
from bridge.devices.midi.ports import list_ports, resolve_api
from bridge.errors import DeviceLost, DeviceUnavailable

log = logging.getLogger(__name__)

#: Seconds a helper process gets to open its ports (a cold start of Python and rtmidi included).
OPEN_TIMEOUT = 15.0
#: Seconds a helper process gets to close its ports and exit before it is killed.
CLOSE_TIMEOUT = 3.0


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
        self._reader: FrameReader | None = None
        self._opening: asyncio.Future[tuple[bytes, bytes]] | None = None
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
        rfd, wfd = os.pipe()  # the helper's stdout: frames, read by our own FrameReader
        try:
            if native is not None:
                # one JACK client, no Python in JACK's threads (bridge/devices/midi/jackmidi)
                argv = [native, self.client_name, peers["input"] or "-", peers["output"] or "-"]
                proc = await spawn_program(argv, "the native MIDI helper process", stdout=wfd)
            else:
                cfg = {
                    "client_name": self.client_name,
                    "in_pattern": self.in_pattern,
                    "out_pattern": self.out_pattern,
                    "api": api,
                    "jack": api == rtmidi.API_UNIX_JACK,
                }
                module = "bridge.devices.midi.helper_proc"
                proc = await spawn_module(module, cfg, "the MIDI helper process", stdout=wfd)
        except BaseException:
            os.close(rfd)
            raise
        finally:
            os.close(wfd)
        self._proc = proc
        self._stderr_tail.clear()
        assert proc.stderr is not None
        self._tasks = [asyncio.ensure_future(self._read_stderr(proc.stderr))]
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[tuple[bytes, bytes]] = loop.create_future()
        self._opening = opened
        self._reader = FrameReader(rfd, self._on_frame, self._on_end)
        self._reader.start(loop)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                kind, payload = await opened
        except (EOFError, TimeoutError, OSError) as exc:
            await self._stop_helper(kill=True)
            tail = " | ".join(self._stderr_tail)
            what = "did not open its ports in time" if isinstance(exc, TimeoutError) else "exited"
            raise DeviceUnavailable(
                f"MIDI helper for {self.client_name!r} {what}: {tail or 'no output'}"
            ) from exc
        except BaseException:
            await self._stop_helper(kill=True)
            raise
        finally:
            self._opening = None
        if kind != b"R":
            await self._stop_helper(kill=True)
            raise DeviceUnavailable(payload.decode(errors="replace") or "MIDI helper failed")
        info = json.loads(payload)
        self.in_port = info.get("in_port")
        self.out_port = info.get("out_port")
        log.info("%s: MIDI open (in=%r out=%r)", self.client_name, self.in_port, self.out_port)

    def _on_frame(self, kind: bytes, payload: bytes) -> None:
        """A frame from the helper, in the reader callback (see :mod:`.frames`)."""
        if kind == b"M":
            if self._quiet:
                return
            q = self._queue
            listener = self._listener
            if listener is not None and not q:
                self._deliver(listener, payload)  # the hub gets it in this callback
                return
            q.append(payload)  # before the ready frame, or nobody listening yet
            if len(q) == 1:
                self._wake()
            return
        opening = self._opening
        if opening is not None:
            if kind == b"W":
                log.info("%s: %s", self.client_name, payload.decode(errors="replace"))
                return
            self._opening = None
            if not opening.done():
                opening.set_result((kind, payload))
            return
        if kind == b"L":
            if self._reader is not None:
                self._reader.stop()  # the helper exits; nothing comes after this
            self._set_lost(payload.decode(errors="replace"))
        elif kind == b"W":
            log.warning("%s: %s", self.client_name, payload.decode(errors="replace"))

    def _on_end(self, error: BaseException | None) -> None:
        """The helper's stdout ended (it exited), a read failed, or handling a frame raised."""
        opening = self._opening
        if opening is not None:
            self._opening = None
            if not opening.done():
                opening.set_exception(EOFError(str(error) if error else "end of the helper's output"))
            return
        if self._proc is None:
            return  # we are stopping it
        self._tasks.append(asyncio.ensure_future(self._helper_ended(error)))

    async def _helper_ended(self, error: BaseException | None) -> None:
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await proc.wait()
        if self._open and self._lost is None:
            if error is not None and not isinstance(error, OSError):
                log.error("%s: MIDI input handling failed: %r", self.client_name, error)
            code = proc.returncode if proc is not None else None
            tail = " | ".join(self._stderr_tail)
            self._set_lost(f"MIDI helper process ended (exit {code}){': ' + tail if tail else ''}")

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                log.debug("%s helper: %s", self.client_name, line)

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
        self._close_reader()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

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
        if self._proc is None and not self._tasks and self._reader is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            proc, self._proc = self._proc, None
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()  # no loop left to wait for a clean exit
            self._close_reader()
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
