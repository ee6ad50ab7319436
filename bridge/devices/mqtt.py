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
does the I/O with a bounded number of publishes in flight. aiomqtt is imported only when the
bridge connects, and this module only when a config has an ``[mqtt]`` table.

Modules: this one is the device (connection, what it publishes, commands in); the outgoing
queue is :mod:`bridge.devices._mqtt_publish`, the topic grammar and ``parse_command``
:mod:`bridge.devices._mqtt_topics`, the take sheet :mod:`bridge.devices._mqtt_takesheet`, the
Home Assistant discovery configs :mod:`bridge.devices._mqtt_discovery`, the aiomqtt client
wrapper :mod:`bridge.devices._mqtt_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from bridge.devices._mqtt_discovery import discovery_configs
from bridge.devices._mqtt_publish import Pub, PublishQueue, to_json
from bridge.devices._mqtt_takesheet import TakeSheetFeed
from bridge.devices._mqtt_topics import (
    LEVEL,
    CommandParseError,
    UnknownCommand,
    key_ok,
    level_check,
    parse_command,
    root_check,
)
from bridge.devices.base import Device, DeviceContext
from bridge.errors import ConfigError, DeviceLost, DeviceUnavailable
from bridge.options import non_negative, port_check, positive
from bridge.state import is_continuous_key
from bridge.vocab import Feedback, Inbound, LogEntry, Outbound, Request

if TYPE_CHECKING:
    import aiomqtt

    from bridge.devices import _mqtt_client

log = logging.getLogger(__name__)


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
    room: str | None = field(default=None, metadata={"check": level_check})
    root: str | None = field(default=None, metadata={"check": root_check})
    commands: bool = False
    #: Publish the session's take sheet, retained, on ``<root>/takesheet``.
    takesheet: bool = True
    homeassistant: bool = False
    discovery_prefix: str = field(default="homeassistant", metadata={"check": root_check})
    rate: float = field(default=20.0, metadata={"check": positive})
    max_inflight: int = field(default=32, metadata={"check": positive})
    max_queue: int = field(default=10_000, metadata={"check": positive})
    max_payload: int = field(default=4096, metadata={"check": positive})
    keepalive: int = field(default=30, metadata={"check": positive})
    timeout: float = field(default=5.0, metadata={"check": positive})
    #: Seconds after connecting during which retained state topics left on the broker by an
    #: earlier run are collected; those the current state does not publish are cleared (0: off).
    stale_window: float = field(default=2.0, metadata={"check": non_negative})


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
        if not LEVEL.match(room):
            raise ConfigError(f"mqtt: room {room!r} cannot be a topic level (no / + #)")
        self.room = room
        self.root = options.root or f"studio-bridge/{room}"
        self.client_id = options.client_id or f"studio-bridge-{room}-{secrets.token_hex(3)}"
        self._client: _mqtt_client.Client | None = None
        self._topics: dict[str, str] = {}  # state key -> topic (validated once)
        self._publisher: asyncio.Task[None] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._warned_at = float("-inf")
        self._fresh: set[str] = set()  # state topics published since connecting
        self._retained_seen: set[str] | None = None  # retained state topics found on the broker
        self._cleanup: asyncio.Task[None] | None = None
        self._down_since: float | None = None  # monotonic time of the first failed attempt
        self._attempts = 0
        self._sheet_task: asyncio.Task[None] | None = None
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "published", "publish_errors", "state", "coalesced", "log_records", "dropped_logs",
                "overflows", "commands", "replies", "invalid", "unknown", "oversized",
                "retained_commands", "takesheets",
            ),
            0,
        )  # fmt: skip
        self._queue = PublishQueue(
            rate=options.rate,
            max_inflight=options.max_inflight,
            max_queue=options.max_queue,
            stats=self._stats,
        )
        self._takesheet = TakeSheetFeed(f"{self.root}/takesheet", self.ctx, self._queue.enqueue, self._stats)

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
        self._fresh.clear()
        self._queue.reconnected()
        self._publisher = asyncio.create_task(self._queue.run(client, self._lost), name=f"mqtt-{self.name}")
        self._publisher.add_done_callback(self._publisher_done)
        if opts.stale_window > 0:
            self._cleanup = asyncio.create_task(self._clear_stale(client))
        if opts.takesheet:
            self._sheet_task = asyncio.create_task(self._takesheet.run(), name=f"mqtt-{self.name}-takesheet")
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
            t
            for t in (self._publisher, self._cleanup, self._sheet_task, *self._queue.inflight)
            if t is not None
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
            self._queue.log_record(Pub(f"{self.root}/log", to_json(record), 1, False, seq=message.seq))
            self._stats["log_records"] += 1
            if self.opts.takesheet:
                self._takesheet.add(message)
        elif isinstance(message, Feedback):
            key, value = message.control, message.value
            topic = self._topics.get(key)
            if topic is None:
                if not key_ok(key):
                    self._stats["invalid"] += 1
                    log.warning("mqtt: state key %r cannot be a topic, not published", key)
                    return
                topic = self._topics[key] = f"{self.root}/state/{key}"
            self._stats["state"] += 1
            self._fresh.add(topic)
            self._queue.state(key, topic, value, message.continuous or is_continuous_key(key))
        # Commands are never routed here (handles is empty).

    async def flush(self) -> None:
        """Wait until everything queued so far has been handed to the broker (tests, bench;
        bound it with ``asyncio.timeout``)."""
        await self._queue.flush()

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
            self._queue.enqueue(Pub(topic, b"", 1, True, key=topic.removeprefix(f"{self.root}/state/")))
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
        self._queue.enqueue(Pub(f"{self.root}/reply/{suffix}", to_json(body), 1, False))

    def stats(self) -> dict[str, int]:
        return {
            **self._stats,
            "queued": len(self._queue),
            "inflight": len(self._queue.inflight),
        }


def _context_room(ctx: DeviceContext) -> str | None:
    room = getattr(ctx, "room", None)
    return room if isinstance(room, str) and room else None
