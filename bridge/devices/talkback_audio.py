"""TalkbackRecorder: record the talkback microphone while talkback is engaged, one WAV per cue.

The device watches the studio-state key ``talkback`` (``feedback = "state"``). Talkback on starts a
file ``<UTC timestamp>_talkback.wav`` (with up to ``preroll`` seconds captured just before the press,
so the first word is not cut); talkback off finishes it (header written, fsync'd) and the device
reports ``AudioCaptured(path, seconds)``, which the hub logs as a ``talkback_audio`` record amending
the cue.

Design: the audio runs in a **child process** (``python -m bridge.devices.talkback_audio``), started in
``__aenter__`` and spoken to with JSON lines over stdin/stdout. Reasons, measured on PortAudio 19.6 /
JACK 1.9.21: once the JACK server dies under an open stream, PortAudio in that process is unusable
(``stream.abort()``/``close()`` hang forever, ``Pa_Terminate`` fails an assertion and aborts the
process, a new stream fails with "Insufficient memory"); only a new process recovers. The child also
keeps the per-block Python callback (about 190 calls/s at 256 frames) off the daemon's GIL, and
``sounddevice`` is imported only there, so the daemon starts on machines without PortAudio.

Inside the child: the PortAudio callback only copies each block (``bytes``) into a bounded ring
(pre-roll) and, while capturing, into a bounded queue; one writer thread writes WAV files with the
stdlib ``wave`` module and watches the stream (no block for ``stall_timeout`` seconds, or the stream
went inactive: lost). The main thread reads commands.

Child protocol (one JSON object per line). Parent -> child: ``{"op": "start"}``, ``{"op": "stop"}``,
``{"op": "quit"}``. Child -> parent: ``{"ready": {...}}`` or ``{"error": "..."}`` once, then
``{"captured": {"path", "seconds", "reason"}}``, ``{"skipped": {...}}`` (shorter than
``min_seconds``), ``{"lost": "..."}`` (the child exits right after), ``{"bye": {...}}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import queue
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
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
            "bridge.devices.talkback_audio", config, f"the recorder process of {self.name}"
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


# ====================================================================== child process


def _utc_name(directory: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    path = directory / f"{stamp}_talkback.wav"
    n = 2
    while path.exists():
        path = directory / f"{stamp}-{n}_talkback.wav"
        n += 1
    return path


class _Recorder:
    """The child's state: stream, ring, queue and writer thread."""

    def __init__(self, cfg: dict[str, Any], emit: Any) -> None:
        import sounddevice as sd  # lazily: only the child process loads PortAudio

        self.sd = sd
        self.emit = emit
        self.directory = Path(cfg["directory"])
        self.channels = int(cfg["channels"])
        self.blocksize = int(cfg["blocksize"])
        self.preroll = float(cfg["preroll"])
        self.max_seconds = float(cfg["max_seconds"])
        self.min_seconds = float(cfg["min_seconds"])
        self.on_max = str(cfg["on_max"])
        self.keep_open = bool(cfg["keep_open"])
        self.stall = float(cfg["stall_timeout"])
        self.device = self._resolve(cfg["device"])
        info = sd.query_devices(self.device)
        self.device_name = str(info["name"])
        rate = cfg["samplerate"]
        self.rate = int(rate) if rate else int(info["default_samplerate"])
        sd.check_input_settings(self.device, channels=self.channels, dtype="int16", samplerate=self.rate)
        self.frame_bytes = 2 * self.channels
        self.preroll_frames = int(self.preroll * self.rate)
        # Ring for the pre-roll: enough blocks even for 32-frame blocks.
        smallest = max(32, self.blocksize or 32)
        self.ring: collections.deque[tuple[int, bytes]] = collections.deque(
            maxlen=max(4, self.preroll_frames // smallest + 4)
        )
        self.q: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.max_queued = max(64, int(10 * self.rate / smallest))  # ~10 s of backlog at most
        self.seq = 0
        self.capturing = False
        self.overflows = 0
        self.status_flags = 0
        self.stream: Any = None
        self.file: Any = None
        self.wav: wave.Wave_write | None = None
        self.path: Path | None = None
        self.frames = 0
        self.held_frames = 0
        self.last_seq = 0
        self.progress = (0, time.monotonic())
        self.pending: collections.deque[tuple[Any, ...]] = collections.deque()

    def _resolve(self, device: str | int | None) -> int:
        sd = self.sd
        if device is None:
            try:
                return int(sd.query_devices(kind="input")["index"])
            except sd.PortAudioError as exc:
                raise LookupError(f"no default audio input device ({exc}); {self._inputs()}") from None
        try:
            info = sd.query_devices(device, kind="input")
        except (ValueError, sd.PortAudioError) as exc:
            raise LookupError(f"audio input device {device!r} not found ({exc}); {self._inputs()}") from None
        return int(info["index"])

    def _inputs(self) -> str:
        names = [f"{d['index']}: {d['name']}" for d in self.sd.query_devices() if d["max_input_channels"] > 0]
        return "input devices: " + (", ".join(names) if names else "none (is PortAudio's host running?)")

    # -- PortAudio thread: copy and hand over, nothing else
    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        if status:
            self.status_flags += 1
        self.seq += 1
        block = (self.seq, bytes(indata))
        self.ring.append(block)
        if self.capturing:
            if self.q.qsize() < self.max_queued:
                self.q.put(("data", *block))
            else:
                self.overflows += 1

    def open_stream(self) -> None:
        stream = self.sd.RawInputStream(
            samplerate=self.rate,
            blocksize=self.blocksize,
            device=self.device,
            channels=self.channels,
            dtype="int16",
            callback=self._callback,
        )
        stream.start()
        self.stream = stream
        self.progress = (self.seq, time.monotonic())

    def close_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.stop()
            stream.close()

    # -- writer thread
    def run(self) -> None:
        while True:
            try:
                item = self.pending.popleft() if self.pending else self.q.get(timeout=0.5)
            except queue.Empty:
                self._watch()
                continue
            op = item[0]
            if op == "data":
                self._write(item[1], item[2])
            elif op == "start":
                self._start()
            elif op == "stop":
                self._stop()
            elif op == "quit":
                self._stop()
                self.close_stream()
                return
            self._watch()

    def _watch(self) -> None:
        stream = self.stream
        if stream is None:
            return
        now = time.monotonic()
        if self.seq != self.progress[0]:
            self.progress = (self.seq, now)
            return
        if not stream.active or now - self.progress[1] > self.stall:
            reason = "stream stopped" if not stream.active else f"no audio for {now - self.progress[1]:.1f} s"
            self.capturing = False
            self._finish("lost")
            self.emit({"lost": f"{reason} (device {self.device_name!r})"})
            os._exit(3)  # PortAudio cannot be closed or terminated after its host died (see module doc)

    def _open_file(self) -> None:
        self.path = _utc_name(self.directory)
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed in _finish
        wav = wave.open(self.file, "wb")  # noqa: SIM115 - closed in _finish
        wav.setnchannels(self.channels)
        wav.setsampwidth(2)
        wav.setframerate(self.rate)
        self.wav = wav
        self.frames = 0
        self.held_frames = 0

    def _start(self) -> None:
        if self.wav is not None:
            return
        if self.stream is None:
            try:
                self.open_stream()
            except Exception as exc:
                self.emit({"lost": f"cannot open input stream: {exc}"})
                os._exit(3)
        self._open_file()
        self.capturing = True
        blocks = list(self.ring)  # taken after capturing is set: no gap to the queued blocks
        if blocks and self.preroll_frames:
            data = b"".join(b for _, b in blocks)[-self.preroll_frames * self.frame_bytes :]
            assert self.wav is not None
            self.wav.writeframesraw(data)
            self.frames += len(data) // self.frame_bytes
        self.last_seq = blocks[-1][0] if blocks else self.seq

    def _write(self, seq: int, data: bytes) -> None:
        if self.wav is None or seq <= self.last_seq:
            return
        self.last_seq = seq
        self.wav.writeframesraw(data)
        n = len(data) // self.frame_bytes
        self.frames += n
        self.held_frames += n
        if self.held_frames >= self.max_seconds * self.rate:
            self._finish("max")
            if self.on_max == "split":
                self._open_file()
            else:
                self.capturing = False

    def _stop(self) -> None:
        if self.wav is None:
            return
        self.capturing = False
        later: tuple[Any, ...] | None = None
        with contextlib.suppress(queue.Empty):  # blocks queued before the flag dropped
            while later is None:
                item = self.q.get_nowait()
                if item[0] == "data":
                    self._write(item[1], item[2])
                else:
                    later = item  # a command sent meanwhile: handled after this file is finished
        self._finish("released")
        if not self.keep_open:
            self.close_stream()
        if later is not None:
            self.pending.append(later)

    def _finish(self, reason: str) -> None:
        wav, file, path = self.wav, self.file, self.path
        self.wav = self.file = self.path = None
        if wav is None or file is None or path is None:
            return
        wav.close()  # patches the header; leaves our file object open
        file.flush()
        os.fsync(file.fileno())
        file.close()
        with contextlib.suppress(OSError):
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        seconds = self.frames / self.rate
        if reason == "released" and self.held_frames < self.min_seconds * self.rate:
            path.unlink(missing_ok=True)
            self.emit({"skipped": {"path": str(path), "seconds": seconds}})
            return
        self.emit({"captured": {"path": str(path), "seconds": seconds, "reason": reason}})


def _child_main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    lock = threading.Lock()
    out = sys.stdout

    def emit(msg: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(msg) + "\n")
            out.flush()

    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as exc:
        emit(
            {
                "error": f"audio capture needs PortAudio and sounddevice ({exc}); "
                "install with: apt-get install libportaudio2 && pip install 'studio-bridge[audio]'"
            }
        )
        return 2
    try:
        rec = _Recorder(cfg, emit)
        if rec.keep_open:
            rec.open_stream()
    except Exception as exc:
        emit({"error": f"cannot open audio input: {exc}"})
        os._exit(2)  # skip PortAudio's atexit terminate: it can hang or abort when its host is gone
    emit(
        {
            "ready": {
                "device": rec.device_name,
                "samplerate": rec.rate,
                "channels": rec.channels,
                "pid": os.getpid(),
            }
        }
    )
    writer = threading.Thread(target=rec.run, name="talkback-writer", daemon=True)
    writer.start()
    for line in sys.stdin:
        try:
            op = json.loads(line).get("op")
        except (ValueError, AttributeError):
            continue
        if op in ("start", "stop"):
            rec.q.put((op,))
        elif op == "quit":
            break
    rec.q.put(("quit",))  # also at end of input: the parent is gone
    writer.join()
    emit({"bye": {"overflows": rec.overflows, "status_flags": rec.status_flags, "blocks": rec.seq}})
    with contextlib.suppress(Exception):
        rec.sd._terminate()  # close PortAudio's JACK client properly (its host is alive here)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv))
