"""FakeDevice: in-memory queues standing in for a device, for unit tests of the core.

Never the only test of a driver: drivers are tested against real peers. Not a built-in kind:
in-process tests construct it directly; a daemon subprocess whose config says
``kind = "fake"`` is started with :func:`daemon_env` (``STUDIO_BRIDGE_DRIVERS``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bridge.devices import ENV_DRIVERS
from bridge.devices.base import Device, DeviceContext, FeedbackMode
from bridge.errors import DeviceLost
from bridge.vocab import Command, Inbound, Outbound


@dataclass(frozen=True)
class FakeOptions:
    feedback: str = "none"


class FakeDevice(Device[FakeOptions]):
    kind: ClassVar[str] = "fake"
    Options: ClassVar[type[FakeOptions]] = FakeOptions

    def __init__(
        self,
        name: str,
        options: FakeOptions | None = None,
        ctx: DeviceContext | None = None,
        *,
        handles: frozenset[type[Command]] = frozenset(),
        feedback: FeedbackMode = "none",
        echo: bool = False,
    ) -> None:
        super().__init__(name, options or FakeOptions(), ctx)
        self.handles = handles  # type: ignore[misc]
        self.feedback = feedback  # type: ignore[misc]
        self.echo = echo
        self.inbound: asyncio.Queue[Inbound | BaseException] = asyncio.Queue()
        self.sent: list[Outbound] = []
        self.opened = 0

    async def __aenter__(self) -> FakeDevice:
        self.opened += 1
        return self

    def report(self, item: Inbound) -> None:
        self.inbound.put_nowait(item)

    def lose(self, reason: str = "link lost") -> None:
        """Make ``receive`` raise DeviceLost, as a driver does when its peer vanishes."""
        self.inbound.put_nowait(DeviceLost(reason))

    async def receive(self) -> AsyncIterator[Inbound]:
        while True:
            item = await self.inbound.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def send(self, message: Outbound) -> None:
        self.sent.append(message)


def daemon_env() -> dict[str, str]:
    """Environment of a daemon subprocess that may use ``kind = "fake"`` in its config."""
    tests = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    return {ENV_DRIVERS: "fake=peers.fake_device:FakeDevice", "PYTHONPATH": path}
