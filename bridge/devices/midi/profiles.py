"""Device profiles for generic MIDI controllers (layer 1 of the mapping: raw MIDI <-> named controls):
finding, reading and checking them. What a loaded profile is and does:
:mod:`bridge.devices.midi.profile_spec`.

A profile is a TOML file::

    [device]
    name = "Korg nanoKONTROL2"
    input = "nanoKONTROL2"          # default input/output port patterns (substring or "re:<regex>")
    output = "nanoKONTROL2"
    channel = 1                     # default MIDI channel 1-16 of every control
    init = ["F0 42 40 00 01 13 00 1F 12 00 F7"]   # optional hex messages sent after connecting
    echoes_feedback = true          # the controller may send received LED/value messages back
                                    # (default; false = it never does: no echo guard)

    [[control]]
    name = "transport.play"         # what studio mappings refer to
    type = "cc"                     # cc | note | program | pitchbend
    number = 41                     # CC / note / program number (not for pitchbend)
    input = "button"                # button | absolute | relative (default: button for notes, numbered
                                    # program changes and controls with a led; else absolute)
    button = "momentary"            # momentary | toggle (the hardware latches: every message is one press)
    led = { on = 127, off = 0 }     # optional LED feedback values (blink = n when the device can blink)

    [[control]]
    name = "track{n}.fader"         # with count: {n} = first.. (first = 1 by default), number += stride
    type = "cc"
    number = 0
    count = 8
    range = [0, 127]                # raw value range (pitchbend default 0-16383)
    echo = true                     # feedback: send the value back (motor faders, LED rings)
    feedback_range = [0, 127]       # raw range of echoed values (default: range)

    [[control]]
    name = "track1.pan"
    type = "cc"
    number = 16
    input = "relative"
    relative = "twos_complement"    # twos_complement | signed_bit | offset64

Feedback goes out as the same message type/channel/number unless ``feedback_type``,
``feedback_number`` or ``feedback_channel`` say otherwise. Note feedback is a note-on
whose velocity is the value.

Every error raises :class:`bridge.errors.MappingError` naming the file, the key path
(``control[3] (transport.play).number``) and what was expected.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from bridge.devices.midi.profile_spec import MSG_TYPES, ControlSpec, Profile
from bridge.errors import MappingError
from bridge.options import show

_CONTROL_KEYS = {
    "name",
    "type",
    "channel",
    "number",
    "count",
    "first",
    "stride",
    "input",
    "button",
    "relative",
    "range",
    "led",
    "echo",
    "feedback_type",
    "feedback_number",
    "feedback_channel",
    "feedback_range",
}
_DEVICE_KEYS = {"name", "input", "output", "channel", "init", "notes", "echoes_feedback"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")


# --------------------------------------------------------------------------- loading


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped with the bridge (``bridge/data/profiles/*.toml``)."""
    base = resources.files("bridge") / "data" / "profiles"
    return sorted(p.name.removesuffix(".toml") for p in base.iterdir() if p.name.endswith(".toml"))


def resolve_profile(ref: str, base_dir: Path | None = None) -> Path:
    """A reference is a path (has a '/' or ends in .toml; relative to ``base_dir``) or a shipped name."""
    if "/" in ref or ref.endswith(".toml"):
        path = Path(ref).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return path
    path = Path(str(resources.files("bridge") / "data" / "profiles" / f"{ref}.toml"))
    if not path.is_file():
        raise MappingError(
            f"profile {ref!r}: no such shipped profile (shipped: {', '.join(shipped_profiles())}; "
            "or give a path to a .toml file)"
        )
    return path


def load_profile(ref: str, base_dir: Path | None = None) -> Profile:
    path = resolve_profile(ref, base_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{path}: cannot read profile: {exc.strerror or exc}") from exc
    return parse_profile(text, str(path))


def parse_profile(text: str, file: str = "<profile>") -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{file}: not valid TOML: {exc}") from exc
    return build_profile(data, file)


class _Ctx:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, where: str, expected: str, got: Any = None, *, has_got: bool = True) -> MappingError:
        tail = f", got {show(got)}" if has_got else ""
        return MappingError(f"{self.file}: {where}: expected {expected}{tail}")

    def int_in(
        self, table: dict[str, Any], key: str, where: str, lo: int, hi: int, default: int | None
    ) -> int:
        if key not in table:
            if default is None:
                raise self.fail(f"{where}.{key}", f"an integer {lo}-{hi} (required)", has_got=False)
            return default
        v = table[key]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise self.fail(f"{where}.{key}", f"an integer {lo}-{hi}", v)
        return v

    def choice(
        self, table: dict[str, Any], key: str, where: str, options: tuple[str, ...], default: str
    ) -> str:
        v = table.get(key, default)
        if v not in options or not isinstance(v, str):
            raise self.fail(f"{where}.{key}", "one of " + ", ".join(f'"{o}"' for o in options), v)
        return v

    def string(self, table: dict[str, Any], key: str, where: str, default: str | None) -> str | None:
        v = table.get(key, default)
        if v is not None and not isinstance(v, str):
            raise self.fail(f"{where}.{key}", "a string", v)
        return v


