"""Mackie Control surface (MCU, Logic Control, X-Touch in MC mode, XT extenders).

The desk surface renders the studio state (``feedback = "state"``) and turns buttons and
faders into absolute commands computed from its local mirror of the state:

* REC ARM / SOLO / MUTE n -> ``SetTrackArm|Solo|Mute(track, not mirror)``; PLAY -> ``Play``,
  STOP -> ``Stop``, RECORD -> ``SetRecord(not recording)``, MARKER -> ``MarkTake``,
  REWIND / FAST FWD -> ``Locate(position -/+ seek_seconds)``, User switch A (footswitch)
  -> momentary ``SetTalkback``, UP / DOWN -> previous / next song of the song list, LEFT / RIGHT
  -> select the previous / next take. Every named button (``f1``..``f8``, ``cycle``, ``user_b``,
  ...) or note number can be rebound with the ``keys`` table (actions: see ``ACTIONS``).
* BANK / CHANNEL LEFT / RIGHT shift the local bank by 8 / 1 strips (never sent to the DAW).
* Faders (pitch bend, only while touched unless ``touch_required = false``) ->
  ``SetTrackFader``, coalesced per input batch (latest wins). The master fader is ignored.
* V-Pots trim the strip's fader by ``vpot_step`` per tick (summed per batch; 0 = ignored);
  the ring shows the fader level (wrap mode, 0-11). The jog wheel is ignored.

Rendering: LEDs of the banked strips, PLAY / STOP / RECORD (RECORD flashes while record is
enabled but the transport is stopped), talkback keys; motor faders; LCD top line = track
names (6 characters + space, abbreviated so that strips stay apart: "Audio 1" -> "Audio1",
"Lead Vox" -> "LeadVx", see ``mackie_codec.abbreviate``), lower line =
``REC <song> take <n>`` while recording and the strip's track numbers (``#9``) otherwise;
timecode = position (``hhh.mm.ss.fff`` frames at ``fps``) or the take number
(``display = "take"``); assignment display = first track of the bank (or the take).
X-Touch scribble strips are white, red when armed. Only changed LEDs / fader positions
(10-bit) / LCD cells / digits are sent; a (re)connect clears that cache and replays
everything. ``blackout()`` turns LEDs off, clears the LCD and the displays
and moves the faders to the bottom (a surface without the bridge shows nothing stale).

A motor fader never fights the hand: no fader feedback while touched and for
``touch_guard`` seconds after release, then the state's value is sent once.
Echo guard: pitch bend equal (10-bit, +-1) to the last fader value sent for that strip
within ``echo_window`` seconds is an echo, and untouched pitch bend is ignored anyway.
A Note On identical to an LED message sent within ``echo_window`` would look exactly like
a press, so notes are matched only once the output is known to loop back to the input
(MIDI thru, a wrong JACK connection): that is detected from messages only the host sends
(our own SysEx, LED ring / 7-segment CCs, LED "flash" velocity 01) coming back, logged
as a warning, and kept until the next connect. A fast double press on a normal link is
never taken for an echo.

The DAW away (``daw/status`` not ok: it crashed, is starting, or its link is lost): the
desk claims nothing only the DAW knows. The upper LCD line says ``DAW offline -
reconnecting``, the transport (PLAY / STOP / RECORD), REC ARM / SOLO / MUTE LEDs go off and
X-Touch strips turn white; the talkback LED (the bridge's own), the displays and the motor
faders stay (no motor runs down and back). When the DAW is back, the desk waits
``DAW_SETTLE`` seconds for the DAW's re-report of its values to arrive, then renders the
state as it is, through the same caches: each LED or cell that differs from what the desk
shows is sent once (no flash of a value the DAW no longer has).

Extenders (XT): configure one ``[devices.*]`` per unit with ``extender = true`` and
``strip_offset = 8`` (16, ...); each unit banks on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from bridge import commands
from bridge import state as st
from bridge.devices.base import DeviceContext, SyncDevice
from bridge.devices.midi import mackie_codec as mc
from bridge.devices.midi.link import MidiLink, check_pattern
from bridge.errors import DeviceError, DeviceLost, DeviceUnavailable
from bridge.options import in_range, non_negative, positive
from bridge.vocab import (
    AddMarker,
    Command,
    Feedback,
    Inbound,
    Locate,
    Outbound,
    Play,
    SetRecord,
    SetTalkback,
    SetTrackArm,
    SetTrackFader,
    SetTrackMute,
    SetTrackSolo,
    Stop,
    Value,
)

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
MODELS = {"mcu": mc.MODEL_MCU, "xtouch": mc.MODEL_MCU, "logic": mc.MODEL_LOGIC}
#: The upper LCD line while the DAW is away and the bridge retries.
OFFLINE_TEXT = "DAW offline - reconnecting"
#: Seconds the desk keeps the offline picture after the DAW is back, while its values arrive.
DAW_SETTLE = 0.2


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


def _check_pattern(value: Any) -> str | None:
    return check_pattern(value)


@dataclass(frozen=True)
class MackieOptions:
    #: Port name patterns (substring, or ``re:`` regex); ``output`` defaults to ``input``.
    input: str = field(default="re:x-touch|mcu|mackie", metadata={"check": _check_pattern})
    output: str | None = field(default=None, metadata={"check": _check_pattern})
    api: Literal["jack", "alsa", "auto"] = "auto"
    #: JACK/ALSA client name of the bridge's ports (default ``bridge-<device name>``).
    client_name: str = ""
    model: Literal["mcu", "xtouch", "logic"] = "mcu"
    extender: bool = False
    #: First track of strip 1 minus one (8 for the first XT beside a main unit).
    strip_offset: int = field(default=0, metadata={"check": non_negative})
    touch_guard: float = field(default=0.1, metadata={"check": non_negative})
    touch_required: bool = True
    echo_window: float = field(default=0.2, metadata={"check": non_negative})
    handshake_timeout: float = field(default=0.5, metadata={"check": positive})
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


class MackieSurface(SyncDevice[MackieOptions]):
    kind: ClassVar[str] = "mackie"
    feedback: ClassVar[Literal["state"]] = "state"
    min_interval: ClassVar[float] = 0.02
    max_backoff: ClassVar[float] = 0.5

    Options: ClassVar[type[MackieOptions]] = MackieOptions

    def __init__(self, name: str, options: MackieOptions, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        o = options
        base = MODELS[o.model]
        self.model = base + 1 if o.extender else base
        self.is_xtouch = o.model == "xtouch"
        self.actions: dict[int, str] = {}
        for name_, action in {**DEFAULT_KEYS, **o.keys}.items():
            note = key_note(name_)
            if note is not None:
                self.actions[note] = action
        self._clock: Callable[[], float] = self.ctx.clock or time.monotonic
        self._mirror: dict[str, Value] = {}
        #: the DAW is away: its keys are not shown (see the module doc)
        self._offline = False
        self._back: asyncio.TimerHandle | None = None  # the DAW is back: render after DAW_SETTLE
        self.bank = 0
        self._link: MidiLink | None = None
        self._gen: AsyncIterator[list[bytes]] | None = None
        self._next: asyncio.Future[list[bytes]] | None = None
        self._pending: list[bytes] = []
        self._touched = [False] * mc.STRIPS
        self._guard_until = [0.0] * mc.STRIPS
        self._settle: list[asyncio.TimerHandle | None] = [None] * mc.STRIPS
        self._recent_fader: dict[int, tuple[float, float]] = {}  # strip -> (value, time) we commanded
        self._echo: dict[bytes, deque[float]] = {}
        self._echo_fader: dict[int, tuple[int, float]] = {}
        self.looped = False
        self._clear_cache()
        self._stats = dict.fromkeys(
            ("messages", "buttons", "fader_moves", "commands", "echo_dropped", "untouched_dropped",
             "ignored", "sent", "resyncs", "looped"),
            0,
        )  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def _clear_cache(self) -> None:
        self._sent_led: dict[int, int] = {}
        self._sent_fader: dict[int, int] = {}
        self._sent_ring: dict[int, int] = {}
        self._sent_lcd: list[str | None] = [None] * (2 * mc.STRIPS)
        self._sent_digits: dict[int, int] = {}
        self._sent_assign: dict[int, int] = {}
        self._sent_colors: tuple[int, ...] | None = None

    async def __aenter__(self) -> MackieSurface:
        link = self.make_link()
        await link.open()
        self._link = link
        self._gen = link.messages()
        self._next = None
        self._pending = []
        self.looped = False
        self._echo.clear()
        try:
            await self._handshake()
            self.resync()
        except BaseException:
            await self._aclose()
            raise
        return self

    def make_link(self) -> MidiLink:
        """The MIDI link of one connection (benchmarks override it with a port-less link)."""
        o = self.options
        return MidiLink(o.client_name or f"bridge-{self.name}", o.input, o.output or o.input, o.api)

    async def __aexit__(self, *exc: object) -> None:
        await self._aclose()

    async def _aclose(self) -> None:
        # the read left pending by a cancelled receive() (or the handshake) goes first: closing
        # the link would end it with DeviceLost('closed') that nobody retrieves (asyncio then
        # logs "Task exception was never retrieved" at ERROR on every clean stop)
        self._cancel_read()
        if self._link is not None:
            await self._link.aclose()  # waits for the helper process to close the ports
        self._close()

    def _cancel_read(self) -> None:
        read, self._next = self._next, None
        if read is None:
            return
        if read.done():
            if not read.cancelled():
                read.exception()  # retrieved: the link is being closed, its end is no news
        else:
            read.cancel()

    def _close(self) -> None:
        self._cancel_back()
        for i, handle in enumerate(self._settle):
            if handle is not None:
                handle.cancel()
                self._settle[i] = None
        self._touched = [False] * mc.STRIPS
        self._cancel_read()
        self._gen = None
        if self._link is not None:
            self._link.close()
            self._link = None

    async def _read(self, wait: float | None) -> list[bytes] | None:
        """Next batch from the link, or None after ``wait`` seconds (the read stays pending)."""
        if self._gen is None:
            raise DeviceLost("Mackie link is closed")
        if self._next is None:
            self._next = asyncio.ensure_future(anext(self._gen))
        done, _ = await asyncio.wait({self._next}, timeout=wait)
        if not done:
            return None
        fut, self._next = self._next, None
        return fut.result()

    async def _handshake(self) -> None:
        o = self.options
        self._out(mc.device_query(self.model))
        logic = o.model == "logic"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + o.handshake_timeout
        while True:
            left = deadline - loop.time()
            batch = await self._read(max(0.0, left)) if left > 0 else None
            if batch is None:
                if logic:
                    raise DeviceUnavailable(f"Logic Control on {o.input!r} did not answer the device query")
                log.info("%s: no answer to the device query; assuming an MC-mode surface", self.name)
                return
            done = False
            for msg in batch:
                sx = mc.parse_sysex(msg) if msg[0] == 0xF0 else None
                if sx is None:
                    self._pending.append(msg)
                    continue
                if self._host_sysex(sx):
                    continue
                if sx.command == mc.SX_HOST_QUERY and logic:
                    self._out(mc.host_connection_reply(self.model, sx.payload[:7], sx.payload[7:11]))
                elif (
                    sx.command in (mc.SX_HOST_QUERY, mc.SX_DEVICE_READY) and not logic
                ) or sx.command == mc.SX_HOST_CONFIRM:
                    done = True
                elif sx.command == mc.SX_HOST_ERROR:
                    raise DeviceUnavailable(f"{o.model} on {o.input!r} rejected the host connection reply")
            if done:
                log.info("%s: Mackie handshake done (model %#x)", self.name, self.model)
                return

    def resync(self) -> None:
        """Forget what the surface shows and send the full current state."""
        self._stats["resyncs"] += 1
        self._clear_cache()
        if self.ctx.state is not None:
            for key in list(self._mirror):
                value = self.ctx.state(key)
                if value is None:
                    self._mirror.pop(key, None)
                else:
                    self._mirror[key] = value
        self._cancel_back()
        self._offline = st.daw_offline(self._mirror.get(st.DAW_STATUS))
        self._clamp_bank()
        self._render_all()

    async def blackout(self) -> None:
        if self._link is None:
            return
        try:
            for note in sorted(self._sent_led):
                self._out(mc.led(note, mc.LED_OFF))
            self._out(mc.lcd(self.model, 0, " " * (2 * mc.LCD_WIDTH)))
            for i in range(mc.STRIPS):
                self._out(mc.fader(i, 0.0))
                self._out(mc.vpot_ring(i, 0))
            if not self.options.extender:
                for d in range(mc.TIMECODE_DIGITS):
                    self._out(mc.timecode_digit(d, 0x20))
                for msg in mc.assignment("  "):
                    self._out(msg)
            if self.is_xtouch:
                self._out(mc.xtouch_colors(self.model, [mc.COLOR_OFF] * mc.STRIPS))
        except DeviceError as exc:
            log.info("%s: blackout incomplete: %s", self.name, exc)
        self._clear_cache()

    def stats(self) -> dict[str, int]:
        out = dict(self._stats)
        if self._link is not None:
            link = self._link.stats()
            out["dropped"] = link["dropped"]
            out["received"] = link["received"]
        return out

    # ------------------------------------------------------------------ output

    def _out(self, data: bytes) -> None:
        if self._link is None:
            raise DeviceLost("Mackie link is closed")
        self._link.send(data)
        self._stats["sent"] += 1
        status = data[0] & 0xF0
        if status == 0x90:
            now = self._clock()
            times = self._echo.setdefault(data, deque(maxlen=8))
            times.append(now)
        elif status == 0xE0:
            self._echo_fader[data[0] & 0x0F] = (((data[2] << 7) | data[1]) >> 4, self._clock())

    def send_now(self, message: Outbound) -> None:
        if not isinstance(message, Feedback):
            return
        key, value = message.control, message.value
        if value is None:
            self._mirror.pop(key, None)
        else:
            self._mirror[key] = value
        parsed = st.parse_track_key(key)
        if parsed is not None:
            track, field_ = parsed
            strip = self._strip_of(track)
            if strip is None:
                return
            if field_ == "fader":
                self._render_fader(strip)
                self._render_ring(strip)
            elif field_ in ("armed", "solo", "mute"):
                self._render_strip_leds(strip)
                if field_ == "armed":
                    self._render_colors()
            else:
                self._render_strip(strip)
                self._render_lcd()
                self._render_colors()
            return
        if key == st.POSITION:
            self._render_timecode()
        elif key == st.DAW_STATUS:
            self._daw_status(value)
        elif key.startswith(("device/", "daw/")) or key == st.ELAPSED:
            return
        else:
            self._render_transport()
            self._render_lcd()
            self._render_timecode()
            self._render_assignment()

    def _daw_status(self, status: Value) -> None:
        if st.daw_offline(status):
            self._cancel_back()
            if not self._offline:
                self._offline = True
                self._render_all()
            else:
                self._render_lcd()  # the reason may have changed
        elif self._offline and self._back is None:
            self._back = asyncio.get_running_loop().call_later(DAW_SETTLE, self._daw_back)

    def _cancel_back(self) -> None:
        if self._back is not None:
            self._back.cancel()
            self._back = None

    def _daw_back(self) -> None:
        """DAW_SETTLE after the DAW came back: show the state again."""
        self._back = None
        if self._link is None or st.daw_offline(self._mirror.get(st.DAW_STATUS)):
            return
        self._offline = False
        try:
            self._render_all()
        except DeviceError as exc:  # the writer's next send reports the link; resync replays all
            log.info("%s: DAW state not shown: %s", self.name, exc)

    # ------------------------------------------------------------------ rendering

    def _track(self, strip: int) -> int:
        return int(self.options.strip_offset) + self.bank + strip + 1

    def _strip_of(self, track: int) -> int | None:
        strip = track - 1 - int(self.options.strip_offset) - self.bank
        return strip if 0 <= strip < mc.STRIPS else None

    def _get(self, key: str) -> Value:
        return self._mirror.get(key)

    def _shown(self, key: str) -> Value:
        """What the desk shows for ``key``: nothing (None) for the DAW's keys while it is away."""
        if self._offline and st.is_daw_key(key) and not st.is_continuous_key(key):
            return None
        return self._mirror.get(key)

    def _led(self, note: int, state: int) -> None:
        if self._sent_led.get(note) != state:
            self._out(mc.led(note, state))
            self._sent_led[note] = state

    def _render_all(self) -> None:
        for i in range(mc.STRIPS):
            self._render_strip(i)
        self._render_transport()
        self._render_lcd()
        self._render_colors()
        self._render_timecode()
        self._render_assignment()

    def _render_strip(self, i: int) -> None:
        self._render_strip_leds(i)
        self._render_fader(i)
        self._render_ring(i)

    def _render_strip_leds(self, i: int) -> None:
        t = self._track(i)
        self._led(mc.REC_ARM + i, mc.led_state(self._shown(st.track_key(t, "armed")) is True))
        self._led(mc.SOLO + i, mc.led_state(self._shown(st.track_key(t, "solo")) is True))
        self._led(mc.MUTE + i, mc.led_state(self._shown(st.track_key(t, "mute")) is True))

    def _render_ring(self, i: int) -> None:
        ring = round(self._fader_value(self._track(i)) * 11)
        if self._sent_ring.get(i) != ring:
            self._out(mc.vpot_ring(i, ring, mode=2))
            self._sent_ring[i] = ring

    def _fader_value(self, track: int) -> float:
        v = self._get(st.track_key(track, "fader"))
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0

    def _render_fader(self, i: int, force: bool = False) -> None:
        if self._touched[i] or self._clock() < self._guard_until[i]:
            return  # never fight the hand; _settle sends the truth after release
        v14 = mc.fader_to_14bit(self._fader_value(self._track(i)))
        sig = mc.fader_significant(v14)
        if force or self._sent_fader.get(i) != sig:
            self._out(mc.fader(i, v14 / 16383))
            self._sent_fader[i] = sig

    def _render_transport(self) -> None:
        playing = self._shown(st.PLAYING) is True
        stopped = self._shown(st.PLAYING) is not True and not self._offline
        recording = self._shown(st.RECORDING) is True
        talkback = self._get(st.talkback_key(self.options.talkback_channel)) is True
        for note, action in self.actions.items():
            if action == "play":
                self._led(note, mc.led_state(playing))
            elif action == "stop":
                self._led(note, mc.led_state(stopped))
            elif action == "record":
                self._led(note, mc.led_state(recording, flash=recording and not playing))
            elif action in ("talkback", "talkback_latch"):
                self._led(note, mc.led_state(talkback))
            elif action in ("circle_take", "circle_take_toggle"):
                self._led(note, mc.led_state(self._get(st.SELECTED_CIRCLED) is True))
            elif action in ("false_start", "false_start_toggle"):
                self._led(note, mc.led_state(self._get(st.SELECTED_FALSE_START) is True))

    def _take_number(self) -> int:
        key = st.TAKE if self._shown(st.RECORDING) is True else st.NEXT_TAKE
        v = self._get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    def _lcd_lines(self) -> tuple[str, str]:
        names = []
        numbers = []
        for i in range(mc.STRIPS):
            t = self._track(i)
            name = self._get(st.track_key(t, "name"))
            names.append(name if isinstance(name, str) else "")
            numbers.append(f"#{t}")
        if self._offline:
            return self._offline_text(), mc.lcd_line(numbers)
        top = mc.lcd_line(names)
        if self._get(st.RECORDING) is True:
            song = self._get(st.SONG)
            song_text = f"{song}  " if isinstance(song, str) and song else ""
            bottom = f"REC  {song_text}take {self._take_number()}"[: mc.LCD_WIDTH].ljust(mc.LCD_WIDTH)
        else:
            bottom = mc.lcd_line(numbers)
        return top, bottom

    def _offline_text(self) -> str:
        """The upper LCD line while the DAW is away (the 8 cells across, not per strip)."""
        status = self._get(st.DAW_STATUS)
        if status == "bad_config":
            text = "DAW offline - check the bridge config"
        elif status == "stopped":
            text = "DAW stopped"
        else:
            text = OFFLINE_TEXT
        if self.options.extender:
            text = "DAW offline"
        return text[: mc.LCD_WIDTH].ljust(mc.LCD_WIDTH)

    def _render_lcd(self) -> None:
        lines = self._lcd_lines()
        for line, text in enumerate(lines):
            run_start: int | None = None
            for cell in range(mc.STRIPS + 1):
                changed = False
                if cell < mc.STRIPS:
                    piece = text[cell * mc.CELL : (cell + 1) * mc.CELL]
                    idx = line * mc.STRIPS + cell
                    changed = self._sent_lcd[idx] != piece
                    if changed:
                        self._sent_lcd[idx] = piece
                        if run_start is None:
                            run_start = cell
                if not changed and run_start is not None:
                    chunk = text[run_start * mc.CELL : cell * mc.CELL]
                    self._out(mc.lcd(self.model, mc.lcd_offset(run_start, line), chunk))
                    run_start = None

    def _render_colors(self) -> None:
        if not self.is_xtouch:
            return
        colors = tuple(
            mc.COLOR_RED if self._shown(st.track_key(self._track(i), "armed")) is True else mc.COLOR_WHITE
            for i in range(mc.STRIPS)
        )
        if colors != self._sent_colors:
            self._out(mc.xtouch_colors(self.model, colors))
            self._sent_colors = colors

    def _render_timecode(self) -> None:
        if self.options.extender:
            return
        if self.options.display == "take":
            codes = mc.timecode_codes(mc.format_take(self._take_number()))
        else:
            pos = self._get(st.POSITION)
            seconds = float(pos) if isinstance(pos, int | float) and not isinstance(pos, bool) else 0.0
            codes = mc.timecode_codes(mc.format_position(seconds, self.options.fps), mc.POSITION_DOTS)
        for digit, code in enumerate(codes):
            if self._sent_digits.get(digit) != code:
                self._out(mc.timecode_digit(digit, code))
                self._sent_digits[digit] = code

    def _render_assignment(self) -> None:
        if self.options.extender:
            return
        text = str(self._take_number() if self.options.assignment == "take" else self._track(0))
        for msg in mc.assignment(text):
            if self._sent_assign.get(msg[1]) != msg[2]:
                self._out(msg)
                self._sent_assign[msg[1]] = msg[2]

    def _clamp_bank(self) -> None:
        tracks = [p[0] for k in self._mirror if (p := st.parse_track_key(k)) is not None]
        highest = max(tracks, default=0) - int(self.options.strip_offset)
        self.bank = max(0, min(self.bank, max(0, highest - 1)))

    def _shift_bank(self, step: int) -> None:
        before = self.bank
        tracks = [p[0] for k in self._mirror if (p := st.parse_track_key(k)) is not None]
        highest = max(tracks, default=0) - int(self.options.strip_offset)
        target = self.bank + step
        if step > 0 and target >= highest:
            return
        self.bank = max(0, target)
        if self.bank != before:
            for i in range(mc.STRIPS):
                self._guard_until[i] = 0.0
            self._render_all()

    # ------------------------------------------------------------------ input

    async def receive(self) -> AsyncIterator[Inbound]:
        if self._pending:
            pending, self._pending = self._pending, []
            for item in self._handle(pending):
                yield item
        while True:
            batch = await self._read(None)
            if batch is None:  # pragma: no cover - no timeout given
                continue
            for item in self._handle(batch):
                yield item

    def _handle(self, batch: list[bytes]) -> list[Inbound]:
        """One input batch -> commands; fader / V-Pot moves coalesced, buttons in order."""
        out: list[Inbound] = []
        faders: dict[int, float] = {}
        vpots: dict[int, int] = {}
        now = self._clock()
        window = self.options.echo_window
        for msg in batch:
            self._stats["messages"] += 1
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
                    self._stats["ignored"] += 1
                    continue
                sent = self._echo_fader.get(strip)
                sig = mc.fader_significant((msg[2] << 7) | msg[1])
                if sent is not None and abs(sent[0] - sig) <= 1 and now - sent[1] <= window:
                    self._echo_fader.pop(strip, None)
                    self._stats["echo_dropped"] += 1
                    continue
                if self.options.touch_required and not self._touched[strip]:
                    self._stats["untouched_dropped"] += 1
                    continue
                self._stats["fader_moves"] += 1
                faders[strip] = value
            elif kind == 0xB0 and len(msg) == 3 and mc.VPOT_CC <= msg[1] < mc.VPOT_CC + mc.STRIPS:
                strip = msg[1] - mc.VPOT_CC
                vpots[strip] = vpots.get(strip, 0) + mc.vpot_delta(msg[2])
            else:
                if kind == 0xB0 and len(msg) == 3 and (mc.RING_CC <= msg[1] <= mc.ASSIGN_LEFT_CC):
                    self._loop_seen("LED ring / display CC")
                self._stats["ignored"] += 1
        for strip, value in faders.items():
            track = self._track(strip)
            self._recent_fader[strip] = (value, now)
            out.append(SetTrackFader(track, value))
        step = self.options.vpot_step
        if step > 0:
            for strip, ticks in vpots.items():
                track = self._track(strip)
                recent = self._recent_fader.get(strip)
                base = recent[0] if recent and now - recent[1] < 1.0 else self._fader_value(track)
                value = min(1.0, max(0.0, base + ticks * step))
                self._recent_fader[strip] = (value, now)
                out.append(SetTrackFader(track, value))
        self._stats["commands"] += len(out)
        return out

    def _is_echo(self, msg: bytes, now: float, window: float) -> bool:
        times = self._echo.get(msg)
        if not times:
            return False
        while times and now - times[0] > window:
            times.popleft()
        if not times:
            del self._echo[msg]
            return False
        times.popleft()
        self._stats["echo_dropped"] += 1
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
            self._stats["looped"] += 1

    def _host_sysex(self, sx: mc.Sysex) -> bool:
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
        if sx is None or self._host_sysex(sx):
            self._stats["ignored"] += 1
            return
        if sx.command == mc.SX_HOST_QUERY:
            # the unit rebooted (power cycle behind a MIDI interface): answer and replay everything
            log.info("%s: surface announced itself again; resyncing", self.name)
            if self.options.model == "logic":
                self._out(mc.host_connection_reply(self.model, sx.payload[:7], sx.payload[7:11]))
            self.resync()
        elif sx.command == mc.SX_HOST_CONFIRM:
            self.resync()
        else:
            self._stats["ignored"] += 1

    def _button(self, note: int, pressed: bool, out: list[Inbound], now: float) -> None:
        if pressed:
            self._stats["buttons"] += 1
        if mc.FADER_TOUCH <= note < mc.FADER_TOUCH + mc.STRIPS:
            self._touch(note - mc.FADER_TOUCH, pressed, now)
            return
        if not pressed:
            if self.actions.get(note) == "talkback":
                out.append(SetTalkback(False, self.options.talkback_channel))
            return
        if note < mc.SELECT:
            group, strip = divmod(note, mc.STRIPS)
            track = self._track(strip)
            field_, cls = (("armed", SetTrackArm), ("solo", SetTrackSolo), ("mute", SetTrackMute))[group]
            current = self._get(st.track_key(track, field_)) is True
            out.append(cls(track, not current))
        elif note == mc.BANK_LEFT:
            self._shift_bank(-mc.STRIPS)
        elif note == mc.BANK_RIGHT:
            self._shift_bank(mc.STRIPS)
        elif note == mc.CHANNEL_LEFT:
            self._shift_bank(-1)
        elif note == mc.CHANNEL_RIGHT:
            self._shift_bank(1)
        else:
            command = self._action(self.actions.get(note, "none"))
            if command is not None:
                out.append(command)
            else:
                self._stats["ignored"] += 1

    def _action(self, action: str) -> Command | None:
        pos = self._get(st.POSITION)
        seconds = float(pos) if isinstance(pos, int | float) and not isinstance(pos, bool) else 0.0
        seek = self.options.seek_seconds
        match action:
            case "play":
                return Play()
            case "stop":
                return Stop()
            case "record":
                return SetRecord(self._get(st.RECORDING) is not True)
            case "add_marker":
                return AddMarker("marker")
            case "talkback":
                return SetTalkback(True, self.options.talkback_channel)
            case "talkback_latch":
                channel = self.options.talkback_channel
                return SetTalkback(self._get(st.talkback_key(channel)) is not True, channel)
            case "rewind":
                return Locate(max(0.0, seconds - seek))
            case "fast_fwd":
                return Locate(seconds + seek)
            case "locate_start":
                return Locate(0.0)
        found = REGISTRY_ACTIONS.get(action)
        if found is not None:
            verb, toggle = found
            return commands.build_toggle(verb, None, self._get) if toggle else commands.build(verb)
        return None

    def _touch(self, strip: int, touched: bool, now: float) -> None:
        self._touched[strip] = touched
        handle = self._settle[strip]
        if handle is not None:
            handle.cancel()
            self._settle[strip] = None
        if touched:
            return
        guard = self.options.touch_guard
        self._guard_until[strip] = now + guard
        loop = asyncio.get_running_loop()
        self._settle[strip] = loop.call_later(guard, self._settle_fader, strip)

    def _settle_fader(self, strip: int) -> None:
        """After release + guard: send the state's value once so the fader shows the truth."""
        self._settle[strip] = None
        if self._touched[strip] or self._link is None:
            return
        self._guard_until[strip] = 0.0
        try:
            self._render_fader(strip, force=True)
        except DeviceError as exc:
            log.info("%s: fader settle not sent: %s", self.name, exc)
