"""``studio-bridge learn``: watch a MIDI input, list each control the user moves, write profile entries.

    studio-bridge learn --input nanoKONTROL2 [--api jack|alsa|auto] [-o my-profile.toml] [--seconds 30]

Each control (message type, channel, number) is printed to stdout once when first seen and again
in a summary at the end, with the observed value range and a guess: button (note, numbered
program change, or a CC that only sends two values), relative encoder (a CC repeating small
steps around 0/64; two's complement, signed bit or offset 64) or absolute fader/knob. With
``-o`` the controls are written as a profile (see :mod:`bridge.devices.midi.profiles`) whose control names
(``ch1.cc41``) the user renames. Status goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.errors import DeviceError, MappingError

log = logging.getLogger(__name__)

_TYPES = {0x80: "note", 0x90: "note", 0xB0: "cc", 0xC0: "program", 0xE0: "pitchbend"}


@dataclass
class Seen:
    type: str
    channel: int  # 1-16
    number: int  # -1 for pitchbend
    values: list[int] = field(default_factory=list)
    note_offs: int = 0

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.type, self.channel, self.number)

    @property
    def label(self) -> str:
        if self.type == "pitchbend":
            return f"ch{self.channel}.pitchbend"
        return f"ch{self.channel}.{self.type}{self.number}"

    def guess(self) -> tuple[str, dict[str, Any]]:
        """(description, profile keys) for this control."""
        vals = self.values
        lo, hi = min(vals), max(vals)
        distinct = set(vals)
        if self.type in ("note", "program"):
            return "button", {}
        if self.type == "pitchbend":
            return f"fader (pitch bend, {lo}..{hi})", {}
        if distinct <= {0, 127} or distinct == {127}:
            if distinct == {127}:
                return "button (sends only 127: hardware toggle or press-only)", {
                    "input": "button",
                    "button": "toggle",
                }
            return "button (0 off / 127 on)", {"input": "button"}
        if len(vals) >= 2 and len(distinct) <= 6:
            if all(1 <= v <= 15 or 113 <= v <= 127 for v in distinct):
                return "relative encoder (two's complement)", {
                    "input": "relative",
                    "relative": "twos_complement",
                }
            if all(1 <= v <= 15 or 65 <= v <= 79 for v in distinct):
                return "relative encoder (signed bit)", {"input": "relative", "relative": "signed_bit"}
            if all(49 <= v <= 79 and v != 64 for v in distinct):
                return "relative encoder (offset 64)", {"input": "relative", "relative": "offset64"}
        if len(distinct) == 2 and lo == 0 and len(vals) >= 2:
            return f"button (0 off / {hi} on)", {"input": "button"}
        extra: dict[str, Any] = {}
        if (lo, hi) != (0, 127) and hi > lo:
            extra["range"] = [lo, hi]
        return f"fader/knob (absolute, {lo}..{hi})", extra


def classify(msg: bytes) -> tuple[str, int, int, int] | None:
    """(type, channel 1-16, number, value) of a channel message the learner understands."""
    if len(msg) < 2:
        return None
    hi = msg[0] & 0xF0
    kind = _TYPES.get(hi)
    if kind is None:
        return None
    ch = (msg[0] & 0x0F) + 1
    if kind == "pitchbend":
        return kind, ch, -1, msg[1] | (msg[2] << 7) if len(msg) >= 3 else 0
    if kind == "program":
        return kind, ch, msg[1], msg[1]
    value = 0 if hi == 0x80 or len(msg) < 3 else msg[2]
    return kind, ch, msg[1], value


def describe(seen: Seen) -> str:
    what, _ = seen.guess()
    vals = seen.values
    number = "" if seen.number < 0 else f" {seen.number:3d}"
    return (
        f"{seen.type:<9} ch {seen.channel:2d}{number:>4}  values {min(vals)}..{max(vals)} "
        f"({len(set(vals))} distinct, {len(vals)} msgs)  -> {what}   [{seen.label}]"
    )


def profile_text(controls: list[Seen], pattern: str) -> str:
    channels = Counter(s.channel for s in controls)
    channel = channels.most_common(1)[0][0] if channels else 1
    lines = [
        "# Written by `studio-bridge learn`. Rename the controls, then use it as",
        '# profile = "<this file>" in a [devices.<name>] table with kind = "generic_midi".',
        "",
        "[device]",
        f"name = {_toml_str(pattern)}",
        f"input = {_toml_str(pattern)}",
        f"output = {_toml_str(pattern)}",
        f"channel = {channel}",
    ]
    for s in controls:
        what, keys = s.guess()
        lines += ["", f"# {what}; seen {min(s.values)}..{max(s.values)}", "[[control]]"]
        lines.append(f'name = "{s.label}"')
        lines.append(f'type = "{s.type}"')
        if s.channel != channel:
            lines.append(f"channel = {s.channel}")
        if s.number >= 0:
            lines.append(f"number = {s.number}")
        for k, v in keys.items():
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


async def learn(pattern: str, api: str, seconds: float, client_name: str, order: list[Seen]) -> None:
    """Listen and fill ``order`` with the controls seen (kept even when interrupted)."""
    from bridge.devices.midi.link import MidiLink  # imported here: the CLI builds this parser at every start

    link = MidiLink(client_name, pattern, None, api)
    await link.open()
    log.warning(
        "learn: listening on %s%s; move each control",
        link.in_port,
        f" for {seconds:g} s" if seconds > 0 else " (Ctrl-C to stop)",
    )
    seen: dict[tuple[str, int, int], Seen] = {}
    try:
        async with asyncio.timeout(seconds if seconds > 0 else None):
            async for batch in link.messages():
                for msg in batch:
                    c = classify(msg)
                    if c is None:
                        continue
                    kind, ch, number, value = c
                    entry = seen.get((kind, ch, number))
                    if entry is None:
                        entry = seen[(kind, ch, number)] = Seen(kind, ch, number)
                        order.append(entry)
                        entry.values.append(value)
                        print("new  " + describe(entry), flush=True)  # noqa: T201 - interactive tool
                    else:
                        entry.values.append(value)
    except TimeoutError:
        pass
    finally:
        await link.aclose()


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "learn",
        help="list the controls of a MIDI controller and write a profile",
        description="Watch a MIDI input, print each control you move (kind, channel, number, value range, "
        "a guess of button/fader/encoder) and optionally write them as a controller profile.",
    )
    p.add_argument(
        "--input",
        required=True,
        metavar="PATTERN",
        help='input port name pattern (case-insensitive substring, or "re:<regex>")',
    )
    p.add_argument("--api", choices=["jack", "alsa", "auto"], default="auto", help="MIDI API (default auto)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the learned controls as a profile here")
    p.add_argument(
        "--seconds", type=float, default=30.0, help="how long to listen (default 30; 0 = until Ctrl-C)"
    )
    p.add_argument("--client-name", default="sb-learn", help="JACK/ALSA client name (default sb-learn)")


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    controls: list[Seen] = []
    try:
        asyncio.run(learn(args.input, args.api, float(args.seconds), args.client_name, controls))
    except KeyboardInterrupt:
        pass  # the user is done: summarise what was seen
    except DeviceError as exc:
        log.error("learn: %s", exc)
        return 1
    print(f"# {len(controls)} control(s) seen", flush=True)  # noqa: T201 - interactive tool
    for s in controls:
        print("     " + describe(s), flush=True)  # noqa: T201 - interactive tool
    if args.output:
        if not controls:
            log.error("learn: nothing was received; %s not written", args.output)
            return 1
        text = profile_text(controls, args.input)
        try:
            from bridge.devices.midi.profiles import parse_profile

            parse_profile(text, args.output)  # what we write must load
        except MappingError as exc:  # pragma: no cover - a bug in the writer
            log.error("learn: generated profile is invalid: %s", exc)
            return 1
        Path(args.output).write_text(text, encoding="utf-8")
        log.warning("learn: wrote %d control(s) to %s", len(controls), args.output)
    return 0
