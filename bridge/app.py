"""The daemon: builds everything from the config and runs it until told to stop.

* SIGTERM / SIGINT: graceful stop within 2 s: devices' lights off, log flushed and closed.
* SIGHUP: reload the config file: devices are added, removed or restarted (when their
  table changed) without ending the session; a broken new config is logged and ignored.
  A driver with ``reconfigure(options) -> bool`` (the OSC API while bind and port stay) takes
  the new table in place instead; a restarted one first sends the answers it still owes.
* Start-up: the data directory is created and locked (one daemon per data directory), the
  session log is opened and proves it can write (a synced write), the OSC API is bound, then
  "ready" is logged (and ``READY=1`` is sent to systemd when ``NOTIFY_SOCKET`` is set). Any
  problem with the data directory or the log is one line and exit code 2.
* Under ``WatchdogSec=``: ``WATCHDOG=1`` from an event-loop timer (:mod:`bridge.watchdog`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.config import Config, DeviceSpec, load_config
from bridge.devices import load_driver
from bridge.devices.base import Device, DeviceContext
from bridge.errors import BridgeError, ConfigError, DataDirError
from bridge.hub import Hub
from bridge.log.writer import SessionLog
from bridge.supervisor import run_device
from bridge.vocab import DeviceStatus
from bridge.watchdog import Watchdog

log = logging.getLogger(__name__)

LOG_FILE = "session-log.sqlite3"
LOCK_FILE = "studio-bridge.lock"
STOP_TIMEOUT = 1.5
#: graceful stop budget (README: within 2 s); what is left of it goes to writing session_end
STOP_BUDGET = 1.8


def prepare_data_dir(path: Path) -> None:
    """Create the data directory if needed. Raises DataDirError with one line."""
    if path.exists() and not path.is_dir():
        raise DataDirError(f"data directory {path}: not a directory (a file of that name is in the way)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataDirError(f"data directory {path}: cannot create it: a part of the path is a file") from None
    except OSError as exc:
        raise DataDirError(f"data directory {path}: cannot create it: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise DataDirError(f"data directory {path}: not a directory")


class DataDirLock:
    """One daemon per data directory: an exclusive ``flock`` on ``<data dir>/studio-bridge.lock``
    (held by the open file, so released by the kernel however the daemon ends; the file stays).
    The holder's PID is written into the file so a second daemon can name it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            writable = True
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise DataDirError(
                    f"data directory {self.data_dir}: cannot open {self.path}: {exc.strerror}"
                ) from None
            # A read-only directory: lock the directory itself (the log check then names the cause).
            try:
                fd = os.open(self.path if self.path.exists() else self.data_dir, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc2:
                raise DataDirError(
                    f"data directory {self.data_dir}: cannot lock it: {exc2.strerror}"
                ) from None
            writable = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = self._holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirError(
                    f"data directory {self.data_dir} is in use by another studio-bridge (PID {holder}); "
                    "one daemon per data directory (use --data-dir for a second instance)"
                ) from None
            raise DataDirError(
                f"data directory {self.data_dir}: cannot lock {self.path}: {exc.strerror}"
            ) from None
        if writable:
            with contextlib.suppress(OSError):  # a full disk: the lock holds, the PID stays unknown
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            text = ""
        return text if text.isdigit() else "unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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


async def _answered(device: Device[Any], limit: float | None = None) -> None:
    """Wait until a closed device sent the answers it still owed (``wait_closed``: the OSC API
    keeps its socket for commands taken before it closed), at most ``limit`` seconds."""
    wait_closed = getattr(device, "wait_closed", None)
    if wait_closed is not None:
        await wait_closed(limit)


class App:
    def __init__(
        self,
        config: Config,
        *,
        data_dir: Path,
        osc_port: int | None = None,
        web_port: int | None = None,
        new_session: bool = False,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.osc_port = osc_port
        self.web_port = web_port
        self._ready_event = asyncio.Event()  # DeviceContext.ready: set once "ready" is logged
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
        self._lock = DataDirLock(data_dir)
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
            roles=lambda: dict(self.hub.roles),
            ready=self._ready_event,
        )

    def _options(self, spec: DeviceSpec) -> Any:
        options = spec.options
        if spec.name == "osc" and self.osc_port is not None:
            options = dataclasses.replace(options, port=self.osc_port)
        if spec.name == "web" and self.web_port is not None:
            options = dataclasses.replace(options, port=self.web_port)
        if spec.name == "mqtt" and hasattr(options, "room") and not getattr(options, "room", None):
            options = dataclasses.replace(options, room=self.config.bridge.room)
        return options

    def _build(self, spec: DeviceSpec) -> Device[Any]:
        driver = load_driver(spec.kind)
        return driver(spec.name, self._options(spec), self._context())

    def _reconfigure(self, old: DeviceSpec, new: DeviceSpec) -> bool:
        """Apply a changed table to the running device when its driver can do that in place
        (``reconfigure(options) -> bool``: the OSC API while bind and port stay), so it keeps its
        socket, its clients and what it still has to answer. False: restart it."""
        slot = self.hub.slots.get(new.name)
        apply = getattr(slot.device, "reconfigure", None) if slot is not None else None
        if slot is None or apply is None or (old.kind, old.role) != (new.kind, new.role):
            return False
        if old.mapping is not None or new.mapping is not None:
            return False
        if not apply(self._options(new)):
            return False
        slot.outbox.min_interval = slot.device.outbox_interval()
        self._specs[new.name] = new
        return True

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
        slot = self.hub.slots.get(name)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, STOP_TIMEOUT)
        if slot is not None:
            await _answered(slot.device)
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
        try:
            prepare_data_dir(self.data_dir)
            self._lock.acquire()
            info = await self.hub.start(
                session_name=self.config.bridge.session or None, new_session=self.new_session
            )
        except BaseException:
            self._lock.release()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            raise
        watchdog = Watchdog.from_env()  # None unless systemd asked for keep-alives (WatchdogSec=)
        if watchdog is not None:
            watchdog.start()
        self._hub_task = loop.create_task(self.hub.run(), name="hub")
        clean = False
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
            self._ready_event.set()
            if ready is not None:
                ready()
            while not exit_when_ready and not self._stop_requested:
                await self._wake.wait()
                self._wake.clear()
                if self._reload_requested and not self._stop_requested:
                    self._reload_requested = False
                    await self.reload()
        finally:
            sd_notify("STOPPING=1")
            clean = await self.shutdown()
            self._lock.release()
            if watchdog is not None:
                watchdog.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0 if clean else 1

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
        in_place = [n for n in changed if self._reconfigure(old_specs[n], new.devices[n])]
        for name in in_place:
            log.info("%s: [%s] applied in place (its socket, clients and pending answers kept)", name, name)
        changed = [n for n in changed if n not in in_place]
        for name in removed + changed:
            await self._stop_device(name)
        for name in changed + added:
            try:
                self._start_device(new.devices[name])
            except BridgeError as exc:
                log.error("SIGHUP: device %s not started: %s", name, exc)
        log.info(
            "config reloaded: %d added, %d removed, %d restarted, %d updated in place, %d unchanged",
            len(added),
            len(removed),
            len(changed),
            len(in_place),
            len(new.devices) - len(added) - len(changed) - len(in_place),
        )

    async def shutdown(self) -> bool:
        """Stop devices and close the log; False when session_end could not be written."""
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
        clean = True
        retry = min(0.6, max(0.2, STOP_BUDGET - (time.monotonic() - started)))
        try:
            await asyncio.wait_for(self.session_log.close(retry=retry), 5.0)
        except (TimeoutError, BridgeError) as exc:
            log.error("session log did not close cleanly: %s", exc)
            clean = False
        else:
            if self.session_log.close_error is not None:
                log.error("session log did not close cleanly: %s", self.session_log.close_error)
                clean = False
        # the last durable writes answered their commands; sockets kept for that close now
        for slot in list(self.hub.slots.values()):
            await _answered(slot.device, 0.5)
        log.info("stopped in %.0f ms", (time.monotonic() - started) * 1000)
        return clean
