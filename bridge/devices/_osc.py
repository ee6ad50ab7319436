"""OSC over UDP for drivers: a fast encoder, a tolerant decoder and an asyncio endpoint.

* ``encode(address, *args)`` builds an OSC message with struct (python-osc's builder is
  ~25x slower); ints -> ``i`` (``h`` beyond int32), floats -> ``f``, str -> ``s``,
  bytes -> ``b``, bool -> ``T``/``F``, None -> ``N``. ``Typed("d", 1.0)`` forces a tag.
* ``bundle(*messages)`` wraps encoded messages in one OSC bundle (handled in order).
* ``decode(datagram)`` returns ``[(address, args), ...]`` (bundles flattened) and raises
  ``OscDecodeError`` on anything malformed.
* ``UdpEndpoint`` wraps an asyncio datagram socket; each datagram goes to a callback on
  the event loop, with no per-packet task or thread.
* ``relearn_events(tracks)``: how a DAW driver re-reports its whole track list after a
  (re)connect or a track-list change, without a reset first (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage

from bridge.errors import DeviceLost, DeviceUnavailable
from bridge.vocab import Event, TrackChanged, TracksReset

log = logging.getLogger(__name__)

Address = tuple[str, int]


class _ParserWarnings(logging.Filter):
    """python-osc reports some malformed input (an unknown type tag, an unknown bundle
    element) with ``logging.warning`` on the root logger, once per packet and not
    rate-limited, and then goes on parsing: a flood of such packets filled the journal with
    ``WARNING root: Unhandled parameter type: Q``. Its records are kept out of the log here;
    ``decode`` turns the ones raised while it parses into OscDecodeError (counted and logged
    at a limited rate by the caller)."""

    _MARK = f"{os.sep}pythonosc{os.sep}"

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if self._MARK not in (record.pathname or ""):
            return True
        found: list[str] | None = getattr(self.local, "found", None)
        if found is not None:
            found.append(record.getMessage())
        return False


_PARSER_WARNINGS = _ParserWarnings()
logging.getLogger().addFilter(_PARSER_WARNINGS)
OscArgs = list[Any]


class OscDecodeError(ValueError):
    """A datagram is not a valid OSC packet."""


@dataclass(frozen=True, slots=True)
class Typed:
    """An argument with an explicit OSC type tag (``Typed("h", 5)``, ``Typed("d", 0.5)``)."""

    tag: str
    value: Any


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (4 - len(data) % 4)


def _blob(data: bytes) -> bytes:
    size = len(data)
    return struct.pack(">i", size) + data + b"\0" * (-size % 4)


def _arg(value: Any) -> tuple[str, bytes]:
    if isinstance(value, Typed):
        tag, v = value.tag, value.value
        if tag == "i":
            return "i", struct.pack(">i", int(v))
        if tag == "h":
            return "h", struct.pack(">q", int(v))
        if tag == "f":
            return "f", struct.pack(">f", float(v))
        if tag == "d":
            return "d", struct.pack(">d", float(v))
        if tag == "s":
            return "s", _pad(str(v).encode())
        if tag == "b":
            return "b", _blob(bytes(v))
        if tag in "TFNI":
            return tag, b""
        raise ValueError(f"unsupported OSC tag {tag!r}")
    if value is True:
        return "T", b""
    if value is False:
        return "F", b""
    if value is None:
        return "N", b""
    if isinstance(value, int):
        if _INT32_MIN <= value <= _INT32_MAX:
            return "i", struct.pack(">i", value)
        return "h", struct.pack(">q", value)
    if isinstance(value, float):
        return "f", struct.pack(">f", value)
    if isinstance(value, str):
        return "s", _pad(value.encode())
    if isinstance(value, bytes | bytearray):
        return "b", _blob(bytes(value))
    raise ValueError(f"cannot encode {type(value).__name__} as an OSC argument")


_prefix_cache: dict[str, bytes] = {}


def encode(address: str, *args: Any) -> bytes:
    """Encode one OSC message."""
    prefix = _prefix_cache.get(address)
    if prefix is None:
        prefix = _pad(address.encode())
        if len(_prefix_cache) < 4096:
            _prefix_cache[address] = prefix
    tags = ","
    body = b""
    for value in args:
        tag, data = _arg(value)
        tags += tag
        body += data
    return prefix + _pad(tags.encode()) + body


def bundle(*messages: bytes) -> bytes:
    """An OSC bundle (time tag "immediately") of encoded messages: the receiver handles them
    one after another from one datagram."""
    out = b"#bundle\0" + struct.pack(">q", 1)
    for m in messages:
        out += struct.pack(">i", len(m)) + m
    return out


def _flatten(bundle: OscBundle, out: list[tuple[str, OscArgs]]) -> None:
    for item in bundle:
        if isinstance(item, OscBundle):
            _flatten(item, out)
        else:
            out.append((item.address, list(item.params)))


def decode(datagram: bytes) -> list[tuple[str, OscArgs]]:
    """Decode a datagram into ``[(address, args)]``; raise OscDecodeError if malformed."""
    found: list[str] = []
    _PARSER_WARNINGS.local.found = found
    try:
        if datagram.startswith(b"#bundle\0"):
            out: list[tuple[str, OscArgs]] = []
            _flatten(OscBundle(datagram), out)
        elif not datagram.startswith(b"/"):
            raise OscDecodeError("not an OSC message (address must start with '/')")
        else:
            msg = OscMessage(datagram)
            out = [(msg.address, list(msg.params))]
    except OscDecodeError:
        raise
    except Exception as exc:  # python-osc raises ParseError, IndexError, struct.error...
        raise OscDecodeError(f"malformed OSC packet: {exc}") from exc
    finally:
        _PARSER_WARNINGS.local.found = None
    if found:  # python-osc skipped something it could not parse: the arguments are not sure
        raise OscDecodeError(f"malformed OSC packet: {found[0]}")
    return out


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: UdpEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.endpoint.received += 1
        try:
            self.endpoint.on_datagram(data, (addr[0], addr[1]))
        except Exception:  # a handler bug must never kill the socket
            self.endpoint.handler_errors += 1
            log.exception("OSC handler failed for a datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc. after a send: the peer is gone or not yet there.
        self.endpoint.errors += 1
        self.endpoint.last_error = exc
        if self.endpoint.on_error is not None:
            try:
                self.endpoint.on_error(exc)
            except Exception:
                log.exception("OSC error handler failed")

    def connection_lost(self, exc: Exception | None) -> None:
        self.endpoint.closed = True


class UdpPeerOptions(Protocol):
    """The options of a driver that talks to one OSC peer over UDP (DAWs, mixers)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def local_host(self) -> str: ...
    @property
    def local_port(self) -> int: ...


