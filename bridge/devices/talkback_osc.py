"""Talkback on any interface mixer or console reachable by OSC (``kind = "talkback_osc"``), and
the OSC core the TotalMix driver shares.

A device is described by its messages:

* ``address``: per talk channel, the address that engages / releases it
  (``{ A = "/talkback" }``); ``on`` / ``off`` are the values sent (``1``/``0``, ``1.0``/``0.0``,
  ``true``/``false`` or strings; the TOML type is the OSC type).
* ``feedback``: per channel, the address on which the device reports the state, with
  ``feedback_on`` / ``feedback_off`` (default: ``on`` / ``off``). Without feedback the state
  is **assumed** from what was sent (``talkback/assumed``, as MMC is) and nothing can be
  confirmed.
* ``query``: addresses sent without arguments (the OSC "get" convention) whose answers carry
  the feedback: at connect (the starting state; no answer within ``connect_timeout`` is
  DeviceUnavailable), after every command (for devices that do not echo a set), and after
  ``probe_interval`` seconds of silence (liveness).
* ``mode = "toggle"``: the device has one toggling message (``on`` flips it). The driver never
  toggles blind: it toggles only from a reported state, one toggle at a time, and decides the
  next one when the device has reported the last (a push-to-talk press released before the
  device answered is two toggles, each confirmed). Needs ``feedback`` and ``query``.

A device that gives feedback must answer a command within ``answer_timeout``, or the link
counts as lost (the hub fails the command at once; the supervisor reconnects and resyncs).
Feedback arrives on ``local_port``: 0 means the device answers to the sender's port; set it
when the device sends to a fixed port. Datagrams that are not OSC, or carry an unexpected
value, are counted (``bad``); other addresses are counted (``ignored``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, Self, TypeVar

from bridge.devices._osc import Address, OscArgs, UdpEndpoint, UdpPeerOptions, dispatch, encode
from bridge.devices._talkback import TalkbackDevice, TalkbackOptions, max_on_check
from bridge.devices.base import DeviceContext
from bridge.errors import DeviceLost, DeviceUnavailable
from bridge.options import OptionsError, in_range, port_check, positive
from bridge.vocab import Outbound, SetTalkback

log = logging.getLogger(__name__)

OscValue = bool | int | float | str


def _local_port_check(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else "0 (any) or a port 1-65535"


def _address_check(value: Any) -> str | None:
    if not value:
        return 'a table of talk channels and OSC addresses, e.g. { A = "/talkback" }'
    for ch, address in value.items():
        if ch not in ("A", "B"):
            return f'talk channels A and/or B as keys (got "{ch}")'
        if not address.startswith("/"):
            return f'OSC addresses starting with "/" (got "{address}")'
    return None


def _feedback_check(value: Any) -> str | None:
    return None if not value else _address_check(value)


def _query_check(value: Any) -> str | None:
    bad = [a for a in value if not a.startswith("/")]
    return f'OSC addresses starting with "/" (got "{bad[0]}")' if bad else None


def _probe_check(value: Any) -> str | None:
    return None if value == 0 or value >= 0.5 else "0 (no probing) or a number of seconds >= 0.5"


def same_value(reported: Any, expected: OscValue) -> bool:
    """An OSC argument equals a configured value (1 == 1.0; True only equals True)."""
    if isinstance(expected, bool) or isinstance(reported, bool):
        return reported is expected
    if isinstance(expected, int | float):
        return isinstance(reported, int | float) and float(reported) == float(expected)
    return bool(reported == expected)


@dataclass(frozen=True)
class OscTalkbackOptions:
    host: str
    port: int = field(metadata={"check": port_check})
    local_host: str = "0.0.0.0"
    #: Where the device sends feedback; 0: it answers to our source port.
    local_port: int = field(default=0, metadata={"check": _local_port_check})
    #: Talk channel -> OSC address that engages / releases it.
    address: dict[str, str] = field(
        default_factory=lambda: {"A": "/talkback"}, metadata={"check": _address_check}
    )
    on: OscValue = 1
    off: OscValue = 0
    #: Talk channel -> OSC address the device reports the state on ({} = no feedback: assumed).
    feedback: dict[str, str] = field(default_factory=dict, metadata={"check": _feedback_check})
    feedback_on: OscValue | None = None
    feedback_off: OscValue | None = None
    mode: Literal["set", "toggle"] = "set"
    #: Addresses sent without arguments to ask for the state (connect, after commands, probes).
    query: list[str] = field(default_factory=list, metadata={"check": _query_check})
    #: Seconds of silence before the query is sent as a liveness probe (0 = never).
    probe_interval: float = field(default=0.0, metadata={"check": _probe_check})
    answer_timeout: float = field(default=1.0, metadata={"check": in_range(0.05, 10)})
    connect_timeout: float = field(default=3.0, metadata={"check": positive})
    max_on: float = field(default=120.0, metadata={"check": max_on_check})


@dataclass(frozen=True)
class OscProfile:
    """What the core needs to know about a device's messages."""

    address: dict[str, str]
    on: OscValue
    off: OscValue
    feedback: dict[str, str]
    feedback_on: OscValue
    feedback_off: OscValue
    toggle: bool
    #: messages (address, args) that make the device report its state
    query: list[tuple[str, list[OscValue]]]
    #: send the query after every command (devices that do not echo a set)
    query_after_command: bool
    probe_interval: float


