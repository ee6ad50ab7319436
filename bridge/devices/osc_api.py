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

Modules: this one is the device (the socket, answers, feedback, reloads); the grammar (addresses
-> commands, state keys -> feedback messages) is :mod:`bridge.devices._osc_api_grammar`, the
client table and bounce detection :mod:`bridge.devices._osc_api_clients`, the allowlist and the
``bind``/``port``/``allow`` options shared with the web console :mod:`bridge.devices._netapi`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge import commands
from bridge import state as S
from bridge.devices._netapi import Allowlist, ListenOptions, RateLimitedLog
from bridge.devices._osc import Address, OscArgs, OscDecodeError, UdpEndpoint, decode, encode
from bridge.devices._osc_api_clients import (
    ClientTable,
    check_clients,
    check_reply_ports,
    enable_recverr,
    parse_hostport,
    read_errqueue,
)
from bridge.devices._osc_api_grammar import feedback_messages, parse
from bridge.devices.base import DeviceContext, FeedbackMode, SyncDevice
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


@dataclass(frozen=True)
class OscApiOptions(ListenOptions):
    TABLE: ClassVar[str] = "osc"
    port: int = field(default=DEFAULT_PORT, metadata={"check": port_check})
    clients: list[str] = field(default_factory=list, metadata={"check": check_clients})
    reply_ports: dict[str, int] = field(default_factory=dict, metadata={"check": check_reply_ports})
    client_ttl: float = field(default=3600.0, metadata={"check": positive})
    max_clients: int = field(default=32, metadata={"check": positive})
    #: feedback places one host's (non-configured) clients may take: a churn of short-lived
    #: source ports from one host never crowds out the other hosts, nor its own subscribers
    max_clients_per_host: int = field(default=8, metadata={"check": positive})


#: commands that take effect regardless of the session log, which records them as a side effect
_LOGGED_SIDE_EFFECT: frozenset[type[Command]] = frozenset({Play, Stop, SetRecord, SetTalkback})


#: datagrams longer than this are counted ``oversized`` and dropped (a tablet's command is tiny)
MAX_DATAGRAM = 8192
#: feedback datagrams kept encoded (key, value) -> bytes: a surface's LEDs and arms, take numbers
MAX_ENCODED = 8192


def _address_of(data: bytes) -> str | None:
    """The OSC address a (too long) datagram starts with, if it is readable."""
    end = data.find(b"\0", 0, 256)
    if end < 2 or data[:1] != b"/":
        return None
    try:
        return data[:end].decode("ascii")
    except UnicodeDecodeError:
        return None


def _limited_log(per_window: int = 5, window: float = 10.0) -> RateLimitedLog:
    return RateLimitedLog(log, "osc api: %d more like this in the last %.0f s", per_window, window)


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
            static=[parse_hostport(c) for c in self.options.clients],
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
        self._bad_packet = _limited_log()
        self._bad_command = _limited_log()
        self._denied = _limited_log()
        self._refused = _limited_log(per_window=1, window=60.0)
        self._state: dict[str, Value] = {}
        self._encoded: dict[tuple[str, Value, type], tuple[bytes, ...]] = {}
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
        if self._sock is not None and enable_recverr(self._sock):
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
        static = [parse_hostport(c) for c in options.clients]
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
            self._denied.log("osc api: ignored a packet from %s (not in the allowlist)", addr[0])
            return
        if len(data) > MAX_DATAGRAM:
            self.counters["oversized"] += 1
            address = _address_of(data)
            self._bad_packet.log(
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
            self._bad_packet.log(
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
        self._refused.log(
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
            self._bad_command.log("osc api: text too long for %s from %s: %s", address, addr[0], exc)
            self._reply(addr, "/error", address, f"bad arguments: {exc}")
            return
        except KeyError:
            self.counters["unknown_address"] += 1
            self._bad_command.log("osc api: unknown address %s from %s:%d", address, addr[0], addr[1])
            self._reply(addr, "/error", address, "unknown address")
            return
        except ValueError as exc:
            self.counters["bad_args"] += 1
            self._bad_command.log("osc api: bad arguments for %s from %s: %s", address, addr[0], exc)
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
        return parse(address, args, self._state)

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
        for target, code in read_errqueue(sock):
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
        for data in self._datagrams(message.control, message.value):
            for target in self._targets():  # re-read: a bounce retires its client at once
                if self._send(data, target):
                    self.counters["feedback"] += 1

    def _datagrams(self, key: str, value: Value) -> tuple[bytes, ...]:
        """The encoded feedback for ``key = value``; on/off and small whole values (LEDs, arm,
        take numbers) are encoded once and kept (bounded), the rest (positions, text) each time."""
        cacheable = value is None or type(value) is bool or (type(value) is int and -1 <= value <= 1024)
        if cacheable:
            found = self._encoded.get((key, value, type(value)))
            if found is not None:
                return found
        datagrams = tuple(encode(address, arg) for address, arg in feedback_messages(key, value))
        if cacheable and len(self._encoded) < MAX_ENCODED:
            self._encoded[(key, value, type(value))] = datagrams
        return datagrams
