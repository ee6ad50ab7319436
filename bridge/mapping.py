"""Studio mappings (layer 2): named controls -> commands, studio state -> control feedback.

A device *profile* (layer 1, owned by the driver) turns raw messages into named controls.
A *studio mapping* file, referenced by ``mapping = "..."`` in a device table, binds those
controls to commands::

    [[binding]]
    control = "transport.rec"          # control name from the device profile
    command = "transport.record"       # a verb of bridge/commands.py (see COMMANDS below)
    glue = "toggle"                    # press | release | toggle | momentary | continuous | relative
    feedback = "transport/recording"   # StateKey lighting the control (default: derived)
    track = 2                          # track.* commands: number or DAW name ("Lead Vox")

    [[binding]]                        # feedback only: an LED that follows a state key
    control = "led.onair"
    feedback = "transport/recording"
    blink = true                       # show "blink" instead of on

Shorthand: ``arm = "Lead Vox"`` (also ``mute``, ``solo``, ``fader``) is
``command = "track.arm"`` with ``track = "Lead Vox"``.

Optional keys: ``label`` (take.mark, take.rename), ``text`` (note), ``song`` (song,
song.add), ``seconds`` (transport.locate), ``take`` (take.select; take.circle, take.falsestart,
take.rename and note on that take instead of the selected one), ``invert`` (bool),
``min``/``max`` (continuous target range), ``step`` (relative: value change per encoder step, default 0.01),
``feedback_invert`` (bool).

Glue (a small pure subset of ReaLearn's): ``press`` fires on press, ``release`` on
release, ``toggle`` on press with the opposite of the feedback key's current value,
``momentary`` sends on at press and off at release, ``continuous`` passes the value
through the range, ``relative`` adds encoder steps to the current value.
Commands are always absolute: a toggle is resolved against the studio state here.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bridge import commands
from bridge import state as S
from bridge.errors import MappingError
from bridge.options import show
from bridge.vocab import (
    Command,
    ControlInput,
    Feedback,
    TrackRef,
    Value,
)

Glue = Literal["press", "release", "toggle", "momentary", "continuous", "relative"]
GLUES: tuple[str, ...] = ("press", "release", "toggle", "momentary", "continuous", "relative")


def _kind(verb: commands.Verb) -> str:
    if verb.arg("value") is not None:
        return "float"
    return "bool" if verb.arg("on") is not None else "none"


#: command name -> (kind of value it takes, default glue, default feedback key template),
#: derived from the command registry (bridge/commands.py) for every verb a mapping may bind.
#: kinds: "none" (a trigger), "bool", "float"; "{track}" in a key is the track number.
COMMANDS: dict[str, tuple[str, str, str | None]] = {
    v.name: (_kind(v), v.glue, v.feedback) for v in commands.VERBS if "mapping" in v.grammars
}
#: accepted spellings besides the canonical names (``take.false_start``)
COMMAND_ALIASES: dict[str, str] = {
    alias: name for alias, name in commands.ALIASES.items() if "." in alias and name in COMMANDS
}
#: binding keys that fill verb arguments (the mapping's value fills ``on`` / ``value``)
BINDING_ARGS = {"label": "label", "text": "text", "song": "name", "seconds": "seconds", "take": "take"}


@dataclass(frozen=True, slots=True)
class Binding:
    control: str
    command: str | None = None
    glue: Glue = "press"
    feedback: str | None = None
    track: TrackRef | None = None
    label: str = ""
    text: str = ""
    song: str = ""
    seconds: float = 0.0
    take: int | None = None
    invert: bool = False
    lo: float = 0.0
    hi: float = 1.0
    step: float = 0.01
    blink: bool = False
    feedback_invert: bool = False

    def feedback_key(self, resolve: Callable[[TrackRef], int | None]) -> str | None:
        """The concrete StateKey this binding's feedback follows (None if unresolvable)."""
        if self.feedback is None:
            return None
        if "{track}" not in self.feedback:
            return self.feedback
        if self.track is None:
            return None
        number = resolve(self.track)
        return None if number is None else self.feedback.replace("{track}", str(number))

    @property
    def dynamic(self) -> bool:
        """Whether the feedback key depends on the state (a track given by name)."""
        return self.feedback is not None and "{track}" in self.feedback

    # ---------------------------------------------------------------- glue

    def shape(self, value: float, relative: bool, current: float) -> float | None:
        """Apply the glue: the absolute target value, or None when filtered out."""
        if self.glue == "relative" or relative:
            if not relative:
                return None
            return min(self.hi, max(self.lo, current + value * self.step))
        if self.invert:
            value = 1.0 - value
        pressed = value >= 0.5
        if self.glue == "press":
            return 1.0 if pressed else None
        if self.glue == "release":
            return None if pressed else 1.0
        if self.glue == "toggle":
            if not pressed:
                return None
            return 0.0 if current >= 0.5 else 1.0
        if self.glue == "momentary":
            return 1.0 if pressed else 0.0
        # continuous
        return self.lo + max(0.0, min(1.0, value)) * (self.hi - self.lo)

    def feedback_value(self, value: Value) -> Value:
        """State value -> what the control shows."""
        if isinstance(value, bool) or value is None:
            on = bool(value) != self.feedback_invert
            if on and self.blink:
                return "blink"
            return 1.0 if on else 0.0
        if isinstance(value, int | float):
            span = self.hi - self.lo
            norm = (float(value) - self.lo) / span if span else 0.0
            norm = max(0.0, min(1.0, norm))
            return 1.0 - norm if self.invert else norm
        return value

    def off_value(self) -> Value:
        return 0.0

    def build(self, value: float) -> Command | None:
        """The command for a shaped value (arguments from the value and the binding's keys)."""
        if self.command is None:
            return None
        verb = commands.verb(self.command)
        args: dict[str, Any] = {}
        for arg in verb.args:
            if arg.kind == "track":
                args["track"] = self.track
            elif arg.name == "on":
                args["on"] = value >= 0.5
            elif arg.name == "value":
                args["value"] = value
        for key, name in BINDING_ARGS.items():
            if verb.arg(name) is not None:
                args[name] = getattr(self, key)
        return commands.build(verb, args)


