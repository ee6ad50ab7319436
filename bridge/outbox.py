"""Per-device outbox: discrete messages in strict FIFO order, continuous ones coalesced.

* Discrete messages (buttons, transport, arm, markers, LED states, log entries) are never
  dropped, merged or reordered.
* Continuous messages (fader positions, playhead) are kept per coalescing key, latest
  value wins, and are released at most once per ``min_interval`` seconds.

``take(now)`` is pure bookkeeping (unit-testable without an event loop); ``get()`` is the
async wrapper the supervisor's writer task awaits. No timer runs while the outbox is idle.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable

from bridge.vocab import Outbound, coalesce_key, is_continuous


class Outbox:
    def __init__(self, min_interval: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._discrete: deque[Outbound] = deque()
        self._continuous: dict[Hashable, Outbound] = {}
        self._last_continuous = float("-inf")
        self._wakeup = asyncio.Event()
        self.coalesced = 0  # continuous messages replaced before they were sent

    def __len__(self) -> int:
        return len(self._discrete) + len(self._continuous)

    def put(self, message: Outbound) -> None:
        if is_continuous(message):
            key = coalesce_key(message)
            if key in self._continuous:
                self.coalesced += 1
            self._continuous[key] = message
        else:
            self._discrete.append(message)
        self._wakeup.set()

    def send_direct(self, message: Outbound, now: float, send: Callable[[Outbound], bool]) -> bool:
        """Send ``message`` at once with ``send`` (the driver's synchronous fast path, which
        returns whether it sent) when it may skip the queue; True if it was sent.

        A discrete message may skip the queue when no discrete message waits (discrete order is
        what must hold; held continuous values are sent after discrete ones anyway). A
        continuous one may when nothing waits and its pacing interval has passed; sending it
        restarts that interval."""
        if self._discrete:
            return False
        if not is_continuous(message):
            return send(message)
        if self._continuous or now - self._last_continuous < self.min_interval:
            return False
        if send(message):
            self._last_continuous = now
            return True
        return False

    def clear(self) -> list[Outbound]:
        """Drop everything queued; return the discrete messages that were never sent."""
        dropped = list(self._discrete)
        self._discrete.clear()
        self._continuous.clear()
        return dropped

    def take(self, now: float | None = None) -> tuple[list[Outbound], float | None]:
        """Messages due now, and the seconds until held continuous messages are due
        (None when nothing is held back)."""
        if now is None:
            now = self._clock()
        out: list[Outbound] = list(self._discrete)
        self._discrete.clear()
        wait: float | None = None
        if self._continuous:
            elapsed = now - self._last_continuous
            if elapsed >= self.min_interval:
                out.extend(self._continuous.values())
                self._continuous.clear()
                self._last_continuous = now
            else:
                wait = self.min_interval - elapsed
        return out, wait

    async def get(self) -> list[Outbound]:
        """Wait until at least one message is due and return everything due."""
        while True:
            self._wakeup.clear()
            out, wait = self.take()
            if out:
                return out
            if wait is None:
                await self._wakeup.wait()
            else:  # a timer handle, not wait_for (which costs a task per wait)
                timer = asyncio.get_running_loop().call_later(wait, self._wakeup.set)
                try:
                    await self._wakeup.wait()
                finally:
                    timer.cancel()
