"""The bridge's own OSC control API over UDP: tablets, scripts and layouts talk to this.

Commands: the verbs of the command registry (``bridge/commands.py``), at ``/`` + the verb
name with dots as slashes (``/take/circle``, ``/track/<n>/arm``, ``/track/name/arm <name>``),
plus ``<address>/toggle`` for verbs with a toggle form (resolved against the state this API
mirrors); README's table is generated from the registry. Arguments are positional in the
verb's schema order; values 1/0 may be int, float, bool or "on"/"off". The API's own
addresses: ``/ping`` (answered ``/pong``), ``/state`` and ``/subscribe`` (the whole state is
sent to the sender), ``/unsubscribe``, ``/stats`` (``/stats <name> <value> ...``).

Trigger verbs (``/transport/play``, ``/take/mark``, ``/take/circle``, ...) take a button value
as their only argument, as TouchOSC and Open Stage Control buttons send it: a float (or T/F)
>= 0.5 fires, a release (< 0.5) is answered ``/ok`` and does nothing. Take numbers are ints
(``/take/circle 3``); a float is never text (``/note f 1.0`` is refused).

Every command is answered to its sender: ``/ok <address>`` once it has taken effect
(for anything logged: once durable), or ``/error <address> <reason>``.

Feedback (to every client heard from within ``client_ttl`` seconds and to the configured
``clients``) uses the command addresses where one exists, so a TouchOSC button on
``/transport/record`` lights up by itself: ``/transport/play i``, ``/transport/stop i``,
``/transport/record i``, ``/transport/position f`` (at most ``position_rate``/s) and
``/transport/time s``, ``/track/<n>/arm|mute|solo i``, ``/track/<n>/name s``,
``/track/<n>/fader f``, ``/song s``, ``/take i`` (last take), ``/take/next i``,
``/take/label s``, ``/take/selected i``, ``/take/selected/circled i``,
``/take/selected/false_start i``, ``/take/selected/label s``, ``/take/elapsed f``,
``/songs s`` (a JSON array), ``/talkback i``, ``/session s``, ``/device/<name>/status s``.

Bad input (malformed packets, wrong argument types, unknown addresses, clients outside
the allowlist) is counted, logged at a limited rate, and dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge import commands
from bridge import state as S
from bridge.devices._osc import Address, OscArgs, OscDecodeError, UdpEndpoint, decode, encode
from bridge.devices.base import DeviceContext, FeedbackMode, SyncDevice
from bridge.errors import ConfigError
from bridge.options import port_check, positive
from bridge.vocab import (
    Command,
    Feedback,
    Inbound,
    Outbound,
    Request,
    Value,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 9123
PRIVATE_NETWORKS = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
)


def _check_networks(value: Any) -> str | None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f'IP networks such as "192.168.1.0/24" ("{item}" is not one)'
    return None


def _check_clients(value: Any) -> str | None:
    for item in value:
        try:
            _parse_hostport(item)
        except ValueError:
            return f'"host:port" strings ("{item}" is not one)'
    return None


def _check_reply_ports(value: Any) -> str | None:
    for host, port in value.items():
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return f'a table of IP address = port ("{host}" is not an IP address)'
        if port_check(port):
            return f"ports 1-65535 (got {port} for {host})"
    return None


def _parse_hostport(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not (1 <= int(port) <= 65535):
        raise ValueError(text)
    host = host.strip("[]")
    ipaddress.ip_address(host)
    return host, int(port)


@dataclass(frozen=True)
class OscApiOptions:
    bind: str = "0.0.0.0"
    port: int = field(default=DEFAULT_PORT, metadata={"check": port_check})
    allow: list[str] = field(
        default_factory=lambda: list(PRIVATE_NETWORKS), metadata={"check": _check_networks}
    )
    clients: list[str] = field(default_factory=list, metadata={"check": _check_clients})
    reply_ports: dict[str, int] = field(default_factory=dict, metadata={"check": _check_reply_ports})
    client_ttl: float = field(default=3600.0, metadata={"check": positive})
    max_clients: int = field(default=32, metadata={"check": positive})
    position_rate: float = field(default=10.0, metadata={"check": positive})


#: OSC address -> verb (track verbs are matched in ``_parse``); derived from the registry,
#: with the dotted aliases (``/take/false_start``) as extra addresses.
_ADDRESSES: dict[str, commands.Verb] = {
    **{
        "/" + alias.replace(".", "/"): commands.BY_NAME[name]
        for alias, name in commands.ALIASES.items()
        if "." in alias and "osc" in commands.BY_NAME[name].grammars and not commands.BY_NAME[name].is_track
    },
    **{v.osc_address: v for v in commands.VERBS if "osc" in v.grammars and not v.is_track},
}
_TRACK_VERBS: dict[str, commands.Verb] = {
    v.name.split(".", 1)[1]: v for v in commands.VERBS if "osc" in v.grammars and v.is_track
}


def _format_time(seconds: float) -> str:
    seconds = max(0.0, seconds)
    minutes, secs = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{secs:06.3f}"


def _arg(value: Value) -> Value:
    if isinstance(value, bool):
        return int(value)
    return value


def feedback_messages(key: str, value: Value) -> list[tuple[str, Value]]:
    """StateKey -> the OSC messages a client gets (address, single argument)."""
    if key == S.PLAYING:
        return [("/transport/play", int(bool(value))), ("/transport/stop", int(not value))]
    if key == S.RECORDING:
        return [("/transport/record", int(bool(value)))]
    if key == S.POSITION:
        seconds = float(value) if isinstance(value, int | float) else 0.0
        return [("/transport/position", seconds), ("/transport/time", _format_time(seconds))]
    parsed = S.parse_track_key(key)
    if parsed is not None:
        track, field_name = parsed
        name = "arm" if field_name == "armed" else field_name
        if value is None:
            value = "" if field_name == "name" else 0
        return [(f"/track/{track}/{name}", _arg(value))]
    if value is None:
        value = ""
    return [("/" + key, _arg(value))]


class _RateLimitedLog:
    """Log bad input without letting a flood fill the journal."""

    def __init__(self, per_window: int = 5, window: float = 10.0) -> None:
        self.per_window = per_window
        self.window = window
        self._start = float("-inf")
        self._count = 0
        self._suppressed = 0

    def flush(self) -> None:
        if self._suppressed:
            log.warning("osc api: %d more like this in the last %.0f s", self._suppressed, self.window)
            self._suppressed = 0

    def warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start > self.window:
            self.flush()
            self._start, self._count = now, 0
        if self._count < self.per_window:
            self._count += 1
            log.warning(msg, *args)
        else:
            self._suppressed += 1


class OscApi(SyncDevice):
    kind: ClassVar[str] = "osc_api"
    feedback: ClassVar[FeedbackMode] = "state"
    Options: ClassVar[type[OscApiOptions]] = OscApiOptions

    def __init__(
        self, name: str, options: OscApiOptions | None = None, ctx: DeviceContext | None = None
    ) -> None:
        super().__init__(name, options or OscApiOptions(), ctx)
        self.options: OscApiOptions
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.options.allow]
        self._static = [_parse_hostport(c) for c in self.options.clients]
        self._reply_ports = dict(self.options.reply_ports)
        self._clients: dict[Address, float] = {}  # client -> last heard (monotonic)
        self._inbox: deque[Inbound] = deque()
        self._wake = asyncio.Event()
        self._endpoint: UdpEndpoint | None = None
        self._allowed_cache: dict[str, bool] = {}
        # one limiter per kind of problem, so a flood of garbage cannot hide a denied client
        self._bad_packet = _RateLimitedLog()
        self._bad_command = _RateLimitedLog()
        self._denied = _RateLimitedLog()
        self._state: dict[str, Value] = {}
        self.counters = {
            "packets": 0,
            "commands": 0,
            "malformed": 0,
            "bad_args": 0,
            "unknown_address": 0,
            "denied": 0,
            "replies": 0,
            "feedback": 0,
        }

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> OscApi:
        self._endpoint = await UdpEndpoint.open(self._datagram, (self.options.bind, self.options.port))
        host, port = self._endpoint.local_address
        log.info("OSC API listening on udp %s:%d", host, port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for limiter in (self._bad_packet, self._bad_command, self._denied):
            limiter.flush()
        bad = {
            k: v
            for k, v in self.counters.items()
            if k in ("malformed", "bad_args", "unknown_address", "denied")
        }
        if any(bad.values()):
            log.info("osc api: dropped input so far: %s", ", ".join(f"{k} {v}" for k, v in bad.items()))
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None

    def outbox_interval(self) -> float:
        return 1.0 / self.options.position_rate

    @property
    def port(self) -> int:
        assert self._endpoint is not None
        return self._endpoint.local_address[1]

    def stats(self) -> dict[str, int]:
        return dict(self.counters, clients=len(self._clients))

    async def receive(self) -> AsyncIterator[Inbound]:
        while True:
            while not self._inbox:
                self._wake.clear()
                await self._wake.wait()
            yield self._inbox.popleft()

    # ---------------------------------------------------------------- input

    def _allowed(self, host: str) -> bool:
        cached = self._allowed_cache.get(host)
        if cached is None:
            try:
                address = ipaddress.ip_address(host.split("%")[0])
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                    address = address.ipv4_mapped
                cached = any(address in net for net in self._networks)
            except ValueError:
                cached = False
            if len(self._allowed_cache) < 4096:
                self._allowed_cache[host] = cached
        return cached

    def _datagram(self, data: bytes, addr: Address) -> None:
        self.counters["packets"] += 1
        if not self._allowed(addr[0]):
            self.counters["denied"] += 1
            self._denied.warn("osc api: ignored a packet from %s (not in the allowlist)", addr[0])
            return
        try:
            messages = decode(data)
        except OscDecodeError as exc:
            self.counters["malformed"] += 1
            self._bad_packet.warn(
                "osc api: malformed packet (%d bytes) from %s:%d: %s", len(data), addr[0], addr[1], exc
            )
            return
        self._touch(addr)
        for address, args in messages:
            self._message(address, args, addr)

    def _touch(self, addr: Address) -> None:
        now = time.monotonic()
        if addr not in self._clients and len(self._clients) >= self.options.max_clients:
            oldest = min(self._clients, key=self._clients.__getitem__)
            del self._clients[oldest]
        self._clients[addr] = now

    def _message(self, address: str, args: OscArgs, addr: Address) -> None:
        if address == "/ping":
            self._reply(addr, "/pong", *[a for a in args if isinstance(a, int | float | str)][:4])
            return
        if address in ("/state", "/subscribe"):
            self._reply(addr, "/ok", address)
            self._send_state(addr)
            return
        if address == "/stats":
            pairs: list[Any] = []
            for key, value in sorted(self.stats().items()):
                pairs += [key, value]
            self._reply(addr, "/stats", *pairs)
            return
        if address == "/unsubscribe":
            self._clients.pop(addr, None)
            self._reply(addr, "/ok", address)
            return
        try:
            command = self._parse(address, args)
        except commands.Release:
            self._reply(addr, "/ok", address)
            return
        except KeyError:
            self.counters["unknown_address"] += 1
            self._bad_command.warn("osc api: unknown address %s from %s:%d", address, addr[0], addr[1])
            self._reply(addr, "/error", address, "unknown address")
            return
        except ValueError as exc:
            self.counters["bad_args"] += 1
            self._bad_command.warn("osc api: bad arguments for %s from %s: %s", address, addr[0], exc)
            self._reply(addr, "/error", address, f"bad arguments: {exc}")
            return
        self.counters["commands"] += 1

        def done(error: str | None) -> None:
            if error is None:
                self._reply(addr, "/ok", address)
            else:
                self._reply(addr, "/error", address, error)

        self._inbox.append(Request(command, done))
        self._wake.set()

    def _parse(self, address: str, args: OscArgs) -> Command:
        verb = _ADDRESSES.get(address)
        if verb is not None:
            values = commands.button(args) if verb.trigger else args
            return commands.build(verb, list(values), clamp=True)
        if address.endswith("/toggle"):
            return self._toggle(address, args)
        parts = address.split("/")  # "", "track", n|name, what
        if len(parts) == 4 and parts[1] == "track" and parts[3] in _TRACK_VERBS and parts[2]:
            verb, which = _TRACK_VERBS[parts[3]], parts[2]
            if which == "name":
                return commands.build(verb, list(args), clamp=True)
            if which.isdigit() and int(which) < 1:
                raise ValueError("track numbers start at 1")
            return commands.build(verb, [int(which) if which.isdigit() else which, *args], clamp=True)
        raise KeyError(address)

    def _toggle(self, address: str, args: OscArgs) -> Command:
        """Resolve ``.../toggle`` against the state this API mirrors (commands stay absolute)."""
        base = address.removesuffix("/toggle")
        verb = _ADDRESSES.get(base)
        if verb is not None and verb.toggle is not None:
            commands.button(args)
            return commands.build_toggle(verb, None, self._state.get)
        parts = base.split("/")  # "", "track", n|name, what
        if len(parts) != 4 or parts[1] != "track" or parts[3] not in _TRACK_VERBS:
            raise KeyError(address)
        which, verb = parts[2], _TRACK_VERBS[parts[3]]
        if verb.toggle is None:
            raise KeyError(address)
        track: int | None
        if which == "name":
            if not args:
                raise ValueError("expected a track name")
            name = commands.parse_text(args[0])
            args = args[1:]
            track = self._track_named(name)
            if track is None:
                raise ValueError(f"no track named {name!r}")
        elif which.isdigit() and int(which) >= 1:
            track = int(which)
        else:
            raise ValueError("track numbers start at 1")
        commands.button(args)
        return commands.build_toggle(verb, {"track": track}, self._state.get)

    def _track_named(self, name: str) -> int | None:
        folded = None
        for key, value in self._state.items():
            if key.endswith("/name") and isinstance(value, str):
                parsed = S.parse_track_key(key)
                if parsed is None:
                    continue
                if value == name:
                    return parsed[0]
                if folded is None and value.casefold() == name.casefold():
                    folded = parsed[0]
        return folded

    # ---------------------------------------------------------------- output

    def _reply(self, addr: Address, address: str, *args: Any) -> None:
        if self._endpoint is None or self._endpoint.closed:
            return
        port = self._reply_ports.get(addr[0], addr[1])
        try:
            self._endpoint.sendto(encode(address, *args), (addr[0], port))
            self.counters["replies"] += 1
        except Exception as exc:  # never let one client break the API
            log.debug("osc api: reply to %s failed: %s", addr, exc)

    def _targets(self) -> list[Address]:
        now = time.monotonic()
        ttl = self.options.client_ttl
        expired = [a for a, t in self._clients.items() if now - t > ttl]
        for addr in expired:
            del self._clients[addr]
        targets = {(a[0], self._reply_ports.get(a[0], a[1])) for a in self._clients}
        targets.update(self._static)
        return sorted(targets)

    def _send_state(self, addr: Address) -> None:
        for key, value in sorted(self._state.items()):
            for address, arg in feedback_messages(key, value):
                self._reply(addr, address, arg)

    def send_now(self, message: Outbound) -> None:
        if not isinstance(message, Feedback):
            return
        if message.value is None:
            self._state.pop(message.control, None)
        else:
            self._state[message.control] = message.value
        targets = self._targets()
        if not targets or self._endpoint is None:
            return
        for address, arg in feedback_messages(message.control, message.value):
            data = encode(address, arg)
            for target in targets:
                try:
                    self._endpoint.sendto(data, target)
                    self.counters["feedback"] += 1
                except OSError as exc:
                    log.debug("osc api: feedback to %s failed: %s", target, exc)


def check_bind(options: OscApiOptions, file: str) -> None:
    try:
        ipaddress.ip_address(options.bind)
    except ValueError as exc:
        raise ConfigError(
            f'{file}: osc.bind: expected an IP address such as "0.0.0.0", got "{options.bind}"'
        ) from exc
