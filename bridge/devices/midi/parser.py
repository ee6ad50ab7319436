"""MIDI bytes -> messages: :class:`MidiStreamParser` (pure, no ports; every MIDI driver's input
goes through it, in :class:`bridge.devices.midi.link.MidiLink`)."""

from __future__ import annotations

#: Longest SysEx kept (bytes); longer ones are dropped as garbage.
MAX_SYSEX = 65536
# Data bytes following each status byte (0x80-0xEF by high nibble; 0xF1-0xF6 system common).
_CHANNEL_LEN = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}
_COMMON_LEN = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF4: 0, 0xF5: 0, 0xF6: 0}


class MidiStreamParser:
    """Bytes -> complete MIDI messages. Handles running status (also across calls), SysEx
    reassembly across chunks, realtime bytes (F8-FF) interleaved anywhere, stray data bytes
    and truncated SysEx (counted in .dropped and discarded).

    ``dropped`` counts discarded items: each stray data byte, each SysEx cut short by a
    status byte (or longer than :data:`MAX_SYSEX`), each channel/common message cut short,
    each stray ``F7`` and each undefined system common byte (F4, F5).
    """

    __slots__ = ("_buf", "_need", "_running", "_skip", "_sysex", "dropped")

    def __init__(self) -> None:
        self.dropped = 0
        self._running = 0  # running status (0x80-0xEF) or 0
        self._buf: list[int] = []  # message being assembled (status first), empty when idle
        self._need = 0  # data bytes still expected for _buf
        self._sysex: bytearray | None = None  # SysEx being assembled
        self._skip = False  # inside an oversized SysEx (already counted): swallow its bytes

    def reset(self) -> None:
        """Forget any partial message and the running status (after a reconnect)."""
        self._running = 0
        self._buf = []
        self._need = 0
        self._sysex = None
        self._skip = False

    def feed(self, data: bytes | list[int]) -> list[bytes]:
        # Fast path: one complete 3-byte channel message while idle (what rtmidi usually delivers).
        if len(data) == 3 and not self._buf and self._sysex is None and not self._skip:
            s = data[0]
            if 0x80 <= s < 0xF0 and (s & 0xE0) != 0xC0 and data[1] < 0x80 and data[2] < 0x80:
                self._running = s
                return [bytes(data)]
        out: list[bytes] = []
        for b in data:
            if b >= 0xF8:  # realtime: never interrupts anything
                out.append(bytes((b,)))
            elif self._skip:
                if b >= 0x80:
                    self._skip = False
                    if b != 0xF7:
                        self._status(b, out)
            elif self._sysex is not None:
                if b < 0x80:
                    if len(self._sysex) >= MAX_SYSEX:
                        self._sysex = None
                        self._skip = True
                        self.dropped += 1
                    else:
                        self._sysex.append(b)
                elif b == 0xF7:
                    self._sysex.append(b)
                    out.append(bytes(self._sysex))
                    self._sysex = None
                else:  # a status byte ends a truncated SysEx
                    self._sysex = None
                    self.dropped += 1
                    self._status(b, out)
            elif b < 0x80:
                if self._buf:
                    self._buf.append(b)
                    self._need -= 1
                    if self._need == 0:
                        out.append(bytes(self._buf))
                        self._buf = []
                elif self._running:
                    need = _CHANNEL_LEN[self._running >> 4]
                    if need == 1:
                        out.append(bytes((self._running, b)))
                    else:
                        self._buf = [self._running, b]
                        self._need = need - 1
                else:
                    self.dropped += 1
            else:
                self._status(b, out)
        return out

    def _status(self, b: int, out: list[bytes]) -> None:
        if self._buf:  # previous message cut short
            self._buf = []
            self.dropped += 1
        if b == 0xF0:
            self._sysex = bytearray((0xF0,))
            self._running = 0
        elif b < 0xF0:
            self._running = b
            self._buf = [b]
            self._need = _CHANNEL_LEN[b >> 4]
        elif b == 0xF7 or b in (0xF4, 0xF5):  # stray end of SysEx / undefined
            self._running = 0
            self.dropped += 1
        else:  # system common clears running status
            self._running = 0
            need = _COMMON_LEN[b]
            if need == 0:
                out.append(bytes((b,)))
            else:
                self._buf = [b]
                self._need = need
