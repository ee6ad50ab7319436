"""Mackie Control (MCU / Logic Control / X-Touch in MC mode / XT extenders): bytes only.

Pure encode/decode functions, no I/O (protocol facts: research protocols.md section 1).

* Buttons and LEDs are Note On on channel 0, sharing the note numbers; an LED value is
  ``00`` off, ``01`` flashing, ``7F`` on. A switch sends ``7F`` pressed, ``00`` released.
* Faders are 14-bit pitch bend ``Ei ll hh`` (strip i 0-7, 8 = master), only the top 10
  bits are significant; the same format goes both ways. Touch = notes 0x68-0x70.
* V-Pots send ``B0 1i XX`` with a sign bit (0x40 = counter-clockwise) and a tick count.
* LCD: ``F0 00 00 66 <model> 12 <offset> <chars> F7``, 2 lines x 56 cells (offset 0x00 and
  0x38), 7 cells per strip (6 characters and a space).
* 7-segment displays: ``B0 4i yy`` with i = 0 the right-most of 10 timecode digits;
  assignment display ``B0 4B`` (left) ``B0 4A`` (right).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# --------------------------------------------------------------------------- models

MODEL_LOGIC = 0x10
MODEL_LOGIC_XT = 0x11
MODEL_MCU = 0x14
MODEL_MCU_XT = 0x15

MANUFACTURER = bytes((0x00, 0x00, 0x66))

# SysEx command bytes (after the header)
SX_DEVICE_QUERY = 0x00
SX_HOST_QUERY = 0x01
SX_HOST_REPLY = 0x02
SX_HOST_CONFIRM = 0x03
SX_HOST_ERROR = 0x04
SX_DEVICE_READY = 0x06  # X-Touch Compact answers a device query with this
SX_GO_OFFLINE = 0x0F
SX_TIMECODE = 0x10
SX_ASSIGNMENT = 0x11
SX_LCD = 0x12
SX_VERSION_REQUEST = 0x13
SX_VERSION_REPLY = 0x14
SX_XTOUCH_COLORS = 0x72

# --------------------------------------------------------------------------- notes

REC_ARM = 0x00  # + strip 0-7
SOLO = 0x08
MUTE = 0x10
SELECT = 0x18
VPOT_PUSH = 0x20
BANK_LEFT = 0x2E
BANK_RIGHT = 0x2F
CHANNEL_LEFT = 0x30
CHANNEL_RIGHT = 0x31
F1 = 0x36  # F1-F8 = 0x36-0x3D
MARKER = 0x54
CYCLE = 0x56
REWIND = 0x5B
FAST_FWD = 0x5C
STOP = 0x5D
PLAY = 0x5E
RECORD = 0x5F
FADER_TOUCH = 0x68  # + strip 0-7
MASTER_TOUCH = 0x70
HIGHEST_LED = 0x76

#: Named buttons a user may bind in the config (``keys``), plus any note number.
BUTTONS: dict[str, int] = {
    "f1": 0x36, "f2": 0x37, "f3": 0x38, "f4": 0x39, "f5": 0x3A, "f6": 0x3B, "f7": 0x3C, "f8": 0x3D,
    "shift": 0x46, "option": 0x47, "control": 0x48, "alt": 0x49,
    "read": 0x4A, "write": 0x4B, "trim": 0x4C, "touch": 0x4D, "latch": 0x4E, "group": 0x4F,
    "save": 0x50, "undo": 0x51, "cancel": 0x52, "enter": 0x53,
    "marker": MARKER, "nudge": 0x55, "cycle": CYCLE, "drop": 0x57, "replace": 0x58, "click": 0x59,
    "solo_clear": 0x5A, "rewind": REWIND, "fast_fwd": FAST_FWD, "stop": STOP, "play": PLAY,
    "record": RECORD, "up": 0x60, "down": 0x61, "left": 0x62, "right": 0x63, "zoom": 0x64,
    "scrub": 0x65, "user_a": 0x66, "user_b": 0x67, "flip": 0x32, "global_view": 0x33,
    "name_value": 0x34, "smpte_beats": 0x35,
}  # fmt: skip

LED_OFF = 0x00
LED_FLASH = 0x01
LED_ON = 0x7F

# --------------------------------------------------------------------------- CCs

VPOT_CC = 0x10  # + strip, device -> host
JOG_CC = 0x3C
RING_CC = 0x30  # + strip, host -> device
TIMECODE_CC = 0x40  # + digit 0 (right-most) .. 9
ASSIGN_RIGHT_CC = 0x4A
ASSIGN_LEFT_CC = 0x4B

TIMECODE_DIGITS = 10
LCD_WIDTH = 56  # cells per line in the device buffer (55 visible)
CELL = 7  # cells per strip
STRIPS = 8


def header(model: int) -> bytes:
    return b"\xf0" + MANUFACTURER + bytes((model,))


# --------------------------------------------------------------------------- handshake


def device_query(model: int) -> bytes:
    """Host -> device: ask the device to identify itself (it answers ``01`` or ``06``)."""
    return header(model) + bytes((SX_DEVICE_QUERY, 0xF7))


def challenge_response(challenge: Sequence[int]) -> bytes:
    """Logic Control host-connection response to the 4-byte challenge (Logic manual p. 240;
    Ardour differs in r2, the manual is followed here)."""
    l1, l2, l3, l4 = (int(b) for b in challenge[:4])
    r1 = 0x7F & (l1 + (l2 ^ 0x0A) - l4)
    r2 = 0x7F & ((l3 >> 4) ^ (l1 + l4))
    r3 = 0x7F & ((l4 - (l3 << 2)) ^ (l1 | l2))
    r4 = 0x7F & (l2 - l3 + (0xF0 ^ (l4 << 4)))
    return bytes((r1, r2, r3, r4))


def host_connection_reply(model: int, serial: bytes, challenge: Sequence[int]) -> bytes:
    """Host -> Logic Control: ``02 ss*7 rr*4``."""
    return (
        header(model) + bytes((SX_HOST_REPLY,)) + bytes(serial[:7]) + challenge_response(challenge) + b"\xf7"
    )


def host_connection_query(model: int, serial: bytes, challenge: bytes) -> bytes:
    """Device -> host (used by emulators): ``01 ss*7 ll*4``."""
    return header(model) + bytes((SX_HOST_QUERY,)) + bytes(serial[:7]) + bytes(challenge[:4]) + b"\xf7"


@dataclass(frozen=True, slots=True)
class Sysex:
    model: int
    command: int
    payload: bytes


def parse_sysex(message: bytes) -> Sysex | None:
    """``F0 00 00 66 mm cc ... F7`` -> Sysex; anything else (other vendor, too short) -> None."""
    if len(message) < 7 or message[0] != 0xF0 or message[-1] != 0xF7 or message[1:4] != MANUFACTURER:
        return None
    return Sysex(message[4], message[5], bytes(message[6:-1]))


# --------------------------------------------------------------------------- LEDs / buttons


def led(note: int, state: int) -> bytes:
    """``90 nn ss`` with ss 00 off / 01 flash / 7F on."""
    if state not in (LED_OFF, LED_FLASH, LED_ON):
        raise ValueError(f"LED state {state:#x}")
    return bytes((0x90, note & 0x7F, state))


def led_state(on: bool, flash: bool = False) -> int:
    if flash:
        return LED_FLASH
    return LED_ON if on else LED_OFF


# --------------------------------------------------------------------------- faders


def fader_to_14bit(value: float) -> int:
    """0.0-1.0 -> 0-16383 (clamped), the same scaling Ardour uses."""
    value = min(1.0, max(0.0, value))
    return round(value * 16383)


def fader(strip: int, value: float) -> bytes:
    """Motor fader feedback: pitch bend on channel ``strip`` (8 = master), LSB first."""
    v = fader_to_14bit(value)
    return bytes((0xE0 | (strip & 0x0F), v & 0x7F, v >> 7))


def fader_significant(value14: int) -> int:
    """The 10 significant bits of a 14-bit fader value (what the hardware resolves)."""
    return value14 >> 4


def decode_pitchbend(message: bytes) -> tuple[int, float]:
    """``Ei ll hh`` -> (strip i, 0.0-1.0)."""
    v = (message[2] << 7) | message[1]
    return message[0] & 0x0F, v / 16383


# --------------------------------------------------------------------------- V-Pots


def vpot_delta(value: int) -> int:
    """Signed-bit relative value: ``0svvvvvv``, s = 1 counter-clockwise; 0 ticks count as 1."""
    ticks = (value & 0x3F) or 1
    return -ticks if value & 0x40 else ticks


def vpot_ring(strip: int, position: int, mode: int = 0, center: bool = False) -> bytes:
    """LED ring ``B0 3i 0pxxvvvv``: position 0 (all off) - 11, mode 0 dot / 1 boost-cut /
    2 wrap / 3 spread."""
    position = min(11, max(0, position))
    value = (0x40 if center else 0) | ((mode & 3) << 4) | position
    return bytes((0xB0, RING_CC + (strip & 7), value))


# --------------------------------------------------------------------------- LCD


def lcd_text(text: str) -> bytes:
    """Text -> LCD bytes: accents folded (é -> e), anything else outside printable ASCII -> '_'.

    The display takes ISO-8859-1-ish text but SysEx data bytes are 7-bit, so only 0x20-0x7E
    can travel; Ardour uses '_' as the fallback too."""
    out = bytearray()
    for ch in text:
        if " " <= ch <= "~":
            out.append(ord(ch))
            continue
        folded = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        if len(folded) == 1 and " " <= folded <= "~":
            out.append(ord(folded))
        else:
            out.append(ord("_"))
    return bytes(out)


def lcd(model: int, offset: int, text: str | bytes) -> bytes:
    """Write ``text`` at ``offset`` (0x00-0x37 upper line, 0x38-0x6F lower line); the text is
    truncated at the end of the 2 x 56 buffer."""
    if not 0 <= offset < 2 * LCD_WIDTH:
        raise ValueError(f"LCD offset {offset:#x}")
    data = text if isinstance(text, bytes) else lcd_text(text)
    data = data[: 2 * LCD_WIDTH - offset]
    return header(model) + bytes((SX_LCD, offset)) + data + b"\xf7"


def lcd_offset(strip: int, line: int) -> int:
    return strip * CELL + line * LCD_WIDTH


#: Characters of a strip's name on the LCD (a 7th cell separates the strips).
NAME_WIDTH = 6
_VOWELS = frozenset("aeiou")
_WORD_RE = re.compile(r"[^\W\d_]+|\d+")


def _is_vowel(ch: str) -> bool:
    """A lower-case vowel, accents ignored (capitals are kept: "DI", "OH")."""
    return unicodedata.normalize("NFKD", ch)[:1] in _VOWELS


def abbreviate(name: str, width: int = NAME_WIDTH) -> str:
    """A track name shortened to ``width`` characters so that strips stay distinguishable.

    A name that fits is kept as it is. Otherwise, one step after the other until it fits:
    spaces and punctuation go (words keep their capitals: ``"Bass DI"`` -> ``"BassDI"``);
    lower-case vowels that do not start a word go, the right-most first (``"Lead Vox"`` ->
    ``"LeadVx"``);
    then letters go from the end of the longest word. Numbers are never shortened
    (``"Audio 10"`` -> ``"Audi10"``, ``"Acoustic Guitar 2"`` -> ``"AcsGt2"``): they are what
    tells ``Audio 1`` from ``Audio 2``. A word that is only a capital is dropped before a
    number; a number longer than ``width`` keeps its last digits."""
    if len(name) <= width:
        return name
    found = _WORD_RE.findall(name)
    if not found:
        return name[:width]
    words: list[str] = list(found)
    number = [w.isdigit() for w in words]

    def total() -> int:
        return sum(len(w) for w in words)

    # lower-case vowels that do not start a word, right-most first
    for k in range(len(words) - 1, -1, -1):
        if number[k]:
            continue
        i = len(words[k]) - 1
        while i > 0 and total() > width:
            if _is_vowel(words[k][i]):
                words[k] = words[k][:i] + words[k][i + 1 :]
            i -= 1
    # letters from the end of the longest word (the right-most of equals)
    while total() > width:
        letters = [k for k, w in enumerate(words) if not number[k] and len(w) > 1]
        if not letters:
            break
        longest = max(len(words[k]) for k in letters)
        victim = [k for k in letters if len(words[k]) == longest][-1]
        words[victim] = words[victim][:-1]
    # single letters (but the first word) before numbers
    while total() > width:
        singles = [k for k in range(1, len(words)) if not number[k]]
        if not singles:
            break
        del words[singles[-1]], number[singles[-1]]
    text = "".join(words)
    return text if len(text) <= width else text[-width:]


def strip_cell(text: str) -> str:
    """A strip's 7 cells: the text in 6 characters (:func:`abbreviate`), then a space."""
    return f"{abbreviate(text):<{NAME_WIDTH}} "


