"""aiomqtt's Client with what the MQTT driver needs on a connection loss (aiomqtt 2.5, paho 2.x).

Imported by ``bridge.devices.mqtt`` only when it connects (so aiomqtt is only imported when
a config has an ``[mqtt]`` table). Three defects of the library around a lost connection,
all seen in the daemon's journal when a broker restarts under traffic:

* ``add_writer ... Bad file descriptor``: paho asks for write readiness whenever it queues
  a packet; aiomqtt schedules ``loop.add_writer(fd)`` for the next loop iteration. When the
  connection drops in between (the reader callback closes the socket in the same
  iteration), the fd is closed by then: asyncio logs an ERROR traceback, and if the number
  was reused meanwhile the writer lands on someone else's socket. Here the registration
  checks, when it runs, that the socket is still the client's open socket.
* ``Future exception was never retrieved (MqttCodeError)``: aiomqtt sets the exception of
  its private ``_disconnected`` future on an unexpected disconnect; only a message iterator
  or a failing publish reads it. When neither runs afterwards (the loss was noticed by a
  publish queued behind paho's in-flight window, or during start-up or shutdown), the
  future is garbage-collected unread and asyncio logs an ERROR. ``settle()`` reads it once
  the driver is done with the client (the loss itself is reported as DeviceLost).
* paho logs a reset connection (``failed to receive on socket: [Errno 104] Connection
  reset by peer``) at ERROR through the logger it is given; the driver reports the loss
  itself (one WARNING from the supervisor), so these go to DEBUG.
"""

from __future__ import annotations

import logging
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.types import PahoSocket

#: paho's messages for a connection that went away (logged at ERROR by paho)
_LOSS_MESSAGES = ("failed to receive on socket", "timeout on socket")


class _ConnectionLossToDebug(logging.Filter):
    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(_LOSS_MESSAGES):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self._logger.isEnabledFor(logging.DEBUG)
        return True


def client_logger(name: str) -> logging.Logger:
    """The logger handed to aiomqtt/paho, with connection-loss chatter demoted to DEBUG."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _ConnectionLossToDebug) for f in logger.filters):
        logger.addFilter(_ConnectionLossToDebug(logger))
    return logger


class Client(aiomqtt.Client):
    """``aiomqtt.Client`` + a write registration that survives a closed socket + ``settle()``."""

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: PahoSocket) -> None:
        loop = self._loop

        def writable() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # a broken pipe: the connection is gone
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def register() -> None:
            # runs one loop iteration after paho asked: the socket may have closed since
            current = client.socket()
            if current is not None and current is sock and current.fileno() >= 0:
                loop.add_writer(current.fileno(), writable)

        loop.call_soon_threadsafe(register)

    def settle(self) -> None:
        """Mark the disconnect reason as read (call once the client is closed or lost)."""
        disconnected = self._disconnected
        if disconnected.done() and not disconnected.cancelled():
            disconnected.exception()
