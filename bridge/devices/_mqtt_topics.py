"""The MQTT bridge's topic grammar: topic levels (a room, a root prefix, state keys) and the
command topics ``<root>/cmd/...`` -> commands of the command registry (:func:`parse_command`).

Command topics are derived from the registry (``bridge/commands.py``): ``cmd/`` + the verb name
with slashes, the dotted aliases as extra topics, ``cmd/track/<n>/<what>`` for track verbs, and
``<topic>/toggle`` for verbs with a toggle form. A plain payload fills the verb's scalar argument,
a JSON object names arguments (and may carry a correlation ``id`` for the reply).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from bridge import commands
from bridge.vocab import Command, Value

LEVEL = re.compile(r"^[^/+#\x00]+$")


def level_check(value: Any) -> str | None:
    return None if LEVEL.match(value) else 'one topic level without / + # (e.g. "studio-a")'


def root_check(value: Any) -> str | None:
    parts = value.split("/")
    if value and all(LEVEL.match(p) for p in parts):
        return None
    return 'a topic prefix without wildcards or empty levels (e.g. "studio-bridge/studio-a")'


class CommandParseError(ValueError):
    """A command message cannot be understood (the text goes into the reply)."""


class UnknownCommand(CommandParseError):
    pass


def _payload(raw: bytes, text_scalar: bool) -> tuple[Any, dict[str, Any] | None]:
    """Payload -> (scalar, JSON object or None). Plain text (kept as text for a verb whose
    scalar argument is text, else a number if it is one), a JSON scalar, or a JSON object."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise CommandParseError("payload is not UTF-8") from exc
    if not text:
        return None, None
    if text[0] in '{["' or text in ("true", "false", "null"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandParseError(f"invalid JSON: {exc.msg}") from exc
        if isinstance(data, dict):
            return None, data
        if isinstance(data, list):
            raise CommandParseError("expected a value or a JSON object, got an array")
        return data, None
    if text_scalar:
        return text, None
    try:
        return (float(text) if any(c in text for c in ".eE") else int(text)), None
    except ValueError:
        return text, None


#: command topic suffix -> verb (``track/<n>/...`` is matched in ``parse_command``); derived
#: from the registry, with the dotted aliases (``take/false_start``) as extra topics.
_TOPICS: dict[str, commands.Verb] = {
    **{
        alias.replace(".", "/"): commands.BY_NAME[name]
        for alias, name in commands.ALIASES.items()
        if "." in alias and "mqtt" in commands.BY_NAME[name].grammars and not commands.BY_NAME[name].is_track
    },
    **{v.mqtt_topic[4:]: v for v in commands.VERBS if "mqtt" in v.grammars and not v.is_track},
}
_TRACK_VERBS: dict[str, commands.Verb] = {
    v.name.split(".", 1)[1]: v for v in commands.VERBS if "mqtt" in v.grammars and v.is_track
}


def parse_command(
    suffix: str, raw: bytes, get: Callable[[str], Value] | None = None
) -> tuple[Command, str | None]:
    """``("transport/record", b"1")`` -> ``(SetRecord(on=True), None)``; the second item is
    the client's correlation id (``{"id": ...}``). ``<topic>/toggle`` reads the state through
    ``get``. Raises CommandParseError / UnknownCommand."""
    toggle = suffix.endswith("/toggle")
    base = suffix.removesuffix("/toggle") if toggle else suffix
    parts = base.split("/")
    track: str | None = None
    verb = _TOPICS.get(base)
    if verb is None and len(parts) == 3 and parts[0] == "track" and parts[1] and parts[2] in _TRACK_VERBS:
        verb, track = _TRACK_VERBS[parts[2]], parts[1]
    if verb is None or (toggle and verb.toggle is None):
        raise UnknownCommand(f"unknown command topic cmd/{suffix}")
    scalar = verb.scalar_arg
    value, obj = _payload(raw, scalar is not None and scalar.kind == "text")
    corr_id = None
    named: dict[str, Any] = {}
    if obj is not None:
        corr = obj.get("id")
        corr_id = None if corr is None else str(corr)
        names = {a.name for a in verb.args}
        named = {k: v for k, v in obj.items() if k in names and k != "track"}
        if "value" in obj and "value" not in names:
            target = "on" if "on" in names else scalar.name if scalar is not None else None
            if target is not None and target not in named:
                named[target] = obj["value"]
    elif value is not None and scalar is not None:
        named[scalar.name] = value
    try:
        if track is not None:
            named["track"] = commands.parse_track(track)
        if toggle:
            if get is None:
                raise CommandParseError("toggles need the studio state")
            return commands.build_toggle(verb, named, get), corr_id
        return commands.build(verb, named), corr_id
    except commands.ArgError as exc:
        raise CommandParseError(str(exc)) from None


def key_ok(key: str) -> bool:
    return bool(key) and all(LEVEL.match(part) for part in key.split("/"))
