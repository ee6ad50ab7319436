"""The daemon: builds everything from the config and runs it until told to stop.

* SIGTERM / SIGINT: graceful stop within 2 s: devices' lights off, log flushed and closed.
* SIGHUP: reload the config file: devices are added, removed or restarted (when their
  table changed) without ending the session; a broken new config is logged and ignored.
* Start-up: the session log is opened, the OSC API is bound, then "ready" is logged (and
  ``READY=1`` is sent to systemd when ``NOTIFY_SOCKET`` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from bridge.config import Config, DeviceSpec, load_config
from bridge.devices import load_driver
from bridge.devices.base import Device, DeviceContext
from bridge.errors import BridgeError, ConfigError
from bridge.hub import Hub
from bridge.sessionlog import SessionLog
from bridge.supervisor import run_device
from bridge.vocab import DeviceStatus

log = logging.getLogger(__name__)

LOG_FILE = "session-log.sqlite3"
STOP_TIMEOUT = 1.5


def sd_notify(message: str) -> None:
    """Tell systemd about our state (Type=notify units); a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


class App:
    def __init__(
        self,
        config: Config,
        *,
        data_dir: Path,
        osc_port: int | None = None,
        new_session: bool = False,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.osc_port = osc_port
        self.new_session = new_session
        self.log_path = data_dir / LOG_FILE
        self.session_log = SessionLog(self.log_path)
        self.hub = Hub(
            self.session_log,
            confirm_timeout=config.bridge.confirm_timeout,
            auto_take=config.bridge.auto_take,
            songs=config.bridge.songs,
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._specs: dict[str, DeviceSpec] = {}
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._hub_task: asyncio.Task[None] | None = None
        self.started_at = time.monotonic()

    # ------------------------------------------------------------------ devices

    def _context(self) -> DeviceContext:
        base = self.config.path.parent if self.config.path else Path.cwd()
        return DeviceContext(
            config_dir=base,
            data_dir=self.data_dir,
            clock=time.monotonic,
            state=self.hub.store.get,
            room=self.config.bridge.room,
        )

    def _build(self, spec: DeviceSpec) -> Device:
        driver = load_driver(spec.kind)
        options = spec.options
        if spec.name == "osc" and self.osc_port is not None:
            options = dataclasses.replace(options, port=self.osc_port)
        if spec.name == "mqtt" and hasattr(options, "room") and not getattr(options, "room", None):
            options = dataclasses.replace(options, room=self.config.bridge.room)
        return driver(spec.name, options, self._context())

    def _start_device(self, spec: DeviceSpec) -> None:
        device = self._build(spec)
        slot = self.hub.add_device(device, spec.role, spec.mapping)
        self._specs[spec.name] = spec
        self._tasks[spec.name] = asyncio.get_running_loop().create_task(
            run_device(self.hub, slot), name=f"device-{spec.name}"
        )

    async def _stop_device(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        self._specs.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, STOP_TIMEOUT)
        self.hub.remove_device(name)

    async def _wait_osc_bound(self, limit: float = 3.0) -> None:
        if "osc" not in self._specs:
            return
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            status = self.hub.slots["osc"].status
            if status == DeviceStatus.OK:
                return
            if status in (DeviceStatus.DISCONNECTED, DeviceStatus.FAILED, DeviceStatus.BAD_CONFIG):
                raise BridgeError(f"the OSC API could not start: {self.hub.details.get('osc') or status}")
            await asyncio.sleep(0.005)
        raise BridgeError("the OSC API did not start within 3 s")

    # ------------------------------------------------------------------ life

    async def run(self, exit_when_ready: bool = False, ready: Callable[[], None] | None = None) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        info = await self.hub.start(
            session_name=self.config.bridge.session or None, new_session=self.new_session
        )
        self._hub_task = loop.create_task(self.hub.run(), name="hub")
        try:
            for spec in self.config.devices.values():
                self._start_device(spec)
            await self._wait_osc_bound()
            port = self.hub.slots["osc"].device.port if "osc" in self.hub.slots else None  # type: ignore[attr-defined]
            log.info(
                "ready in %.0f ms: room %r, session %r (%s), OSC API on udp port %s, log %s, devices: %s",
                (time.monotonic() - self.started_at) * 1000,
                self.config.bridge.room,
                info.name,
                "resumed" if info.resumed else "new",
                port,
                self.log_path,
                ", ".join(f"{n} ({s.kind}{', ' + s.role if s.role else ''})" for n, s in self._specs.items()),
            )
            sd_notify("READY=1")
            if ready is not None:
                ready()
            while not exit_when_ready and not self._stop_requested:
                await self._wake.wait()
                self._wake.clear()
                if self._reload_requested and not self._stop_requested:
                    self._reload_requested = False
                    await self.reload()
            return 0
        finally:
            sd_notify("STOPPING=1")
            await self.shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        self._stop_requested = True
        self._wake.set()

    def _request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    async def reload(self) -> None:
        path = self.config.path
        if path is None:
            log.warning("SIGHUP: running on the built-in default configuration; nothing to reload")
            return
        try:
            new = load_config(path)
        except ConfigError as exc:
            log.error("SIGHUP: config not reloaded, keeping the running one: %s", exc)
            return
        old_specs = dict(self._specs)
        removed = [n for n in old_specs if n not in new.devices]
        changed = [
            n for n, s in new.devices.items() if n in old_specs and old_specs[n].fingerprint != s.fingerprint
        ]
        added = [n for n in new.devices if n not in old_specs]
        if new.bridge.log_level != self.config.bridge.log_level:
            logging.getLogger().setLevel(new.bridge.log_level.upper())
        self.config = new
        self.hub.confirm_timeout = new.bridge.confirm_timeout
        self.hub.auto_take = new.bridge.auto_take
        self.hub.songs = list(new.bridge.songs)  # the list the next session starts with
        for name in removed + changed:
            await self._stop_device(name)
        for name in changed + added:
            try:
                self._start_device(new.devices[name])
            except BridgeError as exc:
                log.error("SIGHUP: device %s not started: %s", name, exc)
        log.info(
            "config reloaded: %d added, %d removed, %d restarted, %d unchanged",
            len(added),
            len(removed),
            len(changed),
            len(new.devices) - len(added) - len(changed),
        )

    async def shutdown(self) -> None:
        started = time.monotonic()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            self.hub.drain()
        if self._hub_task is not None:
            self._hub_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._hub_task
        try:
            await asyncio.wait_for(self.session_log.close(), 5.0)
        except (TimeoutError, BridgeError) as exc:
            log.error("session log did not close cleanly: %s", exc)
        log.info("stopped in %.0f ms", (time.monotonic() - started) * 1000)