class OscTalkbackCoreOptions(TalkbackOptions, UdpPeerOptions, Protocol):
    """What the OSC talkback drivers' options have: the talkback ones and the UDP peer's."""


OO = TypeVar("OO", bound=OscTalkbackCoreOptions)


class OscTalkbackCore(TalkbackDevice[OO]):
    """Talkback over OSC from an :class:`OscProfile` (see the module docstring)."""

    what: ClassVar[str] = "OSC talkback device"

    def __init__(self, name: str, options: OO, ctx: DeviceContext | None, profile: OscProfile) -> None:
        super().__init__(name, options, ctx)
        self.profile = profile
        self._target: Address = (options.host, options.port)
        self.peer = f"{self.what} at {options.host}:{options.port}"
        self._endpoint: UdpEndpoint | None = None
        self._by_feedback = {address: ch for ch, address in profile.feedback.items()}
        self._want: dict[str, bool] = {}
        #: toggle mode: channel -> (when the toggle was sent, the state it should lead to)
        self._inflight: dict[str, tuple[float, bool]] = {}
        self._last_rx = 0.0
        self._probe_sent: float | None = None
        self._synced = asyncio.Event()
        self._stats.update({"probes": 0, "toggles": 0, "foreign": 0})

    @property
    def talkback_channels(self) -> tuple[str, ...]:
        return tuple(self.profile.address)

    @property
    def has_feedback(self) -> bool:
        return bool(self.profile.feedback)

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        o = self.options
        self._reset_events()
        self._want.clear()
        self._inflight.clear()
        self._probe_sent = None
        self._synced = asyncio.Event()
        self._endpoint = await UdpEndpoint.open(self._on_datagram, (o.local_host, o.local_port))
        self._closed = False
        try:
            await self._handshake()
        except BaseException:
            self._close()
            raise
        self._last_rx = self._clock()
        return self

    async def _handshake(self) -> None:
        p, o = self.profile, self.options
        if not p.query or not p.feedback:
            how = "no feedback: the state is assumed" if not p.feedback else "state unknown until reported"
            log.info("%s: %s (%s)", self.name, self.peer, how)
            return
        deadline = self._clock() + o.connect_timeout
        while not self._synced.is_set():
            left = deadline - self._clock()
            if left <= 0:
                asked = ", ".join(a for a, _ in p.query)
                raise DeviceUnavailable(
                    f"{self.peer} did not report the talkback state (asked {asked}) within "
                    f"{o.connect_timeout:g} s (is its OSC remote on, and its feedback port {o.local_port}?)"
                )
            self._send_query()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.5, left)):
                    await self._synced.wait()
        self._answer_due = None
        for ch in self.talkback_channels:
            on = self.reported.get(ch)
            if on is not None:
                self._report(ch, on, always=True)
        log.info("%s: connected to %s", self.name, self.peer)

    async def __aexit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._poke()
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    # ------------------------------------------------------------------ send
    def send_now(self, message: Outbound) -> None:
        if not isinstance(message, SetTalkback) or message.channel not in self.profile.address:
            self._stats["ignored"] += 1
            return
        if self._closed:
            raise DeviceLost(f"{self.peer}: link closed")
        ch, on = message.channel, message.on
        p = self.profile
        if p.toggle:
            self._want[ch] = on
            self._step(ch)
            return
        self._tx(p.address[ch], p.on if on else p.off)
        if not self.has_feedback:
            self._report(ch, on, assumed=True, always=True)
            return
        if p.query_after_command:
            self._send_query()
        self._expect_answer(p.address[ch])

    def _step(self, ch: str) -> None:
        """Toggle mode: move the device one toggle towards what is wanted, from its report."""
        want = self._want.get(ch)
        if want is None or ch in self._inflight:
            return  # nothing wanted, or a toggle is on its way: decide when it is reported
        known = self.reported.get(ch)
        if known is None:
            log.warning("%s: talk %s state not reported yet; not toggling blind", self.name, ch)
            self._want.pop(ch, None)
            return
        if known == want:
            del self._want[ch]
            self._report(ch, known, always=True)  # confirms a command for the state it is in
            return
        p = self.profile
        self._tx(p.address[ch], p.on)
        self._stats["toggles"] += 1
        self._inflight[ch] = (self._clock(), not known)
        if p.query_after_command:
            self._send_query()
        self._expect_answer(p.address[ch])

    def _send_query(self) -> None:
        for address, args in self.profile.query:
            self._tx(address, *args)

    def _tx(self, address: str, *args: Any) -> None:
        endpoint = self._endpoint
        if endpoint is None or endpoint.closed:
            raise DeviceLost(f"{self.peer}: socket closed")
        endpoint.sendto(encode(address, *args), self._target)
        self._stats["tx"] += 1

    # ------------------------------------------------------------------ timers
    def _tick(self, now: float) -> float:
        wait = 3600.0
        timeout = float(self.options.answer_timeout)
        for ch, (sent, _expect) in self._inflight.items():
            if now - sent > timeout:
                raise DeviceLost(f"{self.peer} did not report talk {ch} after a toggle within {timeout:g} s")
            wait = min(wait, sent + timeout - now + 0.001)
        interval = self.profile.probe_interval
        if interval > 0 and self.profile.query:
            if self._probe_sent is None and now - self._last_rx >= interval:
                self._probe_sent = now
                self._stats["probes"] += 1
                self._send_query()
                self._expect_answer(self.profile.query[0][0])
            if self._probe_sent is None:
                wait = min(wait, self._last_rx + interval - now)
        return wait

    # ------------------------------------------------------------------ receive
    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if addr[1] != self._target[1] and self.options.local_port == 0:
            self._stats["foreign"] += 1  # answers come from the device's port
            return
        ignored = self._stats["ignored"]
        understood = dispatch(data, self._handle, self._stats)
        if understood or self._stats["ignored"] > ignored:
            self._last_rx = self._clock()
            self._probe_sent = None
            self._answered()

    def _handle(self, address: str, args: OscArgs) -> bool:
        ch = self._by_feedback.get(address)
        if ch is None:
            return False
        value = args[0]
        p = self.profile
        if same_value(value, p.feedback_on):
            on = True
        elif same_value(value, p.feedback_off):
            on = False
        else:
            raise ValueError(f"unexpected talkback value {value!r} on {address}")
        pending = self._inflight.get(ch)
        if pending is not None and pending[1] == on:
            del self._inflight[ch]  # the toggle took effect (an older report does not count)
        if self._synced.is_set() or not p.query:
            self._report(ch, on)
            self._step(ch)
        else:
            self.reported[ch] = on
            if all(self.reported.get(c) is not None for c in self.profile.feedback):
                self._synced.set()
        return True


