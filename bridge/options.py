"""Validate a TOML table against a frozen dataclass, with errors that name file and key.

    @dataclass(frozen=True)
    class Options:
        host: str = "127.0.0.1"
        port: int = field(default=3819, metadata={"check": port_check})
        mode: Literal["a", "b"] = "a"

    opts = parse_options(Options, table, where="devices.ardour", file="studio.toml")

Supported field types: bool, int, float, str, Literal[...], X | None, list[...] and
tuple[X, ...] of those, and dict[str, X]. Unknown keys are errors (typos must not pass
silently). A field's ``metadata["check"]`` is a callable returning an error text or None.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from bridge.errors import ConfigError

T = TypeVar("T")


class OptionsError(ConfigError):
    """A driver's options are inconsistent with each other (raised by ``Device.validate``);
    the config loader prefixes the file and ``devices.<name>.<key>``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def show(value: Any) -> str:
    """Render a config value the way the user wrote it, for error messages."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def port_check(value: Any) -> str | None:
    if isinstance(value, int) and 1 <= value <= 65535:
        return None
    return "an integer 1-65535"


def positive(value: Any) -> str | None:
    return None if value > 0 else "a number > 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "a number >= 0"


def in_range(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if lo <= value <= hi else f"a number {lo:g}-{hi:g}"

    return check


def describe(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(show(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in get_args(tp) if a is not type(None)]
        return " or ".join(parts)
    if origin in (list, tuple):
        return f"an array of {describe(get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table"
    return str(tp)


def _convert(tp: Any, value: Any, where: str, file: str) -> Any:
    origin = get_origin(tp)

    def fail() -> ConfigError:
        return ConfigError(f"{file}: {where}: expected {describe(tp)}, got {show(value)}")

    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        raise fail()
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where, file)
            except ConfigError:
                continue
        raise fail()
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise fail()
        item = get_args(tp)[0]
        items = [_convert(item, v, f"{where}[{i}]", file) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise fail()
        _, vt = get_args(tp)
        return {str(k): _convert(vt, v, f"{where}.{k}", file) for k, v in value.items()}
    raise ConfigError(f"{file}: {where}: unsupported option type {tp!r}")  # programming error


def parse_options(cls: type[T], table: dict[str, Any], where: str, file: str) -> T:
    """Build ``cls`` from ``table``; every error names ``file`` and ``where.key``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(f"{file}: {where}.{unknown[0]}: unknown key (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{file}: {key}: required, expected {describe(hints[name])}")
            continue
        check = f.metadata.get("check")
        try:
            value = _convert(hints[name], table[name], key, file)
        except ConfigError:
            if check is not None:  # say what the check wants ("an integer 1-65535"), if it can tell
                try:
                    expected = check(table[name])
                except TypeError:
                    expected = None
                if expected:
                    raise ConfigError(
                        f"{file}: {key}: expected {expected}, got {show(table[name])}"
                    ) from None
            raise
        if check is not None and value is not None:
            problem = check(value)
            if problem:
                raise ConfigError(f"{file}: {key}: expected {problem}, got {show(table[name])}")
        kwargs[name] = value
    return cls(**kwargs)