class UdpEndpoint:
    """One UDP socket on the event loop. ``on_datagram(data, addr)`` runs for each packet."""

    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0
        self.sent = 0
        self.errors = 0
        self.handler_errors = 0
        self.last_error: Exception | None = None
        self.closed = False
        #: called with each socket error (asyncio's ``error_received``), e.g. ConnectionRefusedError
        self.on_error: Callable[[Exception], None] | None = None
        #: the bound socket (for options and its error queue)
        self.sock: socket.socket | None = None

    @classmethod
    async def open(
        cls,
        on_datagram: Callable[[bytes, Address], None],
        bind: Address = ("127.0.0.1", 0),
        rcvbuf: int = 1 << 20,
    ) -> UdpEndpoint:
        """Bind a socket (``bind=(host, 0)`` picks a free port). Raise DeviceUnavailable."""
        endpoint = cls(on_datagram)
        loop = asyncio.get_running_loop()
        host, port = bind
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                if family == socket.AF_INET6 and host in ("::", ""):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.bind((host, port))
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(endpoint), sock=sock)
        except OSError as exc:
            raise DeviceUnavailable(f"cannot bind UDP {host}:{port}: {exc.strerror or exc}") from exc
        endpoint.transport = transport
        endpoint.sock = sock
        return endpoint

    @property
    def local_address(self) -> Address:
        assert self.transport is not None
        addr = self.transport.get_extra_info("sockname")
        return (addr[0], addr[1])

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send one datagram; never blocks (the kernel drops it if its buffer is full)."""
        if self.transport is None or self.closed:
            raise DeviceUnavailable("UDP socket is closed")
        self.transport.sendto(data, addr)
        self.sent += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True


def dispatch(data: bytes, handle: Callable[[str, OscArgs], bool], stats: dict[str, int]) -> bool:
    """Decode a datagram from a peer and give each message to ``handle`` (True = understood).

    Counts ``rx`` (datagrams), ``bad`` (malformed packets, or arguments ``handle`` choked on:
    ValueError / IndexError / TypeError) and ``ignored`` (messages ``handle`` did not want).
    Returns whether any message was understood (the peer is alive)."""
    stats["rx"] = stats.get("rx", 0) + 1
    try:
        messages = decode(data)
    except OscDecodeError:
        stats["bad"] = stats.get("bad", 0) + 1
        return False
    understood = False
    for address, args in messages:
        try:
            handled = handle(address, args)
        except (ValueError, IndexError, TypeError):
            stats["bad"] = stats.get("bad", 0) + 1
            continue
        if handled:
            understood = True
        else:
            stats["ignored"] = stats.get("ignored", 0) + 1
    return understood


class PositionLimiter:
    """Playhead reports from a DAW at most ``rate`` per second. A jump (locate, or a value that
    is not where the running playhead should be) goes out at once; a value held back by the
    rate is flushed by the caller when ``flush_in`` reaches 0."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.last: float | None = None
        self.last_at = -1e9
        self.dirty = False

    def due(self, seconds: float, playing: bool, now: float, force: bool = False) -> bool:
        """Whether ``seconds`` should be reported now (and, if so, remember it as reported)."""
        since = now - self.last_at
        if not force and self.last is not None:
            expected = self.last + (since if playing else 0.0)
            jumped = abs(seconds - expected) > 0.25
            if not jumped and seconds == self.last:
                self.dirty = False
                return False
            if not jumped and since < self.interval:
                self.dirty = True
                return False
        self.dirty = False
        self.last, self.last_at = seconds, now
        return True

    def flush_in(self, now: float) -> float | None:
        """Seconds until a held-back value is due (<= 0: now); None when nothing is held."""
        return self.last_at + self.interval - now if self.dirty else None


