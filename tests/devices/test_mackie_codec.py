"""Byte-exact tests of the Mackie Control codec (protocols.md section 1)."""

from __future__ import annotations

import pytest

from bridge.devices.midi import mackie_codec as mc


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


# --------------------------------------------------------------------------- handshake


def test_device_query_per_model() -> None:
    assert mc.device_query(mc.MODEL_MCU) == hx("F0 00 00 66 14 00 F7")
    assert mc.device_query(mc.MODEL_MCU_XT) == hx("F0 00 00 66 15 00 F7")
    assert mc.device_query(mc.MODEL_LOGIC) == hx("F0 00 00 66 10 00 F7")


def test_challenge_response_manual_formula() -> None:
    # r1 = 7F & (l1 + (l2 ^ 0A) - l4) = 1 + 8 - 4 = 5
    # r2 = 7F & ((l3 >> 4) ^ (l1 + l4)) = 0 ^ 5 = 5
    # r3 = 7F & ((l4 - (l3 << 2)) ^ (l1 | l2)) = (-8 ^ 3) & 7F = 7B
    # r4 = 7F & (l2 - l3 + (F0 ^ (l4 << 4))) = (-1 + B0) & 7F = 2F
    assert mc.challenge_response([0x01, 0x02, 0x03, 0x04]) == hx("05 05 7B 2F")


def test_challenge_response_r2_follows_manual_not_ardour() -> None:
    # l3 = 0x50: the manual shifts by 4 (-> 5), Ardour by l4 (-> 0x28)
    r = mc.challenge_response([0x10, 0x20, 0x50, 0x01])
    assert r[1] == (0x50 >> 4) ^ (0x10 + 0x01) == 0x14
    assert all(b < 0x80 for b in r)


def test_challenge_response_is_7bit_for_all_extremes() -> None:
    for ch in ([0, 0, 0, 0], [0x7F] * 4, [0x7F, 0, 0x7F, 0], [0, 0x7F, 0, 0x7F]):
        assert all(b <= 0x7F for b in mc.challenge_response(ch))


def test_host_connection_reply_bytes() -> None:
    serial = b"ABCDEFG"
    got = mc.host_connection_reply(mc.MODEL_LOGIC, serial, [0x01, 0x02, 0x03, 0x04])
    assert got == hx("F0 00 00 66 10 02") + serial + hx("05 05 7B 2F F7")


def test_host_connection_query_and_parse() -> None:
    msg = mc.host_connection_query(mc.MODEL_MCU, b"SERIAL1", b"\x01\x02\x03\x04")
    assert msg == hx("F0 00 00 66 14 01") + b"SERIAL1" + hx("01 02 03 04 F7")
    sx = mc.parse_sysex(msg)
    assert sx == mc.Sysex(0x14, 0x01, b"SERIAL1\x01\x02\x03\x04")


@pytest.mark.parametrize(
    "raw",
    [
        hx("F0 00 00 67 14 01 F7"),  # other manufacturer
        hx("F0 00 00 66 14 F7"),  # too short
        hx("F0 00 00 66 14 01 02"),  # not terminated
        hx("90 00 7F"),
    ],
)
def test_parse_sysex_rejects_foreign(raw: bytes) -> None:
    assert mc.parse_sysex(raw) is None


# --------------------------------------------------------------------------- LEDs


def test_led_states() -> None:
    assert mc.led(mc.REC_ARM + 1, mc.LED_ON) == hx("90 01 7F")
    assert mc.led(mc.SOLO + 7, mc.LED_OFF) == hx("90 0F 00")
    assert mc.led(mc.RECORD, mc.LED_FLASH) == hx("90 5F 01")
    assert mc.led_state(True) == 0x7F and mc.led_state(False) == 0 and mc.led_state(True, flash=True) == 1
    with pytest.raises(ValueError):
        mc.led(0, 0x40)


def test_button_note_map() -> None:
    assert (mc.MARKER, mc.STOP, mc.PLAY, mc.RECORD) == (0x54, 0x5D, 0x5E, 0x5F)
    assert (mc.BANK_LEFT, mc.BANK_RIGHT, mc.CHANNEL_LEFT, mc.CHANNEL_RIGHT) == (0x2E, 0x2F, 0x30, 0x31)
    assert mc.BUTTONS["f1"] == 0x36 and mc.BUTTONS["f8"] == 0x3D and mc.BUTTONS["cycle"] == 0x56
    assert mc.FADER_TOUCH == 0x68 and mc.MASTER_TOUCH == 0x70


# --------------------------------------------------------------------------- faders


