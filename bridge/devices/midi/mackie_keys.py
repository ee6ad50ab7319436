"""Mackie Control keys, faders and V-Pots -> commands: pure, no I/O.

The desk turns buttons and faders into absolute commands computed from its local mirror of
the state (:class:`bridge.devices.midi.mackie_render.MackieDesk`):

* REC ARM / SOLO / MUTE n -> ``SetTrackArm|Solo|Mute(track, not mirror)``; PLAY -> ``Play``,
  STOP -> ``Stop``, RECORD -> ``SetRecord(not recording)``, MARKER -> ``MarkTake``,
  REWIND / FAST FWD -> ``Locate(position -/+ seek_seconds)``, User switch A (footswitch)
  -> momentary ``SetTalkback``, UP / DOWN -> previous / next song of the song list, LEFT / RIGHT
  -> select the previous / next take. Every named button (``f1``..``f8``, ``cycle``, ``user_b``,
  ...) or note number can be rebound with the ``keys`` table (actions: see ``ACTIONS``).
* BANK / CHANNEL LEFT / RIGHT shift the local bank by 8 / 1 strips (never sent to the DAW).
* Faders (pitch bend, only while touched unless ``touch_required = false``) ->
  ``SetTrackFader``, coalesced per input batch (latest wins). The master fader is ignored.
* V-Pots trim the strip's fader by ``vpot_step`` per tick (summed per batch; 0 = ignored).
  The jog wheel is ignored.

Echo guard: pitch bend equal (10-bit, +-1) to the last fader value sent for that strip
within ``echo_window`` seconds is an echo, and untouched pitch bend is ignored anyway.
A Note On identical to an LED message sent within ``echo_window`` would look exactly like
a press, so notes are matched only once the output is known to loop back to the input
(MIDI thru, a wrong JACK connection): that is detected from messages only the host sends
(our own SysEx, LED ring / 7-segment CCs, LED "flash" velocity 01) coming back, logged
as a warning, and kept until the next connect. A fast double press on a normal link is
never taken for an echo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bridge import commands
from bridge import state as st
from bridge.devices.midi import mackie_codec as mc
from bridge.options import in_range, non_negative
from bridge.vocab import (
    AddMarker,
    Command,
    Inbound,
    Locate,
    Play,
    SetRecord,
    SetTalkback,
    SetTrackArm,
    SetTrackFader,
    SetTrackMute,
    SetTrackSolo,
    Stop,
)

if TYPE_CHECKING:
    from bridge.devices.midi.mackie_render import MackieDesk

log = logging.getLogger(__name__)

#: Key actions the desk resolves itself (against its mirror / the playhead) ...
LOCAL_ACTIONS = (
    "none",
    "play",
    "stop",
    "record",
    "add_marker",
    "talkback",
    "talkback_latch",
    "rewind",
    "fast_fwd",
    "locate_start",
)
#: ... and the registry's verbs with a desk key name (bridge/commands.py: ``Verb.mackie``);
#: ``<name>_toggle`` for verbs with a toggle form.
REGISTRY_ACTIONS: dict[str, tuple[commands.Verb, bool]] = {
    **{v.mackie: (v, False) for v in commands.VERBS if v.mackie and "mackie" in v.grammars},
    **{
        f"{v.mackie}_toggle": (v, True)
        for v in commands.VERBS
        if v.mackie and v.toggle is not None and "mackie" in v.grammars
    },
}
ACTIONS = (*LOCAL_ACTIONS, *REGISTRY_ACTIONS)
DEFAULT_KEYS = {
    "play": "play",
    "stop": "stop",
    "record": "record",
    "marker": "mark_take",
    "rewind": "rewind",
    "fast_fwd": "fast_fwd",
    "user_a": "talkback",
    "up": "song_previous",
    "down": "song_next",
    "left": "select_previous_take",
    "right": "select_next_take",
}


def key_note(name: str) -> int | None:
    """A ``keys`` table key: a button name (``f1``) or a note number (``"0x66"``, ``"102"``)."""
    if name in mc.BUTTONS:
        return mc.BUTTONS[name]
    try:
        note = int(name, 0)
    except ValueError:
        return None
    return note if 0 <= note <= 0x7F else None


def _check_keys(keys: Any) -> str | None:
    for name, action in keys.items():
        if key_note(name) is None:
            return f"button names ({', '.join(sorted(mc.BUTTONS))}) or note numbers, not {name!r}"
        if action not in ACTIONS:
            return f"actions ({', '.join(ACTIONS)}), not {action!r}"
    return None


@dataclass(frozen=True)
class DeskOptions:
    """What the desk shows and what its keys do (the driver's options add the ports)."""

    model: Literal["mcu", "xtouch", "logic"] = "mcu"
    extender: bool = False
    #: First track of strip 1 minus one (8 for the first XT beside a main unit).
    strip_offset: int = field(default=0, metadata={"check": non_negative})
    touch_guard: float = field(default=0.1, metadata={"check": non_negative})
    touch_required: bool = True
    echo_window: float = field(default=0.2, metadata={"check": non_negative})
    display: Literal["position", "take"] = "position"
    assignment: Literal["bank", "take"] = "bank"
    fps: int = field(default=30, metadata={"check": in_range(1, 999)})
    vpot_step: float = field(default=0.01, metadata={"check": in_range(0, 1)})
    seek_seconds: float = field(default=5.0, metadata={"check": non_negative})
    talkback_channel: str = field(
        default="A", metadata={"check": lambda v: None if v in ("A", "B") else 'talk channel "A" or "B"'}
    )
    #: Button -> action, merged over DEFAULT_KEYS (action "none" unbinds).
    keys: dict[str, str] = field(default_factory=dict, metadata={"check": _check_keys})


def bound_actions(options: DeskOptions) -> dict[int, str]:
    """Note -> action: DEFAULT_KEYS with the ``keys`` table over them."""
    actions: dict[int, str] = {}
    for name, action in {**DEFAULT_KEYS, **options.keys}.items():
        note = key_note(name)
        if note is not None:
            actions[note] = action
    return actions


class DeskKeys:
    """Input batches of one desk -> commands, against the desk's mirror (``desk``)."""

    def __init__(self, desk: MackieDesk) -> None:
        self.desk = desk
        self.name = desk.name
        self.options = desk.options
        #: the surface input receives our own output (see the module doc); until the next connect
        self.looped = False
        self._recent_fader: dict[int, tuple[float, float]] = {}  # strip -> (value, time) we commanded

    def attach(self) -> None:
        """A new connection: what the last one looped back is no news."""
        self.looped = False

    def handle(self, batch: list[bytes]) -> list[Inbound]:
        """One input batch -> commands; fader / V-Pot moves coalesced, buttons in order."""
        out: list[Inbound] = []
        faders: dict[int, float] = {}
        vpots: dict[int, int] = {}
        now = self.desk.clock()
        window = self.options.echo_window
        for msg in batch:
            self.desk.stats["messages"] += 1
            status = msg[0]
            kind = status & 0xF0
            if status == 0xF0:
                self._sysex(msg)
            elif kind in (0x80, 0x90) and len(msg) == 3:
                if kind == 0x90 and msg[2] == mc.LED_FLASH:
                    self._loop_seen("LED flash note")
                if kind == 0x90 and self.looped and self._is_echo(msg, now, window):
                    continue
                self._button(msg[1], kind == 0x90 and msg[2] > 0x40, out, now)
            elif kind == 0xE0 and len(msg) == 3:
                strip, value = mc.decode_pitchbend(msg)
                if strip >= mc.STRIPS:
                    self.desk.stats["ignored"] += 1
                    continue
                sent = self.desk.sent_faders.get(strip)
                sig = mc.fader_significant((msg[2] << 7) | msg[1])
                if sent is not None and abs(sent[0] - sig) <= 1 and now - sent[1] <= window:
                    self.desk.sent_faders.pop(strip, None)
                    self.desk.stats["echo_dropped"] += 1
                    continue
                if self.options.touch_required and not self.desk.touched[strip]:
                    self.desk.stats["untouched_dropped"] += 1
                    continue
                self.desk.stats["fader_moves"] += 1
                faders[strip] = value
            elif kind == 0xB0 and len(msg) == 3 and mc.VPOT_CC <= msg[1] < mc.VPOT_CC + mc.STRIPS:
                strip = msg[1] - mc.VPOT_CC
                vpots[strip] = vpots.get(strip, 0) + mc.vpot_delta(msg[2])
            else:
                if kind == 0xB0 and len(msg) == 3 and (mc.RING_CC <= msg[1] <= mc.ASSIGN_LEFT_CC):
                    self._loop_seen("LED ring / display CC")
                self.desk.stats["ignored"] += 1
        for strip, value in faders.items():
            track = self.desk.track(strip)
            self._recent_fader[strip] = (value, now)
            out.append(SetTrackFader(track, value))
        step = self.options.vpot_step
        if step > 0:
            for strip, ticks in vpots.items():
                track = self.desk.track(strip)
                recent = self._recent_fader.get(strip)
                base = recent[0] if recent and now - recent[1] < 1.0 else self.desk.fader_value(track)
                value = min(1.0, max(0.0, base + ticks * step))
                self._recent_fader[strip] = (value, now)
                out.append(SetTrackFader(track, value))
        self.desk.stats["commands"] += len(out)
        return out

    def _is_echo(self, msg: bytes, now: float, window: float) -> bool:
        times = self.desk.sent_notes.get(msg)
        if not times:
            return False
        while times and now - times[0] > window:
            times.popleft()
        if not times:
            del self.desk.sent_notes[msg]
            return False
        times.popleft()
        self.desk.stats["echo_dropped"] += 1
        return True

    def _loop_seen(self, what: str) -> None:
        if not self.looped:
            log.warning(
                "%s: the surface input receives the bridge's own output (%s): MIDI thru or a "
                "wrong connection; echoes are filtered",
                self.name,
                what,
            )
            self.looped = True
            self.desk.stats["looped"] += 1

    def host_sysex(self, sx: mc.Sysex) -> bool:
        """True for SysEx only a host sends (a loop): device query, LCD, displays, colours."""
        if sx.command in (
            mc.SX_DEVICE_QUERY,
            mc.SX_HOST_REPLY,
            mc.SX_TIMECODE,
            mc.SX_ASSIGNMENT,
            mc.SX_LCD,
            mc.SX_XTOUCH_COLORS,
        ):
            self._loop_seen(f"SysEx {sx.command:02X}")
            return True
        return False

    def _sysex(self, msg: bytes) -> None:
        sx = mc.parse_sysex(msg)
        if sx is None or self.host_sysex(sx):
            self.desk.stats["ignored"] += 1
            return
        if sx.command == mc.SX_HOST_QUERY:
            # the unit rebooted (power cycle behind a MIDI interface): answer and replay everything
            log.info("%s: surface announced itself again; resyncing", self.name)
            if self.options.model == "logic":
                self.desk.emit(mc.host_connection_reply(self.desk.model, sx.payload[:7], sx.payload[7:11]))
            self.desk.resync()
        elif sx.command == mc.SX_HOST_CONFIRM:
            self.desk.resync()
        else:
            self.desk.stats["ignored"] += 1

    def _button(self, note: int, pressed: bool, out: list[Inbound], now: float) -> None:
        if pressed:
            self.desk.stats["buttons"] += 1
        if mc.FADER_TOUCH <= note < mc.FADER_TOUCH + mc.STRIPS:
            self.desk.touch(note - mc.FADER_TOUCH, pressed, now)
            return
        if not pressed:
            if self.desk.actions.get(note) == "talkback":
                out.append(SetTalkback(False, self.options.talkback_channel))
            return
        if note < mc.SELECT:
            group, strip = divmod(note, mc.STRIPS)
            track = self.desk.track(strip)
            field_, cls = (("armed", SetTrackArm), ("solo", SetTrackSolo), ("mute", SetTrackMute))[group]
            current = self.desk.get(st.track_key(track, field_)) is True
            out.append(cls(track, not current))
        elif note == mc.BANK_LEFT:
            self.desk.shift_bank(-mc.STRIPS)
        elif note == mc.BANK_RIGHT:
            self.desk.shift_bank(mc.STRIPS)
        elif note == mc.CHANNEL_LEFT:
            self.desk.shift_bank(-1)
        elif note == mc.CHANNEL_RIGHT:
            self.desk.shift_bank(1)
        else:
            command = self.action(self.desk.actions.get(note, "none"))
            if command is not None:
                out.append(command)
            else:
                self.desk.stats["ignored"] += 1

    def action(self, action: str) -> Command | None:
        pos = self.desk.get(st.POSITION)
        seconds = float(pos) if isinstance(pos, int | float) and not isinstance(pos, bool) else 0.0
        seek = self.options.seek_seconds
        match action:
            case "play":
                return Play()
            case "stop":
                return Stop()
            case "record":
                return SetRecord(self.desk.get(st.RECORDING) is not True)
            case "add_marker":
                return AddMarker("marker")
            case "talkback":
                return SetTalkback(True, self.options.talkback_channel)
            case "talkback_latch":
                channel = self.options.talkback_channel
                return SetTalkback(self.desk.get(st.talkback_key(channel)) is not True, channel)
            case "rewind":
                return Locate(max(0.0, seconds - seek))
            case "fast_fwd":
                return Locate(seconds + seek)
            case "locate_start":
                return Locate(0.0)
        found = REGISTRY_ACTIONS.get(action)
        if found is not None:
            verb, toggle = found
            return commands.build_toggle(verb, None, self.desk.get) if toggle else commands.build(verb)
        return None
