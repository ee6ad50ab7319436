"""MQTT: the studio state on the facility bus (on-air lights, dashboards, Home Assistant).

Topics under the root (default ``studio-bridge/<room>``), see ``docs/mqtt.md``:

* ``status``: ``online`` (retained) on connect; last will ``offline`` (retained).
* ``state/<StateKey>``: retained, one per state key; payload is the JSON encoding of the
  value (``true``, ``12``, ``0.5``, ``"Song A"``); an empty retained payload clears a removed
  key. Discrete keys QoS 1, continuous ones (``/position``, ``/fader``) QoS 0, coalesced to at
  most ``rate`` updates per second per topic (latest wins).
* ``log``: each durable session-log record as JSON, QoS 1, not retained.
* ``takesheet``: the current session's take sheet (``log export --format json``), retained,
  rebuilt off the event loop from the log at each connect and then from the records the hub
  sends, published at most every ``TAKESHEET_INTERVAL`` seconds and only when it changed.
* ``cmd/...`` (only with ``commands = true``) -> ``Request``; outcome on ``reply/...``.

The hub never waits on the broker: ``send()`` only queues, one publisher task per connection
does the I/O with a bounded number of publishes in flight. aiomqtt is imported here only, and
this module only when a config has an ``[mqtt]`` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from bridge import __version__, commands
from bridge.devices.base import Device, DeviceContext
from bridge.errors import ConfigError, DeviceLost, DeviceUnavailable, SessionLogError
from bridge.options import non_negative, port_check, positive
from bridge.state import is_continuous_key
from bridge.vocab import (
    Command,
    Feedback,
    Inbound,
    LogEntry,
    Outbound,
    Request,
    Value,
)

if TYPE_CHECKING:
    import aiomqtt

    from bridge.devices import _mqtt_client
    from bridge.log.records import Record

log = logging.getLogger(__name__)

#: Seconds between two take-sheet publishes at most (records in between go into one).
TAKESHEET_INTERVAL = 0.5

_LEVEL = re.compile(r"^[^/+#\x00]+$")


def _level_check(value: Any) -> str | None:
    return None if _LEVEL.match(value) else 'one topic level without / + # (e.g. "studio-a")'


def _root_check(value: Any) -> str | None:
    parts = value.split("/")
    if value and all(_LEVEL.match(p) for p in parts):
        return None
    return 'a topic prefix without wildcards or empty levels (e.g. "studio-bridge/studio-a")'


@dataclass(frozen=True, slots=True)
class MqttOptions:
    host: str = "127.0.0.1"
    port: int = field(default=1883, metadata={"check": port_check})
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_env: str | None = None
    password_file: str | None = None
    client_id: str | None = None
    room: str | None = field(default=None, metadata={"check": _level_check})
    root: str | None = field(default=None, metadata={"check": _root_check})
    commands: bool = False
    #: Publish the session's take sheet, retained, on ``<root>/takesheet``.
    takesheet: bool = True
    homeassistant: bool = False
    discovery_prefix: str = field(default="homeassistant", metadata={"check": _root_check})
    rate: float = field(default=20.0, metadata={"check": positive})
    max_inflight: int = field(default=32, metadata={"check": positive})
    max_queue: int = field(default=10_000, metadata={"check": positive})
    max_payload: int = field(default=4096, metadata={"check": positive})
    keepalive: int = field(default=30, metadata={"check": positive})
    timeout: float = field(default=5.0, metadata={"check": positive})
    #: Seconds after connecting during which retained state topics left on the broker by an
    #: earlier run are collected; those the current state does not publish are cleared (0: off).
    stale_window: float = field(default=2.0, metadata={"check": non_negative})


# --------------------------------------------------------------------------- encoding


def encode_value(value: Value) -> bytes:
    """State value -> payload: JSON scalar; None (key removed) -> empty payload."""
    if value is None:
        return b""
    if isinstance(value, float):
        if not math.isfinite(value):
            return b"null"
        value = round(value, 6)
    return json.dumps(value, ensure_ascii=False).encode()


class CommandParseError(ValueError):
    """A command message cannot be understood (the text goes into the reply)."""


class UnknownCommand(CommandParseError):
    pass


def _payload(raw: bytes, text_scalar: bool) -> tuple[Any, dict[str, Any] | None]:
    """Payload -> (scalar, JSON object or None). Plain text (kept as text for a verb whose
    scalar argument is text, else a number if it is one), a JSON scalar, or a JSON object."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise CommandParseError("payload is not UTF-8") from exc
    if not text:
        return None, None
    if text[0] in '{["' or text in ("true", "false", "null"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandParseError(f"invalid JSON: {exc.msg}") from exc
        if isinstance(data, dict):
            return None, data
        if isinstance(data, list):
            raise CommandParseError("expected a value or a JSON object, got an array")
        return data, None
    if text_scalar:
        return text, None
    try:
        return (float(text) if any(c in text for c in ".eE") else int(text)), None
    except ValueError:
        return text, None


#: command topic suffix -> verb (``track/<n>/...`` is matched in ``parse_command``); derived
#: from the registry, with the dotted aliases (``take/false_start``) as extra topics.
_TOPICS: dict[str, commands.Verb] = {
    **{
        alias.replace(".", "/"): commands.BY_NAME[name]
        for alias, name in commands.ALIASES.items()
        if "." in alias and "mqtt" in commands.BY_NAME[name].grammars and not commands.BY_NAME[name].is_track
    },
    **{v.mqtt_topic[4:]: v for v in commands.VERBS if "mqtt" in v.grammars and not v.is_track},
}
_TRACK_VERBS: dict[str, commands.Verb] = {
    v.name.split(".", 1)[1]: v for v in commands.VERBS if "mqtt" in v.grammars and v.is_track
}


def parse_command(
    suffix: str, raw: bytes, get: Callable[[str], Value] | None = None
) -> tuple[Command, str | None]:
    """``("transport/record", b"1")`` -> ``(SetRecord(on=True), None)``; the second item is
    the client's correlation id (``{"id": ...}``). ``<topic>/toggle`` reads the state through
    ``get``. Raises CommandParseError / UnknownCommand."""
    toggle = suffix.endswith("/toggle")
    base = suffix.removesuffix("/toggle") if toggle else suffix
    parts = base.split("/")
    track: str | None = None
    verb = _TOPICS.get(base)
    if verb is None and len(parts) == 3 and parts[0] == "track" and parts[1] and parts[2] in _TRACK_VERBS:
        verb, track = _TRACK_VERBS[parts[2]], parts[1]
    if verb is None or (toggle and verb.toggle is None):
        raise UnknownCommand(f"unknown command topic cmd/{suffix}")
    scalar = verb.scalar_arg
    value, obj = _payload(raw, scalar is not None and scalar.kind == "text")
    corr_id = None
    named: dict[str, Any] = {}
    if obj is not None:
        corr = obj.get("id")
        corr_id = None if corr is None else str(corr)
        names = {a.name for a in verb.args}
        named = {k: v for k, v in obj.items() if k in names and k != "track"}
        if "value" in obj and "value" not in names:
            target = "on" if "on" in names else scalar.name if scalar is not None else None
            if target is not None and target not in named:
                named[target] = obj["value"]
    elif value is not None and scalar is not None:
        named[scalar.name] = value
    try:
        if track is not None:
            named["track"] = commands.parse_track(track)
        if toggle:
            if get is None:
                raise CommandParseError("toggles need the studio state")
            return commands.build_toggle(verb, named, get), corr_id
        return commands.build(verb, named), corr_id
    except commands.ArgError as exc:
        raise CommandParseError(str(exc)) from None


# --------------------------------------------------------------------------- driver


@dataclass(slots=True)
class _Pub:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    key: str | None = None  # state key (coalesced on overflow)
    seq: int | None = None  # log record (re-sent after reconnect until acknowledged)


class MqttBridge(Device[MqttOptions]):
    """Publishes the studio state and session log to an MQTT broker; optional commands."""

    kind = "mqtt"
    feedback = "state"
    wants_log = True
    #: Reconnect (``retry_delay``): full jitter (a random wait between 0 and the cap, so the
    #: rooms of a facility do not reconnect in lockstep after a broker restart), the first
    #: retry within 50 ms, the cap growing from 0.05 s to ``fast_cap`` while the broker has
    #: been gone less than ``fast_for`` seconds (a restart, a network blip: back within about
    #: half a second of the broker answering), then ``max_backoff``.
    fast_cap = 0.5
    fast_for = 60.0
    max_backoff = 5.0
    Options: ClassVar[type[MqttOptions]] = MqttOptions

    def __init__(self, name: str, options: MqttOptions, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        self.opts = options
        if sum(x is not None for x in (options.password, options.password_env, options.password_file)) > 1:
            raise ConfigError("mqtt: give only one of password, password_env, password_file")
        room = options.room or _context_room(self.ctx) or "studio"
        if not _LEVEL.match(room):
            raise ConfigError(f"mqtt: room {room!r} cannot be a topic level (no / + #)")
        self.room = room
        self.root = options.root or f"studio-bridge/{room}"
        self.client_id = options.client_id or f"studio-bridge-{room}-{secrets.token_hex(3)}"
        # 5 % spacing margin: network jitter never lets rate + 1 messages into one second
        self._interval = 1.05 / options.rate
        self._client: _mqtt_client.Client | None = None
        self._discrete: deque[_Pub] = deque()
        self._latest: dict[str, Value] = {}  # continuous keys -> newest value, not yet sent
        self._topics: dict[str, str] = {}  # state key -> topic (validated once)
        self._next_due: dict[str, float] = {}
        self._unacked_logs: dict[int, _Pub] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._lost: asyncio.Future[str] | None = None
        self._warned_at = float("-inf")
        self._fresh: set[str] = set()  # state topics published since connecting
        self._retained_seen: set[str] | None = None  # retained state topics found on the broker
        self._cleanup: asyncio.Task[None] | None = None
        self._down_since: float | None = None  # monotonic time of the first failed attempt
        self._attempts = 0
        self._sheet: dict[int, Record] = {}  # seq -> record of the current session
        self._sheet_session: int | None = None
        self._sheet_changed = asyncio.Event()
        self._sheet_task: asyncio.Task[None] | None = None
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "published", "publish_errors", "state", "coalesced", "log_records", "dropped_logs",
                "overflows", "commands", "replies", "invalid", "unknown", "oversized",
                "retained_commands", "takesheets",
            ),
            0,
        )  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        import aiomqtt

        from bridge.devices import _mqtt_client

        opts = self.opts
        password = await asyncio.to_thread(self._password)
        tls_params = None
        if opts.tls:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=self._path(opts.ca_file),
                certfile=self._path(opts.cert_file),
                keyfile=self._path(opts.key_file),
            )
        will = aiomqtt.Will(f"{self.root}/status", b"offline", qos=1, retain=True)
        client = _mqtt_client.Client(
            opts.host,
            opts.port,
            username=opts.username,
            password=password,
            identifier=self.client_id,
            will=will,
            keepalive=opts.keepalive,
            timeout=opts.timeout,
            tls_params=tls_params,
            max_inflight_messages=opts.max_inflight,
            max_queued_incoming_messages=1000,
            logger=_mqtt_client.client_logger(f"{__name__}.client"),
        )
        client.pending_calls_threshold = opts.max_inflight + 16
        where = f"mqtt broker {opts.host}:{opts.port}"
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            client.settle()
            raise DeviceUnavailable(f"{where}: {exc}") from None
        try:
            async with asyncio.timeout(opts.timeout):
                if opts.commands:
                    await client.subscribe(f"{self.root}/cmd/#", qos=1)
                if opts.stale_window > 0:
                    self._retained_seen = set()
                    await client.subscribe(f"{self.root}/state/#", qos=0)
                await client.publish(f"{self.root}/status", b"online", qos=1, retain=True)
                if opts.homeassistant:
                    for topic, payload in discovery_configs(self).items():
                        await client.publish(topic, payload, qos=1, retain=True)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
            client.settle()
            raise DeviceUnavailable(f"{where}: {exc or 'timed out'}") from None
        self._client = client
        self._lost = asyncio.get_running_loop().create_future()
        # Queued state is re-derived from the core's full dump after (re)connect; log
        # records not yet acknowledged by the broker are sent again, oldest first.
        self._discrete.clear()
        self._fresh.clear()
        self._latest.clear()
        self._discrete.extend(self._unacked_logs[seq] for seq in sorted(self._unacked_logs))
        self._publisher = asyncio.create_task(self._publish_loop(client), name=f"mqtt-{self.name}")
        self._publisher.add_done_callback(self._publisher_done)
        if opts.stale_window > 0:
            self._cleanup = asyncio.create_task(self._clear_stale(client))
        if opts.takesheet:
            self._sheet_task = asyncio.create_task(self._takesheet_loop(), name=f"mqtt-{self.name}-takesheet")
        self._wake.set()
        if self._down_since is None:
            log.info("mqtt: connected to %s as %s, root %s", where, self.client_id, self.root)
        else:
            log.info(
                "mqtt: connected to %s again after %.1f s (%d attempts), state republished",
                where, time.monotonic() - self._down_since, self._attempts,
            )  # fmt: skip
            self._down_since = None
        return self

    def retry_delay(self, attempt: int) -> float:
        now = time.monotonic()
        if attempt == 0 or self._down_since is None:
            self._down_since = now
        self._attempts = attempt + 1
        cap = self.fast_cap if now - self._down_since < self.fast_for else self.max_backoff
        return random.uniform(0.0, min(cap, 0.05 * 2.0 ** min(attempt, 16)))

    async def blackout(self) -> None:
        """On shutdown: hand what is queued to the broker (the supervisor bounds the wait)."""
        if self._client is not None and self._lost is not None and not self._lost.done():
            await self.flush()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None and self._lost is not None and not self._lost.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.flush()
        client, self._client = self._client, None
        tasks = [
            t for t in (self._publisher, self._cleanup, self._sheet_task, *self._inflight) if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._publisher = self._cleanup = self._sheet_task = None
        if client is None:
            return
        if self._lost is not None and not self._lost.done():
            # A clean disconnect does not fire the last will: say it ourselves. (After a
            # loss the broker fires the will; a publish then could only wait for nothing.)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await client.publish(f"{self.root}/status", b"offline", qos=1, retain=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await client.__aexit__(None, None, None)
        client.settle()

    def _password(self) -> str | None:
        """Read the secret and check the TLS files (runs in a worker thread)."""
        opts = self.opts
        for key in ("ca_file", "cert_file", "key_file"):
            name = self._path(getattr(opts, key))
            if opts.tls and name is not None and not os.path.isfile(name):
                raise ConfigError(f"mqtt.{key}: no such file: {name}")
        if opts.password_env is not None:
            value = os.environ.get(opts.password_env)
            if value is None:
                raise ConfigError(f"mqtt.password_env: environment variable {opts.password_env} is not set")
            return value
        if opts.password_file is not None:
            path = self._path(opts.password_file)
            try:
                return Path(str(path)).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {path}: {exc.strerror}") from None
        return opts.password

    def _path(self, name: str | None) -> str | None:
        return None if name is None else str(self.ctx.config_dir / Path(name).expanduser())

    # ------------------------------------------------------------------ outbound

    async def send(self, message: Outbound) -> None:
        """Queue a publish; never waits on the broker."""
        if isinstance(message, LogEntry):
            record = {"seq": message.seq, **message.record}
            pub = _Pub(f"{self.root}/log", _json(record), 1, False, seq=message.seq)
            self._unacked_logs[message.seq] = pub
            if len(self._unacked_logs) > self.opts.max_queue:
                self._unacked_logs.pop(min(self._unacked_logs))
                self._stats["dropped_logs"] += 1
            self._stats["log_records"] += 1
            self._enqueue(pub)
            if self.opts.takesheet:
                self._sheet_add(message)
        elif isinstance(message, Feedback):
            key, value = message.control, message.value
            topic = self._topics.get(key)
            if topic is None:
                if not _key_ok(key):
                    self._stats["invalid"] += 1
                    log.warning("mqtt: state key %r cannot be a topic, not published", key)
                    return
                topic = self._topics[key] = f"{self.root}/state/{key}"
            self._stats["state"] += 1
            self._fresh.add(topic)
            if value is not None and (message.continuous or is_continuous_key(key)):
                # hot path (fader floods): encoded only when the rate cap lets it out
                if key in self._latest:
                    self._stats["coalesced"] += 1
                self._latest[key] = value
                self._wake.set()
            else:
                if self._latest.pop(key, None) is not None:
                    self._stats["coalesced"] += 1
                self._enqueue(_Pub(topic, encode_value(value), 1, True, key=key))
        # Commands are never routed here (handles is empty).

    def _enqueue(self, pub: _Pub) -> None:
        self._discrete.append(pub)
        if len(self._discrete) > self.opts.max_queue:
            self._compact()
        self._wake.set()

    def _compact(self) -> None:
        """Queue overflow (broker slower than the studio): keep every log record and reply,
        and only the newest update of each state key; the retained end state stays exact."""
        self._stats["overflows"] += 1
        last = {p.key: i for i, p in enumerate(self._discrete) if p.key is not None}
        kept = [p for i, p in enumerate(self._discrete) if p.key is None or last[p.key] == i]
        self._stats["coalesced"] += len(self._discrete) - len(kept)
        self._discrete = deque(kept)
        log.warning("mqtt: publish queue overflow, coalesced to %d messages", len(kept))

    # ------------------------------------------------------------------ take sheet

    def _sheet_add(self, entry: LogEntry) -> None:
        record = _as_record(entry)
        if record is None:
            return
        if self._sheet_session is None or record.session > self._sheet_session:
            self._sheet = {}  # a new session: a new sheet
            self._sheet_session = record.session
        elif record.session < self._sheet_session:
            return
        self._sheet[record.seq] = record
        self._sheet_changed.set()

    async def _takesheet_loop(self) -> None:
        """Publish the take sheet after each connect, then again (coalesced) when records came."""
        from bridge.log import takesheet as export

        await self._load_takesheet()
        topic, last = f"{self.root}/takesheet", b""
        while True:
            self._sheet_changed.clear()
            records = list(self._sheet.values())
            payload = await asyncio.to_thread(_takesheet_json, export, records)
            if payload != last:
                self._stats["takesheets"] += 1
                self._enqueue(_Pub(topic, payload, 1, True, key=topic))
                last = payload
            await self._sheet_changed.wait()
            await asyncio.sleep(TAKESHEET_INTERVAL)  # what comes meanwhile goes into the next one

    async def _load_takesheet(self) -> None:
        """The current session's records from the log (records from before this process
        started, or that the hub could not replay after a long outage)."""
        from bridge.app import LOG_FILE

        try:
            records = await asyncio.to_thread(_session_records, self.ctx.data_dir / LOG_FILE)
        except SessionLogError as exc:
            log.info("mqtt: take sheet from the records since start only: %s", exc)
            return
        if not records:
            return
        session = records[-1].session
        if self._sheet_session is None or session > self._sheet_session:
            self._sheet, self._sheet_session = {}, session
        if session == self._sheet_session:
            for record in records:
                self._sheet.setdefault(record.seq, record)

    async def flush(self) -> None:
        """Wait until everything queued so far has been handed to the broker (tests, bench;
        bound it with ``asyncio.timeout``)."""
        while self._discrete or self._latest or self._inflight:
            self._idle.clear()
            await self._idle.wait()

    async def _clear_stale(self, client: aiomqtt.Client) -> None:
        """Clear retained state topics of keys that no longer exist (left by an earlier run on
        a broker with persistence, or removed while the broker was unreachable)."""
        import aiomqtt

        await asyncio.sleep(self.opts.stale_window)
        seen, self._retained_seen = self._retained_seen or set(), None
        with contextlib.suppress(aiomqtt.MqttError):
            await client.unsubscribe(f"{self.root}/state/#")
        stale = sorted(seen - self._fresh)
        for topic in stale:
            self._enqueue(_Pub(topic, b"", 1, True, key=topic.removeprefix(f"{self.root}/state/")))
        if stale:
            log.info("mqtt: cleared %d stale retained state topics", len(stale))

    def _publisher_done(self, task: asyncio.Task[None]) -> None:
        """A publisher that dies unexpectedly ends the connection (the supervisor reconnects)."""
        if task.cancelled():
            return
        exc = task.exception()
        log.error("mqtt: publisher failed: %r", exc)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(f"publisher failed: {exc!r}")

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.opts.max_inflight)
        while True:
            while self._discrete:
                pub = self._discrete.popleft()
                if pub.seq is not None and pub.seq not in self._unacked_logs:
                    continue  # dropped by the log bound meanwhile
                await slots.acquire()
                self._start(client, pub, slots)
            now = loop.time()
            wait: float | None = None
            for key in list(self._latest):
                due = self._next_due.get(key, 0.0)
                if due <= now:
                    value = self._latest.pop(key, None)
                    if value is None:
                        continue
                    pending = _Pub(self._topics[key], encode_value(value), 0, True, key=key)
                    self._next_due[key] = now + self._interval
                    await slots.acquire()
                    self._start(client, pending, slots)
                else:
                    wait = due - now if wait is None else min(wait, due - now)
            if not self._discrete and not self._inflight and not self._latest:
                self._idle.set()
            if self._discrete:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _start(self, client: aiomqtt.Client, pub: _Pub, slots: asyncio.Semaphore) -> None:
        task = asyncio.create_task(self._publish(client, pub))
        self._inflight.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self._inflight.discard(t)
            slots.release()
            if not self._inflight and not self._discrete and not self._latest:
                self._idle.set()

        task.add_done_callback(finished)

    async def _publish(self, client: aiomqtt.Client, pub: _Pub) -> None:
        import aiomqtt

        try:
            await client.publish(pub.topic, pub.payload, qos=pub.qos, retain=pub.retain)
        except (aiomqtt.MqttError, ValueError) as exc:
            self._stats["publish_errors"] += 1
            log.debug("mqtt: publish to %s failed: %s", pub.topic, exc)
            if isinstance(exc, aiomqtt.MqttError) and self._lost and not self._lost.done():
                self._lost.set_result(str(exc))
            return
        self._stats["published"] += 1
        if pub.seq is not None:
            self._unacked_logs.pop(pub.seq, None)

    # ------------------------------------------------------------------ inbound

    async def receive(self) -> AsyncIterator[Inbound]:
        import aiomqtt

        client, lost = self._client, self._lost
        if client is None or lost is None:
            raise DeviceLost("mqtt: not connected")
        where = f"mqtt broker {self.opts.host}:{self.opts.port}"
        messages = client.messages.__aiter__()
        while True:
            nxt = asyncio.ensure_future(messages.__anext__())
            try:
                await asyncio.wait((nxt, lost), return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                nxt.cancel()
                if nxt.done() and not nxt.cancelled():
                    nxt.exception()  # read: the connection may have dropped just now
                raise
            if not nxt.done():
                nxt.cancel()
                raise DeviceLost(f"{where}: connection lost ({lost.result()})")
            try:
                message = nxt.result()
            except aiomqtt.MqttError as exc:
                # aiomqtt says "Disconnected during message iteration", from paho's reason
                # ("[code:128] Unspecified error" for a closed socket) or a socket error
                cause = exc.__cause__
                reason = "closed" if cause is None or isinstance(cause, aiomqtt.MqttCodeError) else str(cause)
                if not lost.done():
                    lost.set_result(reason)
                raise DeviceLost(f"{where}: connection lost ({reason})") from None
            topic = str(message.topic)
            if topic.startswith(f"{self.root}/state/"):  # only while looking for stale topics
                if self._retained_seen is not None and message.retain and message.payload:
                    self._retained_seen.add(topic)
                continue
            if message.retain:
                # A retained command is a replay of the past (sent by the broker on every
                # subscribe, i.e. at each start and reconnect), never a request now.
                self._retained_command(topic)
                continue
            request = self._command(topic, message.payload)
            if request is not None:
                yield request

    def _retained_command(self, topic: str) -> None:
        self._stats["retained_commands"] += 1
        if self._stats["retained_commands"] == 1:
            log.warning(
                "mqtt: %s: retained command ignored (a retained message is replayed at every "
                "subscribe; publish commands without retain; clear it with: mosquitto_pub -r -n -t '%s')",
                topic, topic,
            )  # fmt: skip
        else:
            log.debug("mqtt: %s: retained command ignored", topic)

    def _command(self, topic: str, payload: Any) -> Request | None:
        prefix = f"{self.root}/cmd/"
        if not self.opts.commands or not topic.startswith(prefix):
            self._stats["unknown"] += 1
            return None
        suffix = topic[len(prefix) :]
        raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
        if len(raw) > self.opts.max_payload:
            self._stats["oversized"] += 1
            self._warn(
                "mqtt: %s: payload of %d bytes ignored (max %d)", topic, len(raw), self.opts.max_payload
            )
            return None
        try:
            command, corr_id = parse_command(suffix, raw, self.ctx.state)
        except CommandParseError as exc:
            self._stats["unknown" if isinstance(exc, UnknownCommand) else "invalid"] += 1
            self._warn("mqtt: %s: %s", topic, exc)
            self._reply(suffix, str(exc), None)
            return None
        self._stats["commands"] += 1
        return Request(command, self._replier(suffix, corr_id))

    def _warn(self, fmt: str, *args: object) -> None:
        """Bad input is logged at most once a second (the counters in stats() keep the total)."""
        now = asyncio.get_running_loop().time()
        if now - self._warned_at >= 1.0:
            self._warned_at = now
            log.warning(fmt, *args)

    def _replier(self, suffix: str, corr_id: str | None) -> Callable[[str | None], None]:
        def done(error: str | None) -> None:
            self._reply(suffix, error, corr_id)

        return done

    def _reply(self, suffix: str, error: str | None, corr_id: str | None) -> None:
        body: dict[str, object] = {"ok": error is None}
        if error is not None:
            body["error"] = error
        if corr_id is not None:
            body["id"] = corr_id
        self._stats["replies"] += 1
        self._enqueue(_Pub(f"{self.root}/reply/{suffix}", _json(body), 1, False))

    def stats(self) -> dict[str, int]:
        return {
            **self._stats,
            "queued": len(self._discrete) + len(self._latest),
            "inflight": len(self._inflight),
        }


# --------------------------------------------------------------------------- Home Assistant


def discovery_configs(bridge: MqttBridge) -> dict[str, bytes]:
    """Retained Home Assistant MQTT discovery configs: topic -> JSON payload. Buttons are
    only announced with ``commands = true`` (their config is cleared otherwise)."""
    prefix, root, room = bridge.opts.discovery_prefix, bridge.root, bridge.room
    node = "studio_bridge_" + re.sub(r"[^A-Za-z0-9_-]", "_", room)
    device = {
        "identifiers": [node],
        "name": f"Studio bridge {room}",
        "manufacturer": "studio-bridge",
        "model": "studio-bridge",
        "sw_version": __version__,
    }
    common = {
        "availability_topic": f"{root}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    state = f"{root}/state"
    on_off = {"payload_on": "true", "payload_off": "false"}
    as_json = {"value_template": "{{ value_json }}"}
    entities: list[tuple[str, str, dict[str, object]]] = [
        ("binary_sensor", "on_air", {"name": "On air", "state_topic": f"{state}/transport/on_air",
                                     "icon": "mdi:record-rec", **on_off}),
        ("binary_sensor", "talkback", {"name": "Talkback", "state_topic": f"{state}/talkback",
                                       "icon": "mdi:microphone", **on_off}),
        ("sensor", "song", {"name": "Song", "state_topic": f"{state}/song", "icon": "mdi:music", **as_json}),
        ("sensor", "take", {"name": "Take", "state_topic": f"{state}/take", "icon": "mdi:pound", **as_json}),
    ]  # fmt: skip
    buttons = [
        ("play", "Play", "transport/play", "1", "mdi:play"),
        ("stop", "Stop", "transport/stop", "1", "mdi:stop"),
        ("record", "Record", "transport/record", "1", "mdi:record"),
        ("mark_take", "Mark take", "take/mark", "{}", "mdi:flag"),
    ]
    out: dict[str, bytes] = {}
    for component, object_id, config in entities:
        body = {**config, **common, **_entity_ids(component, node, object_id)}
        out[f"{prefix}/{component}/{node}/{object_id}/config"] = _json(body)
    for object_id, name, cmd, press, icon in buttons:
        topic = f"{prefix}/button/{node}/{object_id}/config"
        if not bridge.opts.commands:
            out[topic] = b""
            continue
        body = {"name": name, "command_topic": f"{root}/cmd/{cmd}", "payload_press": press, "icon": icon,
                **common, **_entity_ids("button", node, object_id)}  # fmt: skip
        out[topic] = _json(body)
    return out


def _entity_ids(component: str, node: str, object_id: str) -> dict[str, str]:
    """``unique_id`` and the entity id HA gives the entity when it is first discovered:
    ``default_entity_id`` (``<domain>.<object id>``, HA 2025.10+); the older ``object_id``
    option is deprecated since 2025.10 and ignored from 2026.4, so it is not sent. An entity id
    is lower case letters, digits and ``_`` (a room "Studio-B" gives ``studio_bridge_studio_b_...``)."""
    slug = re.sub(r"[^a-z0-9_]+", "_", f"{node}_{object_id}".lower()).strip("_")
    return {"unique_id": f"{node}_{object_id}", "default_entity_id": f"{component}.{slug}"}


# --------------------------------------------------------------------------- helpers


def _json(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _takesheet_json(export: ModuleType, records: list[Record]) -> bytes:
    """The take sheet as ``log export --format json`` builds it, compact (a worker thread)."""
    return _json(export.sheet_to_json(export.build_take_sheet(records)))


def _session_records(path: Path) -> list[Record]:
    """The latest session's records, [] without a log (a worker thread)."""
    from bridge.log import reader as sessionlog

    return sessionlog.read_records(path) if path.exists() else []


def _as_record(entry: LogEntry) -> Record | None:
    """A LogEntry (``Record.to_json()``) back into a Record for the take sheet."""
    from bridge.log.records import Record

    d = entry.record

    def text(key: str) -> str | None:
        value = d.get(key)
        return value if isinstance(value, str) else None

    def integer(key: str) -> int | None:
        value = d.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    session, kind, ts = integer("session"), text("kind"), text("ts")
    if session is None or kind is None or ts is None:
        return None
    seconds = d.get("daw_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        seconds = None
    data = d.get("data")
    return Record(
        seq=entry.seq,
        session=session,
        ts=ts,
        kind=kind,
        song=text("song"),
        take=integer("take"),
        daw_seconds=None if seconds is None else float(seconds),
        source=text("source") or "",
        text=text("text") or "",
        amends=integer("amends"),
        data=dict(data) if isinstance(data, dict) else {},
    )


def _key_ok(key: str) -> bool:
    return bool(key) and all(_LEVEL.match(part) for part in key.split("/"))


def _context_room(ctx: DeviceContext) -> str | None:
    room = getattr(ctx, "room", None)
    return room if isinstance(room, str) and room else None
