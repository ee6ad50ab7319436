"""Talkback on a console or interface that takes MIDI (``kind = "talkback_midi"``).

Messages are written as hex bytes, per talk channel::

    output = "Console MIDI 1"             # port the on/off messages go to (pattern)
    input = "Console MIDI 1"              # optional: port the console reports on
    on = { A = "B0 50 7F" }               # engage talk A
    off = { A = "B0 50 00" }              # release it
    feedback_on = { A = "B0 50 7F" }      # optional: what the console sends when A is on
    feedback_off = { A = "B0 50 00" }     #   (default: the same as on / off)
    query = "F0 00 20 32 ... F7"          # optional: makes the console report its state

* Without ``input`` the console gives no feedback: after each command the state is reported
  **assumed** (``talkback/assumed``), as MMC's is.
* With ``input`` a command is confirmed only by the matching feedback message (exact bytes),
  which must arrive within ``answer_timeout``, or the link counts as lost (the hub fails the
  command at once; the supervisor reconnects). A feedback message the bridge did not ask for
  is a press on the console (a cue with source ``console``). Other input is counted
  (``ignored``) and dropped.
* ``query`` is sent at connect (then every channel must report within ``connect_timeout``) and
  after each command. Without it the state is unknown until the console reports it.

The ports are opened through :class:`bridge.devices.midi.link.MidiLink` (a helper process per link,
by port-name pattern, hot-plug: an unplugged port is a lost link).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from bridge.devices._talkback import TalkbackDevice, max_on_check
from bridge.devices.base import DeviceContext
from bridge.devices.midi.link import MidiLink
from bridge.devices.midi.ports import check_pattern
from bridge.errors import DeviceLost, DeviceUnavailable
from bridge.options import OptionsError, in_range, positive
from bridge.vocab import Outbound, SetTalkback

log = logging.getLogger(__name__)


def parse_hex(text: str) -> bytes:
    """``"B0 50 7F"`` -> bytes; raise ValueError unless it is one or more whole MIDI messages."""
    try:
        data = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f'hex bytes like "B0 50 7F" (got "{text}")') from None
    if not data or data[0] < 0x80:
        raise ValueError(f'MIDI bytes starting with a status byte (got "{text}")')
    if data[0] == 0xF0 and data[-1] != 0xF7:
        raise ValueError(f'a SysEx message ending in F7 (got "{text}")')
    return data


def _messages_check(value: Any) -> str | None:
    if not value:
        return 'a table of talk channels and MIDI messages, e.g. { A = "B0 50 7F" }'
    for ch, text in value.items():
        if ch not in ("A", "B"):
            return f'talk channels A and/or B as keys (got "{ch}")'
        try:
            parse_hex(text)
        except ValueError as exc:
            return str(exc)
    return None


def _optional_messages_check(value: Any) -> str | None:
    return None if not value else _messages_check(value)


def _hex_check(value: Any) -> str | None:
    if not value:
        return None
    try:
        parse_hex(value)
    except ValueError as exc:
        return str(exc)
    return None


def _pattern_check(value: Any) -> str | None:
    return check_pattern(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class MidiTalkbackOptions:
    #: Port the on/off messages are sent to (name substring, or "re:<regex>").
    output: str = field(metadata={"check": _pattern_check})
    #: Port the console reports its talkback state on; omit for a console without feedback.
    input: str | None = field(default=None, metadata={"check": _pattern_check})
    api: Literal["jack", "alsa", "auto"] = "auto"
    client_name: str = ""
    on: dict[str, str] = field(default_factory=lambda: {"A": "B0 50 7F"}, metadata={"check": _messages_check})
    off: dict[str, str] = field(
        default_factory=lambda: {"A": "B0 50 00"}, metadata={"check": _messages_check}
    )
    feedback_on: dict[str, str] = field(default_factory=dict, metadata={"check": _optional_messages_check})
    feedback_off: dict[str, str] = field(default_factory=dict, metadata={"check": _optional_messages_check})
    query: str = field(default="", metadata={"check": _hex_check})
    answer_timeout: float = field(default=1.0, metadata={"check": in_range(0.05, 10)})
    connect_timeout: float = field(default=3.0, metadata={"check": positive})
    max_on: float = field(default=120.0, metadata={"check": max_on_check})


class MidiTalkback(TalkbackDevice[MidiTalkbackOptions]):
    """Talkback over MIDI (see the module docstring)."""

    kind: ClassVar[str] = "talkback_midi"
    Options: ClassVar[type[MidiTalkbackOptions]] = MidiTalkbackOptions
    max_backoff: ClassVar[float] = 0.5

    @classmethod
    def validate(cls, options: MidiTalkbackOptions, config_dir: Path) -> None:
        if set(options.on) != set(options.off):
            raise OptionsError("off", f"needs the same talk channels as on ({', '.join(sorted(options.on))})")
        for key in ("feedback_on", "feedback_off"):
            extra = sorted(set(getattr(options, key)) - set(options.on))
            if extra:
                raise OptionsError(key, f"channel {extra[0]} is not in on")
        if options.input is None and (options.feedback_on or options.feedback_off or options.query):
            key = "query" if options.query else "feedback_on" if options.feedback_on else "feedback_off"
            raise OptionsError(key, "needs an input port (input = ...) to read the console's feedback")

    def __init__(self, name: str, options: MidiTalkbackOptions, ctx: DeviceContext | None = None) -> None:
        super().__init__(name, options, ctx)
        o = options
        self.peer = f"MIDI talkback {o.output!r}"
        self.link = MidiLink(o.client_name or f"sb-{name}", o.input, o.output, api=o.api)
        self._on = {ch: parse_hex(v) for ch, v in o.on.items()}
        self._off = {ch: parse_hex(v) for ch, v in o.off.items()}
        self._feedback: dict[bytes, tuple[str, bool]] = {}
        if o.input is not None:
            for ch in o.on:
                self._feedback[parse_hex(o.feedback_on.get(ch, o.on[ch]))] = (ch, True)
                self._feedback[parse_hex(o.feedback_off.get(ch, o.off[ch]))] = (ch, False)
        self._query = parse_hex(o.query) if o.query else b""
        self._reader: asyncio.Future[None] | None = None
        self._lost: str | None = None
        self._synced = asyncio.Event()

    @property
    def talkback_channels(self) -> tuple[str, ...]:
        return tuple(self.options.on)

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        self._reset_events()
        self._lost = None
        self._synced = asyncio.Event()
        await self.link.open()  # DeviceUnavailable when a port is not there
        self._closed = False
        self._reader = asyncio.ensure_future(self._pump())
        try:
            if self._query:
                await self._handshake()
        except BaseException:
            await self._close()
            raise
        how = "no feedback: the state is assumed" if self.options.input is None else "feedback on"
        log.info("%s: talkback over MIDI to %r (%s)", self.name, self.link.out_port, how)
        return self

    async def _handshake(self) -> None:
        deadline = self._clock() + self.options.connect_timeout
        while not self._synced.is_set():
            left = deadline - self._clock()
            if left <= 0:
                raise DeviceUnavailable(
                    f"{self.peer} did not report the talkback state within "
                    f"{self.options.connect_timeout:g} s (query {self.options.query})"
                )
            self.link.send(self._query)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.5, left)):
                    await self._synced.wait()
        self._answer_due = None
        for ch in self.talkback_channels:
            on = self.reported.get(ch)
            assert on is not None
            self._report(ch, on, always=True)

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        self._closed = True
        self._poke()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await self.link.aclose()

    async def _pump(self) -> None:
        try:
            async for batch in self.link.messages():
                for msg in batch:
                    self._on_midi(msg)
        except DeviceLost as exc:
            self._lost = str(exc)
            self._poke()

    # ------------------------------------------------------------------ send / receive
    def send_now(self, message: Outbound) -> None:
        if not isinstance(message, SetTalkback) or message.channel not in self._on:
            self._stats["ignored"] += 1
            return
        if self._closed or self._lost:
            raise DeviceLost(f"{self.peer}: {self._lost or 'link closed'}")
        ch = message.channel
        self.link.send(self._on[ch] if message.on else self._off[ch])
        self._stats["tx"] += 1
        if self.options.input is None:
            self._report(ch, message.on, assumed=True, always=True)
            return
        if self._query:
            self.link.send(self._query)
        self._expect_answer(f"talk {ch}")

    def _tick(self, now: float) -> float:
        if self._lost is not None:
            raise DeviceLost(f"{self.peer}: {self._lost}")
        return 3600.0

    def _on_midi(self, msg: bytes) -> None:
        self._stats["rx"] += 1
        found = self._feedback.get(msg)
        if found is None:
            self._stats["ignored"] += 1
            return
        ch, on = found
        self._answered()
        if self._synced.is_set() or not self._query:
            self._report(ch, on)
        else:
            self.reported[ch] = on
            if all(self.reported.get(c) is not None for c in self.talkback_channels):
                self._synced.set()

    def stats(self) -> dict[str, int]:
        return {**self._stats, **{f"link_{k}": v for k, v in self.link.stats().items()}}
