"""The arguments of the command registry's verbs: their kinds, the parsers every grammar shares
(OSC, MQTT, studio mappings, Mackie keys, the web console), and the errors a bad argument raises.

:mod:`bridge.commands` (the verb table) builds commands with these; it re-exports the errors and
the parsers a grammar needs (``commands.ArgError``, ``commands.parse_text``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

ArgType = Literal["flag", "take", "track", "seconds", "level", "text", "channel"]


class ArgError(ValueError):
    """Arguments that do not fit a verb (the message is the reason, one line)."""


class UnknownVerb(ArgError):
    pass


class TextTooLong(ArgError):
    """A text argument over :data:`MAX_TEXT` characters (counted ``oversized`` by the OSC API)."""


#: the longest label, note, song or session name accepted (a take sheet's cell, not a file)
MAX_TEXT = 1000


class Release(Exception):
    """The release of a momentary button on a trigger verb: nothing to do (answered ok)."""


# --------------------------------------------------------------------------- shared parsers

_TRUE = ("1", "on", "true", "yes")
_FALSE = ("0", "off", "false", "no")


def parse_flag(value: Any) -> bool:
    """1/0, true/false, T/F, on/off, yes/no; a number >= 0.5 is on (button values)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return value >= 0.5
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ArgError(f"expected 1 or 0 (on/off, true/false), got {value!r}")


def parse_take(value: Any) -> int:
    """A take number: an int >= 1 (a float is a tablet's button value, never a take number)."""
    if isinstance(value, float) and not isinstance(value, bool):
        raise ArgError(f"expected a take number (an int >= 1), got the button value {value!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgError(f"expected a take number >= 1, got {value!r}")
    return value


def parse_track(value: Any) -> int | str:
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            value = int(text)
        elif text:
            return text
        else:
            raise ArgError("expected a track number or a DAW track name")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgError(f"expected a track number or a DAW track name, got {value!r}")
    if value < 1:
        raise ArgError("track numbers start at 1")
    return value


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArgError(f"expected {what}, got {value!r}")
    return float(value)


def parse_seconds(value: Any, clamp: bool = False) -> float:
    seconds = _finite(value, "seconds (a number >= 0)")
    if seconds < 0:
        if clamp:
            return 0.0
        raise ArgError("expected seconds >= 0")
    return seconds


def parse_level(value: Any, clamp: bool = False) -> float:
    level = _finite(value, "a fader value 0-1")
    if not 0.0 <= level <= 1.0:
        if clamp:
            return max(0.0, min(1.0, level))
        raise ArgError("expected a fader value 0-1")
    return level


def parse_text(value: Any) -> str:
    """Text: a string (or an int, as a tablet may send one), at most :data:`MAX_TEXT`
    characters (TextTooLong). A float or a bool is a button value, never text (``/note f 1.0``
    from a button must not become the note "1.0")."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_TEXT:
            raise TextTooLong(f"text of {len(text)} characters is over the limit of {MAX_TEXT}")
        return text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float | bool):
        raise ArgError(f"expected text, got the button value {value!r}")
    raise ArgError(f"expected text, got {value!r}")


def parse_channel(value: Any) -> str:
    text = parse_text(value)
    if not text:
        raise ArgError("expected a talkback channel name")
    return text


PARSERS: dict[ArgType, Callable[[Any], Any]] = {
    "flag": parse_flag,
    "take": parse_take,
    "track": parse_track,
    "seconds": parse_seconds,
    "level": parse_level,
    "text": parse_text,
    "channel": parse_channel,
}


def fits(kind: ArgType, value: Any) -> bool:
    """Whether a positional value can be this kind of argument (optional ones are skipped if not)."""
    if kind == "take":  # an int that is not a valid take number is still meant as one
        return isinstance(value, int) and not isinstance(value, bool)
    try:
        PARSERS[kind](value)
    except ArgError:
        return False
    if kind == "text":
        return isinstance(value, str)  # an int before a text is a take number, not the text
    return True
