"""The bridge's own OSC control API over UDP: tablets, scripts and layouts talk to this.

Commands: the verbs of the command registry (``bridge/commands.py``), at ``/`` + the verb
name with dots as slashes (``/take/circle``, ``/track/<n>/arm``, ``/track/name/arm <name>``),
plus ``<address>/toggle`` for verbs with a toggle form (resolved against the state this API
mirrors); README's table is generated from the registry. Arguments are positional in the
verb's schema order; values 1/0 may be int, float, bool or "on"/"off". The API's own
addresses: ``/ping`` (answered ``/pong``), ``/state`` and ``/subscribe`` (the whole state is
sent to the sender), ``/unsubscribe``, ``/stats`` (``/stats <name> <value> ...``, with
``log_failing 0|1`` and ``log_unwritten N``), ``/status`` (health: ``/status log <ok|failing>
reason <text> unwritten <n>``, what ``studio-bridge status`` asks).

Trigger verbs (``/transport/play``, ``/take/mark``, ``/take/circle``, ...) take a button value
as their only argument, as TouchOSC and Open Stage Control buttons send it: a float (or T/F)
>= 0.5 fires, a release (< 0.5) is answered ``/ok`` and does nothing. Take numbers are ints
(``/take/circle 3``); a float is never text (``/note f 1.0`` is refused).

Every command is answered to its sender: ``/ok <address>`` once it has taken effect
(for anything logged: once durable), or ``/error <address> <reason>``. While the session log
cannot write (``/log/status failing``), marks, circles and notes are answered ``/error``
("not written: ..."); transport and talkback still work and are answered ``/ok <address>
"not logged: <reason>"``: it took effect, its record was not written.

Feedback (to every client heard from within ``client_ttl`` seconds and to the configured
``clients``; see :class:`ClientTable` for who keeps a place when many come and go) uses the
command addresses where one exists, so a TouchOSC button on
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
import errno
import ipaddress
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
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
    Play,
    Request,
    SetRecord,
    SetTalkback,
    Stop,
    Value,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 9123
#: Seconds a closing API (restarted by a reload) keeps its socket for answers still due.
LINGER = 5.0
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


class Allowlist:
    """The networks allowed to talk to an API (``[osc] allow``, ``[web] allow``); call it with a
    host address. Answers are cached per host (at most 4,096 hosts)."""

    def __init__(self, networks: list[str]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._cache: dict[str, bool] = {}

    def __call__(self, host: str) -> bool:
        cached = self._cache.get(host)
        if cached is None:
            try:
                address = ipaddress.ip_address(host.split("%")[0])
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                    address = address.ipv4_mapped
                cached = any(address in net for net in self._networks)
            except ValueError:
                cached = False
            if len(self._cache) < 4096:
                self._cache[host] = cached
        return cached


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
    #: feedback places one host's (non-configured) clients may take: a churn of short-lived
    #: source ports from one host never crowds out the other hosts, nor its own subscribers
    max_clients_per_host: int = field(default=8, metadata={"check": positive})
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


@dataclass(slots=True)
class _Client:
    source: Address  # where it last sent from
    target: Address  # where its replies and feedback go (``reply_ports`` applied)
    heard: float  # last datagram from it (monotonic)
    subscribed: bool = False  # sent /subscribe (and not /unsubscribe)


class ClientTable:
    """Who gets state feedback, and who keeps a place when many clients come and go.

    A client is every allowed sender (a tablet sending commands) plus, explicitly, whoever sent
    ``/subscribe`` (a display that only listens). Entries are keyed by their feedback target,
    so the many source ports of a host with a ``reply_ports`` entry are one client.

    * ``[osc] clients`` (configured) always get feedback and take no place in the table.
    * A client silent for ``client_ttl`` seconds is dropped (``expired``); so is one whose
      feedback bounces (ICMP port unreachable: the app closed its socket; ``unreachable``).
    * At most ``max_clients_per_host`` entries per host and ``max_clients`` in all. A newcomer
      beyond a cap takes the place of the longest-silent *implicit* client (one that never
      subscribed: a tablet restarted on a new port; ``evicted``). A subscriber heard within its
      TTL is never pushed out for a newcomer: when no implicit place is left, the newcomer is
      served its replies but gets no feedback (``refused``; a refused ``/subscribe`` is
      answered ``/error``).
    """

    def __init__(
        self,
        *,
        ttl: float,
        max_clients: int,
        per_host: int,
        static: list[Address] | None = None,
        reply_ports: dict[str, int] | None = None,
    ) -> None:
        self.ttl = ttl
        self.max_clients = max_clients
        self.per_host = per_host
        self.static: tuple[Address, ...] = tuple(static or ())
        self._static_set = frozenset(self.static)
        self.reply_ports: dict[str, int] = dict(reply_ports or {})
        self._entries: dict[Address, _Client] = {}
        self._per_host: dict[str, int] = {}
        self._targets: tuple[Address, ...] | None = None
        self._next_expiry = float("inf")
        self.counters = {"refused": 0, "evicted": 0, "expired": 0, "unreachable": 0}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, target: object) -> bool:
        return target in self._entries

    @property
    def subscribers(self) -> int:
        return sum(1 for e in self._entries.values() if e.subscribed)

    def target_of(self, source: Address) -> Address:
        """Where replies and feedback for a sender go (its source port, or its reply port)."""
        host = source[0]
        port = self.reply_ports.get(host)
        if port is None and host.startswith("::ffff:"):  # IPv4 on a dual-stack socket (bind "::")
            port = self.reply_ports.get(host[7:])
        return source if port is None else (host, port)

    # ------------------------------------------------------------ changes

    def touch(self, source: Address, now: float, subscribe: bool = False) -> bool:
        """A datagram from ``source``; returns whether it gets feedback."""
        target = self.target_of(source)
        entry = self._entries.get(target)
        if entry is not None:
            entry.heard = now
            entry.source = source
            entry.subscribed = entry.subscribed or subscribe
            return True
        if target in self._static_set:
            return True
        self.expire(now)
        host = target[0]
        if self._per_host.get(host, 0) >= self.per_host and not self._evict(now, host):
            self.counters["refused"] += 1
            return False
        if len(self._entries) >= self.max_clients and not self._evict(now, None):
            self.counters["refused"] += 1
            return False
        self._add(_Client(source, target, now, subscribe))
        return True

    def gets_feedback(self, source: Address) -> bool:
        target = self.target_of(source)
        return target in self._entries or target in self._static_set

    def forget(self, source: Address) -> bool:
        """``/unsubscribe``: no more feedback until it is heard again."""
        return self._remove(self.target_of(source)) is not None

    def unreachable(self, target: Address) -> bool:
        """A datagram to ``target`` bounced (ICMP port unreachable): retire it at once."""
        if self._remove(target) is None:
            return False
        self.counters["unreachable"] += 1
        return True

    def discard_hosts(self, drop: Callable[[str], bool]) -> int:
        """Remove the clients of every host for which ``drop(host)`` holds (no longer allowed)."""
        gone = [t for t in self._entries if drop(t[0])]
        for target in gone:
            self._remove(target)
        return len(gone)

    def expire(self, now: float) -> None:
        if now < self._next_expiry:
            return
        limit = now - self.ttl
        for target in [t for t, e in self._entries.items() if e.heard < limit]:
            self._remove(target)
            self.counters["expired"] += 1
        self._next_expiry = min((e.heard for e in self._entries.values()), default=now) + self.ttl

    def reconfigure(
        self,
        *,
        ttl: float,
        max_clients: int,
        per_host: int,
        static: list[Address],
        reply_ports: dict[str, int],
        now: float,
    ) -> None:
        """New limits (a reload): the clients stay; re-keyed when ``reply_ports`` changed, and
        trimmed (implicit clients first, then the longest silent) if a cap went down."""
        self.ttl, self.max_clients, self.per_host = ttl, max_clients, per_host
        self.static, self._static_set = tuple(static), frozenset(static)
        self.reply_ports = dict(reply_ports)
        old = sorted(self._entries.values(), key=lambda e: e.heard)
        self._entries.clear()
        self._per_host.clear()
        self._targets = None
        self._next_expiry = float("-inf")
        for entry in old:
            target = self.target_of(entry.source)
            if target in self._static_set:
                continue
            merged = self._entries.get(target)
            if merged is not None:  # a reply port now joins two source ports
                merged.heard = max(merged.heard, entry.heard)
                merged.subscribed = merged.subscribed or entry.subscribed
                continue
            self._add(_Client(entry.source, target, entry.heard, entry.subscribed))
        self.expire(now)
        for host in list(self._per_host):
            while self._per_host.get(host, 0) > self.per_host:
                self._trim(host)
        while len(self._entries) > self.max_clients:
            self._trim(None)

    # ------------------------------------------------------------ reading

    def targets(self, now: float) -> tuple[Address, ...]:
        """Every feedback target: the configured clients and the live entries."""
        self.expire(now)
        if self._targets is None:
            self._targets = tuple(sorted(self._static_set.union(self._entries)))
        return self._targets

    # ------------------------------------------------------------ internals

    def _add(self, entry: _Client) -> None:
        self._entries[entry.target] = entry
        host = entry.target[0]
        self._per_host[host] = self._per_host.get(host, 0) + 1
        self._targets = None
        self._next_expiry = min(self._next_expiry, entry.heard + self.ttl)

    def _remove(self, target: Address) -> _Client | None:
        entry = self._entries.pop(target, None)
        if entry is not None:
            host = target[0]
            left = self._per_host.get(host, 1) - 1
            if left > 0:
                self._per_host[host] = left
            else:
                self._per_host.pop(host, None)
            self._targets = None
        return entry

    def _evict(self, now: float, host: str | None) -> bool:
        """Make room for a newcomer: the longest-silent implicit client (of ``host``)."""
        victims = [
            e for e in self._entries.values() if not e.subscribed and (host is None or e.target[0] == host)
        ]
        if not victims:
            return False
        self._remove(min(victims, key=lambda e: e.heard).target)
        self.counters["evicted"] += 1
        return True

    def _trim(self, host: str | None) -> None:
        """Over a (lowered) cap: implicit clients go first, then the longest silent."""
        pool = [e for e in self._entries.values() if host is None or e.target[0] == host]
        victim = min(pool, key=lambda e: (e.subscribed, e.heard))
        self._remove(victim.target)
        self.counters["evicted"] += 1


#: cmsg of an ICMP error on the socket's error queue (Linux, IP_RECVERR / IPV6_RECVERR)
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_RECVERR_CMSGS = ((socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR))
_EE_ORIGIN_ICMP = (2, 3)  # SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6


def _enable_recverr(sock: socket.socket) -> bool:
    """Ask Linux to report ICMP errors of an unconnected UDP socket, with the address of the
    datagram that bounced (on the error queue); without it they are dropped silently."""
    done = False
    options = [(socket.IPPROTO_IP, _IP_RECVERR)]
    if sock.family == socket.AF_INET6:
        options.insert(0, (socket.IPPROTO_IPV6, _IPV6_RECVERR))
    for level, name in options:
        try:
            sock.setsockopt(level, name, 1)
            done = True
        except OSError:
            pass
    return done


def _read_errqueue(sock: socket.socket) -> list[tuple[Address, int]]:
    """Drain the socket's error queue: [(destination of the bounced datagram, errno)] for ICMP
    errors. Drained completely, so the queue never keeps the socket readable with nothing to read."""
    out: list[tuple[Address, int]] = []
    while True:
        try:
            _data, ancdata, _flags, addr = sock.recvmsg(1, 1024, _MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            return out
        except OSError:
            return out
        for level, kind, data in ancdata:
            if (level, kind) in _RECVERR_CMSGS and len(data) >= 8:
                ee_errno, origin = struct.unpack_from("=IB", data)
                if origin in _EE_ORIGIN_ICMP and isinstance(addr, tuple):
                    out.append(((addr[0], addr[1]), ee_errno))


#: commands that take effect regardless of the session log, which records them as a side effect
_LOGGED_SIDE_EFFECT: frozenset[type[Command]] = frozenset({Play, Stop, SetRecord, SetTalkback})


#: datagrams longer than this are counted ``oversized`` and dropped (a tablet's command is tiny)
MAX_DATAGRAM = 8192


def _address_of(data: bytes) -> str | None:
    """The OSC address a (too long) datagram starts with, if it is readable."""
    end = data.find(b"\0", 0, 256)
    if end < 2 or data[:1] != b"/":
        return None
    try:
        return data[:end].decode("ascii")
    except UnicodeDecodeError:
        return None


class _RateLimitedLog:
    """Log bad input without letting a flood fill the journal: ``per_window`` warnings per
    ``window`` seconds, then one summary ("N more like this") when the window ends, from a loop
    timer armed only while something was suppressed (no idle timer). ``close`` (a clean stop)
    gives what is left as INFO: stopping is not a fault."""

    def __init__(self, per_window: int = 5, window: float = 10.0) -> None:
        self.per_window = per_window
        self.window = window
        self._start = float("-inf")
        self._count = 0
        self._suppressed = 0
        self._timer: asyncio.TimerHandle | None = None

    def flush(self, level: int = logging.WARNING) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._suppressed:
            seconds = min(self.window, max(0.0, time.monotonic() - self._start))
            log.log(level, "osc api: %d more like this in the last %.0f s", self._suppressed, seconds)
            self._suppressed = 0

    def close(self) -> None:
        """A clean stop: the summary of what is left, as INFO."""
        self.flush(logging.INFO)

    def _window_end(self) -> None:
        self._timer = None
        self.flush()

    def warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start > self.window:
            self.flush()
            self._start, self._count = now, 0
        if self._count < self.per_window:
            self._count += 1
            log.warning(msg, *args)
            return
        self._suppressed += 1
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a direct call): summarised at the next one or close
                return
            self._timer = loop.call_later(max(0.0, self._start + self.window - now), self._window_end)


class OscApi(SyncDevice[OscApiOptions]):
    kind: ClassVar[str] = "osc_api"
    feedback: ClassVar[FeedbackMode] = "state"
    Options: ClassVar[type[OscApiOptions]] = OscApiOptions

    def __init__(
        self, name: str, options: OscApiOptions | None = None, ctx: DeviceContext | None = None
    ) -> None:
        super().__init__(name, options or OscApiOptions(), ctx)
        self._allowed = Allowlist(self.options.allow)
        self.clients = ClientTable(
            ttl=self.options.client_ttl,
            max_clients=self.options.max_clients,
            per_host=self.options.max_clients_per_host,
            static=[_parse_hostport(c) for c in self.options.clients],
            reply_ports=self.options.reply_ports,
        )
        self._sock: socket.socket | None = None
        #: commands taken but not answered yet; a closing API answers them before its socket goes
        self._unanswered = 0
        self._closing = False
        self._linger: asyncio.TimerHandle | None = None
        self._closed = asyncio.Event()
        self._closed.set()
        self._inbox: deque[Inbound] = deque()
        self._wake = asyncio.Event()
        self._endpoint: UdpEndpoint | None = None
        # one limiter per kind of problem, so a flood of garbage cannot hide a denied client
        self._bad_packet = _RateLimitedLog()
        self._bad_command = _RateLimitedLog()
        self._denied = _RateLimitedLog()
        self._refused = _RateLimitedLog(per_window=1, window=60.0)
        self._state: dict[str, Value] = {}
        self.counters = {
            "packets": 0,
            "commands": 0,
            "malformed": 0,
            "oversized": 0,
            "bad_args": 0,
            "unknown_address": 0,
            "denied": 0,
            "replies": 0,
            "feedback": 0,
            "send_failed": 0,
        }

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> OscApi:
        if self._endpoint is not None:
            self._close_socket()  # reopened while lingering: what is still owed goes out anew
        self._endpoint = await UdpEndpoint.open(self._datagram, (self.options.bind, self.options.port))
        self._sock = self._endpoint.sock
        self._closing = False
        self._closed.clear()
        if self._sock is not None and _enable_recverr(self._sock):
            self._endpoint.on_error = self._socket_error
        host, port = self._endpoint.local_address
        log.info("OSC API listening on udp %s:%d", host, port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for limiter in (self._bad_packet, self._bad_command, self._denied):
            limiter.close()
        bad = {
            k: v
            for k, v in self.counters.items()
            if k in ("malformed", "oversized", "bad_args", "unknown_address", "denied")
        }
        if any(bad.values()):
            log.info("osc api: dropped input so far: %s", ", ".join(f"{k} {v}" for k, v in bad.items()))
        self._refused.close()
        endpoint = self._endpoint
        if endpoint is None:
            return
        # commands taken but never handed to the core (its reader stopped first): not carried out
        while self._inbox:
            item = self._inbox.popleft()
            if isinstance(item, Request):
                item.done("not carried out: the OSC API was closing; send it again")
        if self._unanswered and not endpoint.closed:
            # commands still being carried out (a take mark waiting for its durable write):
            # take nothing new, but keep the socket until their answers went out (bounded)
            self._closing = True
            self._linger = asyncio.get_running_loop().call_later(LINGER, self._close_socket)
            log.debug("osc api: closing after %d pending answers", self._unanswered)
            return
        self._close_socket()

    def _close_socket(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        endpoint, self._endpoint = self._endpoint, None
        self._sock = None
        self._closing = False
        if endpoint is not None:
            if self._unanswered:
                log.info("osc api: closed with %d commands unanswered", self._unanswered)
            endpoint.close()
        self._closed.set()

    async def wait_closed(self, limit: float | None = None) -> None:
        """Until the socket is closed: at once, or once the commands taken before
        ``__aexit__`` are answered; after ``limit`` (default LINGER) seconds it is closed anyway."""
        try:
            async with asyncio.timeout(LINGER if limit is None else limit):
                await self._closed.wait()
        except TimeoutError:
            self._close_socket()

    def reconfigure(self, options: OscApiOptions) -> bool:
        """Apply new options in place (a reload) when the socket can stay: same ``bind`` and
        ``port``. Clients and subscribers stay; nothing in flight is lost. False: restart."""
        if (options.bind, options.port) != (self.options.bind, self.options.port):
            return False
        static = [_parse_hostport(c) for c in options.clients]
        self.options = options
        self._allowed = Allowlist(options.allow)
        self.clients.reconfigure(
            ttl=options.client_ttl,
            max_clients=options.max_clients,
            per_host=options.max_clients_per_host,
            static=static,
            reply_ports=options.reply_ports,
            now=time.monotonic(),
        )
        dropped = self.clients.discard_hosts(lambda host: not self._allowed(host))
        if dropped:
            log.info("osc api: %d clients no longer in the allowlist get no more feedback", dropped)
        return True

    def outbox_interval(self) -> float:
        return 1.0 / self.options.position_rate

    @property
    def port(self) -> int:
        assert self._endpoint is not None
        return self._endpoint.local_address[1]

    def stats(self) -> dict[str, int]:
        table = self.clients
        unwritten = self._state.get(S.LOG_UNWRITTEN)
        return dict(
            self.counters,
            clients=len(table),
            subscribers=table.subscribers,
            clients_refused=table.counters["refused"],
            clients_evicted=table.counters["evicted"],
            clients_expired=table.counters["expired"],
            clients_unreachable=table.counters["unreachable"],
            log_failing=int(self._state.get(S.LOG_STATUS) == "failing"),
            log_unwritten=unwritten if isinstance(unwritten, int) else 0,
        )

    async def receive(self) -> AsyncIterator[Inbound]:
        while True:
            while not self._inbox:
                self._wake.clear()
                await self._wake.wait()
            yield self._inbox.popleft()

    # ---------------------------------------------------------------- input

    def _datagram(self, data: bytes, addr: Address) -> None:
        self.counters["packets"] += 1
        if self._closing:
            return  # an API being replaced takes nothing new (its successor does)
        if not self._allowed(addr[0]):
            self.counters["denied"] += 1
            self._denied.warn("osc api: ignored a packet from %s (not in the allowlist)", addr[0])
            return
        if len(data) > MAX_DATAGRAM:
            self.counters["oversized"] += 1
            address = _address_of(data)
            self._bad_packet.warn(
                "osc api: dropped an oversized datagram (%d bytes, limit %d) from %s:%d",
                len(data),
                MAX_DATAGRAM,
                addr[0],
                addr[1],
            )
            if address is not None:
                why = f"datagram of {len(data)} bytes is over the limit of {MAX_DATAGRAM}"
                self._reply(addr, "/error", address, why)
            return
        try:
            messages = decode(data)
        except OscDecodeError as exc:
            self.counters["malformed"] += 1
            self._bad_packet.warn(
                "osc api: malformed packet (%d bytes) from %s:%d: %s", len(data), addr[0], addr[1], exc
            )
            return
        self._touch(addr, subscribe=any(address == "/subscribe" for address, _ in messages))
        for address, args in messages:
            self._message(address, args, addr)

    def _touch(self, addr: Address, subscribe: bool = False) -> bool:
        if self.clients.touch(addr, time.monotonic(), subscribe):
            return True
        host = addr[0]
        self._refused.warn(
            "osc api: %s:%d gets replies but no feedback: the client table is full for %s "
            "(max_clients_per_host %d, max_clients %d; subscribers keep their places)",
            host,
            addr[1],
            host,
            self.options.max_clients_per_host,
            self.options.max_clients,
        )
        return False

    def _message(self, address: str, args: OscArgs, addr: Address) -> None:
        if address == "/ping":
            self._reply(addr, "/pong", *[a for a in args if isinstance(a, int | float | str)][:4])
            return
        if address == "/subscribe" and not self.clients.gets_feedback(addr):
            self._reply(addr, "/error", address, "too many clients; no place for feedback")
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
        if address == "/status":
            status, reason = self._state.get(S.LOG_STATUS, "unknown"), self._state.get(S.LOG_REASON, "")
            unwritten = self.stats()["log_unwritten"]
            self._reply(addr, "/status", "log", str(status), "reason", str(reason), "unwritten", unwritten)
            return
        if address == "/unsubscribe":
            self.clients.forget(addr)
            self._reply(addr, "/ok", address)
            return
        try:
            command = self._parse(address, args)
        except commands.Release:
            self._reply(addr, "/ok", address)
            return
        except commands.TextTooLong as exc:
            self.counters["oversized"] += 1
            self._bad_command.warn("osc api: text too long for %s from %s: %s", address, addr[0], exc)
            self._reply(addr, "/error", address, f"bad arguments: {exc}")
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
        self._inbox.append(Request(command, self._answer(addr, address, command)))
        self._wake.set()

    def _answer(self, addr: Address, address: str, command: Command) -> Callable[[str | None], None]:
        """The callback that answers one command once it took effect (or failed)."""
        self._unanswered += 1

        def done(error: str | None) -> None:
            self._unanswered -= 1
            if error is None:
                self._reply(addr, "/ok", address, *self._not_logged(command))
            else:
                self._reply(addr, "/error", address, error)
            if self._closing and not self._unanswered:
                self._close_socket()

        return done

    def _not_logged(self, command: Command) -> list[str]:
        """Transport and talkback work while the session log fails; the answer says so."""
        if type(command) in _LOGGED_SIDE_EFFECT and self._state.get(S.LOG_STATUS) == "failing":
            return [f"not logged: the session log is failing ({self._state.get(S.LOG_REASON)})"]
        return []

    def _parse(self, address: str, args: OscArgs) -> Command:
        verb = _ADDRESSES.get(address)
        if verb is not None:
            values = commands.button(args, verb) if verb.trigger else args
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
            commands.toggle_button(args)
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
        commands.toggle_button(args)
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

    def _send(self, data: bytes, target: Address) -> bool:
        """One datagram, never blocking. Straight on the socket, not through the transport:
        with IP_RECVERR a bounce of an *earlier* datagram makes the next sendto fail once with
        ConnectionRefusedError, whoever it goes to; that send is retried after the bounce was
        read (and its client retired)."""
        sock = self._sock
        if sock is None:
            return False
        for _attempt in range(3):
            try:
                sock.sendto(data, target)
                return True
            except ConnectionRefusedError:
                self._read_bounces()
            except (BlockingIOError, InterruptedError):
                break  # socket buffer full: UDP drops it, as the kernel would
            except OSError as exc:
                log.debug("osc api: send to %s failed: %s", target, exc)
                break
        self.counters["send_failed"] += 1
        return False

    def _socket_error(self, exc: Exception) -> None:
        """asyncio's error_received (a recvfrom that reported a bounce)."""
        self._read_bounces()

    def _read_bounces(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for target, code in _read_errqueue(sock):
            if code == errno.ECONNREFUSED and self.clients.unreachable(target):
                log.debug("osc api: %s:%d is not listening any more; no more feedback", *target)

    def _reply(self, addr: Address, address: str, *args: Any) -> None:
        try:
            data = encode(address, *args)
        except Exception as exc:  # never let one client break the API
            log.debug("osc api: reply to %s not encoded: %s", addr, exc)
            return
        if self._send(data, self.clients.target_of(addr)):
            self.counters["replies"] += 1

    def _targets(self) -> tuple[Address, ...]:
        return self.clients.targets(time.monotonic())

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
        if self._sock is None or self._closing:
            return
        for address, arg in feedback_messages(message.control, message.value):
            data = encode(address, arg)
            for target in self._targets():  # re-read: a bounce retires its client at once
                if self._send(data, target):
                    self.counters["feedback"] += 1


def check_bind(options: OscApiOptions, file: str) -> None:
    try:
        ipaddress.ip_address(options.bind)
    except ValueError as exc:
        raise ConfigError(
            f'{file}: osc.bind: expected an IP address such as "0.0.0.0", got "{options.bind}"'
        ) from exc
