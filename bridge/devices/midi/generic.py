"""Generic MIDI controllers driven by a device profile (``kind = "generic_midi"``, ``feedback = "mapped"``).

Input: each MIDI message is looked up in the profile (:mod:`bridge.devices.midi.profiles`) and becomes a
``ControlInput(control, value)``. Per batch of messages from the port:

* continuous controls are coalesced: an absolute control keeps only its latest value, a
  relative encoder the sum of its steps; pending continuous values are flushed before the
  next discrete input so the relative order of faders and buttons is kept;
* buttons and other discrete inputs pass in order, each handed on at once, and are never
  dropped (a momentary button's repeated press or release, e.g. an echo of its LED message,
  is a duplicate and is skipped; a hardware-toggle button gives a press and a release for
  every message).

Echo guard: some controllers send our feedback back (MIDI thru or merge, "local control"
off), and an echoed LED-on would look exactly like a press. An input is an echo only if it
carries exactly a value we sent to that control less than ``echo_window`` seconds (100 ms)
before its batch was read, that has not come back yet: each value sent matches one echo,
once (in the order sent). A real button transition on the control (a release, a press)
breaks every earlier match, so the press of a double tap that arrives with its release (one
batch, e.g. after a stall) is never taken for the echo of the LED lit by the first press.
Inputs are handed on one by one as the batch is decoded (``iter_batch``), so an LED lit at
once for a press goes out before the release after it is read. A momentary button's release
is never an echo. Left to chance with the guard on: a press arriving within
``echo_window`` of an LED-on that was sent after that button's release (a DAW confirming
late), with nothing in between, cannot be told from the echo of a controller that echoes.
A controller that never echoes says so in its profile (``echoes_feedback = false``, as the
shipped nanoKONTROL2 profile does; the guard is then off and no press can be lost), or the
config sets ``echo_window = 0``.

Feedback: ``Feedback(control, value)`` is encoded by the profile (LED on/off/blink values,
value echo for rings and motor faders). ``blackout()`` turns every LED off.

Config::

    [devices.nano]
    kind = "generic_midi"
    profile = "korg_nanokontrol2"      # a shipped profile name or a path to a .toml profile
    mapping = "mappings/nanokontrol2-tracking.toml"   # studio mapping (the core's)
    # input = "nanoKONTROL2"           # port patterns, default from the profile
    # output = "nanoKONTROL2"          # "" = never send feedback
    # api = "auto"                     # jack | alsa | auto
    # echo_window = 0.1                # default: 0.1, or 0 if the profile says echoes_feedback = false
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from bridge.devices.base import DeviceContext, SyncDevice
from bridge.devices.midi.link import MidiLink
from bridge.devices.midi.ports import check_pattern
from bridge.devices.midi.profile_spec import Profile
from bridge.devices.midi.profiles import load_profile
from bridge.errors import ConfigError
from bridge.options import in_range
from bridge.vocab import ControlInput, Feedback, Inbound, Outbound

log = logging.getLogger(__name__)

#: Default echo window (seconds) for controllers that may echo.
DEFAULT_ECHO_WINDOW = 0.1
#: Feedback values remembered per control while waiting for their echo.
_MAX_UNECHOED = 16


def _pattern_check(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return check_pattern(value)
    return None


@dataclass(frozen=True)
class GenericMidiOptions:
    #: Shipped profile name ("korg_nanokontrol2") or path to a profile .toml (relative to the config).
    profile: str
    #: Input port pattern (substring or "re:<regex>"); default: the profile's.
    input: str | None = field(default=None, metadata={"check": _pattern_check})
    #: Output port pattern for feedback; default: the profile's; "" = no feedback output.
    output: str | None = field(default=None, metadata={"check": _pattern_check})
    api: Literal["jack", "alsa", "auto"] = "auto"
    #: JACK/ALSA client name (default "sb-<device name>").
    client_name: str = ""
    #: Seconds during which an input carrying a feedback value just sent to that control is its echo
    #: (0 = off); default 0.1, or 0 when the profile says the controller never echoes.
    echo_window: float | None = field(default=None, metadata={"check": in_range(0.0, 5.0)})
    #: Send the profile's init messages after connecting.
    send_init: bool = True


class GenericMidiSurface(SyncDevice[GenericMidiOptions]):
    kind: ClassVar[str] = "generic_midi"
    feedback: ClassVar[Literal["mapped"]] = "mapped"
    max_backoff: ClassVar[float] = 0.5
    min_interval: ClassVar[float] = 0.005
    Options: ClassVar[type[GenericMidiOptions]] = GenericMidiOptions

    @classmethod
    def validate(cls, options: GenericMidiOptions, config_dir: Path) -> None:
        load_profile(options.profile, config_dir)  # raises MappingError naming the profile file

    def __init__(self, name: str, options: GenericMidiOptions, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        self.profile: Profile = load_profile(options.profile, self.ctx.config_dir)  # raises MappingError
        in_pattern = options.input if options.input is not None else self.profile.input
        out_pattern = options.output if options.output is not None else self.profile.output
        if not in_pattern:
            raise ConfigError(
                f"devices.{name}.input: expected a port name pattern (profile {self.profile.file} has no "
                "device.input)"
            )
        self.link = MidiLink(
            options.client_name or f"sb-{name}", in_pattern, out_pattern or None, options.api
        )
        self._clock: Callable[[], float] = self.ctx.clock or time.monotonic
        window = options.echo_window
        if window is None:
            window = DEFAULT_ECHO_WINDOW if self.profile.echoes_feedback else 0.0
        #: seconds an echo of a feedback value may take to come back (0: no echo guard)
        self.echo_window: float = window
        #: control -> feedback values sent within the window that have not come back, oldest first
        self._unechoed: dict[str, deque[tuple[int, float]]] = {}
        self._pressed: dict[str, bool] = {}
        self._counts = {
            "inputs": 0,
            "unmapped": 0,
            "echoes": 0,
            "duplicates": 0,
            "repeated_presses": 0,
            "coalesced": 0,
            "feedback": 0,
        }

    async def __aenter__(self) -> GenericMidiSurface:
        await self.link.open()
        if self.options.send_init and self.link.can_send:
            for msg in self.profile.init:
                self.link.send(msg)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.link.aclose()

    # ------------------------------------------------------------------ input

    def decode_batch(self, batch: list[bytes]) -> list[ControlInput]:
        """Turn one batch of MIDI messages into control inputs (coalescing continuous ones)."""
        return list(self.iter_batch(batch))

    def iter_batch(self, batch: list[bytes]) -> Iterator[ControlInput]:
        """The control inputs of one batch, each yielded as soon as it is known: a discrete
        input goes to the hub (and its LED may be lit) before the rest of the batch is read,
        so a release later in the batch comes after that LED message, as it did on the wire."""
        absolute: dict[str, float] = {}
        relative: dict[str, float] = {}
        counts = self._counts
        find = self.profile.find
        now = self._clock()  # every message of the batch arrived before: feedback sent later is no echo
        for msg in batch:
            spec = find(msg)
            if spec is None:
                counts["unmapped"] += 1
                continue
            raw = spec.raw_value(msg)
            kind = spec.input
            if kind == "button":
                name = spec.name
                value = spec.decode(raw)
                toggle = spec.button == "toggle" or spec.type == "program"
                if (value >= 1.0 or toggle) and self._unechoed and self._is_echo(name, raw, now):
                    continue
                if not toggle:
                    pressed = value >= 1.0
                    if self._pressed.get(name, False) == pressed:
                        if not pressed:
                            counts["duplicates"] += 1  # a release of a button not held
                            continue
                        # a press of a button held: its release was lost on the way (a late JACK
                        # cycle) or the device repeats; the press is the user's, never dropped
                        counts["repeated_presses"] += 1
                    self._pressed[name] = pressed
                # a real transition: what was sent before it cannot come back as this control's input
                pending = self._unechoed.get(name)
                if pending:
                    pending.clear()
                if absolute or relative:
                    yield from self._flush(absolute, relative)
                if toggle:
                    counts["inputs"] += 2
                    yield ControlInput(name, 1.0)
                    yield ControlInput(name, 0.0)
                else:
                    counts["inputs"] += 1
                    yield ControlInput(name, value)
            else:
                if self._unechoed and self._is_echo(spec.name, raw, now):
                    continue
                if kind == "absolute":
                    if spec.name in absolute:
                        counts["coalesced"] += 1
                    absolute[spec.name] = spec.decode(raw)
                else:
                    if spec.name in relative:
                        counts["coalesced"] += 1
                    relative[spec.name] = relative.get(spec.name, 0.0) + spec.decode(raw)
        if absolute or relative:
            yield from self._flush(absolute, relative)

    def _is_echo(self, control: str, raw: int, now: float) -> bool:
        """True (and the sent value is used up) if ``raw`` is a value sent to ``control`` within
        the echo window, before the batch was read, that has not come back yet; values sent
        before it are used up too."""
        pending = self._unechoed.get(control)
        if not pending:
            return False
        window = self.echo_window
        while pending and now - pending[0][1] >= window:
            pending.popleft()
        for i, (sent, at) in enumerate(pending):
            if at > now:
                break  # sent while this batch was being handled: after the input arrived
            if sent == raw:
                for _ in range(i + 1):
                    pending.popleft()
                self._counts["echoes"] += 1
                return True
        return False

    def _flush(self, absolute: dict[str, float], relative: dict[str, float]) -> Iterator[ControlInput]:
        out = [ControlInput(name, v) for name, v in absolute.items()]
        out += [ControlInput(name, steps, relative=True) for name, steps in relative.items() if steps]
        absolute.clear()
        relative.clear()
        self._counts["inputs"] += len(out)
        return iter(out)

    async def receive(self) -> AsyncIterator[Inbound]:
        report = self.report_now
        if report is not None:
            # Straight from the helper's frame to the hub, in the task that read it.
            def on_batch(batch: list[bytes]) -> None:
                for item in self.iter_batch(batch):
                    report(item)

            await self.link.listen(on_batch)
            return
        async for batch in self.link.messages():
            for item in self.iter_batch(batch):
                yield item

    # ------------------------------------------------------------------ feedback

    def encode_feedback(self, message: Feedback) -> bytes | None:
        spec = self.profile.controls.get(message.control)
        if spec is None:
            self._counts["unmapped"] += 1
            log.debug("%s: feedback for unknown control %r", self.name, message.control)
            return None
        raw = spec.feedback_raw(message.value)
        if raw is None:
            return None
        if self.echo_window > 0:
            pending = self._unechoed.get(spec.name)
            if pending is None:
                pending = self._unechoed[spec.name] = deque(maxlen=_MAX_UNECHOED)
            pending.append((raw, self._clock()))
        return spec.encode_raw(raw)

    def send_now(self, message: Outbound) -> None:
        if not isinstance(message, Feedback) or not self.link.can_send:
            return
        data = self.encode_feedback(message)
        if data is not None:
            self.link.send(data)
            self._counts["feedback"] += 1

    async def blackout(self) -> None:
        if not self.link.can_send:
            return
        for spec in self.profile.controls.values():
            if spec.led_on is not None and spec.fb_type is not None:
                self.link.send(spec.encode_raw(spec.led_off or 0))

    def stats(self) -> dict[str, int]:
        return {**self.link.stats(), **self._counts}
