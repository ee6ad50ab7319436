"""Generic MIDI surface: profile decode/encode tables, echo guard, coalescing, and a nanoKONTROL2 played
by a separate process over real JACK MIDI ports (input, LED feedback bytes, a 10,000 msg/s flood)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.jack import JackServer, MidiPeer, PeerFactory, unique_name

from bridge.devices.base import DeviceContext
from bridge.devices.midi.generic import GenericMidiOptions, GenericMidiSurface
from bridge.devices.midi.profiles import load_profile
from bridge.options import parse_options
from bridge.vocab import ControlInput, Feedback


def h(s: str) -> bytes:
    return bytes.fromhex(s)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def surface(
    profile: str = "korg_nanokontrol2", **opts: object
) -> tuple[GenericMidiSurface, list[bytes], Clock]:
    clock = Clock()
    o = parse_options(GenericMidiOptions, {"profile": profile, **opts}, "devices.nano", "t.toml")
    drv = GenericMidiSurface("nano", o, DeviceContext(clock=clock))
    sent: list[bytes] = []
    drv.link.attach_sink(sent.append)
    return drv, sent, clock


# --------------------------------------------------------------------------- decode / encode tables


NANO_INPUT = [
    ("B0 29 7F", [ControlInput("transport.play", 1.0)]),
    ("B0 2A 7F", [ControlInput("transport.stop", 1.0)]),
    ("B0 2D 7F", [ControlInput("transport.rec", 1.0)]),
    ("B0 2B 7F", [ControlInput("transport.rewind", 1.0)]),
    ("B0 2C 7F", [ControlInput("transport.forward", 1.0)]),
    ("B0 2E 7F", [ControlInput("transport.cycle", 1.0)]),
    ("B0 3A 7F", [ControlInput("track.prev", 1.0)]),
    ("B0 3B 7F", [ControlInput("track.next", 1.0)]),
    ("B0 3C 7F", [ControlInput("marker.set", 1.0)]),
    ("B0 3D 7F", [ControlInput("marker.prev", 1.0)]),
    ("B0 3E 7F", [ControlInput("marker.next", 1.0)]),
    ("B0 00 00", [ControlInput("strip1.fader", 0.0)]),
    ("B0 07 7F", [ControlInput("strip8.fader", 1.0)]),
    ("B0 10 40", [ControlInput("strip1.knob", 64 / 127)]),
    ("B0 17 7F", [ControlInput("strip8.knob", 1.0)]),
    ("B0 20 7F", [ControlInput("strip1.solo", 1.0)]),
    ("B0 37 7F", [ControlInput("strip8.mute", 1.0)]),
    ("B0 43 7F", [ControlInput("strip4.rec", 1.0)]),
    ("B1 29 7F", []),  # wrong channel: unmapped
    ("90 29 7F", []),  # a note, not a CC
]


@pytest.mark.parametrize(("raw", "expected"), NANO_INPUT)
def test_nanokontrol2_decode(raw: str, expected: list[ControlInput]) -> None:
    drv, _, _ = surface()
    assert drv.decode_batch([h(raw)]) == expected


def test_button_press_and_release() -> None:
    drv, _, _ = surface()
    got = drv.decode_batch([h("B0 29 7F"), h("B0 29 00")])
    assert got == [ControlInput("transport.play", 1.0), ControlInput("transport.play", 0.0)]


PROFILE = """
[device]
name = "test"
input = "t"
channel = 2
[[control]]
name = "pad{n}"
type = "note"
number = 36
count = 4
led = { on = 5, off = 0, blink = 6 }
[[control]]
name = "latch"
type = "cc"
number = 80
input = "button"
button = "toggle"
[[control]]
name = "latch.led"
type = "cc"
number = 81
button = "toggle"
led = { on = 127, off = 0 }
[[control]]
name = "enc.twos"
type = "cc"
number = 1
input = "relative"
[[control]]
name = "enc.signed"
type = "cc"
number = 2
input = "relative"
relative = "signed_bit"
[[control]]
name = "enc.offset"
type = "cc"
number = 3
input = "relative"
relative = "offset64"
echo = true
[[control]]
name = "bend"
type = "pitchbend"
echo = true
[[control]]
name = "scene.recall"
type = "program"
number = 4
[[control]]
name = "knob"
type = "cc"
number = 7
range = [10, 110]
echo = true
feedback_range = [0, 15]
feedback_number = 70
feedback_channel = 1
"""


@pytest.fixture
def custom(tmp_path: Path) -> Path:
    p = tmp_path / "custom.toml"
    p.write_text(PROFILE)
    return p


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("91 24 64", [ControlInput("pad1", 1.0)]),
        ("81 27 00", []),  # release of a pad that is not pressed: a duplicate
        ("B1 50 7F", [ControlInput("latch", 1.0), ControlInput("latch", 0.0)]),
        (
            "B1 50 00",
            [ControlInput("latch", 1.0), ControlInput("latch", 0.0)],
        ),  # hardware toggle: every message
        ("B1 01 01", [ControlInput("enc.twos", 1.0, relative=True)]),
        ("B1 01 7F", [ControlInput("enc.twos", -1.0, relative=True)]),
        ("B1 01 7D", [ControlInput("enc.twos", -3.0, relative=True)]),
        ("B1 02 01", [ControlInput("enc.signed", 1.0, relative=True)]),
        ("B1 02 41", [ControlInput("enc.signed", -1.0, relative=True)]),
        ("B1 03 41", [ControlInput("enc.offset", 1.0, relative=True)]),
        ("B1 03 3F", [ControlInput("enc.offset", -1.0, relative=True)]),
        ("E1 00 00", [ControlInput("bend", 0.0)]),
        ("E1 7F 7F", [ControlInput("bend", 1.0)]),
        ("E1 00 40", [ControlInput("bend", 8192 / 16383)]),
        ("C1 04", [ControlInput("scene.recall", 1.0), ControlInput("scene.recall", 0.0)]),
        ("C1 05", []),
        ("B1 07 0A", [ControlInput("knob", 0.0)]),
        ("B1 07 3C", [ControlInput("knob", 0.5)]),
        ("B1 07 7F", [ControlInput("knob", 1.0)]),  # beyond the range: clamped
    ],
)
def test_custom_profile_decode(custom: Path, raw: str, expected: list[ControlInput]) -> None:
    drv, _, _ = surface(str(custom))
    assert drv.decode_batch([h(raw)]) == expected


@pytest.mark.parametrize(
    ("control", "value", "raw"),
    [
        ("pad1", True, "91 24 05"),
        ("pad4", False, "91 27 00"),
        ("pad2", "blink", "91 25 06"),
        ("pad2", 0.7, "91 25 05"),
        ("pad2", None, "91 25 00"),
        ("enc.offset", 0.5, "B1 03 40"),
        ("bend", 1.0, "E1 7F 7F"),
        ("bend", 0.0, "E1 00 00"),
        ("knob", 1.0, "B0 46 0F"),
        ("knob", 0.0, "B0 46 00"),
        ("knob", True, "B0 46 0F"),
    ],
)
async def test_custom_profile_feedback(custom: Path, control: str, value: object, raw: str) -> None:
    drv, sent, _ = surface(str(custom))
    await drv.send(Feedback(control, value))  # type: ignore[arg-type]
    assert sent == [h(raw)]


@pytest.mark.parametrize(
    ("profile", "control", "value", "raw"),
    [
        ("korg_nanokontrol2", "transport.rec", True, "B0 2D 7F"),
        ("korg_nanokontrol2", "transport.rec", False, "B0 2D 00"),
        ("korg_nanokontrol2", "strip3.mute", "blink", "B0 32 7F"),  # cannot blink: shows on
        ("korg_nanokontrol2", "strip8.rec", True, "B0 47 7F"),
        ("behringer_xtouch_mini", "button1", True, "90 00 01"),
        ("behringer_xtouch_mini", "button9", "blink", "90 08 02"),
        ("behringer_xtouch_mini", "button16", False, "90 0F 00"),
        ("behringer_xtouch_mini", "encoder1", 1.0, "B0 09 0D"),
        ("behringer_xtouch_mini", "encoder8", 0.0, "B0 10 01"),
        ("akai_apc_mini", "pad1", True, "90 00 01"),
        ("akai_apc_mini", "pad64", "blink", "90 3F 02"),
        ("akai_apc_mini", "track1", True, "90 40 01"),
        ("akai_apc_mini", "scene8", False, "90 59 00"),
    ],
)
async def test_shipped_profile_feedback(profile: str, control: str, value: object, raw: str) -> None:
    drv, sent, _ = surface(profile)
    await drv.send(Feedback(control, value))  # type: ignore[arg-type]
    assert sent == [h(raw)]


def test_shipped_profile_inputs() -> None:
    x = load_profile("behringer_xtouch_mini")
    assert x.find(h("BA 01 40")).name == "encoder1"  # type: ignore[union-attr]
    assert x.find(h("BA 08 40")).name == "encoder8"  # type: ignore[union-attr]
    assert x.find(h("9A 00 7F")).name == "encoder1.push"  # type: ignore[union-attr]
    assert x.find(h("9A 08 7F")).name == "button1"  # type: ignore[union-attr]
    assert x.find(h("8A 17 00")).name == "button16"  # type: ignore[union-attr]
    a = load_profile("akai_apc_mini")
    assert a.find(h("B0 38 10")).name == "master.fader"  # type: ignore[union-attr]
    assert a.find(h("90 62 7F")).name == "shift"  # type: ignore[union-attr]


async def test_feedback_for_unknown_control_is_counted() -> None:
    drv, sent, _ = surface()
    await drv.send(Feedback("no.such.control", True))
    assert sent == [] and drv.stats()["unmapped"] == 1


async def test_blackout_turns_leds_off() -> None:
    drv, sent, _ = surface()
    await drv.blackout()
    leds = [c for c in drv.profile.controls.values() if c.led_on is not None]
    assert len(sent) == len(leds) == 30
    assert all(m[2] == 0 for m in sent)


# --------------------------------------------------------------------------- echo guard and coalescing


async def test_echo_guard_ignores_our_own_feedback() -> None:
    drv, _, clock = surface(echo_window=0.1)  # a nano behind a MIDI thru: the guard on
    await drv.send(Feedback("transport.rec", True))  # LED on: B0 2D 7F
    clock.t += 0.02
    assert drv.decode_batch([h("B0 2D 7F")]) == []  # the controller echoed it
    assert drv.stats()["echoes"] == 1
    clock.t += 0.2  # past the window: a real press
    assert drv.decode_batch([h("B0 2D 7F"), h("B0 2D 00")]) == [
        ControlInput("transport.rec", 1.0),
        ControlInput("transport.rec", 0.0),
    ]


async def test_echo_guard_never_eats_a_release() -> None:
    drv, _, clock = surface(echo_window=0.1)  # a nano behind a MIDI thru: the guard on
    assert drv.decode_batch([h("B0 2D 7F")]) == [ControlInput("transport.rec", 1.0)]
    await drv.send(Feedback("transport.rec", False))  # LED off while the button is held
    clock.t += 0.01
    assert drv.decode_batch([h("B0 2D 00")]) == [ControlInput("transport.rec", 0.0)]


async def test_echo_guard_for_values(custom: Path) -> None:
    drv, _, clock = surface(str(custom))
    await drv.send(Feedback("bend", 0.5))
    sent_raw = 8192
    clock.t += 0.05
    assert drv.decode_batch([bytes((0xE1, sent_raw & 0x7F, sent_raw >> 7))]) == []
    assert drv.decode_batch([h("E1 00 00")]) == [ControlInput("bend", 0.0)]
    drv2, _, _ = surface(str(custom), echo_window=0)
    await drv2.send(Feedback("bend", 0.5))
    assert drv2.decode_batch([bytes((0xE1, 0, 0x40))]) == [ControlInput("bend", 8192 / 16383)]


REC_ON, REC_OFF = h("B0 2D 7F"), h("B0 2D 00")


async def test_double_tap_with_release_and_press_in_one_batch_loses_nothing() -> None:
    """Issue 10 item 1: the LED-on confirming the first press is still "recent" when the release and
    the next press arrive together (a stall of ~100 ms); the press was taken for its echo and
    dropped, then its release as a duplicate."""
    drv, sent, clock = surface(echo_window=0.1)  # a nano behind a MIDI thru: the guard on
    assert drv.decode_batch([REC_ON]) == [ControlInput("transport.rec", 1.0)]
    clock.t += 0.01
    await drv.send(Feedback("transport.rec", True))  # the DAW confirmed: LED on
    assert sent == [REC_ON]
    clock.t += 0.05  # still within the echo window
    assert drv.decode_batch([REC_OFF, REC_ON]) == [
        ControlInput("transport.rec", 0.0),
        ControlInput("transport.rec", 1.0),
    ]
    clock.t += 0.01
    assert drv.decode_batch([REC_OFF]) == [ControlInput("transport.rec", 0.0)]
    assert drv.stats()["echoes"] == 0 and drv.stats()["duplicates"] == 0


class Studio:
    """Just enough of the hub for glue tests: bindings resolve against a state the commands change."""

    def __init__(self, mapping: str) -> None:
        import tomllib

        from bridge.mapping import Mapper, parse_mapping

        self.mapper = Mapper(parse_mapping(tomllib.loads(mapping), "m.toml"))
        self.state: dict[str, object] = {}
        self.commands: list[object] = []

    def run(self, inputs: list[ControlInput]) -> None:
        from bridge.vocab import SetRecord, SetTalkback

        for item in inputs:
            for command in self.mapper.resolve(item, self.state.get, lambda t: None):  # type: ignore[arg-type]
                self.commands.append(command)
                if isinstance(command, SetRecord):
                    self.state["transport/recording"] = command.on
                elif isinstance(command, SetTalkback):
                    self.state["talkback"] = command.on


@pytest.mark.parametrize(
    ("glue", "command", "expected"),
    [
        ("press", "take.mark", ["MarkTake", "MarkTake"]),
        ("toggle", "transport.record", ["SetRecord(True)", "SetRecord(False)"]),
        (
            "momentary",
            "talkback",
            ["SetTalkback(True)", "SetTalkback(False)", "SetTalkback(True)", "SetTalkback(False)"],
        ),
    ],
)
async def test_double_tap_batch_for_every_glue(glue: str, command: str, expected: list[str]) -> None:
    """The same batch sequence through each glue: two presses are two commands (two toggles, two
    takes, two talk bursts)."""
    studio = Studio(
        f'[[binding]]\ncontrol = "transport.rec"\ncommand = "{command}"\nglue = "{glue}"\n'
        'feedback = "transport/recording"\n'
    )
    drv, _, clock = surface(echo_window=0.1)  # a nano behind a MIDI thru: the guard on
    studio.run(drv.decode_batch([REC_ON]))
    clock.t += 0.01
    await drv.send(Feedback("transport.rec", True))
    clock.t += 0.05
    studio.run(drv.decode_batch([REC_OFF, REC_ON]))
    clock.t += 0.01
    studio.run(drv.decode_batch([REC_OFF]))

    def show(c: object) -> str:
        name = type(c).__name__
        on = getattr(c, "on", None)
        return name if on is None else f"{name}({on})"

    assert [show(c) for c in studio.commands] == expected


async def test_hardware_toggle_double_tap_loses_nothing(custom: Path) -> None:
    # a latching button sends 7F, 00, 7F...: each message is one press
    drv, sent, clock = surface(str(custom))
    press = [ControlInput("latch.led", 1.0), ControlInput("latch.led", 0.0)]
    assert drv.decode_batch([h("B1 51 7F")]) == press
    clock.t += 0.01
    await drv.send(Feedback("latch.led", True))
    assert sent == [h("B1 51 7F")]
    clock.t += 0.05  # the DAW has not answered the second press yet: the third comes within the window
    assert drv.decode_batch([h("B1 51 00"), h("B1 51 7F")]) == press + press
    assert drv.stats()["echoes"] == 0


async def test_echo_is_matched_once_and_in_order() -> None:
    """A controller that echoes: each value sent comes back once; a second identical message is real."""
    drv, _, clock = surface(echo_window=0.1)  # a nano behind a MIDI thru: the guard on
    await drv.send(Feedback("transport.rec", True))
    await drv.send(Feedback("transport.rec", False))
    await drv.send(Feedback("transport.rec", True))
    clock.t += 0.01
    assert drv.decode_batch([REC_ON, REC_OFF, REC_ON]) == []  # three echoes
    assert drv.stats()["echoes"] == 2 and drv.stats()["duplicates"] == 1  # the released echo: nothing held
    # the next 7F is not an echo any more: a press
    assert drv.decode_batch([REC_ON]) == [ControlInput("transport.rec", 1.0)]
    # a press that breaks the match: an LED-on sent while the button was held and released
    await drv.send(Feedback("transport.rec", True))
    clock.t += 0.01
    assert drv.decode_batch([REC_OFF]) == [ControlInput("transport.rec", 0.0)]
    assert drv.decode_batch([REC_ON]) == [ControlInput("transport.rec", 1.0)]


def test_an_led_lit_while_a_batch_is_read_is_shown_before_the_rest_of_it() -> None:
    """A press is handed on before the rest of its batch is decoded: the DAW (here at once) lights
    its LED, then the release that followed it on the wire breaks any echo match, so the next press,
    in the next batch, is a press."""
    drv, sent, clock = surface(echo_window=0.1)  # a nano behind a MIDI thru: the guard on
    got: list[ControlInput] = []
    for item in drv.iter_batch([REC_ON, REC_OFF]):
        got.append(item)
        if item.value == 1.0:
            drv.send_now(Feedback("transport.rec", True))  # confirmed at once: LED on
    assert sent == [REC_ON]
    clock.t += 0.02
    got += drv.decode_batch([REC_ON, REC_OFF])
    assert [i.value for i in got] == [1.0, 0.0, 1.0, 0.0] and drv.stats()["echoes"] == 0


@pytest.mark.parametrize("path", ["messages", "report_now"])
async def test_quick_tap_in_one_batch_then_the_next_press(path: str) -> None:
    """A quick tap (press and release in one batch, e.g. after a stall) confirmed at once (the
    internal transport answers in the same call), then the next press in a batch of its own: the
    LED-on must go out before the release is read, or that press is taken for the LED's echo.
    Through ``receive()`` on a port-less link, both the generator and the report_now path."""
    from bridge.devices.midi.link import MidiLink

    drv, _, _ = surface(echo_window=0.1)  # a nano behind a MIDI thru: the guard on
    drv.link = MidiLink("t", None, None)
    sent: list[bytes] = []
    drv.link.attach_sink(sent.append)
    await drv.link.open()
    got: list[ControlInput] = []
    arrived = asyncio.Event()

    def handle(item: object) -> None:
        assert isinstance(item, ControlInput)
        got.append(item)
        if item.value == 1.0:
            drv.send_now(Feedback("transport.rec", True))  # the DAW confirmed: LED on
        if len(got) in (2, 4):
            arrived.set()

    async def pump() -> None:
        if path == "report_now":
            drv.report_now = handle
        async for item in drv.receive():
            handle(item)

    task = asyncio.create_task(pump())
    try:
        drv.link.inject(REC_ON + REC_OFF)  # one chunk: one batch
        async with asyncio.timeout(5):
            await arrived.wait()
        arrived.clear()
        drv.link.inject(REC_ON + REC_OFF)
        async with asyncio.timeout(5):
            await arrived.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await drv.link.aclose()
    assert [i.value for i in got] == [1.0, 0.0, 1.0, 0.0]
    assert drv.stats()["echoes"] == 0 and sent == [REC_ON, REC_ON]


def test_feedback_sent_while_a_batch_is_read_is_no_echo_of_it() -> None:
    """Every message of a batch arrived before it was read: an LED lit in the middle of it (by an
    earlier input of the same batch) cannot have come back in it."""
    drv, _, clock = surface(echo_window=0.1)  # a nano behind a MIDI thru: the guard on
    play_on, rec_on = h("B0 29 7F"), REC_ON
    got: list[ControlInput] = []
    for item in drv.iter_batch([play_on, rec_on]):
        got.append(item)
        if item.control == "transport.play":
            clock.t += 0.001  # handling the first input takes time
            drv.encode_feedback(Feedback("transport.rec", True))  # play lit REC (e.g. record armed)
    assert got == [ControlInput("transport.play", 1.0), ControlInput("transport.rec", 1.0)]
    assert drv.stats()["echoes"] == 0


async def test_no_echo_guard_for_controllers_that_never_echo(tmp_path: Path) -> None:
    nano, _, _ = surface()
    assert nano.echo_window == 0.0  # the shipped nanoKONTROL2 profile: echoes_feedback = false
    await nano.send(Feedback("transport.rec", True))
    assert nano.decode_batch([REC_ON]) == [ControlInput("transport.rec", 1.0)]
    p = tmp_path / "quiet.toml"
    p.write_text(PROFILE.replace('input = "t"', 'input = "t"\nechoes_feedback = false'))
    drv, _, _ = surface(str(p))
    assert drv.echo_window == 0.0
    await drv.send(Feedback("pad1", True))
    assert drv.decode_batch([h("91 24 05")]) == [ControlInput("pad1", 1.0)]  # right after the LED: a press
    assert drv.decode_batch([h("81 24 00")]) == [ControlInput("pad1", 0.0)]
    # the config can still turn it on
    on, _, _ = surface(str(p), echo_window=0.1)
    await on.send(Feedback("pad1", True))
    assert on.decode_batch([h("91 24 05")]) == []


def test_coalescing_keeps_buttons_in_order(custom: Path) -> None:
    drv, _, _ = surface()
    batch = [bytes((0xB0, 0, v)) for v in range(50)]  # fader 1 sweeps
    batch += [bytes((0xB0, 1, v)) for v in range(20)]  # fader 2
    batch += [h("B0 29 7F")]  # play pressed in the middle of the flood
    batch += [bytes((0xB0, 0, v)) for v in range(100, 90, -1)]
    batch += [h("B0 29 00"), h("B0 2A 7F")]
    got = drv.decode_batch(batch)
    assert got == [
        ControlInput("strip1.fader", 49 / 127),
        ControlInput("strip2.fader", 19 / 127),
        ControlInput("transport.play", 1.0),
        ControlInput("strip1.fader", 91 / 127),
        ControlInput("transport.play", 0.0),
        ControlInput("transport.stop", 1.0),
    ]
    enc, _, _ = surface(str(custom))
    steps = [h("B1 01 01")] * 5 + [h("B1 01 7F")] * 2 + [h("B1 02 41")] * 3
    assert enc.decode_batch(steps) == [
        ControlInput("enc.twos", 3.0, relative=True),
        ControlInput("enc.signed", -3.0, relative=True),
    ]


# --------------------------------------------------------------------------- a nanoKONTROL2 on JACK


NANO = ("nanoKONTROL2", "nanoKONTROL2 MIDI 1")


async def read_inputs(drv: GenericMidiSurface, until: int, timeout: float = 30) -> list[ControlInput]:  # noqa: ASYNC109
    got: list[ControlInput] = []
    async with asyncio.timeout(timeout):
        async for item in drv.receive():
            assert isinstance(item, ControlInput)
            got.append(item)
            if len(got) >= until:
                break
    return got


@pytest.mark.jack
async def test_nanokontrol2_over_jack(jack_server: JackServer, midi_peer: PeerFactory) -> None:
    peer = midi_peer(*NANO)
    opts = GenericMidiOptions(profile="korg_nanokontrol2", api="jack", client_name=unique_name("nano"))
    drv = GenericMidiSurface("nano", opts)
    async with asyncio.timeout(60):
        async with drv:
            assert drv.link.in_port == "nanoKONTROL2:nanoKONTROL2 MIDI 1"  # the profile's default pattern
            assert drv.link.out_port == "nanoKONTROL2-fb:nanoKONTROL2 MIDI 1"
            await peer.asend(
                [[0xB0, 45, 127], [0xB0, 45, 0], [0xB0, 2, 100], [0xB0, 18, 0], [0xB0, 0x41, 0x7F]]
            )
            got = await read_inputs(drv, 5)
            assert got == [
                ControlInput("transport.rec", 1.0),
                ControlInput("transport.rec", 0.0),
                ControlInput("strip3.fader", 100 / 127),
                ControlInput("strip3.knob", 0.0),
                ControlInput("strip2.rec", 1.0),
            ]
            for fb in (
                Feedback("transport.rec", True),
                Feedback("strip2.rec", True),
                Feedback("transport.play", False),
            ):
                await drv.send(fb)
            assert await peer.areceived(3) == [[0xB0, 45, 127], [0xB0, 0x41, 127], [0xB0, 41, 0]]
            await drv.blackout()
            off = await peer.areceived(30)
            assert len(off) == 30 and all(m[2] == 0 for m in off)


def flood_messages() -> tuple[list[list[int]], dict[int, str]]:
    """10,000 messages: 9 continuous controls (8 faders + knob 1) sweeping, and every 25th message a
    press or release of one of the 24 strip buttons in a known sequence; the last message is a release."""
    buttons = [32 + i for i in range(8)] + [48 + i for i in range(8)] + [64 + i for i in range(8)]
    names = {32 + i: f"strip{i + 1}.solo" for i in range(8)}
    names |= {48 + i: f"strip{i + 1}.mute" for i in range(8)}
    names |= {64 + i: f"strip{i + 1}.rec" for i in range(8)}
    names |= {cc: f"strip{cc + 1}.fader" for cc in range(8)} | {16: "strip1.knob"}
    continuous = [*range(8), 16]
    msgs: list[list[int]] = []
    press = 0
    held: int | None = None
    for i in range(10_000):
        if i % 25 == 0 or i >= 9_998:
            if held is None:
                held = buttons[(press * 7) % len(buttons)]
                press += 1
                msgs.append([0xB0, held, 127])
            else:
                msgs.append([0xB0, held, 0])
                held = None
        else:
            cc = continuous[i % len(continuous)]
            msgs.append([0xB0, cc, (i * 13 + cc * 5) % 128])
    assert held is None and len(msgs) == 10_000
    return msgs, names


def reference(msgs: list[list[int]], names: dict[int, str]) -> tuple[list[ControlInput], dict[str, float]]:
    """What a correct driver must output for ``msgs``: every button transition in order, the last value of
    each continuous control."""
    buttons: list[ControlInput] = []
    final: dict[str, float] = {}
    pressed: dict[str, bool] = {}
    for m in msgs:
        name = names[m[1]]
        if m[1] >= 32:
            on = m[2] > 0
            if (
                pressed.get(name, False) != on
            ):  # a repeated press/release (JACK xrun duplicate) is no transition
                pressed[name] = on
                buttons.append(ControlInput(name, 1.0 if on else 0.0))
        else:
            final[name] = m[2] / 127
    return buttons, final


async def flood_once(peer: MidiPeer, msgs: list[list[int]], names: dict[int, str]) -> tuple[bool, str]:
    opts = GenericMidiOptions(
        profile="korg_nanokontrol2", output="", api="jack", client_name=unique_name("nano")
    )
    drv = GenericMidiSurface("nano", opts)
    raw: list[bytes] = []
    decode = drv.iter_batch

    def spy(batch: list[bytes]) -> Iterator[ControlInput]:
        raw.extend(batch)  # what the JACK port actually delivered
        return decode(batch)

    drv.iter_batch = spy  # type: ignore[method-assign]
    got_buttons: list[ControlInput] = []
    final: dict[str, float] = {}

    async def consume() -> None:
        async for item in drv.receive():
            assert isinstance(item, ControlInput)
            if item.control.endswith((".solo", ".mute", ".rec")):
                got_buttons.append(item)
            else:
                final[item.control] = item.value

    async with drv:
        task = asyncio.create_task(consume())
        try:
            assert await peer.asend(msgs, burst=10) == 10_000  # 10 events per ms
            async with asyncio.timeout(30):  # until the port has been quiet for 0.5 s
                seen = -1
                while seen != len(raw):
                    seen = len(raw)
                    await asyncio.sleep(0.5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    delivered = [list(m) for m in raw]
    # the driver's output is exactly right for what the port delivered
    want_buttons, want_final = reference(delivered, names)
    assert got_buttons == want_buttons
    assert final == want_final
    stats = drv.stats()
    assert stats["messages"] == len(raw) and stats["dropped"] == 0 and stats["coalesced"] > 0
    clean = delivered == msgs
    if clean:  # and, when JACK delivered everything, it is exactly what the controller sent
        assert (got_buttons, final) == reference(msgs, names)
        assert len(got_buttons) == 402
    return clean, f"JACK delivered {len(raw)}/10000, in order: {clean}"


@pytest.mark.jack
async def test_flood_keeps_every_button_press(jack_server: JackServer, midi_peer: PeerFactory) -> None:
    """A 10,000 msg/s mixed flood from a separate process: no crash, every button press and release arrives
    in order, final fader values exact. The JACK dummy driver without realtime scheduling can lose or repeat
    events in an xrun (jackd logs them); the driver must still be exact for what the port delivered, and a
    run where JACK delivered everything (up to 3 tries) must match what was sent exactly."""
    msgs, names = flood_messages()
    peer = midi_peer(*NANO, with_in=False)
    notes = []
    for _ in range(3):
        clean, note = await flood_once(peer, msgs, names)
        notes.append(note)
        if clean:
            break
    assert clean, f"no xrun-free run in 3 tries: {notes}; jackd log: {jack_server.log_text()[-800:]}"


# --------------------------------------------------------------------------- studio-bridge learn


@pytest.mark.jack
async def test_learn_against_a_jack_controller(
    jack_server: JackServer, midi_peer: PeerFactory, tmp_path: Path
) -> None:
    import subprocess
    import sys

    dev = unique_name("LearnPad")
    peer = midi_peer(dev, "LearnPad MIDI 1", with_in=False)
    out = tmp_path / "learned.toml"
    proc = subprocess.Popen(  # noqa: ASYNC220 - a separate process on purpose; waits go through to_thread
        [
            sys.executable,
            "-m",
            "bridge",
            "learn",
            "--input",
            dev,
            "--api",
            "jack",
            "--seconds",
            "4",
            "-o",
            str(out),
            "--client-name",
            unique_name("learn"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 20)
        assert "listening on" in line, line
        await peer.asend(
            [[0xB1, 41, 127], [0xB1, 41, 0], [0xB1, 41, 127], [0xB1, 41, 0]]  # a momentary CC button
            + [[0xB1, 0, v] for v in range(0, 128, 9)]  # a fader
            + [[0xB1, 16, 1], [0xB1, 16, 1], [0xB1, 16, 127], [0xB1, 16, 2]]  # a two's complement encoder
            + [[0x92, 36, 100], [0x82, 36, 0]]  # a pad on channel 3
            + [[0xE0, 0, 0x40], [0xE0, 0x7F, 0x7F]]  # a pitch-bend fader
            + [[0xB1, 41, 127]]  # seen again: not printed twice
        )
        stdout, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, stderr
    new = [ln for ln in stdout.splitlines() if ln.startswith("new ")]
    assert len(new) == 5, stdout
    assert "cc" in new[0] and " 41" in new[0]
    summary = stdout.split("# 5 control(s) seen")[1]
    assert "[ch2.cc41]" in summary and "button (0 off / 127 on)" in summary
    assert "[ch2.cc0]" in summary and "fader/knob (absolute, 0..126)" in summary
    assert "[ch2.cc16]" in summary and "relative encoder (two's complement)" in summary
    assert "[ch3.note36]" in summary and "[ch1.pitchbend]" in summary
    profile = load_profile(str(out))
    assert profile.input == dev
    assert set(profile.controls) == {"ch2.cc41", "ch2.cc0", "ch2.cc16", "ch3.note36", "ch1.pitchbend"}
    assert profile.controls["ch2.cc16"].input == "relative"
    assert profile.controls["ch2.cc41"].input == "button"
    assert profile.controls["ch2.cc0"].hi == 126
    assert profile.find(bytes((0x92, 36, 1))) is profile.controls["ch3.note36"]


# --------------------------------------------------------------------------- double taps in a flood, on JACK


REC = 45


def tap_flood(taps: int, gap: int) -> list[list[int]]:
    """Faders 1-8 sweeping (one message per ms at burst=1) and a REC double-tap sequence: a press, then
    every ``gap`` messages the release of the last press and the next press as two back-to-back JACK
    events (one period), then the last release."""
    msgs: list[list[int]] = [[0xB0, REC, 127]]
    for t in range(taps):
        for i in range(gap):
            cc = (t * gap + i) % 8
            msgs.append([0xB0, cc, (t * 7 + i * 3 + cc) % 128])
        msgs += [[0xB0, REC, 0], [0xB0, REC, 127]]
    msgs.append([0xB0, REC, 0])
    return msgs


def presses_in(msgs: list[list[int]]) -> int:
    """Press transitions of REC in what the port delivered (a repeated event is no transition)."""
    n, held = 0, False
    for m in msgs:
        if m[1] == REC:
            if m[2] and not held:
                n += 1
            held = m[2] > 0
    return n


@pytest.mark.jack
@pytest.mark.parametrize("guard", ["on", "profile"])
async def test_double_taps_in_a_flood_over_jack_lose_no_press(
    jack_server: JackServer, midi_peer: PeerFactory, guard: str
) -> None:
    """Issue 10 item 1 on real JACK ports: a separate process floods 1,000 msg/s with REC double taps
    whose release and next press arrive together; each press is confirmed at once with its LED (as the
    DAW would), so every next press arrives within the echo window of an LED-on. Every press becomes a
    take mark (press glue); none is taken for an echo: with the echo guard on (a controller behind a
    MIDI thru), and with the profile's default (the nanoKONTROL2 never echoes: no guard)."""
    from bridge.mapping import Mapper, parse_mapping
    from bridge.vocab import MarkTake

    # a client name of its own: the previous parameter's peer of the same name may still be
    # going away, and a link that matched it would (rightly) report it lost
    client = unique_name(NANO[0])
    peer = midi_peer(client, NANO[1])
    mapper = Mapper(
        parse_mapping(
            {"binding": [{"control": "transport.rec", "command": "take.mark"}]},
            "m.toml",
        )
    )
    table: dict[str, object] = {
        "profile": "korg_nanokontrol2",
        "api": "jack",
        "client_name": unique_name("n"),
        "input": client,
        "output": f"{client}-fb",
    }
    if guard == "on":
        table["echo_window"] = 0.1
    opts = parse_options(GenericMidiOptions, table, "devices.nano", "t.toml")
    drv = GenericMidiSurface("nano", opts)
    raw: list[bytes] = []
    decode = drv.iter_batch

    def spy(batch: list[bytes]) -> Iterator[ControlInput]:
        raw.extend(batch)
        return decode(batch)

    drv.iter_batch = spy  # type: ignore[method-assign]
    marks = 0

    async def consume() -> None:
        nonlocal marks
        async for item in drv.receive():
            assert isinstance(item, ControlInput)
            for command in mapper.resolve(item, lambda _k: None, lambda _t: None):
                assert isinstance(command, MarkTake)
                marks += 1
                drv.send_now(Feedback("transport.rec", True))  # confirmed: the LED lights at once

    msgs = tap_flood(taps=120, gap=25)
    async with asyncio.timeout(90):
        async with drv:
            task = asyncio.create_task(consume())
            try:
                assert await peer.asend(msgs, burst=1) == len(msgs)  # 1 event per ms
                seen = -1
                while seen != len(raw):  # until the port has been quiet for 0.5 s
                    seen = len(raw)
                    await asyncio.sleep(0.5)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    delivered = [list(m) for m in raw]
    want = presses_in(delivered)
    assert want >= 100, f"JACK delivered only {len(raw)}/{len(msgs)} events"
    assert marks == want, f"{want - marks} of {want} presses lost; stats {drv.stats()}"
    assert drv.stats()["feedback"] == marks  # every press was answered with an LED-on
    if delivered == msgs:
        assert marks == 121


def test_a_press_whose_release_was_lost_is_still_a_press() -> None:
    """A release lost on the way (a JACK xrun in a late cycle, a cable glitch) must not eat the
    next real press of that button: the press counts; a release of a button not held is dropped."""
    drv, _, _ = surface()
    press, release = ControlInput("transport.rec", 1.0), ControlInput("transport.rec", 0.0)
    assert drv.decode_batch([REC_ON]) == [press]
    # the release never arrived; the next press is the user's next press
    assert drv.decode_batch([REC_ON]) == [press]
    assert drv.decode_batch([REC_OFF]) == [release]
    assert drv.decode_batch([REC_OFF]) == []  # nothing held: nothing to release
    stats = drv.stats()
    assert stats["repeated_presses"] == 1 and stats["duplicates"] == 1
