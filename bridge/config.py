"""Configuration: one TOML file, validated at load, with errors that name file, key and fix.

Layout (every section optional; no file at all is the built-in default)::

    [bridge]
    room = "studio-a"          # name of this room: MQTT topic root, log lines
    log_level = "info"         # debug | info | warning | error
    data_dir = "/var/lib/studio-bridge"   # where the session log lives
    session = ""               # name for new sessions (default: start date and time)
    confirm_timeout = 2.0      # seconds a device has to confirm a command
    auto_take = "record"       # "record": a take starts when recording starts | "off"
    songs = ["Blue", "Gold"]   # the song list each session starts with

    [osc]                      # the bridge's own OSC control API (see bridge/devices/osc_api.py)
    bind = "0.0.0.0"
    port = 9123

    [web]                      # the producer's console (bridge/devices/web.py); enabled = false: off
    bind = "0.0.0.0"
    port = 9124

    [internal]                 # the built-in transport, used when no device has role "daw"
    tracks = 16

    [mqtt]                     # optional: the facility bus (bridge/devices/mqtt.py)
    host = "127.0.0.1"

    [devices.<name>]           # any number of devices
    kind = "ardour"            # see `studio-bridge check --kinds`
    role = "daw"               # daw | mixer | talkback (omit for surfaces)
    mapping = "mappings/x.toml"   # studio mapping for controller surfaces
    enabled = true
    ...                        # the driver's own options

    [roles]                    # alternative to role = ...: role -> device name
    daw = "ardour"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bridge.devices import known_kinds, load_driver
from bridge.errors import ConfigError
from bridge.mapping import StudioMap, load_mapping
from bridge.options import OptionsError, in_range, parse_options, show

ROLES = ("daw", "mixer", "talkback")
DEVICE_KEYS = ("kind", "role", "mapping", "enabled")
LogLevel = Literal["debug", "info", "warning", "error"]


def _check_songs(value: Any) -> str | None:
    seen: set[str] = set()
    for item in value:
        name = item.strip()
        if not name:
            return 'an array of song names ("" is not one)'
        if name in seen:
            return f'an array of different song names ("{name}" is there twice)'
        seen.add(name)
    return None


@dataclass(frozen=True)
class BridgeOptions:
    room: str = "studio"
    log_level: LogLevel = "info"
    data_dir: str | None = None
    session: str = ""
    confirm_timeout: float = field(default=2.0, metadata={"check": in_range(0.1, 60)})
    #: "record": a new take starts when recording starts (roll in record, punch in); "off"
    auto_take: Literal["record", "off"] = "record"
    #: the song list every session starts with (songs set with /song join it)
    songs: list[str] = field(default_factory=list, metadata={"check": _check_songs})


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    kind: str
    role: str | None
    options: Any
    mapping: StudioMap | None
    #: the raw table, to tell on reload whether the device changed
    fingerprint: str


@dataclass(frozen=True)
class Config:
    path: Path | None
    bridge: BridgeOptions
    devices: dict[str, DeviceSpec]

    @property
    def file(self) -> str:
        return self.path.name if self.path else "<built-in default>"

    def roles(self) -> dict[str, str]:
        return {spec.role: name for name, spec in self.devices.items() if spec.role}


def default_data_dir() -> Path:
    """Where the session log lives when neither --data-dir nor bridge.data_dir say."""
    env = os.environ.get("STUDIO_BRIDGE_DATA_DIR")
    if env:
        return Path(env)
    state_dir = os.environ.get("STATE_DIRECTORY")  # systemd StateDirectory=
    if state_dir:
        return Path(state_dir.split(":")[0])
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "studio-bridge"


def _table(data: dict[str, Any], key: str, file: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{file}: {key}: expected a table ([{key}]), got {show(value)}")
    return value


def _device(
    name: str, table: dict[str, Any], where: str, file: str, base_dir: Path, forced_kind: str | None = None
) -> DeviceSpec | None:
    table = dict(table)
    kind = forced_kind or table.pop("kind", None)
    if forced_kind is None and kind is None:
        raise ConfigError(f"{file}: {where}.kind: required, expected one of {', '.join(known_kinds())}")
    if not isinstance(kind, str):
        raise ConfigError(
            f"{file}: {where}.kind: expected one of {', '.join(known_kinds())}, got {show(kind)}"
        )
    enabled = table.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{file}: {where}.enabled: expected true or false, got {show(enabled)}")
    role = table.pop("role", None)
    if role is not None and role not in ROLES:
        raise ConfigError(f"{file}: {where}.role: expected one of {', '.join(ROLES)}, got {show(role)}")
    mapping_path = table.pop("mapping", None)
    if mapping_path is not None and not isinstance(mapping_path, str):
        raise ConfigError(f"{file}: {where}.mapping: expected a file path (string), got {show(mapping_path)}")
    try:
        driver = load_driver(kind)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {where}.kind: {exc}") from exc
    options = parse_options(driver.Options, table, where, file)
    if not enabled:
        return None
    try:
        driver.validate(options, base_dir)  # the files its options name (a profile...)
    except OptionsError as exc:  # options that contradict each other: name the file and key
        raise ConfigError(f"{file}: {where}.{exc.key}: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{file}: {where}: {exc}") from exc
    mapping = None
    if mapping_path is not None:
        path = Path(mapping_path)
        if not path.is_absolute():
            path = base_dir / path
        try:
            mapping = load_mapping(path)
        except ConfigError as exc:
            raise ConfigError(f"{file}: {where}.mapping: {exc}") from exc
    elif driver.feedback == "mapped":
        raise ConfigError(f"{file}: {where}.mapping: required for a {kind} device (a studio mapping file)")
    fingerprint = repr(sorted((k, repr(v)) for k, v in table.items())) + f"|{kind}|{role}|{mapping_path}"
    return DeviceSpec(name, kind, role, options, mapping, fingerprint)


def parse_config(data: dict[str, Any], path: Path | None) -> Config:
    file = path.name if path else "<built-in default>"
    base_dir = path.parent if path else Path.cwd()
    known = {"bridge", "osc", "web", "internal", "mqtt", "devices", "roles"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{file}: {key}: unknown section (known: {', '.join(sorted(known))})")
    bridge = parse_options(BridgeOptions, _table(data, "bridge", file), "bridge", file)
    devices: dict[str, DeviceSpec] = {}

    osc_table = _table(data, "osc", file)
    osc = _device("osc", osc_table, "osc", file, base_dir, forced_kind="osc_api")
    if osc is not None:
        from bridge.devices._netapi import check_bind

        check_bind(osc.options, file)
        devices["osc"] = osc

    web = _device("web", _table(data, "web", file), "web", file, base_dir, forced_kind="web")
    if web is not None:
        from bridge.devices._netapi import check_bind as check_web_bind

        check_web_bind(web.options, file)
        devices["web"] = web

    raw_devices = _table(data, "devices", file)
    for name, table in raw_devices.items():
        where = f"devices.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: {where}: expected a table ([{where}]), got {show(table)}")
        if name in ("osc", "web", "mqtt", "internal"):
            raise ConfigError(
                f"{file}: {where}: the name {name!r} is reserved, use the top-level [{name}] table"
            )
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{file}: {where}: device names may use letters, digits, '-' and '_' only")
        spec = _device(name, table, where, file, base_dir)
        if spec is not None:
            devices[name] = spec

    if "mqtt" in data:
        mqtt = _device("mqtt", _table(data, "mqtt", file), "mqtt", file, base_dir, forced_kind="mqtt")
        if mqtt is not None:
            devices["mqtt"] = mqtt

    roles_table = _table(data, "roles", file)
    for role, target in roles_table.items():
        if role not in ROLES:
            raise ConfigError(f"{file}: roles.{role}: unknown role (known: {', '.join(ROLES)})")
        if not isinstance(target, str) or target not in devices:
            raise ConfigError(
                f"{file}: roles.{role}: expected the name of a configured device, got {show(target)}"
            )
        spec = devices[target]
        if spec.role not in (None, role):
            raise ConfigError(f"{file}: roles.{role}: device {target!r} already has role {spec.role!r}")
        devices[target] = DeviceSpec(
            spec.name, spec.kind, role, spec.options, spec.mapping, spec.fingerprint + role
        )

    seen: dict[str, str] = {}
    for name, spec in devices.items():
        if spec.role:
            if spec.role in seen:
                raise ConfigError(
                    f"{file}: devices.{name}.role: role {spec.role!r} is already taken by {seen[spec.role]!r}"
                    " (one device per role)"
                )
            seen[spec.role] = name

    if "daw" not in seen:
        internal = _device("internal", _table(data, "internal", file), "internal", file, base_dir, "internal")
        assert internal is not None
        devices["internal"] = DeviceSpec(
            "internal", "internal", "daw", internal.options, None, internal.fingerprint + "daw"
        )
    elif "internal" in data:
        raise ConfigError(
            f"{file}: internal: the internal transport is only used without a daw device "
            f"(role daw is {seen['daw']!r}); remove [internal]"
        )
    return Config(path, bridge, devices)


def load_config(path: Path | None) -> Config:
    """Load and validate ``path``; ``None`` gives the built-in default."""
    if path is None:
        return parse_config({}, None)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a directory, expected a TOML file") from exc
    except PermissionError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid UTF-8 text: {exc}") from exc
    return parse_config(data, path)
