"""Registry of device drivers. Drivers are imported only when a config uses them, so a
missing optional library (e.g. PortAudio) only affects the device that needs it.

Three ways in, besides the built-in kinds (which none of them can replace):

* an installed package: the entry-point group ``studio_bridge.devices``
  (``kind = "package.module:Class"``);
* the environment: ``STUDIO_BRIDGE_DRIVERS="kind=package.module:Class,..."`` names driver
  modules that are importable but not installed as a plugin (a driver in development; the
  test suite's in-memory ``fake`` device for whole-daemon tests). Nothing is added unless it
  is set;
* in the process: :func:`register` (a program or test that embeds the bridge).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, cast

from bridge.devices.base import Device
from bridge.errors import ConfigError

BUILTIN: dict[str, str] = {
    "internal": "bridge.devices.internal:InternalTransport",
    "osc_api": "bridge.devices.osc_api:OscApi",
    "web": "bridge.devices.web:WebConsole",
    "ardour": "bridge.devices.ardour:ArdourOsc",
    "reaper": "bridge.devices.reaper:ReaperOsc",
    "mmc": "bridge.devices.midi.mmc:MmcTransport",
    "mmc_in": "bridge.devices.midi.mmc:MmcInput",
    "generic_midi": "bridge.devices.midi.generic:GenericMidiSurface",
    "mackie": "bridge.devices.midi.mackie:MackieSurface",
    "mqtt": "bridge.devices.mqtt:MqttBridge",
    "talkback_recorder": "bridge.devices.talkback_recorder:TalkbackRecorder",
    "x32": "bridge.devices.x32:X32Talkback",
    "totalmix": "bridge.devices.totalmix:TotalMixTalkback",
    "talkback_osc": "bridge.devices.talkback_osc:OscTalkback",
    "talkback_midi": "bridge.devices.talkback_midi:MidiTalkback",
}


#: Environment variable naming extra driver modules: ``kind=package.module:Class,...``.
ENV_DRIVERS = "STUDIO_BRIDGE_DRIVERS"
_registered: dict[str, str | type[Device[Any]]] = {}


def register(kind: str, driver: str | type[Device[Any]]) -> None:
    """Add ``kind`` for this process: a driver class or ``"package.module:Class"``."""
    if kind in BUILTIN:
        raise ValueError(f"device kind {kind!r} is built in")
    _registered[kind] = driver


def _from_env() -> list[tuple[str, str]]:
    """The drivers named by STUDIO_BRIDGE_DRIVERS (empty when it is not set)."""
    out = []
    for item in os.environ.get(ENV_DRIVERS, "").split(","):
        kind, sep, target = item.strip().partition("=")
        if not item.strip():
            continue
        if not sep or not kind.strip() or ":" not in target:
            raise ConfigError(f"{ENV_DRIVERS}: {item.strip()!r} is not kind=package.module:Class")
        out.append((kind.strip(), target.strip()))
    return out


def _plugins() -> list[tuple[str, str]]:
    """Third-party drivers (imported lazily: importlib.metadata costs ~20 ms at start-up)."""
    from importlib.metadata import entry_points

    return [(ep.name, ep.value) for ep in entry_points(group="studio_bridge.devices")]


def known_kinds() -> list[str]:
    kinds = set(BUILTIN) | set(_registered)
    kinds.update(name for name, _ in _from_env())
    kinds.update(name for name, _ in _plugins())
    return sorted(kinds)


def load_driver(kind: str) -> type[Device[Any]]:
    """Import and return the driver class for ``kind``; raise ConfigError if unknown."""
    target: str | type[Device[Any]] | None = BUILTIN.get(kind) or _registered.get(kind)
    if target is None:
        target = dict(_from_env()).get(kind)
    if isinstance(target, type):
        return target
    if target is None:
        for name, value in _plugins():
            if name == kind:
                target = value
                break
    if target is None:
        raise ConfigError(f"unknown device kind {kind!r} (known: {', '.join(known_kinds())})")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"device kind {kind!r} cannot be loaded: {exc}") from exc
    return cast(type[Device[Any]], getattr(module, class_name))
