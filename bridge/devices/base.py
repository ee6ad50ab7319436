"""The one interface every device driver implements.

A driver is built as ``Driver(name, options, ctx)``; ``options`` is an instance of the
driver's nested frozen ``Options`` dataclass, validated from the device's config table
by :func:`bridge.options.parse_options` (field types are checked; a field may carry
``metadata={"check": fn}`` returning an error text or None).

Lifecycle (owned by :mod:`bridge.supervisor`)::

    async with driver:                 # open ports, handshake, learn the starting state
        reader: async for m in driver.receive(): ...   # Inbound -> hub
        writer: await driver.send(message)             # Outbound from the device's outbox

``__aenter__`` raises DeviceUnavailable when the device is not there (the supervisor
retries with backoff); ``receive`` raises DeviceLost when the link drops; ``send``
raises DeviceError. ``__aexit__`` never raises.

Feedback modes (class attribute ``feedback``):

* ``"none"``: the device never gets feedback (DAWs, mixers: they are the source of facts).
* ``"state"``: the device gets every changed studio-state key as ``Feedback(key, value)``
  and a full dump after each (re)connect. Used by drivers that render the state
  themselves (OSC API, Mackie, MQTT).
* ``"mapped"``: the device gets ``Feedback(control, value)`` computed by the feedback
  engine from its studio mapping (generic MIDI controllers, tablet layouts).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar

from bridge.vocab import Command, Inbound, Outbound, Value

FeedbackMode = Literal["none", "state", "mapped"]

#: A driver's options dataclass: ``class Ardour(Device[ArdourOptions])`` makes every
#: ``self.options.x`` checked by mypy.
OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What the core gives a driver besides its options."""

    #: Directory of the config file (relative paths in options resolve against it).
    config_dir: Path = field(default_factory=Path.cwd)
    #: The bridge's data directory (session log etc.).
    data_dir: Path = field(default_factory=Path.cwd)
    #: Monotonic clock in seconds (injectable for tests).
    clock: Callable[[], float] | None = None
    #: Read-only view of the studio state: key -> value (None if unknown).
    state: Callable[[str], Value] | None = None
    #: The room name from ``[bridge] room`` (MQTT topic roots, client ids).
    room: str = "studio"
    #: Which device has which role now (role -> device name), e.g. for a console's health panel.
    roles: Callable[[], dict[str, str]] | None = None
    #: Set once the daemon is ready (OSC API bound, "ready" logged). Work that is not needed
    #: for readiness (the web console's ~120 ms aiohttp import) may wait for it, so it does not
    #: compete with start-up for the GIL.
    ready: asyncio.Event | None = None


class Device(abc.ABC, Generic[OptionsT]):
    """Base class of all device drivers, generic over its ``Options`` dataclass."""

    #: Registry key, e.g. "ardour", "mackie".
    kind: ClassVar[str]
    #: Commands this driver can carry out (empty for pure surfaces).
    handles: ClassVar[frozenset[type[Command]]] = frozenset()
    #: See the module docstring.
    feedback: ClassVar[FeedbackMode] = "none"
    #: The DAW reports every track it has (so a command for another track number fails at once
    #: instead of waiting for a confirmation that cannot come).
    reports_all_tracks: ClassVar[bool] = False
    #: Minimum seconds between two sends of coalesced (continuous) messages.
    min_interval: ClassVar[float] = 0.0
    #: Longest wait between reconnect attempts (backoff starts at 0.25 s and doubles).
    #: Hot-pluggable devices (MIDI) keep it short so a replugged device is back within 1 s.
    max_backoff: ClassVar[float] = 5.0
    #: Whether the device gets each durable session-log record as a LogEntry.
    wants_log: ClassVar[bool] = False
    #: The driver's options dataclass (frozen); subclasses set it to the class they are generic
    #: over (``class X(Device[XOptions]): Options = XOptions``).
    Options: ClassVar[type[Any]]

    @classmethod
    def validate(cls, options: Any, config_dir: Path) -> None:
        """Check what the options refer to (profile files...) at config load, so that
        ``studio-bridge check`` finds it; raise ConfigError / MappingError."""
        return None

    def __init__(self, name: str, options: OptionsT, ctx: DeviceContext | None = None) -> None:
        self.name = name
        self.options: OptionsT = options
        self.ctx = ctx or DeviceContext()
        #: While the device is connected and pumped, the supervisor sets this to a function that
        #: hands one item straight to the hub (``Hub.submit``), in the caller's task. A driver
        #: that learns a fact synchronously (the internal transport) may call it instead of
        #: yielding from ``receive`` and saves a loop turn per fact, as long as nothing it
        #: yielded earlier is still waiting (order must hold). None otherwise.
        self.report_now: Callable[[Inbound], None] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    @abc.abstractmethod
    def receive(self) -> AsyncIterator[Inbound]:
        """Yield what the device reports, forever; raise DeviceLost when the link drops."""

    @abc.abstractmethod
    async def send(self, message: Outbound) -> None:
        """Encode and write one message; raise DeviceError on failure."""

    def send_nowait(self, message: Outbound) -> bool:
        """Fast path for drivers whose ``send`` never waits (UDP, MIDI, in-process): send now
        and return True. The hub calls it only when the device's outbox is empty (so order is
        kept) and pacing allows; an exception makes the hub queue the message for ``send``
        instead, which then reports the failure. The default returns False: always queue."""
        return False

    async def blackout(self) -> None:
        """Switch the device's lights off (called before ``__aexit__`` on shutdown)."""

    def retry_delay(self, attempt: int) -> float:
        """Seconds the supervisor waits before the next connect attempt; ``attempt`` counts the
        failed attempts since the device was last up (0: the first retry). Default: 0.25 s,
        doubling up to ``max_backoff``. A driver may override it (MQTT adds jitter)."""
        return min(0.25 * 2.0 ** min(attempt, 16), max(0.25, self.max_backoff))

    def outbox_interval(self) -> float:
        """Pacing of coalesced messages for this instance (defaults to ``min_interval``)."""
        return self.min_interval

    def stats(self) -> dict[str, int]:
        """Counters (messages in/out, dropped bad input, ...) for logs and benchmarks."""
        return {}


class SyncDevice(Device[OptionsT]):
    """A driver whose sending never waits (UDP ``sendto``, rtmidi, in-process state): it
    implements ``send_now`` and gets ``send`` and the hub's direct path (``send_nowait``)."""

    @abc.abstractmethod
    def send_now(self, message: Outbound) -> None:
        """Encode and write one message; raise DeviceError on failure."""

    async def send(self, message: Outbound) -> None:
        self.send_now(message)

    def send_nowait(self, message: Outbound) -> bool:
        self.send_now(message)
        return True
