"""MidiStreamParser and the port name patterns: pure, no ports."""

from __future__ import annotations

from bridge.devices.midi.helper_proc import port_matcher
from bridge.devices.midi.parser import MAX_SYSEX, MidiStreamParser


def h(s: str) -> bytes:
    return bytes.fromhex(s)


# --------------------------------------------------------------------------- parser


def feed_all(chunks: list[str]) -> tuple[list[str], int]:
    p = MidiStreamParser()
    out: list[bytes] = []
    for c in chunks:
        out.extend(p.feed(h(c)))
    return [m.hex(" ").upper() for m in out], p.dropped


def test_complete_messages() -> None:
    assert feed_all(["90 3C 7F", "B0 07 64", "C0 05", "E0 00 40", "D0 10"]) == (
        ["90 3C 7F", "B0 07 64", "C0 05", "E0 00 40", "D0 10"],
        0,
    )


def test_running_status_within_and_across_calls() -> None:
    assert feed_all(["90 3C 7F 3D 7F", "3E 00", "3F", "40"]) == (
        ["90 3C 7F", "90 3D 7F", "90 3E 00", "90 3F 40"],
        0,
    )
    assert feed_all(["C0 01 02 03"]) == (["C0 01", "C0 02", "C0 03"], 0)


def test_message_split_across_calls() -> None:
    assert feed_all(["B0", "07", "64"]) == (["B0 07 64"], 0)


def test_sysex_reassembled_across_chunks() -> None:
    assert feed_all(["F0 00 00", "66 14 12", "00 41 42 F7"]) == (["F0 00 00 66 14 12 00 41 42 F7"], 0)


def test_realtime_inside_sysex_and_messages() -> None:
    msgs, dropped = feed_all(["F0 01 F8 02", "FE 03 F7", "90 F8 3C FA 7F"])
    assert msgs == ["F8", "FE", "F0 01 02 03 F7", "F8", "FA", "90 3C 7F"]
    assert dropped == 0


def test_realtime_keeps_running_status() -> None:
    assert feed_all(["B0 01 02 F8 03 04"]) == (["B0 01 02", "F8", "B0 03 04"], 0)


def test_stray_data_bytes_dropped() -> None:
    assert feed_all(["01 02 03", "90 3C 7F"]) == (["90 3C 7F"], 3)


def test_truncated_sysex_dropped() -> None:
    # a status byte ends a SysEx that never got its F7; the status byte itself still counts
    assert feed_all(["F0 01 02", "90 3C 7F"]) == (["90 3C 7F"], 1)
    # a new SysEx start ends the previous one
    assert feed_all(["F0 01 02 F0 03 F7"]) == (["F0 03 F7"], 1)


def test_stray_f7_and_truncated_message() -> None:
    assert feed_all(["F7", "90 3C", "B0 07 64"]) == (["B0 07 64"], 2)


def test_system_common_clears_running_status() -> None:
    assert feed_all(["90 3C 7F F2 10 20 3C 7F"]) == (["90 3C 7F", "F2 10 20"], 2)
    assert feed_all(["F6 F1 21 F3 05"]) == (["F6", "F1 21", "F3 05"], 0)


def test_oversized_sysex_dropped() -> None:
    p = MidiStreamParser()
    assert p.feed(b"\xf0" + b"\x01" * (MAX_SYSEX + 10) + b"\xf7") == []
    assert p.dropped == 1  # the whole SysEx, once
    assert p.feed(h("90 3C 7F")) == [h("90 3C 7F")]


def test_port_patterns() -> None:
    m = port_matcher("nanokontrol2")
    assert m("nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0")
    assert not m("X-TOUCH MINI:X-TOUCH MINI MIDI 1")
    r = port_matcher("re:^a2j:.*\\(capture\\): nanoKONTROL2")
    assert r("a2j:nanoKONTROL2 [20] (capture): nanoKONTROL2 MIDI 1")
    assert not r("a2j:nanoKONTROL2 [20] (playback): nanoKONTROL2 MIDI 1")
