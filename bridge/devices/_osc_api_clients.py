"""The OSC API's client table: who gets state feedback, who keeps a place when many clients come
and go (:class:`ClientTable`), and how a client that closed its socket is noticed (ICMP port
unreachable, read from the socket's error queue on Linux). Also the ``[osc] clients`` and
``reply_ports`` option checks.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.devices._osc import Address
from bridge.options import port_check


def check_clients(value: Any) -> str | None:
    for item in value:
        try:
            parse_hostport(item)
        except ValueError:
            return f'"host:port" strings ("{item}" is not one)'
    return None


def check_reply_ports(value: Any) -> str | None:
    for host, port in value.items():
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return f'a table of IP address = port ("{host}" is not an IP address)'
        if port_check(port):
            return f"ports 1-65535 (got {port} for {host})"
    return None


def parse_hostport(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not (1 <= int(port) <= 65535):
        raise ValueError(text)
    host = host.strip("[]")
    ipaddress.ip_address(host)
    return host, int(port)


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


def enable_recverr(sock: socket.socket) -> bool:
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


def read_errqueue(sock: socket.socket) -> list[tuple[Address, int]]:
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