def lcd_line(cells: Sequence[str]) -> str:
    """8 strip texts -> one 56-cell line."""
    return "".join(strip_cell(c) for c in cells)[:LCD_WIDTH].ljust(LCD_WIDTH)


def xtouch_colors(model: int, colors: Sequence[int]) -> bytes:
    """X-Touch scribble-strip colours, 8 values 0-7 (bit 0 red, bit 1 green, bit 2 blue)."""
    return header(model) + bytes((SX_XTOUCH_COLORS,)) + bytes(c & 7 for c in colors[:8]) + b"\xf7"


COLOR_OFF = 0
COLOR_RED = 1
COLOR_GREEN = 2
COLOR_YELLOW = 3
COLOR_BLUE = 4
COLOR_MAGENTA = 5
COLOR_CYAN = 6
COLOR_WHITE = 7

# --------------------------------------------------------------------------- 7-segment


def seven_segment(ch: str, dot: bool = False) -> int:
    """Character code of a 7-segment digit: ASCII 0x40-0x5F -> minus 0x40 (A=01), 0x20-0x3F
    as is, lower case folded to upper case, anything else blank; +0x40 lights the dot."""
    c = ord(ch.upper()) if ch else 0x20
    if 0x40 <= c <= 0x5F:
        code = c - 0x40
    elif 0x20 <= c <= 0x3F:
        code = c
    else:
        code = 0x20
    return code | (0x40 if dot else 0)


