"""The MQTT bridge's outgoing queue: the hub never waits on the broker.

``MqttBridge.send()`` only queues here; one task per connection (:meth:`PublishQueue.run`) does
the I/O with at most ``max_inflight`` publishes in flight:

* discrete publishes (state keys, log records, replies, the take sheet) go out in order, QoS as
  queued; on overflow (``max_queue``) only the newest update of each state key is kept, every log
  record and reply stays (``overflows``, ``coalesced``);
* continuous keys (``/position``, ``/fader``) are coalesced per topic (latest wins), encoded
  only when the rate cap (``rate`` per second per topic, with a 5 % margin) lets them out;
* log records stay queued until the broker acknowledged them, and go out again (oldest first)
  after a reconnect; at most ``max_queue`` are kept (``dropped_logs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.vocab import Value

if TYPE_CHECKING:
    import aiomqtt

log = logging.getLogger("bridge.devices.mqtt")  # the bridge's messages, under its name


def encode_value(value: Value) -> bytes:
    """State value -> payload: JSON scalar; None (key removed) -> empty payload."""
    if value is None:
        return b""
    if isinstance(value, float):
        if not math.isfinite(value):
            return b"null"
        value = round(value, 6)
    return json.dumps(value, ensure_ascii=False).encode()


def to_json(data: object) -> bytes:
    """Compact JSON payload (log records, replies, the take sheet)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode()


@dataclass(slots=True)
class Pub:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    key: str | None = None  # state key (coalesced on overflow)
    seq: int | None = None  # log record (re-sent after reconnect until acknowledged)


class PublishQueue:
    """What is still to be published (see the module docstring); ``stats`` is the bridge's
    counters, updated in place."""

    def __init__(self, *, rate: float, max_inflight: int, max_queue: int, stats: dict[str, int]) -> None:
        # 5 % spacing margin: network jitter never lets rate + 1 messages into one second
        self.interval = 1.05 / rate
        self.max_inflight = max_inflight
        self.max_queue = max_queue
        self.stats = stats
        self.discrete: deque[Pub] = deque()
        self.latest: dict[str, tuple[str, Value]] = {}  # continuous key -> (topic, newest value)
        self.next_due: dict[str, float] = {}
        self.unacked_logs: dict[int, Pub] = {}
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.inflight: set[asyncio.Task[None]] = set()
        self._lost: asyncio.Future[str] | None = None

    def __len__(self) -> int:
        return len(self.discrete) + len(self.latest)

    def reconnected(self) -> None:
        """A new connection: queued state is re-derived from the core's full dump; log records
        not yet acknowledged by the broker are sent again, oldest first."""
        self.discrete.clear()
        self.latest.clear()
        self.discrete.extend(self.unacked_logs[seq] for seq in sorted(self.unacked_logs))
        self.wake.set()

    # ------------------------------------------------------------------ queuing

    def log_record(self, pub: Pub) -> None:
        assert pub.seq is not None
        self.unacked_logs[pub.seq] = pub
        if len(self.unacked_logs) > self.max_queue:
            self.unacked_logs.pop(min(self.unacked_logs))
            self.stats["dropped_logs"] += 1
        self.enqueue(pub)

    def state(self, key: str, topic: str, value: Value, continuous: bool) -> None:
        """A state key's new value (None: removed, an empty retained payload)."""
        if value is not None and continuous:
            # hot path (fader floods): encoded only when the rate cap lets it out
            if key in self.latest:
                self.stats["coalesced"] += 1
            self.latest[key] = (topic, value)
            self.wake.set()
        else:
            if self.latest.pop(key, None) is not None:
                self.stats["coalesced"] += 1
            self.enqueue(Pub(topic, encode_value(value), 1, True, key=key))

    def enqueue(self, pub: Pub) -> None:
        self.discrete.append(pub)
        if len(self.discrete) > self.max_queue:
            self._compact()
        self.wake.set()

    def _compact(self) -> None:
        """Queue overflow (broker slower than the studio): keep every log record and reply,
        and only the newest update of each state key; the retained end state stays exact."""
        self.stats["overflows"] += 1
        last = {p.key: i for i, p in enumerate(self.discrete) if p.key is not None}
        kept = [p for i, p in enumerate(self.discrete) if p.key is None or last[p.key] == i]
        self.stats["coalesced"] += len(self.discrete) - len(kept)
        self.discrete = deque(kept)
        log.warning("mqtt: publish queue overflow, coalesced to %d messages", len(kept))

    async def flush(self) -> None:
        """Wait until everything queued so far has been handed to the broker (tests, bench;
        bound it with ``asyncio.timeout``)."""
        while self.discrete or self.latest or self.inflight:
            self.idle.clear()
            await self.idle.wait()

    # ------------------------------------------------------------------ the I/O

    async def run(self, client: aiomqtt.Client, lost: asyncio.Future[str]) -> None:
        """The publisher of one connection; an MQTT error resolves ``lost`` (the bridge's
        ``receive`` then ends the connection)."""
        self._lost = lost
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.max_inflight)
        while True:
            while self.discrete:
                pub = self.discrete.popleft()
                if pub.seq is not None and pub.seq not in self.unacked_logs:
                    continue  # dropped by the log bound meanwhile
                await slots.acquire()
                self._start(client, pub, slots)
            now = loop.time()
            wait: float | None = None
            for key in list(self.latest):
                due = self.next_due.get(key, 0.0)
                if due <= now:
                    topic, value = self.latest.pop(key)
                    pending = Pub(topic, encode_value(value), 0, True, key=key)
                    self.next_due[key] = now + self.interval
                    await slots.acquire()
                    self._start(client, pending, slots)
                else:
                    wait = due - now if wait is None else min(wait, due - now)
            if not self.discrete and not self.inflight and not self.latest:
                self.idle.set()
            if self.discrete:
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.wake.wait()

    def _start(self, client: aiomqtt.Client, pub: Pub, slots: asyncio.Semaphore) -> None:
        task = asyncio.create_task(self._publish(client, pub))
        self.inflight.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self.inflight.discard(t)
            slots.release()
            if not self.inflight and not self.discrete and not self.latest:
                self.idle.set()

        task.add_done_callback(finished)

    async def _publish(self, client: aiomqtt.Client, pub: Pub) -> None:
        import aiomqtt

        try:
            await client.publish(pub.topic, pub.payload, qos=pub.qos, retain=pub.retain)
        except (aiomqtt.MqttError, ValueError) as exc:
            self.stats["publish_errors"] += 1
            log.debug("mqtt: publish to %s failed: %s", pub.topic, exc)
            lost = self._lost
            if isinstance(exc, aiomqtt.MqttError) and lost and not lost.done():
                lost.set_result(str(exc))
            return
        self.stats["published"] += 1
        if pub.seq is not None:
            self.unacked_logs.pop(pub.seq, None)
