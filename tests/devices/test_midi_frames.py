"""FrameReader: the MIDI helper's frames read from a real pipe in the loop's reader callback."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from bridge.devices.midi.frames import FrameReader
from bridge.devices.midi.helper_proc import frame


class Collect:
    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []
        self.ended: list[BaseException | None] = []
        self.done = asyncio.Event()

    def on_frame(self, kind: bytes, payload: bytes) -> None:
        self.frames.append((kind, payload))

    def on_end(self, error: BaseException | None) -> None:
        self.ended.append(error)
        self.done.set()


async def _run(chunks: list[bytes], collect: Collect) -> FrameReader:
    rfd, wfd = os.pipe()
    reader = FrameReader(rfd, collect.on_frame, collect.on_end)
    reader.start(asyncio.get_running_loop())
    for chunk in chunks:
        os.write(wfd, chunk)
        await asyncio.sleep(0.002)  # each chunk its own read
    os.close(wfd)
    async with asyncio.timeout(5):
        await collect.done.wait()
    reader.close()
    return reader


async def test_frames_split_anywhere_arrive_whole_and_in_order() -> None:
    rng = random.Random(7)
    frames = [(b"M", bytes([0xB0, i % 128, 127])) for i in range(200)]
    frames += [(b"M", bytes([0xF0]) + bytes(rng.randrange(128) for _ in range(3000)) + bytes([0xF7]))]
    frames += [(b"W", b"a warning"), (b"M", b"")]
    stream = b"".join(frame(k, p) for k, p in frames)
    chunks = []
    pos = 0
    while pos < len(stream):  # cuts inside headers, inside payloads and on boundaries
        step = rng.choice([1, 2, 4, 5, 7, 8, 64, 1000])
        chunks.append(stream[pos : pos + step])
        pos += step
    collect = Collect()
    await _run(chunks, collect)
    assert collect.frames == frames
    assert collect.ended == [None]


async def test_many_frames_in_one_read() -> None:
    frames = [(b"M", bytes([0x90, n, 100])) for n in range(128)]
    collect = Collect()
    await _run([b"".join(frame(k, p) for k, p in frames)], collect)
    assert collect.frames == frames


async def test_a_handler_that_raises_ends_the_reading_once() -> None:
    collect = Collect()
    seen: list[bytes] = []

    def on_frame(kind: bytes, payload: bytes) -> None:
        seen.append(payload)
        if payload == b"bad":
            raise ValueError("handler bug")

    rfd, wfd = os.pipe()
    reader = FrameReader(rfd, on_frame, collect.on_end)
    reader.start(asyncio.get_running_loop())
    os.write(wfd, frame(b"M", b"ok") + frame(b"M", b"bad") + frame(b"M", b"never"))
    async with asyncio.timeout(5):
        await collect.done.wait()
    os.write(wfd, frame(b"M", b"after"))
    await asyncio.sleep(0.02)
    os.close(wfd)
    reader.close()
    assert seen == [b"ok", b"bad"]
    assert len(collect.ended) == 1 and isinstance(collect.ended[0], ValueError)


async def test_stop_inside_the_handler_delivers_nothing_more() -> None:
    collect = Collect()
    rfd, wfd = os.pipe()
    reader: FrameReader

    def on_frame(kind: bytes, payload: bytes) -> None:
        collect.on_frame(kind, payload)
        if kind == b"L":
            reader.stop()
            collect.done.set()

    reader = FrameReader(rfd, on_frame, collect.on_end)
    reader.start(asyncio.get_running_loop())
    os.write(wfd, frame(b"M", b"1") + frame(b"L", b"gone") + frame(b"M", b"2"))
    async with asyncio.timeout(5):
        await collect.done.wait()
    await asyncio.sleep(0.02)
    os.close(wfd)
    reader.close()
    assert collect.frames == [(b"M", b"1"), (b"L", b"gone")]
    assert collect.ended == []  # stopped, not ended


async def test_close_releases_the_fd() -> None:
    collect = Collect()
    rfd, wfd = os.pipe()
    reader = FrameReader(rfd, collect.on_frame, collect.on_end)
    reader.start(asyncio.get_running_loop())
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(OSError):
        os.fstat(rfd)
    os.close(wfd)