def timecode_codes(text: str, dots: Sequence[int] = ()) -> list[int]:
    """10 characters (left to right, padded/truncated) -> 10 character codes indexed by
    digit, i.e. ``codes[0]`` is the right-most digit. ``dots`` are left-to-right indexes."""
    text = f"{text[-TIMECODE_DIGITS:]:>{TIMECODE_DIGITS}}"
    codes = [seven_segment(ch, i in dots) for i, ch in enumerate(text)]
    return codes[::-1]


def timecode_digit(digit: int, code: int) -> bytes:
    """``B0 4i yy``: digit 0 is the right-most."""
    return bytes((0xB0, TIMECODE_CC + digit, code & 0x7F))


def assignment(text: str) -> list[bytes]:
    """The 2-character assignment display: left digit ``B0 4B``, right digit ``B0 4A``."""
    text = f"{text[-2:]:>2}"
    return [
        bytes((0xB0, ASSIGN_LEFT_CC, seven_segment(text[0]))),
        bytes((0xB0, ASSIGN_RIGHT_CC, seven_segment(text[1]))),
    ]


#: Left-to-right digit indexes that carry a dot in the position display (hhh.mm.ss.fff).
POSITION_DOTS = (2, 4, 6)


def format_position(seconds: float, fps: int = 30) -> str:
    """Seconds -> 10 digits ``hhhmmssfff`` (hours, minutes, seconds, frames) right-aligned
    per group: 83.5 s at 30 fps -> ``"  00123 15"``; dots go at POSITION_DOTS."""
    seconds = max(0.0, seconds)
    frames_total = int(seconds * fps + 1e-6)
    frames = frames_total % fps
    whole = frames_total // fps
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h % 1000:>3}{m:02}{s:02}{frames:>3}"


def format_take(take: int) -> str:
    """Take number for the timecode display: ``"TAKE    12"``."""
    number = str(max(0, take))[-6:]
    return f"TAKE{number:>6}"
