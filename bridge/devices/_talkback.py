"""What every talkback driver (X32, TotalMix, generic OSC, generic MIDI) shares.

A talkback driver carries out ``SetTalkback`` (role ``mixer`` or ``talkback``) and reports the
mixer's own state as ``TalkbackChanged`` events: the hub takes only those reports as the fact
(a cue starts and ends when the mixer confirms it). Drivers without feedback report what they
sent with ``assumed=True``, as MMC does.

:class:`TalkbackDevice` gives the drivers

* one bounded event queue (a backlog beyond :data:`MAX_EVENTS` is a lost link and a full
  resync, never a silently dropped fact) and a ``receive()`` loop with one deadline hook
  (:meth:`TalkbackDevice._tick`), so timers (subscription renewals, probes) need no task and
  no polling;
* the **answer deadline**: after a command to a device that gives feedback, the device must
  answer within ``answer_timeout`` or the link counts as lost (``DeviceLost``): the hub then
  fails the command at once with the device's status instead of waiting for a confirmation
  that cannot come;
* ``talkback_channels`` and ``talkback_max_on``, read by the hub (which channels the mixer has;
  after how many seconds a talkback left on is released).
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Protocol, TypeVar

from bridge.devices.base import DeviceContext, SyncDevice
from bridge.errors import DeviceLost
from bridge.vocab import Command, Event, Inbound, SetTalkback, TalkbackChanged

#: Events waiting for ``receive()`` beyond which the link counts as lost (and is resynced).
MAX_EVENTS = 10_000


def max_on_check(value: Any) -> str | None:
    return None if value == 0 or 1.0 <= value <= 86400 else "0 (no limit) or a number of seconds 1-86400"


def channels_check(value: Any) -> str | None:
    if not value:
        return 'a non-empty list of talk channels ("A", "B")'
    for ch in value:
        if ch not in ("A", "B"):
            return 'a list of talk channels "A" and/or "B"'
    if len(set(value)) != len(value):
        return "a list of distinct talk channels"
    return None


class TalkbackOptions(Protocol):
    """What every talkback driver's options have."""

    @property
    def max_on(self) -> float: ...
    @property
    def answer_timeout(self) -> float: ...
    @property
    def connect_timeout(self) -> float: ...


TO = TypeVar("TO", bound=TalkbackOptions)


class TalkbackDevice(SyncDevice[TO]):
    """Base of the talkback drivers (see the module docstring)."""

    handles: ClassVar[frozenset[type[Command]]] = frozenset({SetTalkback})
    feedback = "none"
    max_backoff: ClassVar[float] = 2.0
    #: Human name of the peer for messages ("X32 at 10.0.0.5:10023").
    peer: str = "the mixer"

    def __init__(self, name: str, options: TO, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        self._clock: Callable[[], float] = self.ctx.clock or time.monotonic
        self._events: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._flooded = False
        self._answer_due: float | None = None
        self._answer_for = ""
        self._closed = True
        #: last state the device reported per channel (None: not known yet)
        self.reported: dict[str, bool | None] = {}
        self._stats: dict[str, int] = {"rx": 0, "tx": 0, "bad": 0, "ignored": 0, "overflow": 0}

    # ------------------------------------------------------------------ read by the hub
    @property
    @abc.abstractmethod
    def talkback_channels(self) -> tuple[str, ...]:
        """The talk channels this device carries ("A", "B")."""

    @property
    def talkback_max_on(self) -> float:
        return float(self.options.max_on)

    # ------------------------------------------------------------------ events
    def _reset_events(self) -> None:
        self._events = deque()
        self._flooded = False
        self._answer_due = None
        self.reported = {ch: None for ch in self.talkback_channels}

    def _emit(self, event: Event) -> None:
        if len(self._events) >= MAX_EVENTS:
            self._flooded = True
            self._stats["overflow"] += 1
        else:
            self._events.append(event)
        self._wake.set()

    def _report(self, channel: str, on: bool, assumed: bool = False, always: bool = False) -> None:
        """The device says channel ``channel`` is ``on``: an event when it changed (or ``always``,
        after a resync: the hub's store drops what did not change)."""
        if always or self.reported.get(channel) != on:
            self.reported[channel] = on
            self._emit(TalkbackChanged(on, channel, assumed=assumed))

    def _poke(self) -> None:
        """Wake ``receive()`` so it recomputes its deadline."""
        self._wake.set()

    # ------------------------------------------------------------------ answer deadline
    def _expect_answer(self, what: str) -> None:
        """The device must answer within ``answer_timeout`` (any understood message counts)."""
        if self._answer_due is None:
            self._answer_due = self._clock() + float(self.options.answer_timeout)
            self._answer_for = what
            self._poke()

    def _answered(self) -> None:
        self._answer_due = None

    # ------------------------------------------------------------------ receive
    def _tick(self, now: float) -> float:
        """Timers of the driver: do what is due (renewals, probes; raise DeviceLost when the
        peer is gone) and return the seconds until the next thing is due."""
        return 3600.0

    async def receive(self) -> AsyncIterator[Inbound]:
        while True:
            if self._closed:
                raise DeviceLost(f"{self.peer}: link closed")
            if self._flooded:
                raise DeviceLost(f"{self.peer}: feedback flood ({MAX_EVENTS} events behind); resyncing")
            if self._events:
                yield self._events.popleft()
                continue
            now = self._clock()
            if self._answer_due is not None and now >= self._answer_due:
                raise DeviceLost(
                    f"{self.peer} did not answer {self._answer_for} within "
                    f"{float(self.options.answer_timeout):g} s"
                )
            wait = self._tick(now)
            if self._answer_due is not None:
                wait = min(wait, self._answer_due - now)
            self._wake.clear()
            if self._events or self._flooded or self._closed:
                continue
            try:
                async with asyncio.timeout(max(0.001, wait)):
                    await self._wake.wait()
            except TimeoutError:
                continue

    def stats(self) -> dict[str, int]:
        return dict(self._stats)