class OscTalkback(OscTalkbackCore[OscTalkbackOptions]):
    """A generic OSC talkback device (``kind = "talkback_osc"``)."""

    kind: ClassVar[str] = "talkback_osc"
    Options: ClassVar[type[OscTalkbackOptions]] = OscTalkbackOptions

    @classmethod
    def validate(cls, options: OscTalkbackOptions, config_dir: Path) -> None:
        extra = sorted(set(options.feedback) - set(options.address))
        if extra:
            raise OptionsError("feedback", f"channel {extra[0]} has a feedback address but no address")
        if options.mode == "toggle":
            missing = sorted(set(options.address) - set(options.feedback))
            if missing:
                raise OptionsError(
                    "feedback",
                    f"mode toggle needs a feedback address for channel {missing[0]} (never toggle blind)",
                )
            if not options.query:
                raise OptionsError(
                    "query", "mode toggle needs a query that makes the device report its state"
                )
        if options.query and not options.feedback:
            raise OptionsError("query", "a query needs feedback addresses to read the answers from")
        if options.probe_interval and not options.query:
            raise OptionsError("probe_interval", "probing needs a query")

    def __init__(self, name: str, options: OscTalkbackOptions, ctx: DeviceContext | None = None) -> None:
        o = options
        profile = OscProfile(
            address=dict(o.address),
            on=o.on,
            off=o.off,
            feedback=dict(o.feedback),
            feedback_on=o.on if o.feedback_on is None else o.feedback_on,
            feedback_off=o.off if o.feedback_off is None else o.feedback_off,
            toggle=o.mode == "toggle",
            query=[(a, []) for a in o.query],
            query_after_command=bool(o.query),
            probe_interval=o.probe_interval,
        )
        super().__init__(name, options, ctx, profile)
