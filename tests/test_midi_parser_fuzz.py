"""Differential test of the MIDI stream parser against mido's (an independent implementation).

Random but reproducible streams of channel messages, system common messages, SysEx and
realtime bytes, cut into random chunks. Our parser gets the stream with running status used
wherever MIDI allows it; mido's parser (which does not implement running status) gets the same
messages with every status byte written out. Both must yield the same messages in the same
order, realtime bytes included (also when they arrive inside a SysEx or, for our parser, inside
a channel message, where MIDI allows them and mido's tokenizer drops the message).
"""

from __future__ import annotations

import random

import mido
import pytest

from bridge.devices.midi.parser import MidiStreamParser

CHANNEL_LEN = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}
COMMON = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0}
REALTIME = [0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF]


def random_message(rng: random.Random) -> list[int]:
    r = rng.random()
    if r < 0.75:
        status = (rng.choice(list(CHANNEL_LEN)) << 4) | rng.randrange(16)
        return [status] + [rng.randrange(128) for _ in range(CHANNEL_LEN[status >> 4])]
    if r < 0.9:
        return [0xF0] + [rng.randrange(128) for _ in range(rng.randrange(0, 40))] + [0xF7]
    status = rng.choice(list(COMMON))
    return [status] + [rng.randrange(128) for _ in range(COMMON[status])]


def streams(rng: random.Random, n: int) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """(expected messages, the stream with running status as one piece per message (what rtmidi
    delivers per event), the stream without running status)."""
    expected: list[list[int]] = []
    compact: list[list[int]] = []
    full: list[int] = []
    running = 0
    for _ in range(n):
        msg = random_message(rng)
        status = msg[0]
        use_running = status < 0xF0 and status == running and rng.random() < 0.7
        body = msg[1:] if use_running else msg
        # realtime bytes dropped in anywhere, also inside the message
        rt_at = rng.randrange(len(body) + 1) if rng.random() < 0.2 else -1
        rt = rng.choice(REALTIME)
        piece: list[int] = []
        for i, b in enumerate(body):
            if i == rt_at:
                piece.append(rt)
            piece.append(b)
        if rt_at == len(body):
            piece.append(rt)
        compact.append(piece)
        full_body = msg
        full_rt_at = rt_at + (1 if use_running and rt_at >= 0 else 0)
        if status != 0xF0 and 0 < full_rt_at < len(msg):
            # mido's tokenizer drops a channel or common message that a realtime byte
            # interrupts (MIDI allows it anywhere); it gets it just before the message instead
            full_rt_at = 0
        for i, b in enumerate(full_body):
            if i == full_rt_at:
                full.append(rt)
            full.append(b)
        if full_rt_at == len(full_body):
            full.append(rt)
        # the realtime byte is complete as soon as it arrives: before a message it interrupts
        if rt_at == -1:
            expected.append(msg)
        elif rt_at == len(body):
            expected.extend([msg, [rt]])
        else:
            expected.extend([[rt], msg])
        if status < 0xF0:
            running = status
        elif status < 0xF8:
            running = 0  # SysEx and system common end running status
    return expected, compact, full


def chunks(rng: random.Random, data: list[int]) -> list[list[int]]:
    out, i = [], 0
    while i < len(data):
        k = rng.randint(1, 12)
        out.append(data[i : i + k])
        i += k
    return out


@pytest.mark.parametrize("seed", range(200))
def test_same_messages_as_mido(seed: int) -> None:
    rng = random.Random(seed)
    expected, compact, full = streams(rng, rng.randint(1, 60))

    ours: list[list[int]] = []
    parser = MidiStreamParser()
    # as rtmidi delivers it (one event per callback), or cut anywhere (a serial or pipe stream)
    pieces = compact if seed % 2 else chunks(rng, [b for piece in compact for b in piece])
    for chunk in pieces:
        ours.extend(list(m) for m in parser.feed(chunk))

    theirs: list[list[int]] = []
    oracle = mido.Parser()
    for chunk in chunks(rng, full):
        oracle.feed(chunk)
        theirs.extend(m.bytes() for m in oracle)

    assert theirs == expected, "the test's own expectation disagrees with mido"
    assert ours == theirs
    assert parser.dropped == 0