def _hex_message(ctx: _Ctx, value: Any, where: str) -> bytes:
    if isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) for b in value):
        items = value
    elif isinstance(value, str):
        try:
            items = list(bytes.fromhex(value))
        except ValueError:
            raise ctx.fail(where, 'hex bytes like "F0 42 40 F7"', value) from None
    else:
        raise ctx.fail(where, 'hex bytes like "F0 42 40 F7" or an array of integers', value)
    if not items or not all(0 <= b <= 255 for b in items) or items[0] < 0x80:
        raise ctx.fail(where, "a MIDI message starting with a status byte (80-FF)", value)
    return bytes(items)


def build_profile(data: dict[str, Any], file: str) -> Profile:
    ctx = _Ctx(file)
    unknown = sorted(set(data) - {"device", "control"})
    if unknown:
        raise MappingError(f"{file}: {unknown[0]}: unknown key (known: control, device)")
    device = data.get("device", {})
    if not isinstance(device, dict):
        raise ctx.fail("device", "a table", device)
    bad = sorted(set(device) - _DEVICE_KEYS)
    if bad:
        raise MappingError(f"{file}: device.{bad[0]}: unknown key (known: {', '.join(sorted(_DEVICE_KEYS))})")
    name = ctx.string(device, "name", "device", Path(file).stem) or Path(file).stem
    port_in = ctx.string(device, "input", "device", None)
    port_out = ctx.string(device, "output", "device", port_in)
    channel = ctx.int_in(device, "channel", "device", 1, 16, 1)
    init_raw = device.get("init", [])
    if not isinstance(init_raw, list):
        raise ctx.fail("device.init", "an array of MIDI messages", init_raw)
    init = [_hex_message(ctx, v, f"device.init[{i}]") for i, v in enumerate(init_raw)]
    echoes = device.get("echoes_feedback", True)
    if not isinstance(echoes, bool):
        raise ctx.fail("device.echoes_feedback", "true or false", echoes)

    raw_controls = data.get("control", [])
    if not isinstance(raw_controls, list) or not all(isinstance(c, dict) for c in raw_controls):
        raise ctx.fail("control", "an array of tables ([[control]])", raw_controls)
    if not raw_controls:
        raise ctx.fail("control", "at least one [[control]] table", has_got=False)
    controls: dict[str, ControlSpec] = {}
    lookup: dict[tuple[int, int], ControlSpec] = {}
    any_program: dict[int, ControlSpec] = {}
    for i, table in enumerate(raw_controls):
        label = table.get("name")
        where = f"control[{i}]" + (f" ({label})" if isinstance(label, str) else "")
        for spec in _build_controls(ctx, table, where, channel):
            if spec.name in controls:
                raise MappingError(f"{file}: {where}.name: duplicate control name {spec.name!r}")
            if spec.number < 0:
                other = any_program.get(spec.key[0])
                if other is not None:
                    raise MappingError(
                        f"{file}: {where}: expected a message no other control uses, "
                        f"but {spec.name!r} and {other.name!r} both read any program change"
                    )
                any_program[spec.key[0]] = spec
            else:
                other = lookup.get(spec.key)
                if other is not None:
                    raise MappingError(
                        f"{file}: {where}: expected a message no other control uses, but {spec.name!r} and "
                        f"{other.name!r} both read {spec.type} {spec.number} on channel {spec.channel + 1}"
                    )
                lookup[spec.key] = spec
            controls[spec.name] = spec
    return Profile(name, file, port_in, port_out, controls, lookup, any_program, init, echoes)


def _range(
    ctx: _Ctx, t: dict[str, Any], key: str, where: str, max_raw: int, default: tuple[int, int]
) -> tuple[int, int]:
    if key not in t:
        return default
    r = t[key]
    if (
        not isinstance(r, list)
        or len(r) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= max_raw for x in r)
        or r[0] >= r[1]
    ):
        raise ctx.fail(f"{where}.{key}", f"[min, max] integers 0-{max_raw} with min < max", r)
    return int(r[0]), int(r[1])


