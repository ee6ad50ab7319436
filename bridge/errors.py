"""The one error hierarchy of the bridge.

Drivers turn library exceptions (OSError, rtmidi errors, OSC decode errors) into
DeviceError subclasses at the edge; nothing else escapes a driver.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """A configuration file, profile or mapping is invalid.

    The message always names the file, the key path and what was expected, e.g.
    ``studio.toml: devices.desk.port: expected an integer 1-65535, got "abc"``.
    """


class MappingError(ConfigError):
    """A device profile or studio mapping is invalid (a kind of configuration error)."""


class CommandError(BridgeError):
    """A command cannot be carried out (unknown track, no device for the role, device down...)."""


class DeviceError(BridgeError):
    """A device failed; the supervisor logs it and reconnects."""


class DeviceUnavailable(DeviceError):
    """The device could not be opened (port missing, peer not answering)."""


class DeviceLost(DeviceError):
    """The link to an open device dropped."""


class SessionLogError(BridgeError):
    """The session log cannot be opened or written."""


class SessionLogDamaged(SessionLogError):
    """The session log database file failed its integrity check."""


class SessionLogUnavailable(SessionLogError):
    """A record was refused, not written: the session log cannot write right now (disk full, I/O
    error, read-only). The log retries by itself; nothing already acknowledged is affected."""


class SessionLogClosed(SessionLogError):
    """A record came after the session log was closed (the bridge is stopping): not written, and
    no fault; the command it belongs to is answered "not carried out"."""


class DataDirError(BridgeError):
    """The data directory cannot be used: not a directory, cannot be created, or locked by another
    daemon. The message is one line naming the directory (and the PID holding the lock)."""
