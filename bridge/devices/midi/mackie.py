"""Mackie Control surface (MCU, Logic Control, X-Touch in MC mode, XT extenders).

The desk surface renders the studio state (``feedback = "state"``) and turns buttons and
faders into absolute commands computed from its local mirror of the state. Three layers:

* this driver: the MIDI link (:class:`bridge.devices.midi.link.MidiLink`), the handshake
  (device query; Logic Control's challenge), a reboot of the unit (it announces itself
  again: everything is replayed), blackout at shutdown;
* :mod:`bridge.devices.midi.mackie_render` (:class:`MackieDesk`): state -> LEDs, motor
  faders, LCD, displays, banks, what is shown while the DAW is away;
* :mod:`bridge.devices.midi.mackie_keys` (:class:`DeskKeys`): buttons, faders, V-Pots ->
  commands, the key bindings (``keys``), the echo guard.

Both desk layers are pure (no I/O) and tested without JACK; the bytes are
:mod:`bridge.devices.midi.mackie_codec`.

Extenders (XT): configure one ``[devices.*]`` per unit with ``extender = true`` and
``strip_offset = 8`` (16, ...); each unit banks on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from bridge.devices.base import DeviceContext, SyncDevice
from bridge.devices.midi import mackie_codec as mc
from bridge.devices.midi.link import MidiLink
from bridge.devices.midi.mackie_keys import DeskKeys, DeskOptions
from bridge.devices.midi.mackie_render import MackieDesk
from bridge.devices.midi.ports import check_pattern
from bridge.errors import DeviceLost, DeviceUnavailable
from bridge.options import positive
from bridge.vocab import Feedback, Inbound, Outbound

log = logging.getLogger(__name__)


def _check_pattern(value: Any) -> str | None:
    return check_pattern(value)


@dataclass(frozen=True)
class MackieOptions(DeskOptions):
    #: Port name patterns (substring, or ``re:`` regex); ``output`` defaults to ``input``.
    input: str = field(default="re:x-touch|mcu|mackie", metadata={"check": _check_pattern})
    output: str | None = field(default=None, metadata={"check": _check_pattern})
    api: Literal["jack", "alsa", "auto"] = "auto"
    #: JACK/ALSA client name of the bridge's ports (default ``bridge-<device name>``).
    client_name: str = ""
    handshake_timeout: float = field(default=0.5, metadata={"check": positive})


class MackieSurface(SyncDevice[MackieOptions]):
    kind: ClassVar[str] = "mackie"
    feedback: ClassVar[Literal["state"]] = "state"
    min_interval: ClassVar[float] = 0.02
    max_backoff: ClassVar[float] = 0.5

    Options: ClassVar[type[MackieOptions]] = MackieOptions

    def __init__(self, name: str, options: MackieOptions, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        clock = self.ctx.clock or time.monotonic
        #: what the desk shows (state -> bytes) and what its keys do (bytes -> commands)
        self.desk = MackieDesk(name, options, self._out, clock=clock, state=self.ctx.state)
        self.keys = DeskKeys(self.desk)
        self._link: MidiLink | None = None
        self._gen: AsyncIterator[list[bytes]] | None = None
        self._next: asyncio.Future[list[bytes]] | None = None
        self._pending: list[bytes] = []

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> MackieSurface:
        link = self.make_link()
        await link.open()
        self._link = link
        self._gen = link.messages()
        self._next = None
        self._pending = []
        self.desk.attach()
        self.keys.attach()
        try:
            await self._handshake()
            self.resync()
        except BaseException:
            await self._aclose()
            raise
        return self

    def make_link(self) -> MidiLink:
        """The MIDI link of one connection (benchmarks override it with a port-less link)."""
        o = self.options
        return MidiLink(o.client_name or f"bridge-{self.name}", o.input, o.output or o.input, o.api)

    async def __aexit__(self, *exc: object) -> None:
        await self._aclose()

    async def _aclose(self) -> None:
        # the read left pending by a cancelled receive() (or the handshake) goes first: closing
        # the link would end it with DeviceLost('closed') that nobody retrieves (asyncio then
        # logs "Task exception was never retrieved" at ERROR on every clean stop)
        self._cancel_read()
        if self._link is not None:
            await self._link.aclose()  # waits for the helper process to close the ports
        self._close()

    def _cancel_read(self) -> None:
        read, self._next = self._next, None
        if read is None:
            return
        if read.done():
            if not read.cancelled():
                read.exception()  # retrieved: the link is being closed, its end is no news
        else:
            read.cancel()

    def _close(self) -> None:
        self.desk.detach()
        self._cancel_read()
        self._gen = None
        if self._link is not None:
            self._link.close()
            self._link = None

    async def _read(self, wait: float | None) -> list[bytes] | None:
        """Next batch from the link, or None after ``wait`` seconds (the read stays pending)."""
        if self._gen is None:
            raise DeviceLost("Mackie link is closed")
        if self._next is None:
            self._next = asyncio.ensure_future(anext(self._gen))
        done, _ = await asyncio.wait({self._next}, timeout=wait)
        if not done:
            return None
        fut, self._next = self._next, None
        return fut.result()

    async def _handshake(self) -> None:
        o = self.options
        self.desk.emit(mc.device_query(self.desk.model))
        logic = o.model == "logic"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + o.handshake_timeout
        while True:
            left = deadline - loop.time()
            batch = await self._read(max(0.0, left)) if left > 0 else None
            if batch is None:
                if logic:
                    raise DeviceUnavailable(f"Logic Control on {o.input!r} did not answer the device query")
                log.info("%s: no answer to the device query; assuming an MC-mode surface", self.name)
                return
            done = False
            for msg in batch:
                sx = mc.parse_sysex(msg) if msg[0] == 0xF0 else None
                if sx is None:
                    self._pending.append(msg)
                    continue
                if self.keys.host_sysex(sx):
                    continue
                if sx.command == mc.SX_HOST_QUERY and logic:
                    self.desk.emit(
                        mc.host_connection_reply(self.desk.model, sx.payload[:7], sx.payload[7:11])
                    )
                elif (
                    sx.command in (mc.SX_HOST_QUERY, mc.SX_DEVICE_READY) and not logic
                ) or sx.command == mc.SX_HOST_CONFIRM:
                    done = True
                elif sx.command == mc.SX_HOST_ERROR:
                    raise DeviceUnavailable(f"{o.model} on {o.input!r} rejected the host connection reply")
            if done:
                log.info("%s: Mackie handshake done (model %#x)", self.name, self.desk.model)
                return

    def resync(self) -> None:
        """Forget what the surface shows and send the full current state."""
        self.desk.resync()

    async def blackout(self) -> None:
        if self._link is not None:
            self.desk.blackout()

    def stats(self) -> dict[str, int]:
        out = dict(self.desk.stats)
        if self._link is not None:
            link = self._link.stats()
            out["dropped"] = link["dropped"]
            out["received"] = link["received"]
        return out

    # ------------------------------------------------------------------ output

    def _out(self, data: bytes) -> None:
        if self._link is None:
            raise DeviceLost("Mackie link is closed")
        self._link.send(data)

    def send_now(self, message: Outbound) -> None:
        if isinstance(message, Feedback):
            self.desk.show(message.control, message.value)

    # ------------------------------------------------------------------ input

    async def receive(self) -> AsyncIterator[Inbound]:
        if self._pending:
            pending, self._pending = self._pending, []
            for item in self.keys.handle(pending):
                yield item
        while True:
            batch = await self._read(None)
            if batch is None:  # pragma: no cover - no timeout given
                continue
            for item in self.keys.handle(batch):
                yield item