def _build_controls(ctx: _Ctx, t: dict[str, Any], where: str, default_channel: int) -> list[ControlSpec]:
    bad = sorted(set(t) - _CONTROL_KEYS)
    if bad:
        raise MappingError(
            f"{ctx.file}: {where}.{bad[0]}: unknown key (known: {', '.join(sorted(_CONTROL_KEYS))})"
        )
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise ctx.fail(f"{where}.name", "a control name string", name, has_got="name" in t)
    if "type" not in t:
        raise ctx.fail(
            f"{where}.type", 'one of "cc", "note", "program", "pitchbend" (required)', has_got=False
        )
    mtype = ctx.choice(t, "type", where, MSG_TYPES, "cc")
    channel = ctx.int_in(t, "channel", where, 1, 16, default_channel) - 1
    if mtype in ("cc", "note"):
        number = ctx.int_in(t, "number", where, 0, 127, None)
    elif mtype == "program":
        number = ctx.int_in(t, "number", where, 0, 127, -1)
    else:
        if "number" in t:
            raise ctx.fail(f"{where}.number", "no number for pitchbend (it has none)", t["number"])
        number = 0
    count = ctx.int_in(t, "count", where, 1, 128, 1)
    first = ctx.int_in(t, "first", where, 0, 999, 1)
    stride = ctx.int_in(t, "stride", where, 0, 127, 1)
    if count > 1 and "{n}" not in name:
        raise ctx.fail(f"{where}.name", 'a name containing "{n}" when count > 1', name)
    if count > 1 and mtype == "pitchbend" and stride == 0:
        raise ctx.fail(f"{where}.stride", "a channel stride for repeated pitchbend controls", stride)
    default_input = "absolute"
    if mtype == "note" or (mtype == "program" and number >= 0) or "led" in t:
        default_input = "button"
    input_kind = ctx.choice(t, "input", where, ("button", "absolute", "relative"), default_input)
    button = ctx.choice(t, "button", where, ("momentary", "toggle"), "momentary")
    relative = ctx.choice(
        t, "relative", where, ("twos_complement", "signed_bit", "offset64"), "twos_complement"
    )
    if input_kind == "relative" and mtype not in ("cc", "note"):
        raise ctx.fail(f"{where}.input", f'"button" or "absolute" for a {mtype} control', input_kind)
    max_raw = 16383 if mtype == "pitchbend" else 127
    lo, hi = _range(ctx, t, "range", where, max_raw, (0, max_raw))
    led_on = led_off = led_blink = None
    if "led" in t:
        led = t["led"]
        if not isinstance(led, dict):
            raise ctx.fail(f"{where}.led", "a table like { on = 127, off = 0 }", led)
        bad = sorted(set(led) - {"on", "off", "blink"})
        if bad:
            raise MappingError(f"{ctx.file}: {where}.led.{bad[0]}: unknown key (known: blink, off, on)")
        led_on = ctx.int_in(led, "on", f"{where}.led", 0, max_raw, None)
        led_off = ctx.int_in(led, "off", f"{where}.led", 0, max_raw, 0)
        led_blink = ctx.int_in(led, "blink", f"{where}.led", 0, max_raw, -1)
        if led_blink < 0:
            led_blink = None
    echo = t.get("echo", False)
    if not isinstance(echo, bool):
        raise ctx.fail(f"{where}.echo", "true or false", echo)
    if echo and led_on is not None:
        raise ctx.fail(f"{where}.echo", "either led or echo, not both", echo)
    fb_type: str | None = None
    if led_on is not None or echo:
        fb_type = ctx.choice(t, "feedback_type", where, MSG_TYPES, mtype)
    elif "feedback_type" in t or "feedback_number" in t or "feedback_channel" in t:
        raise ctx.fail(f"{where}", "led or echo = true when feedback_* keys are given", has_got=False)
    fb_max = 16383 if fb_type == "pitchbend" else 127
    fb_lo, fb_hi = _range(ctx, t, "feedback_range", where, fb_max, (lo, min(hi, fb_max)))
    if "feedback_range" in t and not echo:
        raise ctx.fail(
            f"{where}.feedback_range", "echo = true (feedback_range scales echoed values)", has_got=False
        )
    fb_channel = ctx.int_in(t, "feedback_channel", where, 1, 16, channel + 1) - 1
    fb_number = ctx.int_in(t, "feedback_number", where, 0, 127, max(number, 0))
    specs = []
    for k in range(count):
        n = first + k
        if mtype == "pitchbend":
            ch, num = channel + k * stride, 0
            fch = fb_channel + k * stride
            if ch > 15 or fch > 15:
                raise ctx.fail(f"{where}.count", "controls that stay within MIDI channels 1-16", count)
            fnum = fb_number
        else:
            ch, num = channel, number + k * stride if number >= 0 else -1
            fch = fb_channel
            fnum = fb_number + k * stride
            if num > 127 or fnum > 127:
                raise ctx.fail(f"{where}.count", "controls whose numbers stay within 0-127", count)
        cname = name.replace("{n}", str(n))
        if not _NAME_RE.match(cname):
            raise ctx.fail(f"{where}.name", "a name of letters, digits and . _ - /", cname)
        specs.append(
            ControlSpec(
                name=cname,
                type=mtype,  # type: ignore[arg-type]
                channel=ch,
                number=num,
                input=input_kind,  # type: ignore[arg-type]
                button=button,  # type: ignore[arg-type]
                relative=relative,  # type: ignore[arg-type]
                lo=lo,
                hi=hi,
                led_on=led_on,
                led_off=led_off,
                led_blink=led_blink,
                echo=echo,
                fb_type=fb_type,  # type: ignore[arg-type]
                fb_channel=fch,
                fb_number=fnum,
                fb_lo=fb_lo,
                fb_hi=fb_hi,
            )
        )
    return specs
