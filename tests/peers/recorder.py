"""Event recorder for driver tests: runs ``driver.receive()`` in a task and keeps every event.

rec = Recorder(driver)
await rec.wait_for(lambda e: isinstance(e, TransportChanged))
tracks = track_state(rec.events)     # what the core's state would hold per track

And the hub's test rig (``HubRig``): a hub on the in-memory session log with a fake clock and a
fake timer, driven without an event loop: ``rig.ask(command)`` answers once the record is
flushed, ``rig.timer.advance(seconds)`` fires the confirmation and stuck-talkback timers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from bridge.devices.base import Device
from bridge.hub import Hub
from bridge.log.memory import MemoryLog
from bridge.mapping import StudioMap
from bridge.vocab import Command, Inbound, Outbound, Request, TrackChanged, TracksReset
from peers.fake_device import FakeDevice


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


class FakeClock:
    """The hub's clock: a test moves it (``clock.now += 2``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Handle:
    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeTimer:
    """The hub's timer (``timer=``): nothing fires until the test moves the clock with it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.handles: list[_Handle] = []

    def __call__(self, delay: float, fn: Callable[[], None]) -> _Handle:
        handle = _Handle(self.clock.now + delay, fn)
        self.handles.append(handle)
        return handle

    @property
    def armed(self) -> list[float]:
        """Delays from now of the timers that are still to fire."""
        return sorted(h.when - self.clock.now for h in self.handles if not h.cancelled)

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, firing every timer due on the way, in order."""
        end = self.clock.now + seconds
        while True:
            due = [h for h in self.handles if not h.cancelled and h.when <= end]
            if not due:
                break
            handle = min(due, key=lambda h: h.when)
            self.handles.remove(handle)
            self.clock.now = max(self.clock.now, handle.when)
            handle.fn()
        self.handles = [h for h in self.handles if not h.cancelled]
        self.clock.now = end


class DirectDevice(FakeDevice):
    """A FakeDevice with the hub's direct path (``send_nowait``): what the hub sends shows in
    ``sent`` at once, no writer task needed. ``refuse_direct`` makes the direct path raise."""

    refuse_direct = False

    def send_nowait(self, message: Outbound) -> bool:
        if self.refuse_direct:
            raise OSError("direct send refused")
        self.sent.append(message)
        return True


class HubRig:
    """A hub on a MemoryLog, a FakeClock and a FakeTimer; no event loop (``asyncio.run`` only
    for ``Hub.start``)."""

    def __init__(self, log: MemoryLog | None = None, *, confirm_timeout: float = 0.3, **kwargs: Any) -> None:
        self.log = log if log is not None else MemoryLog()
        self.clock = FakeClock()
        self.timer = FakeTimer(self.clock)
        self.hub = Hub(
            self.log, clock=self.clock, timer=self.timer, confirm_timeout=confirm_timeout, **kwargs
        )
        auto, self.log.auto_flush = self.log.auto_flush, True  # start() waits for its records
        try:
            asyncio.run(self.hub.start())
        finally:
            self.log.auto_flush = auto

    def add(
        self, device: FakeDevice, role: str | None = None, studio_map: StudioMap | None = None
    ) -> FakeDevice:
        """Add ``device`` and bring it up (as the supervisor does once it is connected)."""
        self.hub.add_device(device, role, studio_map)
        self.hub.device_up(device.name)
        return device

    def submit(self, command: Command, source: str = "tablet") -> Answers:
        answers = Answers()
        self.hub.submit(source, Request(command, answers))
        return answers

    def ask(self, command: Command, source: str = "tablet", flush: bool = True) -> str | None:
        """Submit ``command``, make its records durable (``flush``) and return its answer."""
        answers = self.submit(command, source)
        if flush:
            self.log.flush()
        assert len(answers.results) == 1, f"{command} answered {answers.results}"
        return answers.results[0]

    def queued(self, name: str) -> list[Outbound]:
        """What the hub queued for ``name``'s writer (taken out, as the writer would)."""
        return self.hub.slots[name].outbox.clear()

    def get(self, *keys: str) -> tuple[Any, ...]:
        return tuple(self.hub.store.get(k) for k in keys)

    def close(self) -> None:
        self.log.dispose()
