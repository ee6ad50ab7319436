"""What a Mackie Control desk shows: the studio state -> LEDs, motor faders, LCD, displays.
Pure, no I/O.

:class:`MackieDesk` keeps the desk's mirror of the state and the bank, and writes the bytes
(:mod:`bridge.devices.midi.mackie_codec`) to the ``sink`` it is given; what its keys do is
:class:`bridge.devices.midi.mackie_keys.DeskKeys`. The driver
(:class:`bridge.devices.midi.mackie.MackieSurface`) owns the MIDI link and the handshake.
Tests drive a desk with a list as sink and their own clock and timers
(tests/devices/test_mackie_render.py).

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
The V-Pot ring shows the fader level (wrap mode, 0-11). What was sent (LEDs, fader
positions) is kept for the echo guard of :mod:`bridge.devices.midi.mackie_keys`.

The DAW away (``daw/status`` not ok: it crashed, is starting, or its link is lost): the
desk claims nothing only the DAW knows. The upper LCD line says ``DAW offline -
reconnecting``, the transport (PLAY / STOP / RECORD), REC ARM / SOLO / MUTE LEDs go off and
X-Touch strips turn white; the talkback LED (the bridge's own), the displays and the motor
faders stay (no motor runs down and back). When the DAW is back, the desk waits
``DAW_SETTLE`` seconds for the DAW's re-report of its values to arrive, then renders the
state as it is, through the same caches: each LED or cell that differs from what the desk
shows is sent once (no flash of a value the DAW no longer has).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from bridge import state as st
from bridge.devices.midi import mackie_codec as mc
from bridge.devices.midi.mackie_keys import DeskOptions, bound_actions
from bridge.errors import DeviceError
from bridge.vocab import Value

log = logging.getLogger(__name__)

MODELS = {"mcu": mc.MODEL_MCU, "xtouch": mc.MODEL_MCU, "logic": mc.MODEL_LOGIC}
#: The upper LCD line while the DAW is away and the bridge retries.
OFFLINE_TEXT = "DAW offline - reconnecting"
#: Seconds the desk keeps the offline picture after the DAW is back, while its values arrive.
DAW_SETTLE = 0.2


class Timer(Protocol):
    def cancel(self) -> None: ...


#: ``call_later(delay, callback)``: asyncio's by default; tests pass their own.
CallLater = Callable[[float, Callable[[], None]], Timer]


class MackieDesk:
    """One desk's picture of the state; every byte goes to ``sink`` (which may raise DeviceError)."""

    def __init__(
        self,
        name: str,
        options: DeskOptions,
        sink: Callable[[bytes], None],
        *,
        clock: Callable[[], float] | None = None,
        state: Callable[[str], Value] | None = None,
        call_later: CallLater | None = None,
    ) -> None:
        self.name = name
        self.options = options
        self._sink = sink
        base = MODELS[options.model]
        self.model = base + 1 if options.extender else base
        self.is_xtouch = options.model == "xtouch"
        self.actions = bound_actions(options)
        self.clock: Callable[[], float] = clock or time.monotonic
        self._state = state
        self._call_later = call_later
        self._mirror: dict[str, Value] = {}
        #: the DAW is away: its keys are not shown (see the module doc)
        self._offline = False
        self._back: Timer | None = None  # the DAW is back: render after DAW_SETTLE
        self.bank = 0
        #: a link is there: the touch settle and the DAW's return may render
        self.live = False
        self.touched = [False] * mc.STRIPS
        self._guard_until = [0.0] * mc.STRIPS
        self._settle: list[Timer | None] = [None] * mc.STRIPS
        #: what was sent, for the echo guard (bridge.devices.midi.mackie_keys)
        self.sent_notes: dict[bytes, deque[float]] = {}
        self.sent_faders: dict[int, tuple[int, float]] = {}
        self._clear_cache()
        self.stats = dict.fromkeys(
            ("messages", "buttons", "fader_moves", "commands", "echo_dropped", "untouched_dropped",
             "ignored", "sent", "resyncs", "looped"),
            0,
        )  # fmt: skip

    def _later(self, delay: float, callback: Callable[[], None]) -> Timer:
        if self._call_later is not None:
            return self._call_later(delay, callback)
        return asyncio.get_running_loop().call_later(delay, callback)

    # ------------------------------------------------------------------ connection

    def attach(self) -> None:
        """A link is open: echoes of an earlier one are no news."""
        self.live = True
        self.sent_notes.clear()

    def detach(self) -> None:
        """The link is gone: no timer renders any more, no hand is on a fader."""
        self.live = False
        self._cancel_back()
        for i, handle in enumerate(self._settle):
            if handle is not None:
                handle.cancel()
                self._settle[i] = None
        self.touched = [False] * mc.STRIPS

    def _clear_cache(self) -> None:
        self._sent_led: dict[int, int] = {}
        self._sent_fader: dict[int, int] = {}
        self._sent_ring: dict[int, int] = {}
        self._sent_lcd: list[str | None] = [None] * (2 * mc.STRIPS)
        self._sent_digits: dict[int, int] = {}
        self._sent_assign: dict[int, int] = {}
        self._sent_colors: tuple[int, ...] | None = None

    def resync(self) -> None:
        """Forget what the surface shows and send the full current state."""
        self.stats["resyncs"] += 1
        self._clear_cache()
        if self._state is not None:
            for key in list(self._mirror):
                value = self._state(key)
                if value is None:
                    self._mirror.pop(key, None)
                else:
                    self._mirror[key] = value
        self._cancel_back()
        self._offline = st.daw_offline(self._mirror.get(st.DAW_STATUS))
        self._clamp_bank()
        self.render_all()

    def blackout(self) -> None:
        """LEDs off, LCD and displays cleared, faders down (a surface without the bridge shows
        nothing stale)."""
        try:
            for note in sorted(self._sent_led):
                self.emit(mc.led(note, mc.LED_OFF))
            self.emit(mc.lcd(self.model, 0, " " * (2 * mc.LCD_WIDTH)))
            for i in range(mc.STRIPS):
                self.emit(mc.fader(i, 0.0))
                self.emit(mc.vpot_ring(i, 0))
            if not self.options.extender:
                for d in range(mc.TIMECODE_DIGITS):
                    self.emit(mc.timecode_digit(d, 0x20))
                for msg in mc.assignment("  "):
                    self.emit(msg)
            if self.is_xtouch:
                self.emit(mc.xtouch_colors(self.model, [mc.COLOR_OFF] * mc.STRIPS))
        except DeviceError as exc:
            log.info("%s: blackout incomplete: %s", self.name, exc)
        self._clear_cache()

    # ------------------------------------------------------------------ output

    def emit(self, data: bytes) -> None:
        """Send one message (the echo guard remembers LEDs and fader positions)."""
        self._sink(data)
        self.stats["sent"] += 1
        status = data[0] & 0xF0
        if status == 0x90:
            now = self.clock()
            times = self.sent_notes.setdefault(data, deque(maxlen=8))
            times.append(now)
        elif status == 0xE0:
            self.sent_faders[data[0] & 0x0F] = (((data[2] << 7) | data[1]) >> 4, self.clock())

    def show(self, key: str, value: Value) -> None:
        """One state change (``Feedback(key, value)``): render what it changes."""
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
                self.render_all()
            else:
                self._render_lcd()  # the reason may have changed
        elif self._offline and self._back is None:
            self._back = self._later(DAW_SETTLE, self._daw_back)

    def _cancel_back(self) -> None:
        if self._back is not None:
            self._back.cancel()
            self._back = None

    def _daw_back(self) -> None:
        """DAW_SETTLE after the DAW came back: show the state again."""
        self._back = None
        if not self.live or st.daw_offline(self._mirror.get(st.DAW_STATUS)):
            return
        self._offline = False
        try:
            self.render_all()
        except DeviceError as exc:  # the writer's next send reports the link; resync replays all
            log.info("%s: DAW state not shown: %s", self.name, exc)

    # ------------------------------------------------------------------ rendering

    def track(self, strip: int) -> int:
        return int(self.options.strip_offset) + self.bank + strip + 1

    def _strip_of(self, track: int) -> int | None:
        strip = track - 1 - int(self.options.strip_offset) - self.bank
        return strip if 0 <= strip < mc.STRIPS else None

    def get(self, key: str) -> Value:
        return self._mirror.get(key)

    def _shown(self, key: str) -> Value:
        """What the desk shows for ``key``: nothing (None) for the DAW's keys while it is away."""
        if self._offline and st.is_daw_key(key) and not st.is_continuous_key(key):
            return None
        return self._mirror.get(key)

    def _led(self, note: int, state: int) -> None:
        if self._sent_led.get(note) != state:
            self.emit(mc.led(note, state))
            self._sent_led[note] = state

    def render_all(self) -> None:
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
        t = self.track(i)
        self._led(mc.REC_ARM + i, mc.led_state(self._shown(st.track_key(t, "armed")) is True))
        self._led(mc.SOLO + i, mc.led_state(self._shown(st.track_key(t, "solo")) is True))
        self._led(mc.MUTE + i, mc.led_state(self._shown(st.track_key(t, "mute")) is True))

    def _render_ring(self, i: int) -> None:
        ring = round(self.fader_value(self.track(i)) * 11)
        if self._sent_ring.get(i) != ring:
            self.emit(mc.vpot_ring(i, ring, mode=2))
            self._sent_ring[i] = ring

    def fader_value(self, track: int) -> float:
        v = self.get(st.track_key(track, "fader"))
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0

    def _render_fader(self, i: int, force: bool = False) -> None:
        if self.touched[i] or self.clock() < self._guard_until[i]:
            return  # never fight the hand; _settle sends the truth after release
        v14 = mc.fader_to_14bit(self.fader_value(self.track(i)))
        sig = mc.fader_significant(v14)
        if force or self._sent_fader.get(i) != sig:
            self.emit(mc.fader(i, v14 / 16383))
            self._sent_fader[i] = sig

    def _render_transport(self) -> None:
        playing = self._shown(st.PLAYING) is True
        stopped = self._shown(st.PLAYING) is not True and not self._offline
        recording = self._shown(st.RECORDING) is True
        talkback = self.get(st.talkback_key(self.options.talkback_channel)) is True
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
                self._led(note, mc.led_state(self.get(st.SELECTED_CIRCLED) is True))
            elif action in ("false_start", "false_start_toggle"):
                self._led(note, mc.led_state(self.get(st.SELECTED_FALSE_START) is True))

    def _take_number(self) -> int:
        key = st.TAKE if self._shown(st.RECORDING) is True else st.NEXT_TAKE
        v = self.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    def _lcd_lines(self) -> tuple[str, str]:
        names = []
        numbers = []
        for i in range(mc.STRIPS):
            t = self.track(i)
            name = self.get(st.track_key(t, "name"))
            names.append(name if isinstance(name, str) else "")
            numbers.append(f"#{t}")
        if self._offline:
            return self._offline_text(), mc.lcd_line(numbers)
        top = mc.lcd_line(names)
        if self.get(st.RECORDING) is True:
            song = self.get(st.SONG)
            song_text = f"{song}  " if isinstance(song, str) and song else ""
            bottom = f"REC  {song_text}take {self._take_number()}"[: mc.LCD_WIDTH].ljust(mc.LCD_WIDTH)
        else:
            bottom = mc.lcd_line(numbers)
        return top, bottom

    def _offline_text(self) -> str:
        """The upper LCD line while the DAW is away (the 8 cells across, not per strip)."""
        status = self.get(st.DAW_STATUS)
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
                    self.emit(mc.lcd(self.model, mc.lcd_offset(run_start, line), chunk))
                    run_start = None

    def _render_colors(self) -> None:
        if not self.is_xtouch:
            return
        colors = tuple(
            mc.COLOR_RED if self._shown(st.track_key(self.track(i), "armed")) is True else mc.COLOR_WHITE
            for i in range(mc.STRIPS)
        )
        if colors != self._sent_colors:
            self.emit(mc.xtouch_colors(self.model, colors))
            self._sent_colors = colors

    def _render_timecode(self) -> None:
        if self.options.extender:
            return
        if self.options.display == "take":
            codes = mc.timecode_codes(mc.format_take(self._take_number()))
        else:
            pos = self.get(st.POSITION)
            seconds = float(pos) if isinstance(pos, int | float) and not isinstance(pos, bool) else 0.0
            codes = mc.timecode_codes(mc.format_position(seconds, self.options.fps), mc.POSITION_DOTS)
        for digit, code in enumerate(codes):
            if self._sent_digits.get(digit) != code:
                self.emit(mc.timecode_digit(digit, code))
                self._sent_digits[digit] = code

    def _render_assignment(self) -> None:
        if self.options.extender:
            return
        text = str(self._take_number() if self.options.assignment == "take" else self.track(0))
        for msg in mc.assignment(text):
            if self._sent_assign.get(msg[1]) != msg[2]:
                self.emit(msg)
                self._sent_assign[msg[1]] = msg[2]

    def _clamp_bank(self) -> None:
        tracks = [p[0] for k in self._mirror if (p := st.parse_track_key(k)) is not None]
        highest = max(tracks, default=0) - int(self.options.strip_offset)
        self.bank = max(0, min(self.bank, max(0, highest - 1)))

    def shift_bank(self, step: int) -> None:
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
            self.render_all()

    def touch(self, strip: int, touched: bool, now: float) -> None:
        self.touched[strip] = touched
        handle = self._settle[strip]
        if handle is not None:
            handle.cancel()
            self._settle[strip] = None
        if touched:
            return
        guard = self.options.touch_guard
        self._guard_until[strip] = now + guard
        self._settle[strip] = self._later(guard, lambda: self._settle_fader(strip))

    def _settle_fader(self, strip: int) -> None:
        """After release + guard: send the state's value once so the fader shows the truth."""
        self._settle[strip] = None
        if self.touched[strip] or not self.live:
            return
        self._guard_until[strip] = 0.0
        try:
            self._render_fader(strip, force=True)
        except DeviceError as exc:
            log.info("%s: fader settle not sent: %s", self.name, exc)
