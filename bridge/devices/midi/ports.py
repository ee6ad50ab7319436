"""Which MIDI ports exist, without opening any: JACK through one shared, never activated client
(:mod:`.jackwatch`), ALSA through one rtmidi client without ports; and the port pattern check
the drivers' options use."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import rtmidi

from bridge.devices.midi import jackwatch
from bridge.errors import DeviceUnavailable

MidiApi = Literal["jack", "alsa", "auto"]


def resolve_api(api: str) -> int:
    """rtmidi API constant for ``"jack"``, ``"alsa"`` or ``"auto"``."""
    compiled = rtmidi.get_compiled_api()
    if api == "jack":
        return int(rtmidi.API_UNIX_JACK)
    if api == "alsa":
        return int(rtmidi.API_LINUX_ALSA)
    if api != "auto":
        raise ValueError(f"unknown MIDI api {api!r}")
    if rtmidi.API_LINUX_ALSA in compiled and os.path.exists("/dev/snd/seq"):
        return int(rtmidi.API_LINUX_ALSA)
    return int(rtmidi.API_UNIX_JACK)


def check_pattern(pattern: str) -> str | None:
    """Options check: None if ``pattern`` is usable, else what is expected."""
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as exc:
            return f"a valid regular expression after 're:' ({exc})"
    elif not pattern:
        return "a non-empty port name pattern"
    return None


_alsa_listers: dict[bool, Any] = {}
_jack_quiet = False


def _alsa_ports(inputs: bool) -> list[str]:
    """ALSA sequencer ports through one rtmidi client without ports (no callback, no thread)."""
    lister = _alsa_listers.get(inputs)
    if lister is None:
        lister = (
            rtmidi.MidiOut(rtmidi.API_LINUX_ALSA, name="studio-bridge-probe")
            if inputs
            else (rtmidi.MidiIn(rtmidi.API_LINUX_ALSA, name="studio-bridge-probe"))
        )
        _alsa_listers[inputs] = lister
    return list(lister.get_ports())


def list_ports(api: int, inputs: bool) -> list[str]:
    """Names of the MIDI ports a link could open: ``inputs`` (ports we can send to) or outputs
    (ports we can receive from). Raises DeviceUnavailable when the MIDI system is not reachable."""
    if api == rtmidi.API_UNIX_JACK:
        global _jack_quiet
        if not _jack_quiet:  # libjack prints to stderr at every probe while JACK is down
            _jack_quiet = jackwatch.route_messages_to_log()
        ports = jackwatch.list_ports(inputs)
        if ports is None:
            server = os.environ.get("JACK_DEFAULT_SERVER", "default")
            raise DeviceUnavailable(f"JACK server {server!r} not reachable (is jackd running as this user?)")
        return ports
    try:
        return _alsa_ports(inputs)
    except (rtmidi.RtMidiError, RuntimeError, OSError) as exc:
        raise DeviceUnavailable(f"ALSA sequencer not usable: {exc}") from exc