_KEYS = {
    "control", "command", "glue", "feedback", "track", "label", "text", "song", "seconds", "take",
    "invert", "min", "max", "step", "blink", "feedback_invert",
}  # fmt: skip


#: shorthand keys: ``arm = "Lead Vox"`` means ``command = "track.arm"``, ``track = "Lead Vox"``
SHORTHANDS = {"arm": "track.arm", "mute": "track.mute", "solo": "track.solo", "fader": "track.fader"}


def parse_binding(table: dict[str, Any], where: str, file: str) -> Binding:
    def err(key: str, expected: str, got: Any) -> MappingError:
        return MappingError(f"{file}: {where}.{key}: expected {expected}, got {show(got)}")

    shorthand = [k for k in SHORTHANDS if k in table]
    if shorthand:
        key = shorthand[0]
        if len(shorthand) > 1 or "command" in table or "track" in table:
            raise MappingError(
                f"{file}: {where}.{key}: use either {key} = <track> or command + track, not both"
            )
        table = dict(table)
        table["command"], table["track"] = SHORTHANDS[key], table.pop(key)

    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise MappingError(
            f"{file}: {where}.{unknown[0]}: unknown key (known keys: {', '.join(sorted(_KEYS))})"
        )
    control = table.get("control")
    if not isinstance(control, str) or not control:
        raise err("control", "a control name (string)", control)
    command = table.get("command")
    if isinstance(command, str) and command in COMMAND_ALIASES:
        command = COMMAND_ALIASES[command]
    if command is not None and command not in COMMANDS:
        raise err("command", "one of " + ", ".join(COMMANDS), command)
    if command is None and "feedback" not in table:
        raise MappingError(f"{file}: {where}: needs a command, a feedback key, or both")
    kind, default_glue, default_fb = COMMANDS[command] if command else ("none", "press", None)
    glue = table.get("glue", default_glue)
    if glue not in GLUES:
        raise err("glue", "one of " + ", ".join(GLUES), glue)
    track = table.get("track")
    if command and command.startswith("track."):
        if isinstance(track, bool) or not isinstance(track, int | str) or track in (0, ""):
            raise err("track", "a track number (1-based) or a DAW track name", track)
        if isinstance(track, int) and track < 1:
            raise err("track", "a track number >= 1", track)
    feedback = table.get("feedback", default_fb)
    if feedback is not None and (not isinstance(feedback, str) or not feedback):
        raise err("feedback", 'a state key such as "transport/recording"', feedback)
    if command == "transport.stop" and "feedback" not in table:
        feedback = S.PLAYING
    floats: dict[str, float] = {}
    for key, default in (("seconds", 0.0), ("min", 0.0), ("max", 1.0), ("step", 0.01)):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise err(key, "a number", value)
        floats[key] = float(value)
    bools: dict[str, bool] = {}
    for key in ("invert", "blink", "feedback_invert"):
        value = table.get(
            key, key == "feedback_invert" and command == "transport.stop" and "feedback" not in table
        )
        if not isinstance(value, bool):
            raise err(key, "true or false", value)
        bools[key] = value
    strings: dict[str, str] = {}
    for key in ("label", "text", "song"):
        value = table.get(key, "")
        if not isinstance(value, str):
            raise err(key, "a string", value)
        strings[key] = value
    take = table.get("take")
    if take is not None and (isinstance(take, bool) or not isinstance(take, int) or take < 1):
        raise err("take", "a take number >= 1", take)
    if command == "song" and not strings["song"]:
        raise err("song", "the song name for the song command", table.get("song"))
    _ = kind
    binding = Binding(
        control=control,
        command=command,
        glue=glue,
        feedback=feedback,
        track=track if isinstance(track, int | str) and not isinstance(track, bool) else None,
        label=strings["label"],
        text=strings["text"],
        song=strings["song"],
        seconds=floats["seconds"],
        take=take,
        invert=bools["invert"],
        lo=floats["min"],
        hi=floats["max"],
        step=floats["step"],
        blink=bools["blink"],
        feedback_invert=bools["feedback_invert"],
    )
    if command is not None:
        try:
            binding.build(1.0)
        except commands.ArgError as exc:
            raise MappingError(f"{file}: {where}: {exc}") from None
    return binding


