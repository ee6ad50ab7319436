"""Registry of device drivers. Drivers are imported only when a config uses them, so a
missing optional library (e.g. PortAudio) only affects the device that needs it.

Third-party drivers register through the entry-point group ``studio_bridge.devices``
(``kind = "package.module:Class"``).
"""

from __future__ import annotations

import importlib
from typing import Any, cast

from bridge.devices.base import Device
from bridge.errors import ConfigError

BUILTIN: dict[str, str] = {
    "internal": "bridge.devices.clock_daw:InternalTransport",
    "osc_api": "bridge.devices.osc_api:OscApi",
    "web": "bridge.devices.web:WebConsole",
    "ardour": "bridge.devices.ardour_osc:ArdourOsc",
    "reaper": "bridge.devices.reaper_osc:ReaperOsc",
    "mmc": "bridge.devices.mmc:MmcTransport",
    "mmc_in": "bridge.devices.mmc:MmcInput",
    "generic_midi": "bridge.devices.generic_midi:GenericMidiSurface",
    "mackie": "bridge.devices.mackie:MackieSurface",
    "mqtt": "bridge.devices.mqtt:MqttBridge",
    "fake": "bridge.devices.fake:FakeDevice",
    "talkback_recorder": "bridge.devices.talkback_audio:TalkbackRecorder",
    "x32": "bridge.devices.x32:X32Talkback",
    "totalmix": "bridge.devices.totalmix:TotalMixTalkback",
    "talkback_osc": "bridge.devices.talkback_osc:OscTalkback",
    "talkback_midi": "bridge.devices.talkback_midi:MidiTalkback",
}


def _plugins() -> list[tuple[str, str]]:
    """Third-party drivers (imported lazily: importlib.metadata costs ~20 ms at start-up)."""
    from importlib.metadata import entry_points

    return [(ep.name, ep.value) for ep in entry_points(group="studio_bridge.devices")]


def known_kinds() -> list[str]:
    kinds = set(BUILTIN)
    kinds.update(name for name, _ in _plugins())
    return sorted(kinds)


def load_driver(kind: str) -> type[Device[Any]]:
    """Import and return the driver class for ``kind``; raise ConfigError if unknown."""
    target = BUILTIN.get(kind)
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
