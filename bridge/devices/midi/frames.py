"""The MIDI helper's frames, read where they arrive: in the event loop's reader callback.

A helper writes frames (kind, 1 byte; length, 4 bytes big endian; payload) to a pipe.
:class:`FrameReader` reads the pipe's end itself (``loop.add_reader`` and ``os.read``) and hands
each complete frame to its handler inside that callback. Compared with an ``asyncio``
subprocess pipe and a ``StreamReader``, a frame costs no waiter future, no task step and no
extra loop iteration, and every read is one small buffer (the subprocess transport reads into a
256 KiB one, which glibc maps and unmaps per read): the MIDI input path is one loop wake-up from
the helper's write to the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

#: Bytes per read: well above a burst of MIDI frames, below glibc's mmap threshold.
READ_SIZE = 65536
_HEAD = 5


class FrameReader:
    """Read frames from ``fd`` (non-blocking, owned: closed by :meth:`close`) on ``loop``.

    ``on_frame(kind, payload)`` runs for each complete frame, in order; ``on_end(error)`` runs
    once when the pipe ends (``error`` None), a read fails, or ``on_frame`` raises (that
    exception). After ``on_end`` nothing more is delivered."""

    def __init__(
        self,
        fd: int,
        on_frame: Callable[[bytes, bytes], None],
        on_end: Callable[[BaseException | None], None],
    ) -> None:
        self.fd = fd
        self._on_frame = on_frame
        self._on_end = on_end
        self._buf = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        os.set_blocking(self.fd, False)
        self._loop = loop
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(exc)
            return
        if not data:
            self._end(None)
            return
        try:
            self._feed(data)
        except Exception as exc:  # the handler's fault ends the reading, reported once
            self._end(exc)

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        if buf:  # the rest of a frame cut by the last read (rare: frames are small)
            buf += data
            data = bytes(buf)
            buf.clear()
        on_frame = self._on_frame
        pos, end = 0, len(data)
        while end - pos >= _HEAD:
            size = int.from_bytes(data[pos + 1 : pos + _HEAD], "big")
            stop = pos + _HEAD + size
            if stop > end:
                break
            on_frame(data[pos : pos + 1], data[pos + _HEAD : stop])
            if self._done:
                return
            pos = stop
        if pos < end:
            buf += data[pos:]

    def _end(self, error: BaseException | None) -> None:
        if self._done:
            return
        self.stop()
        self._on_end(error)

    def stop(self) -> None:
        """Deliver nothing more (the fd stays open until :meth:`close`)."""
        self._done = True
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.fd)

    def close(self) -> None:
        self.stop()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