class EventQueue(asyncio.Queue[Event]):
    """Events a DAW driver decoded, waiting for ``receive()``. A backlog beyond ``limit`` (the
    loop far behind a feedback flood) never drops a fact silently: ``put_event`` refuses it and
    ``raise_if_flooded`` turns that into DeviceLost, so the supervisor reconnects and the
    driver relearns the full state. A new queue per connection starts unflooded."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.flooded = False

    def put_event(self, event: Event) -> bool:
        if self.qsize() >= self.limit:
            self.flooded = True
            return False
        self.put_nowait(event)
        return True

    def raise_if_flooded(self, who: str) -> None:
        if self.flooded:
            raise DeviceLost(f"{who} feedback flood ({self.limit} events behind); resyncing")


def relearn_events(tracks: Mapping[int, Mapping[str, Any]]) -> list[Event]:
    """The events that re-report a DAW's complete track list (``{number: {field: value}}``,
    numbered 1..N as DAWs number them), e.g. after a (re)connect.

    Every track's full state first, then ``TracksReset(first=N + 1)`` for the tracks that are
    gone. No reset comes first: the state then changes only where a value really differs, so a
    re-learn never moves a motor fader to 0 and back, blinks a LED or blanks a display for a
    value that is the same as before the outage."""
    events: list[Event] = [TrackChanged(n, **dict(tracks[n])) for n in sorted(tracks)]
    events.append(TracksReset(first=max(tracks, default=0) + 1))
    return events