def test_fader_feedback_14bit_lsb_first() -> None:
    assert mc.fader(0, 0.0) == hx("E0 00 00")
    assert mc.fader(0, 1.0) == hx("E0 7F 7F")
    assert mc.fader(1, 0.5) == hx("E1 00 40")  # round(0.5 * 16383) = 8192 = 0x40 << 7
    assert mc.fader(8, 1.0) == hx("E8 7F 7F")  # master
    assert mc.fader(2, 1.7) == hx("E2 7F 7F") and mc.fader(2, -1) == hx("E2 00 00")  # clamped


def test_fader_decode_roundtrip_and_10bit_significance() -> None:
    strip, value = mc.decode_pitchbend(hx("E3 7F 7F"))
    assert strip == 3 and value == 1.0
    strip, value = mc.decode_pitchbend(hx("E0 00 40"))
    assert strip == 0 and value == pytest.approx(8192 / 16383)
    for v in (0.0, 0.1, 0.333, 0.75, 1.0):
        assert mc.decode_pitchbend(mc.fader(0, v))[1] == pytest.approx(v, abs=1 / 16383)
    assert mc.fader_significant(16383) == 1023
    assert mc.fader_significant(0x0F) == 0  # below the hardware's resolution
    assert mc.fader_significant(0x10) == 1


# --------------------------------------------------------------------------- V-Pots


def test_vpot_signed_bit_decoding() -> None:
    assert mc.vpot_delta(0x01) == 1
    assert mc.vpot_delta(0x07) == 7
    assert mc.vpot_delta(0x41) == -1
    assert mc.vpot_delta(0x47) == -7
    assert mc.vpot_delta(0x00) == 1  # some devices send 0 ticks: counts as 1
    assert mc.vpot_delta(0x40) == -1
    assert mc.vpot_delta(0x3F) == 63


def test_vpot_ring() -> None:
    assert mc.vpot_ring(1, 6) == hx("B0 31 06")  # manual example
    assert mc.vpot_ring(0, 11, mode=2) == hx("B0 30 2B")
    assert mc.vpot_ring(7, 0, mode=3, center=True) == hx("B0 37 70")
    assert mc.vpot_ring(0, 99) == hx("B0 30 0B")


# --------------------------------------------------------------------------- LCD


def test_lcd_manual_example() -> None:
    assert mc.lcd(mc.MODEL_LOGIC, 0, "Hello") == hx("F0 00 00 66 10 12 00 48 65 6C 6C 6F F7")


def test_lcd_strip_offsets_and_padding() -> None:
    assert mc.lcd_offset(0, 0) == 0x00
    assert mc.lcd_offset(1, 0) == 0x07
    assert mc.lcd_offset(7, 0) == 0x31
    assert mc.lcd_offset(0, 1) == 0x38
    assert mc.lcd_offset(7, 1) == 0x69
    assert mc.strip_cell("Vox") == "Vox    "
    assert mc.strip_cell("Lead Vocal") == "LedVcl "  # abbreviated to 6 characters + separator
    assert mc.lcd(mc.MODEL_MCU, mc.lcd_offset(1, 0), mc.strip_cell("Vox")) == (
        hx("F0 00 00 66 14 12 07") + b"Vox    " + hx("F7")
    )
    line = mc.lcd_line(["Kick", "Snare", "", "", "", "", "", "Room mics"])
    assert len(line) == 56
    assert line[:14] == "Kick   Snare  " and line[49:] == "Rommcs "


AUDIO = [f"Audio {n}" for n in range(1, 9)]  # Ardour's default track names


def test_abbreviate_keeps_default_track_names_apart() -> None:
    # plain truncation made all eight "Audio " (issue 10 item 2)
    cells = [mc.abbreviate(n) for n in AUDIO]
    assert len(set(cells)) == 8 and all(len(c) <= 6 for c in cells)
    assert cells[0] == "Audio1" and cells[7] == "Audio8"
    more = [mc.abbreviate(f"Audio {n}") for n in range(1, 100)]
    assert len(set(more)) == 99 and all(len(c) <= 6 for c in more)
    assert all(c.endswith(str(n)) for n, c in zip(range(1, 100), more, strict=True))
    line = mc.lcd_line(AUDIO)
    cells7 = [line[i * 7 : i * 7 + 6] for i in range(8)]
    assert len(set(cells7)) == 8


@pytest.mark.parametrize(
    "group",
    [
        ["Lead Vox", "Kick In", "Kick Out", "Bass DI", "Gtr L", "Gtr R"],
        ["Snare Top", "Snare Bottom", "Drum Overhead Left", "Drum Overhead Right"],
        ["Lead Vocal 1", "Lead Vocal 2", "Backing Vocal 1", "Backing Vocal 2"],
        ["Acoustic Guitar 1", "Acoustic Guitar 2", "Acoustic Guitar 10", "Acoustic Guitar 11"],
    ],
)
def test_abbreviate_keeps_studio_names_apart(group: list[str]) -> None:
    cells = [mc.abbreviate(n) for n in group]
    assert len(set(cells)) == len(group), cells
    assert all(len(c) <= 6 for c in cells)


