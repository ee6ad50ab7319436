"""TalkbackRecorder: record the talkback microphone while talkback is engaged, one WAV per cue.

The device watches the studio-state key ``talkback`` (``feedback = "state"``). Talkback on starts a
file ``<UTC timestamp>_talkback.wav`` (with up to ``preroll`` seconds captured just before the press,
so the first word is not cut); talkback off finishes it (header written, fsync'd) and the device
reports ``AudioCaptured(path, seconds)``, which the hub logs as a ``talkback_audio`` record amending
the cue.

Design: the audio runs in a **child process** (``python -m bridge.devices._talkback_recorder_child``),
started in ``__aenter__`` and spoken to with JSON lines over stdin/stdout. Reasons, measured on
PortAudio 19.6 / JACK 1.9.21: once the JACK server dies under an open stream, PortAudio in that
process is unusable (``stream.abort()``/``close()`` hang forever, ``Pa_Terminate`` fails an
assertion and aborts the process, a new stream fails with "Insufficient memory"); only a new process
recovers. The child also keeps the per-block Python callback (about 190 calls/s at 256 frames) off
the daemon's GIL, and ``sounddevice`` is imported only there, so the daemon starts on machines
without PortAudio.

The child (its recording threads and its JSON-lines protocol) is
:mod:`bridge.devices._talkback_recorder_child`; this module is the driver that runs in the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from bridge.devices._child import spawn_module
from bridge.devices.base import Device, DeviceContext
from bridge.errors import DeviceError, DeviceLost, DeviceUnavailable
from bridge.options import in_range, non_negative, positive
from bridge.vocab import AudioCaptured, Feedback, Inbound, Outbound

log = logging.getLogger(__name__)

TALKBACK_KEY = "talkback"
READY_TIMEOUT = 20.0  # child start: interpreter + PortAudio init (+ JACK connect) on a busy machine
QUIT_TIMEOUT = 5.0


def _blocksize_check(value: Any) -> str | None:
    return None if isinstance(value, int) and 0 <= value <= 65536 else "an integer 0-65536 (0: the host's)"


@dataclass(frozen=True)
class TalkbackOptions:
    #: Input device: a name substring or a PortAudio index; None = the system default input.
    device: str | int | None = None
    channels: int = field(default=1, metadata={"check": in_range(1, 64)})
    #: Sample rate in Hz; None = the device's default rate (JACK: the server's rate).
    samplerate: int | None = field(default=None, metadata={"check": positive})
    #: Where files go; relative paths resolve against the config file's directory.
    #: None = ``<data_dir>/talkback``.
    directory: str | None = None
    #: Only 16-bit PCM WAV (stdlib ``wave``); FLAC is not implemented.
    format: Literal["wav"] = "wav"
    #: Seconds of audio from just before the press kept at the start of each file.
    preroll: float = field(default=0.5, metadata={"check": in_range(0, 10)})
    #: Safety limit of one file (talkback held on): the file is finished and reported at this length.
    max_seconds: float = field(default=600.0, metadata={"check": positive})
    #: What happens at ``max_seconds``: ``split`` goes on in a new file, ``stop`` stops until the next press.
    on_max: Literal["split", "stop"] = "split"
    #: A press shorter than this (not counting pre-roll) keeps no file (a mis-press).
    min_seconds: float = field(default=0.2, metadata={"check": non_negative})
    #: Keep the input stream open while idle (no open latency, pre-roll works). False opens the
    #: stream on each press (no idle CPU, no pre-roll, ~tens of ms lost at the start).
    keep_open: bool = True
    #: Frames per PortAudio block; 0 lets the host choose (JACK: its period).
    blocksize: int = field(default=0, metadata={"check": _blocksize_check})
    #: Seconds without an audio block (stream open) after which the input counts as lost.
    stall_timeout: float = field(default=2.0, metadata={"check": positive})


class TalkbackRecorder(Device[TalkbackOptions]):
    """Records the talkback mic per cue (see the module docstring)."""

    kind: ClassVar[str] = "talkback_recorder"
    feedback: ClassVar[Literal["state"]] = "state"
    Options: ClassVar[type[TalkbackOptions]] = TalkbackOptions

    def __init__(self, name: str, options: TalkbackOptions | None = None, ctx: DeviceContext | None = None):
        super().__init__(name, options or TalkbackOptions(), ctx)
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._on = False
        self.info: dict[str, Any] = {}
        self._stats = {"captured": 0, "skipped": 0, "bad_lines": 0, "presses": 0}

    # ------------------------------------------------------------------ paths

    def directory(self) -> Path:
        if self.options.directory is None:
            return self.ctx.data_dir / "talkback"
        return self.ctx.config_dir / Path(self.options.directory).expanduser()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> TalkbackRecorder:
        directory = self.directory()
        try:
            await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceUnavailable(f"{self.name}: cannot create {directory}: {exc}") from exc
        config = asdict(self.options) | {"directory": str(directory)}
        self._proc = await spawn_module(
            "bridge.devices._talkback_recorder_child", config, f"the recorder process of {self.name}"
        )
        self._stderr_task = asyncio.create_task(self._read_stderr(self._proc))
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                while True:
                    msg = await self._read_message()
                    if msg is None:
                        await self._proc.wait()
                        tail = " | ".join(self._stderr_tail)
                        raise DeviceUnavailable(
                            f"{self.name}: recorder process exited ({self._proc.returncode}): {tail}"
                        )
                    if "error" in msg:
                        raise DeviceUnavailable(f"{self.name}: {msg['error']}")
                    if "ready" in msg:
                        self.info = dict(msg["ready"])
                        break
        except BaseException as exc:
            await self._kill()
            if isinstance(exc, TimeoutError):
                raise DeviceUnavailable(
                    f"{self.name}: recorder not ready within {READY_TIMEOUT:g} s"
                ) from exc
            raise
        self._on = False
        log.info(
            "%s: recording talkback from %r at %s Hz, %s ch into %s (keep_open=%s)",
            self.name,
            self.info.get("device"),
            self.info.get("samplerate"),
            self.info.get("channels"),
            directory,
            self.options.keep_open,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(DeviceError):
                await self._command("quit")
            try:
                async with asyncio.timeout(QUIT_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                log.warning("%s: recorder process did not quit, killing it", self.name)
        await self._kill()

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(QUIT_TIMEOUT):
                    await proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
            self._stderr_task = None
        self._on = False

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                self._stderr_tail.append(text)
                log.debug("%s: recorder: %s", self.name, text)

    async def _read_message(self) -> dict[str, Any] | None:
        """The next well-formed message from the child; None at end of output."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return None
            try:
                msg = json.loads(line)
            except ValueError:
                msg = None
            if isinstance(msg, dict):
                return msg
            self._stats["bad_lines"] += 1

    async def _command(self, op: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise DeviceError(f"{self.name}: recorder process not running")
        try:
            proc.stdin.write(json.dumps({"op": op}).encode() + b"\n")
            await proc.stdin.drain()
        except (OSError, RuntimeError) as exc:  # BrokenPipe, ConnectionReset, closed transport
            raise DeviceError(f"{self.name}: recorder process gone: {exc}") from exc

    # ------------------------------------------------------------------ device interface

    async def receive(self) -> AsyncIterator[Inbound]:
        while True:
            msg = await self._read_message()
            if msg is None:
                code = None if self._proc is None else await self._proc.wait()
                raise DeviceLost(f"{self.name}: recorder process exited ({code})")
            if "captured" in msg:
                item = msg["captured"]
                try:
                    event = AudioCaptured(path=str(item["path"]), seconds=float(item["seconds"]))
                except (KeyError, TypeError, ValueError):
                    self._stats["bad_lines"] += 1
                    continue
                self._stats["captured"] += 1
                if item.get("reason") == "max":
                    log.warning(
                        "%s: talkback held past max_seconds, file finished: %s", self.name, event.path
                    )
                yield event
            elif "skipped" in msg:
                self._stats["skipped"] += 1
                log.debug("%s: talkback press too short, no file: %s", self.name, msg["skipped"])
            elif "lost" in msg:
                raise DeviceLost(f"{self.name}: audio input lost: {msg['lost']}")
            elif "error" in msg:
                log.warning("%s: %s", self.name, msg["error"])

    async def send(self, message: Outbound) -> None:
        if not isinstance(message, Feedback) or message.control != TALKBACK_KEY:
            return
        on = bool(message.value)
        if on == self._on:
            return
        self._on = on
        if on:
            self._stats["presses"] += 1
        await self._command("start" if on else "stop")

    async def blackout(self) -> None:
        """Finish any file in progress (it is reported if ``receive`` still runs)."""
        if self._on:
            self._on = False
            with contextlib.suppress(DeviceError):
                await self._command("stop")

    def stats(self) -> dict[str, int]:
        return dict(self._stats)
