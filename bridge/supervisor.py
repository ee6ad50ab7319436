"""Device supervision: connect, pump both directions, reconnect with capped backoff
(``Device.retry_delay``).

``run_device`` owns one device's lifecycle. It reports ``connecting`` on the first attempt,
``ok`` once ``__aenter__`` succeeded (the hub then resyncs the device's feedback),
``disconnected`` when the device cannot be opened or drops, ``failed`` on an unexpected
driver error, ``bad_config`` on a configuration error (and then stops trying). One
device's failure never touches the others. On cancellation (shutdown, removal on reload)
the device's lights are switched off before it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from bridge.devices.base import Device
from bridge.errors import ConfigError, DeviceError
from bridge.hub import Hub, Slot
from bridge.vocab import DeviceStatus

log = logging.getLogger(__name__)

BLACKOUT_TIMEOUT = 0.5


async def _reader(hub: Hub, slot: Slot) -> None:
    name = slot.device.name
    async for item in slot.device.receive():
        hub.submit(name, item)
    raise DeviceError("the device stopped reporting")


async def _writer(slot: Slot) -> None:
    device = slot.device
    while True:
        for message in await slot.outbox.get():
            await device.send(message)


async def _blackout(hub: Hub, slot: Slot) -> None:
    device = slot.device
    try:
        async with asyncio.timeout(BLACKOUT_TIMEOUT):
            # flush what is queued (e.g. the last feedback), then switch lights off
            pending, _ = slot.outbox.take(float("inf"))
            for message in pending:
                await device.send(message)
            for message in hub.feedback.blackout(device.name):
                await device.send(message)
            await device.blackout()
    except (DeviceError, TimeoutError) as exc:
        log.info("%s: blackout incomplete: %s", device.name, exc)
    except Exception:
        log.exception("%s: blackout failed", device.name)


async def _pump(hub: Hub, slot: Slot) -> None:
    name = slot.device.name
    tasks = [
        asyncio.create_task(_reader(hub, slot), name=f"{name}-reader"),
        asyncio.create_task(_writer(slot), name=f"{name}-writer"),
    ]
    slot.device.report_now = functools.partial(hub.submit, name)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        slot.device.report_now = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _blackout(hub, slot)
        raise
    slot.device.report_now = None
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        exc = task.exception()
        if exc is not None:
            raise exc


def _log_stats(device: Device[Any], level: int) -> None:
    """A device's counters (messages in/out, dropped input) as one log line, if it has any."""
    with contextlib.suppress(Exception):
        stats = device.stats()
        if stats:
            log.log(level, "%s stats: %s", device.name, stats)


async def run_device(hub: Hub, slot: Slot) -> None:
    device = slot.device
    name = device.name
    attempt = 0  # failed connect attempts since the device was last up
    announced_down = False
    hub.device_down(name, DeviceStatus.CONNECTING)
    while True:
        try:
            async with device:
                hub.device_up(name)
                log.info("%s (%s): connected", name, device.kind)
                attempt = 0
                announced_down = False
                await _pump(hub, slot)
        except asyncio.CancelledError:
            hub.device_down(name, DeviceStatus.STOPPED, "stopped")
            _log_stats(device, logging.INFO)  # the run's counters, once, at a clean stop
            raise
        except ConfigError as exc:
            log.error("%s (%s): bad configuration: %s", name, device.kind, exc)
            hub.device_down(name, DeviceStatus.BAD_CONFIG, str(exc))
            return
        except DeviceError as exc:
            if not announced_down:
                log.warning("%s (%s): %s; retrying", name, device.kind, exc)
                hub.device_down(name, DeviceStatus.DISCONNECTED, str(exc))
                announced_down = True
            else:
                log.debug("%s: still unavailable: %s", name, exc)
        except Exception as exc:
            log.exception("%s (%s): driver failed; restarting it", name, device.kind)
            hub.device_down(name, DeviceStatus.FAILED, f"{type(exc).__name__}: {exc}")
            announced_down = True
        _log_stats(device, logging.DEBUG)
        await asyncio.sleep(device.retry_delay(attempt))
        attempt += 1