@pytest.mark.parametrize(
    ("name", "cell"),
    [
        ("Kick", "Kick"),  # fits: unchanged
        ("Gtr L", "Gtr L"),
        ("OH L", "OH L"),
        ("Bass DI", "BassDI"),  # spaces go first
        ("Audio 1", "Audio1"),
        ("Lead Vox", "LeadVx"),  # then vowels, right-most first
        ("Kick Out", "KickOt"),  # a word's first letter stays
        ("Audio 10", "Audi10"),
        ("Guitar_DI-2", "GtrDI2"),  # punctuation goes, capitals stay
        ("Acoustic Guitar 12", "AcGt12"),  # then letters; the number always stays
        ("Backing Vocal 123", "BcV123"),
        ("Take 1234567", "234567"),  # a number longer than the cell: its last digits
        ("", ""),
        ("***", "***"),
        ("*******", "*******"[:6]),
    ],
)
def test_abbreviate_rules(name: str, cell: str) -> None:
    assert mc.abbreviate(name) == cell


def test_lcd_charset_fallback() -> None:
    assert mc.lcd_text("Café") == b"Cafe"
    assert mc.lcd_text("Ünïcødé") == b"Unic_de"
    assert mc.lcd_text("日本") == b"__"
    assert mc.lcd_text("a\tb") == b"a_b"
    assert all(b < 0x80 for b in mc.lcd_text("ÀÉÎÕÜß€😀"))


def test_lcd_truncates_at_buffer_end() -> None:
    msg = mc.lcd(mc.MODEL_MCU, 0x6E, "ABCDEF")
    assert msg == hx("F0 00 00 66 14 12 6E 41 42 F7")
    with pytest.raises(ValueError):
        mc.lcd(mc.MODEL_MCU, 0x70, "x")


def test_xtouch_colors() -> None:
    assert mc.xtouch_colors(mc.MODEL_MCU, [1, 2, 3, 4, 5, 6, 7, 0]) == hx(
        "F0 00 00 66 14 72 01 02 03 04 05 06 07 00 F7"
    )
    assert mc.xtouch_colors(mc.MODEL_MCU_XT, [7] * 8)[4] == 0x15


# --------------------------------------------------------------------------- 7-segment


def test_seven_segment_codes() -> None:
    assert mc.seven_segment("A") == 0x01
    assert mc.seven_segment("Z") == 0x1A
    assert mc.seven_segment("a") == 0x01  # folded to upper case
    assert mc.seven_segment("0") == 0x30
    assert mc.seven_segment(" ") == 0x20
    assert mc.seven_segment("-") == 0x2D
    assert mc.seven_segment("0", dot=True) == 0x70
    assert mc.seven_segment("~") == 0x20


def test_timecode_digits_right_to_left() -> None:
    # manual example: "10" in the last two digits = B0 40 30, B0 41 31
    codes = mc.timecode_codes("10")
    assert codes[0] == 0x30 and codes[1] == 0x31
    assert codes[2:] == [0x20] * 8
    assert mc.timecode_digit(0, codes[0]) == hx("B0 40 30")
    assert mc.timecode_digit(1, codes[1]) == hx("B0 41 31")
    assert mc.timecode_digit(9, 0x20) == hx("B0 49 20")


def test_timecode_position_with_dots() -> None:
    text = mc.format_position(3723.5, fps=30)  # 1 h 2 min 3 s 15 frames
    assert text == "  10203 15"
    codes = mc.timecode_codes(text, mc.POSITION_DOTS)
    # left-to-right: ' ', ' ', '1.', '0', '2.', '0', '3.', ' ', '1', '5'
    assert codes[::-1] == [0x20, 0x20, 0x71, 0x30, 0x72, 0x30, 0x73, 0x20, 0x31, 0x35]
    assert mc.format_position(0.0) == "  00000  0"
    assert mc.format_position(-5) == "  00000  0"
    assert mc.format_position(83.5, fps=25) == "  00123 12"


def test_take_display() -> None:
    assert mc.format_take(12) == "TAKE    12"
    codes = mc.timecode_codes(mc.format_take(3))
    assert codes[::-1] == [0x14, 0x01, 0x0B, 0x05, 0x20, 0x20, 0x20, 0x20, 0x20, 0x33]


def test_assignment_display() -> None:
    assert mc.assignment("9") == [hx("B0 4B 20"), hx("B0 4A 39")]
    assert mc.assignment("17") == [hx("B0 4B 31"), hx("B0 4A 37")]
    assert mc.assignment("123") == [hx("B0 4B 32"), hx("B0 4A 33")]
