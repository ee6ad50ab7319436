"""A loaded device profile (:class:`Profile`) and its controls (:class:`ControlSpec`): how one
control's MIDI message is read, and how feedback for it is encoded. The TOML format, loading
and checking: :mod:`bridge.devices.midi.profiles`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bridge.vocab import Value

MsgType = Literal["cc", "note", "program", "pitchbend"]
InputKind = Literal["button", "absolute", "relative"]
RelativeMode = Literal["twos_complement", "signed_bit", "offset64"]

_STATUS = {"note": 0x90, "cc": 0xB0, "program": 0xC0, "pitchbend": 0xE0}
MSG_TYPES = ("cc", "note", "program", "pitchbend")


def lookup_key(msg: bytes) -> tuple[int, int] | None:
    """(status with note-off folded into note-on, number) of a channel message; None otherwise.

    Pitch bend uses number 0; program change uses the program number."""
    if len(msg) < 2:
        return None
    st = msg[0]
    hi = st & 0xF0
    if hi == 0x80:
        return (0x90 | (st & 0x0F), msg[1])
    if hi in (0x90, 0xB0, 0xC0):
        return (st, msg[1])
    if hi == 0xE0:
        return (st, 0)
    return None


@dataclass(frozen=True, slots=True)
class ControlSpec:
    """One named control of a profile: how to read it and how to give it feedback."""

    name: str
    type: MsgType
    channel: int  # 0-15
    number: int  # 0-127 (0 for pitchbend, -1 = any program)
    input: InputKind
    button: Literal["momentary", "toggle"] = "momentary"
    relative: RelativeMode = "twos_complement"
    lo: int = 0
    hi: int = 127
    led_on: int | None = None
    led_off: int | None = None
    led_blink: int | None = None
    echo: bool = False
    fb_type: MsgType | None = None
    fb_channel: int = 0
    fb_number: int = 0
    fb_lo: int = 0
    fb_hi: int = 127

    @property
    def key(self) -> tuple[int, int]:
        return (_STATUS[self.type] | self.channel, self.number)

    @property
    def has_feedback(self) -> bool:
        return self.fb_type is not None

    def raw_value(self, msg: bytes) -> int:
        """The raw value carried by ``msg`` (note-off = 0)."""
        hi = msg[0] & 0xF0
        if hi == 0x80:
            return 0
        if hi == 0xE0:
            return msg[1] | (msg[2] << 7) if len(msg) >= 3 else 0
        if hi == 0xC0:
            return msg[1]
        return msg[2] if len(msg) >= 3 else 0

    def decode(self, raw: int) -> float:
        """Absolute 0.0-1.0, button 1.0/0.0, or signed relative steps."""
        if self.input == "relative":
            if self.relative == "twos_complement":
                return float(raw - 128 if raw >= 64 else raw)
            if self.relative == "signed_bit":
                return float(-(raw & 0x3F) if raw & 0x40 else raw)
            return float(raw - 64)
        if self.input == "button":
            if self.type == "program":
                return 1.0
            return 1.0 if raw > self.lo else 0.0
        span = self.hi - self.lo
        v = (raw - self.lo) / span if span else 0.0
        return 0.0 if v < 0.0 else 1.0 if v > 1.0 else v

    def feedback_raw(self, value: Value) -> int | None:
        """The raw feedback value for a bridge value, or None if this control shows nothing for it."""
        if self.fb_type is None:
            return None
        if self.led_on is not None:
            off = self.led_off if self.led_off is not None else 0
            if value == "blink":
                return self.led_blink if self.led_blink is not None else self.led_on
            if isinstance(value, bool | int | float) and not isinstance(value, str):
                return self.led_on if float(value) >= 0.5 else off
            return off
        if self.echo:
            if isinstance(value, bool):
                return self.fb_hi if value else self.fb_lo
            if isinstance(value, int | float):
                v = 0.0 if value < 0 else 1.0 if value > 1 else float(value)
                return self.fb_lo + round(v * (self.fb_hi - self.fb_lo))
            return self.fb_lo if value is None else None
        return None

    def encode_raw(self, raw: int) -> bytes:
        """Feedback message carrying ``raw``."""
        st = _STATUS[self.fb_type or self.type] | self.fb_channel
        if self.fb_type == "pitchbend":
            raw = max(0, min(16383, raw))
            return bytes((st, raw & 0x7F, raw >> 7))
        raw = max(0, min(127, raw))
        if self.fb_type == "program":
            return bytes((st, raw))
        return bytes((st, self.fb_number, raw))

    def encode(self, value: Value) -> bytes | None:
        raw = self.feedback_raw(value)
        return None if raw is None else self.encode_raw(raw)


@dataclass(frozen=True)
class Profile:
    name: str
    file: str
    input: str | None
    output: str | None
    controls: dict[str, ControlSpec]
    lookup: dict[tuple[int, int], ControlSpec]
    #: program-change controls without a number, by status byte
    any_program: dict[int, ControlSpec] = field(default_factory=dict)
    init: list[bytes] = field(default_factory=list)
    #: the controller may send our feedback back (then the driver's echo guard is on by default)
    echoes_feedback: bool = True

    def find(self, msg: bytes) -> ControlSpec | None:
        key = lookup_key(msg)
        if key is None:
            return None
        spec = self.lookup.get(key)
        if spec is None and (msg[0] & 0xF0) == 0xC0:
            spec = self.any_program.get(msg[0])
        return spec