@dataclass(frozen=True, slots=True)
class StudioMap:
    bindings: tuple[Binding, ...]
    source: str = "<memory>"

    def for_control(self, control: str) -> list[Binding]:
        return [b for b in self.bindings if b.control == control and b.command]


def parse_mapping(data: dict[str, Any], file: str) -> StudioMap:
    unknown = sorted(set(data) - {"binding"})
    if unknown:
        raise MappingError(f"{file}: {unknown[0]}: unknown key (expected [[binding]] tables)")
    raw = data.get("binding", [])
    if not isinstance(raw, list):
        raise MappingError(f"{file}: binding: expected an array of tables ([[binding]]), got {show(raw)}")
    bindings = []
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            raise MappingError(f"{file}: binding[{i}]: expected a table, got {show(table)}")
        bindings.append(parse_binding(table, f"binding[{i}]", file))
    return StudioMap(tuple(bindings), file)


def load_mapping(path: Path) -> StudioMap:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise MappingError(f"{path}: mapping file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{path}: not valid TOML: {exc}") from exc
    return parse_mapping(data, str(path))


def _by_number(ref: TrackRef) -> int | None:
    return ref if isinstance(ref, int) and ref >= 1 else None


class _Bound:
    """A binding as the mapper uses it: its feedback key worked out once when it does not depend
    on track names, and, for a verb whose command depends only on pressed / not pressed (a
    trigger or an on/off verb), its two commands built once (commands are immutable)."""

    __slots__ = ("binding", "built", "discrete", "static", "static_key")

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        fb, track = binding.feedback, binding.track
        #: the key does not depend on track names: no feedback, no {track}, or a track number
        self.static = fb is None or "{track}" not in fb or (isinstance(track, int) and track >= 1)
        self.static_key: str | None = binding.feedback_key(_by_number) if self.static else None
        kind = COMMANDS.get(binding.command or "", ("float",))[0]
        self.discrete = kind in ("none", "bool")
        self.built: dict[bool, Command | None] = {}

    def key(self, resolve_track: Callable[[TrackRef], int | None]) -> str | None:
        if self.static:
            return self.static_key
        return self.binding.feedback_key(resolve_track)

    def build(self, shaped: float) -> Command | None:
        if not self.discrete:
            return self.binding.build(shaped)
        on = shaped >= 0.5
        try:
            return self.built[on]
        except KeyError:
            command = self.built[on] = self.binding.build(shaped)
            return command


class Mapper:
    """ControlInput -> commands for one device, resolved against the studio state."""

    def __init__(self, studio_map: StudioMap) -> None:
        self.map = studio_map
        self._by_control: dict[str, list[_Bound]] = {}
        for binding in studio_map.bindings:
            if binding.command:
                self._by_control.setdefault(binding.control, []).append(_Bound(binding))

    def resolve(
        self,
        control: ControlInput,
        get: Callable[[str], Value],
        resolve_track: Callable[[TrackRef], int | None],
    ) -> list[Command]:
        out: list[Command] = []
        for bound in self._by_control.get(control.control, ()):
            binding = bound.binding
            key = bound.key(resolve_track)
            current_raw = get(key) if key else None
            if isinstance(current_raw, bool):
                current = float(current_raw != binding.feedback_invert)
            elif isinstance(current_raw, int | float):
                current = float(current_raw)
            else:
                current = float(binding.feedback_invert)
            shaped = binding.shape(control.value, control.relative, current)
            if shaped is None:
                continue
            command = bound.build(shaped)
            if command is not None:
                out.append(command)
        return out


def feedback_for(
    bindings: Iterable[Binding], key: str, value: Value, resolve_track: Callable[[TrackRef], int | None]
) -> list[Feedback]:
    return [
        Feedback(b.control, b.feedback_value(value), continuous=S.is_continuous_key(key))
        for b in bindings
        if b.feedback_key(resolve_track) == key
    ]
