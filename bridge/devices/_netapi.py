"""What the bridge's own network APIs share: the OSC API (``[osc]``, :mod:`bridge.devices.osc_api`)
and the web console (``[web]``, :mod:`bridge.devices.web`).

* :class:`ListenOptions`: the option fields both tables have (``bind``, ``port``, ``allow``,
  ``position_rate``), and :func:`check_bind` (``bind`` must be an IP address).
* :class:`Allowlist`: the networks allowed to talk to an API (private networks by default).
* :class:`RateLimitedLog`: bad input and refusals logged without letting a flood fill the journal.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.errors import ConfigError
from bridge.options import port_check, positive

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


def check_networks(value: Any) -> str | None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f'IP networks such as "192.168.1.0/24" ("{item}" is not one)'
    return None


@dataclass(frozen=True)
class ListenOptions:
    """The fields every network API's options start with; a subclass sets ``TABLE`` (its config
    table, for messages) and redeclares ``port`` with its own default."""

    TABLE: ClassVar[str] = ""
    bind: str = "0.0.0.0"
    port: int = field(default=0, metadata={"check": port_check})
    allow: list[str] = field(
        default_factory=lambda: list(PRIVATE_NETWORKS), metadata={"check": check_networks}
    )
    #: state pushes per second at most for continuous keys (the playhead)
    position_rate: float = field(default=10.0, metadata={"check": positive})


def check_bind(options: ListenOptions, file: str) -> None:
    """``bind`` is an IP address (the config loader calls it for ``[osc]`` and ``[web]``)."""
    try:
        ipaddress.ip_address(options.bind)
    except ValueError as exc:
        raise ConfigError(
            f'{file}: {options.TABLE}.bind: expected an IP address such as "0.0.0.0", got "{options.bind}"'
        ) from exc


class RateLimitedLog:
    """Log bad input without letting a flood fill the journal: ``per_window`` messages per
    ``window`` seconds at ``level``, then one ``summary`` ("N more like this", formatted with the
    count and the seconds) when the window ends, from a loop timer armed only while something was
    suppressed (no idle timer). ``close`` (a clean stop) gives what is left as INFO: stopping is
    not a fault."""

    def __init__(
        self,
        logger: logging.Logger,
        summary: str,
        per_window: int = 5,
        window: float = 10.0,
        level: int = logging.WARNING,
    ) -> None:
        self.logger = logger
        self.summary = summary
        self.per_window = per_window
        self.window = window
        self.level = level
        self._start = float("-inf")
        self._count = 0
        self._suppressed = 0
        self._timer: asyncio.TimerHandle | None = None

    def flush(self, level: int | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._suppressed:
            seconds = min(self.window, max(0.0, time.monotonic() - self._start))
            self.logger.log(self.level if level is None else level, self.summary, self._suppressed, seconds)
            self._suppressed = 0

    def close(self) -> None:
        """A clean stop: the summary of what is left, as INFO."""
        self.flush(logging.INFO)

    def _window_end(self) -> None:
        self._timer = None
        self.flush()

    def log(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start > self.window:
            self.flush()
            self._start, self._count = now, 0
        if self._count < self.per_window:
            self._count += 1
            self.logger.log(self.level, msg, *args)
            return
        self._suppressed += 1
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a direct call): summarised at the next one or close
                return
            self._timer = loop.call_later(max(0.0, self._start + self.window - now), self._window_end)
