"""The talkback recorder's child process: ``python -m bridge.devices._talkback_recorder_child <config
as JSON>``, started by :class:`bridge.devices.talkback_recorder.TalkbackRecorder` (why a child
process: see that module). Only this process imports ``sounddevice`` and loads PortAudio.

Inside: the PortAudio callback only copies each block (``bytes``) into a bounded ring
(pre-roll) and, while capturing, into a bounded queue; one writer thread writes WAV files with the
stdlib ``wave`` module and watches the stream (no block for ``stall_timeout`` seconds, or the stream
went inactive: lost). The main thread reads commands.

Protocol (one JSON object per line). Parent -> child: ``{"op": "start"}``, ``{"op": "stop"}``,
``{"op": "quit"}``. Child -> parent: ``{"ready": {...}}`` or ``{"error": "..."}`` once, then
``{"captured": {"path", "seconds", "reason"}}``, ``{"skipped": {...}}`` (shorter than
``min_seconds``), ``{"lost": "..."}`` (the child exits right after), ``{"bye": {...}}``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import sys
import threading
import time
import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


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
            os._exit(3)  # PortAudio cannot be closed after its host died (see talkback_recorder)

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
