"""Behringer X32 / Midas M32 talkback over OSC (UDP port 10023; protocols.md §6.1).

* Engage / release: ``/-stat/talk/A|B ,i 1|0``. The console does not echo a set to the client
  that sent it (it updates only the *other* ``/xremote`` clients; P. Maillot's X32 emulator,
  ``X32.c``: "no need for sending to local client"), so every set is followed by a get (the
  address without arguments) and the console's answer is the confirmation. Nothing counts as
  engaged until the console reports it.
* ``/xremote`` subscribes this client to every change on the console for ~10 s, including TALK
  pressed on the console surface (reported as a cue whose source is ``console``). The driver
  renews it every ``renew_interval`` seconds (default 4 s: a lost renewal still leaves the
  subscription alive), together with a ``/status`` probe: no answer within ``answer_timeout``
  is a lost console (``DeviceLost``; the supervisor reconnects and resyncs). A command the
  console does not answer within ``answer_timeout`` is a lost console too.
* Connect: ``/info`` until answered (``connect_timeout``), ``/xremote``, then gets of
  ``/-stat/talk/<ch>`` and the talkback configuration (``/config/talk/enable``, ``source``,
  ``/config/talk/<ch>/level|dim|latch|destmap``, logged; the destmap bit meaning is
  **UNCONFIRMED**, protocols.md §11.6, so it is logged as a number). The full state is
  reported after every (re)connect.
* Clean stop: talk channels the bridge engaged are released (``blackout``) and the
  subscription is dropped (``/unsubscribe``; the X32 serves at most 4 ``/xremote`` clients,
  a community source: **UNCONFIRMED**, §11.15).
* Values: the talk states and OFF/ON config values are OSC ints (``,i``), as the emulator
  sends enums; levels are floats.

Datagrams from any other address are ignored; malformed ones are counted (``bad``), unknown
addresses (the console reports every fader move to a subscriber) are counted (``ignored``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from bridge.devices._osc import Address, OscArgs, UdpEndpoint, dispatch, encode
from bridge.devices._talkback import TalkbackDevice, channels_check, max_on_check
from bridge.devices.base import DeviceContext
from bridge.errors import DeviceError, DeviceLost, DeviceUnavailable
from bridge.options import in_range, port_check, positive
from bridge.vocab import Outbound, SetTalkback

log = logging.getLogger(__name__)

CONFIG_KEYS = ("level", "dim", "latch", "destmap")
GLOBAL_CONFIG = ("/config/talk/enable", "/config/talk/source")


def _renew_check(value: Any) -> str | None:
    if 0.5 <= value <= 9.0:
        return None
    return "a number of seconds 0.5-9 (the console drops /xremote after ~10 s)"


def _onoff(args: OscArgs) -> bool:
    v = args[0]
    if isinstance(v, bool) or not isinstance(v, int | float) or v not in (0, 1):
        raise ValueError(f"expected 0 or 1, got {v!r}")
    return v == 1


@dataclass(frozen=True)
class X32Options:
    #: The console's address (X32 / M32: Setup > Network).
    host: str
    port: int = field(default=10023, metadata={"check": port_check})
    #: Local address to send from; the console answers to the sender's address and port.
    local_host: str = "0.0.0.0"
    local_port: int = field(default=0, metadata={"check": lambda v: None if 0 <= v <= 65535 else "0-65535"})
    #: Talk channels to use: A (the artist) and B (e.g. the live room).
    channels: list[str] = field(default_factory=lambda: ["A", "B"], metadata={"check": channels_check})
    #: Seconds between /xremote renewals (and /status probes).
    renew_interval: float = field(default=4.0, metadata={"check": _renew_check})
    #: Seconds the console has to answer a probe or a command before it counts as lost.
    answer_timeout: float = field(default=1.0, metadata={"check": in_range(0.05, 10)})
    connect_timeout: float = field(default=3.0, metadata={"check": positive})
    #: A talk channel on longer than this is released (and the release logged); 0 = no limit.
    max_on: float = field(default=120.0, metadata={"check": max_on_check})


class X32Talkback(TalkbackDevice[X32Options]):
    """X32 / M32 talk A and B (see the module docstring)."""

    kind: ClassVar[str] = "x32"
    Options: ClassVar[type[X32Options]] = X32Options

    def __init__(self, name: str, options: X32Options, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        self._target: Address = (options.host, options.port)
        self.peer = f"X32 at {options.host}:{options.port}"
        self._endpoint: UdpEndpoint | None = None
        self._syncing = True
        self._next_renew = 0.0
        self._got_info = asyncio.Event()
        self._synced = asyncio.Event()
        self._ours: set[str] = set()
        #: console identity from /info: version, name, model, console version
        self.info: list[str] = []
        #: talkback configuration as the console reported it (address -> value)
        self.config: dict[str, Any] = {}
        self._stats.update({"renewals": 0, "foreign": 0, "probes": 0})

    @property
    def talkback_channels(self) -> tuple[str, ...]:
        return tuple(self.options.channels)

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        o = self.options
        self._reset_events()
        self._syncing = True
        self._got_info = asyncio.Event()
        self._synced = asyncio.Event()
        self._ours.clear()
        self.config = {}
        self._endpoint = await UdpEndpoint.open(self._on_datagram, (o.local_host, o.local_port))
        self._closed = False
        try:
            await self._handshake()
        except BaseException:
            self._close()
            raise
        return self

    async def _handshake(self) -> None:
        o = self.options
        deadline = self._clock() + o.connect_timeout
        await self._until(self._got_info, deadline, lambda: self._tx("/info"), "/info")
        self._tx("/xremote")
        self._stats["renewals"] += 1

        def ask() -> None:
            # the configuration first: the console answers in order, so it is in when the
            # talk states are (a firmware that lacks a config address does not block the sync)
            for address in self._config_addresses():
                if address not in self.config:
                    self._tx(address)
            for ch in o.channels:
                if self.reported.get(ch) is None:
                    self._tx(f"/-stat/talk/{ch}")

        await self._until(self._synced, deadline, ask, "/-stat/talk")
        self._syncing = False
        self._answer_due = None
        self._next_renew = self._clock() + o.renew_interval
        for ch in o.channels:
            on = self.reported.get(ch)
            assert on is not None
            self._report(ch, on, always=True)
        name = self.info[1] if len(self.info) > 1 else "?"
        model = self.info[2] if len(self.info) > 2 else "?"
        log.info(
            "%s: connected to %s %r (%s); %s", self.name, model, name, self.peer, self._describe_config()
        )

    async def _until(self, flag: asyncio.Event, deadline: float, ask: Any, what: str) -> None:
        while not flag.is_set():
            left = deadline - self._clock()
            if left <= 0:
                raise DeviceUnavailable(
                    f"{self.peer} did not answer {what} within {self.options.connect_timeout:g} s "
                    "(is the console on the network, and the address right?)"
                )
            ask()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.5, left)):
                    await flag.wait()

    def _config_addresses(self) -> list[str]:
        out = list(GLOBAL_CONFIG)
        for ch in self.options.channels:
            out += [f"/config/talk/{ch}/{k}" for k in CONFIG_KEYS]
        return out

    def _describe_config(self) -> str:
        c = self.config
        onoff: dict[Any, str] = {0: "OFF", 1: "ON"}
        parts = [
            f"talkback enable {onoff.get(c.get('/config/talk/enable'), '?')}",
            f"source {({0: 'INT', 1: 'EXT'}).get(c.get('/config/talk/source', -1), '?')}",
        ]
        for ch in self.options.channels:
            p = f"/config/talk/{ch}/"
            level = c.get(p + "level")
            parts.append(
                f"talk {ch}: level {level if level is None else round(float(level), 3)}, "
                f"dim {onoff.get(c.get(p + 'dim'), '?')}, latch {onoff.get(c.get(p + 'latch'), '?')}, "
                f"destmap {c.get(p + 'destmap')}"
            )
        return "; ".join(parts)

    async def __aexit__(self, *exc: object) -> None:
        if self._endpoint is not None and not self._endpoint.closed:
            with contextlib.suppress(DeviceError, OSError):
                self._tx("/unsubscribe")
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._poke()
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    async def blackout(self) -> None:
        """Release the talk channels the bridge engaged (never leave the artist listening to
        the control room because the bridge stopped)."""
        for ch in sorted(self._ours):
            if self.reported.get(ch):
                log.info("%s: releasing talk %s on shutdown", self.name, ch)
                self._tx(f"/-stat/talk/{ch}", 0)
        self._ours.clear()

    # ------------------------------------------------------------------ send
    def send_now(self, message: Outbound) -> None:
        if not isinstance(message, SetTalkback):
            self._stats["ignored"] += 1
            return
        ch = message.channel
        if ch not in self.options.channels:
            have = ", ".join(self.options.channels)
            raise DeviceError(f"{self.name}: no talk channel {ch} (configured: {have})")
        if self._closed:
            raise DeviceLost(f"{self.peer}: link closed")
        address = f"/-stat/talk/{ch}"
        self._tx(address, 1 if message.on else 0)
        self._tx(address)  # the console does not echo a set to its sender: ask
        if message.on:
            self._ours.add(ch)
        else:
            self._ours.discard(ch)
        self._expect_answer(address)

    def _tx(self, address: str, *args: Any) -> None:
        endpoint = self._endpoint
        if endpoint is None or endpoint.closed:
            raise DeviceLost(f"{self.peer}: socket closed")
        endpoint.sendto(encode(address, *args), self._target)
        self._stats["tx"] += 1

    # ------------------------------------------------------------------ timers
    def _tick(self, now: float) -> float:
        if now >= self._next_renew:
            self._tx("/xremote")
            self._tx("/status")
            self._stats["renewals"] += 1
            self._stats["probes"] += 1
            self._expect_answer("/status")
            self._next_renew = now + self.options.renew_interval
        return self._next_renew - now

    # ------------------------------------------------------------------ receive
    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if addr[1] != self._target[1]:  # not from the console's port (10023)
            self._stats["foreign"] += 1
            return
        ignored = self._stats["ignored"]
        understood = dispatch(data, self._handle, self._stats)
        if understood or self._stats["ignored"] > ignored:
            self._answered()  # any well-formed message: the console is there

    def _handle(self, address: str, args: OscArgs) -> bool:
        if address.startswith("/-stat/talk/"):
            ch = address[len("/-stat/talk/") :]
            if ch not in self.options.channels:
                return False
            on = _onoff(args)
            if self._syncing:
                self.reported[ch] = on
                self._check_synced()
            else:
                self._report(ch, on)
                if not on:
                    self._ours.discard(ch)
            return True
        if address.startswith("/config/talk/"):
            if address not in self._config_addresses():
                return False
            value = args[0]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"bad value for {address}: {value!r}")
            old = self.config.get(address)
            self.config[address] = value
            if not self._syncing and old != value:
                log.info("%s: the console changed %s to %r", self.name, address, value)
            return True
        if address in ("/info", "/xinfo"):
            if address == "/info":
                self.info = [str(a) for a in args]
            self._got_info.set()
            return True
        return address == "/status"

    def _check_synced(self) -> None:
        if all(self.reported.get(ch) is not None for ch in self.options.channels):
            self._synced.set()
