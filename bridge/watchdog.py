"""systemd's watchdog: ``WATCHDOG=1`` keep-alives sent from the event loop.

With ``WatchdogSec=`` in the unit, systemd sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) and
restarts the service when no keep-alive arrives within that time. The keep-alive is a timer on
the event loop, at half the interval: a loop that hangs (a blocking call, a deadlock) stops the
pings, and systemd restarts the daemon (``Restart=on-failure`` in the example unit).

Not under systemd (no ``NOTIFY_SOCKET`` or no ``WATCHDOG_USEC``, or ``WATCHDOG_PID`` naming
another process): nothing is started, no timer, no socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between keep-alives (half of ``WATCHDOG_USEC``), or None when not asked for."""
    env = os.environ if env is None else env
    if not env.get("NOTIFY_SOCKET"):
        return None
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec.isdigit() or int(usec) <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1e6 / 2


class Watchdog:
    """Pings systemd every ``interval`` seconds from a loop timer while started."""

    def __init__(self, interval: float, address: str) -> None:
        self.interval = interval
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def from_env(cls) -> Watchdog | None:
        interval = watchdog_interval()
        if interval is None:
            return None
        return cls(interval, os.environ["NOTIFY_SOCKET"])

    def start(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        log.info("systemd watchdog: a keep-alive every %.3g s", self.interval)
        self._ping()

    def _ping(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.sendto(b"WATCHDOG=1", self.address)
            self.sent += 1
        except OSError as exc:
            # systemd gone or busy: a missed ping is its business (it restarts us if it cares)
            self.failed += 1
            if self.failed == 1:
                log.info("systemd watchdog: keep-alive not sent: %s", exc)
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._ping)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
