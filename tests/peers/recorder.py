"""Event recorder for driver tests: runs ``driver.receive()`` in a task and keeps every event.

rec = Recorder(driver)
await rec.wait_for(lambda e: isinstance(e, TransportChanged))
tracks = track_state(rec.events)     # what the core's state would hold per track
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from bridge.devices.base import Device
from bridge.vocab import Inbound, TrackChanged, TracksReset


class Answers:
    """A command's ``done`` callback that keeps the answers (None or the error) in order."""

    def __init__(self) -> None:
        self.results: list[str | None] = []
        self.event = asyncio.Event()

    def __call__(self, error: str | None) -> None:
        self.results.append(error)
        self.event.set()

    async def next(self, limit: float = 5.0) -> str | None:
        async with asyncio.timeout(limit):
            while not self.results:
                self.event.clear()
                await self.event.wait()
        return self.results.pop(0)


class Recorder:
    """Runs ``driver.receive()`` in a task and keeps every event."""

    def __init__(self, driver: Device, wait: float = 10.0) -> None:
        self.wait = wait
        self.driver = driver
        self.events: list[Inbound] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for ev in self.driver.receive():
                self.events.append(ev)
                self._changed.set()
        except BaseException as exc:
            self.error = exc
            self._changed.set()
            raise

    async def wait_for(
        self, pred: Callable[[Inbound], bool], within: float | None = None, start: int = 0
    ) -> Any:
        async with asyncio.timeout(self.wait if within is None else within):
            i = start
            while True:
                while i < len(self.events):
                    if pred(self.events[i]):
                        return self.events[i]
                    i += 1
                if self.error is not None:
                    raise AssertionError(f"receive() failed: {self.error!r}")
                self._changed.clear()
                await self._changed.wait()

    def mark(self) -> int:
        return len(self.events)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


def track_state(events: list[Inbound]) -> dict[int, dict[str, Any]]:
    """Fold TracksReset/TrackChanged events into {track: {field: value}} (what the core does)."""
    state: dict[int, dict[str, Any]] = {}
    for ev in events:
        if isinstance(ev, TracksReset):
            state = {n: v for n, v in state.items() if n < ev.first}
        elif isinstance(ev, TrackChanged):
            t = state.setdefault(ev.track, {})
            for f in ("name", "arm", "mute", "solo", "fader"):
                if getattr(ev, f) is not None:
                    t[f] = getattr(ev, f)
    return state
