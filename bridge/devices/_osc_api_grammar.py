"""The OSC API's grammar: OSC addresses -> commands of the command registry, and studio-state keys
-> the feedback messages a client gets (see :mod:`bridge.devices.osc_api` for the addresses).

Addresses are derived from the registry (``bridge/commands.py``): ``/`` + the verb name with dots
as slashes, the dotted aliases as extra addresses, track verbs as ``/track/<n>/<what>`` and
``/track/name/<what> <name>``, and ``<address>/toggle`` for verbs with a toggle form, resolved
against the studio state the API mirrors.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge import commands
from bridge import state as S
from bridge.devices._osc import OscArgs
from bridge.vocab import Command, Value

#: OSC address -> verb (track verbs are matched in ``parse``); derived from the registry,
#: with the dotted aliases (``/take/false_start``) as extra addresses.
_ADDRESSES: dict[str, commands.Verb] = {
    **{
        "/" + alias.replace(".", "/"): commands.BY_NAME[name]
        for alias, name in commands.ALIASES.items()
        if "." in alias and "osc" in commands.BY_NAME[name].grammars and not commands.BY_NAME[name].is_track
    },
    **{v.osc_address: v for v in commands.VERBS if "osc" in v.grammars and not v.is_track},
}
_TRACK_VERBS: dict[str, commands.Verb] = {
    v.name.split(".", 1)[1]: v for v in commands.VERBS if "osc" in v.grammars and v.is_track
}


def _format_time(seconds: float) -> str:
    seconds = max(0.0, seconds)
    minutes, secs = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{secs:06.3f}"


def _arg(value: Value) -> Value:
    if isinstance(value, bool):
        return int(value)
    return value


def feedback_messages(key: str, value: Value) -> list[tuple[str, Value]]:
    """StateKey -> the OSC messages a client gets (address, single argument)."""
    if key == S.PLAYING:
        return [("/transport/play", int(bool(value))), ("/transport/stop", int(not value))]
    if key == S.RECORDING:
        return [("/transport/record", int(bool(value)))]
    if key == S.POSITION:
        seconds = float(value) if isinstance(value, int | float) else 0.0
        return [("/transport/position", seconds), ("/transport/time", _format_time(seconds))]
    parsed = S.parse_track_key(key)
    if parsed is not None:
        track, field_name = parsed
        name = "arm" if field_name == "armed" else field_name
        if value is None:
            value = "" if field_name == "name" else 0
        return [(f"/track/{track}/{name}", _arg(value))]
    if value is None:
        value = ""
    return [("/" + key, _arg(value))]


def parse(address: str, args: OscArgs, state: Mapping[str, Value]) -> Command:
    """An OSC message -> its Command; ``state`` is the studio state the API mirrors (for
    ``/toggle`` forms and track names). Raises KeyError (unknown address), ValueError (bad
    arguments; ``commands.TextTooLong`` for a text over the limit) or ``commands.Release``."""
    verb = _ADDRESSES.get(address)
    if verb is not None:
        values = commands.button(args, verb) if verb.trigger else args
        return commands.build(verb, list(values), clamp=True)
    if address.endswith("/toggle"):
        return _toggle(address, args, state)
    parts = address.split("/")  # "", "track", n|name, what
    if len(parts) == 4 and parts[1] == "track" and parts[3] in _TRACK_VERBS and parts[2]:
        verb, which = _TRACK_VERBS[parts[3]], parts[2]
        if which == "name":
            return commands.build(verb, list(args), clamp=True)
        if which.isdigit() and int(which) < 1:
            raise ValueError("track numbers start at 1")
        return commands.build(verb, [int(which) if which.isdigit() else which, *args], clamp=True)
    raise KeyError(address)


def _toggle(address: str, args: OscArgs, state: Mapping[str, Value]) -> Command:
    """Resolve ``.../toggle`` against the state this API mirrors (commands stay absolute)."""
    base = address.removesuffix("/toggle")
    verb = _ADDRESSES.get(base)
    if verb is not None and verb.toggle is not None:
        commands.toggle_button(args)
        return commands.build_toggle(verb, None, state.get)
    parts = base.split("/")  # "", "track", n|name, what
    if len(parts) != 4 or parts[1] != "track" or parts[3] not in _TRACK_VERBS:
        raise KeyError(address)
    which, verb = parts[2], _TRACK_VERBS[parts[3]]
    if verb.toggle is None:
        raise KeyError(address)
    track: int | None
    if which == "name":
        if not args:
            raise ValueError("expected a track name")
        name = commands.parse_text(args[0])
        args = args[1:]
        track = S.track_named(state, name)
        if track is None:
            raise ValueError(f"no track named {name!r}")
    elif which.isdigit() and int(which) >= 1:
        track = int(which)
    else:
        raise ValueError("track numbers start at 1")
    commands.toggle_button(args)
    return commands.build_toggle(verb, {"track": track}, state.get)
