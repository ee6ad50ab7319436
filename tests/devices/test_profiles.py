"""Controller profiles and studio mappings: every kind of mistake is reported with file, key path and what
is expected; the shipped profiles, mappings and example rooms are valid and consistent."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.devices.midi.profiles import load_profile, parse_profile, shipped_profiles
from bridge.errors import MappingError
from bridge.mapping import load_mapping

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
[device]
name = "t"
input = "t"
[[control]]
name = "play"
type = "cc"
number = 41
"""


def test_good_profile() -> None:
    p = parse_profile(GOOD, "p.toml")
    assert list(p.controls) == ["play"] and p.input == "t" and p.output == "t"
    assert p.echoes_feedback is True  # unknown controllers may echo: the guard stays on
    quiet = parse_profile(GOOD.replace('input = "t"', 'input = "t"\nechoes_feedback = false'), "p.toml")
    assert quiet.echoes_feedback is False


PROFILE_MISTAKES = [
    ("[device\n", r"p\.toml: not valid TOML"),
    ('[device]\nname = "x"\n', r"p\.toml: control: expected at least one \[\[control\]\] table"),
    ("colour = 1\n" + GOOD, r"p\.toml: colour: unknown key"),
    (GOOD.replace('input = "t"', 'inputs = "t"'), r"p\.toml: device\.inputs: unknown key"),
    (
        GOOD.replace('input = "t"', "channel = 17"),
        r"p\.toml: device\.channel: expected an integer 1-16, got 17",
    ),
    (GOOD.replace('input = "t"', 'init = ["zz"]'), r"p\.toml: device\.init\[0\]: expected hex bytes"),
    (
        GOOD.replace('input = "t"', 'input = "t"\nechoes_feedback = "no"'),
        r'p\.toml: device\.echoes_feedback: expected true or false, got "no"',
    ),
    (GOOD.replace('name = "play"\n', ""), r"p\.toml: control\[0\]\.name: expected a control name string"),
    (
        GOOD.replace('type = "cc"\n', ""),
        r"p\.toml: control\[0\] \(play\)\.type: expected one of .* \(required\)",
    ),
    (GOOD.replace('"cc"', '"sysex"'), r'control\[0\] \(play\)\.type: expected one of "cc", .*got "sysex"'),
    (
        GOOD.replace("number = 41", "number = 128"),
        r"control\[0\] \(play\)\.number: expected an integer 0-127, got 128",
    ),
    (
        GOOD.replace("number = 41\n", ""),
        r"control\[0\] \(play\)\.number: expected an integer 0-127 \(required\)",
    ),
    (
        GOOD.replace("number = 41", "number = 41\nchannel = 0"),
        r"control\[0\] \(play\)\.channel: expected an integer 1-16",
    ),
    (
        GOOD.replace("number = 41", 'number = 41\ninput = "fader"'),
        r"\(play\)\.input: expected one of \"button\"",
    ),
    (
        GOOD.replace("number = 41", 'number = 41\nbutton = "latch"'),
        r"\(play\)\.button: expected one of \"momentary\"",
    ),
    (
        GOOD.replace("number = 41", 'number = 41\ninput = "relative"\nrelative = "sign"'),
        r"\(play\)\.relative: expected one of \"twos_complement\", \"signed_bit\", \"offset64\"",
    ),
    (
        GOOD.replace("number = 41", "number = 41\nrange = [100, 10]"),
        r"\(play\)\.range: expected \[min, max\]",
    ),
    (GOOD.replace("number = 41", "number = 41\nled = 127"), r"\(play\)\.led: expected a table like"),
    (
        GOOD.replace("number = 41", "number = 41\nled = { off = 0 }"),
        r"\(play\)\.led\.on: expected an integer",
    ),
    (
        GOOD.replace("number = 41", "number = 41\nled = { on = 1, dim = 2 }"),
        r"\(play\)\.led\.dim: unknown key",
    ),
    (GOOD.replace("number = 41", "number = 41\necho = 1"), r"\(play\)\.echo: expected true or false, got 1"),
    (
        GOOD.replace("number = 41", "number = 41\nfeedback_number = 3"),
        r"\(play\): expected led or echo = true",
    ),
    (GOOD.replace("number = 41", "number = 41\nspeed = 3"), r"control\[0\] \(play\)\.speed: unknown key"),
    (
        GOOD.replace("number = 41", "number = 41\ncount = 4"),
        r'\(play\)\.name: expected a name containing "\{n\}"',
    ),
    (
        GOOD.replace('name = "play"', 'name = "f{n}"').replace("number = 41", "number = 120\ncount = 9"),
        r"control\[0\] \(f\{n\}\)\.count: expected controls whose numbers stay within 0-127",
    ),
    (GOOD.replace('name = "play"', 'name = "play me"'), r"\(play me\)\.name: expected a name of letters"),
    (
        GOOD + '[[control]]\nname = "play"\ntype = "note"\nnumber = 1\n',
        r"control\[1\] \(play\)\.name: duplicate",
    ),
    (
        GOOD + '[[control]]\nname = "go"\ntype = "cc"\nnumber = 41\n',
        r"control\[1\] \(go\): expected a message no other control uses, but 'go' and 'play' both read cc 41",
    ),
    (
        GOOD.replace('type = "cc"\nnumber = 41', 'type = "pitchbend"\nnumber = 1'),
        r"\.number: expected no number",
    ),
    (
        GOOD.replace('type = "cc"\nnumber = 41', 'type = "pitchbend"\ninput = "relative"'),
        r"\.input: expected \"button\" or \"absolute\" for a pitchbend control",
    ),
]


@pytest.mark.parametrize(("text", "message"), PROFILE_MISTAKES)
def test_profile_mistakes_are_named(text: str, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        parse_profile(text, "p.toml")


def test_profile_file_errors(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"no such shipped profile .*korg_nanokontrol2"):
        load_profile("korg_nanokontrol3")
    with pytest.raises(MappingError, match=r"missing\.toml: cannot read profile"):
        load_profile("missing.toml", tmp_path)
    (tmp_path / "mine.toml").write_text(GOOD)
    assert load_profile("mine.toml", tmp_path).name == "t"  # relative to the config directory


MAPPING_MISTAKES = [
    (
        '[[binding]]\ncontrol = "x"\ncommand = "transport.fly"\n',
        r"m\.toml: binding\[0\]\.command: expected one of",
    ),
    (
        '[[binding]]\ncontrol = "x"\ncommand = "track.arm"\n',
        r"m\.toml: binding\[0\]\.track: expected a track number",
    ),
    ('[[binding]]\ncontrol = "x"\ncommand = "track.arm"\ntrack = 0\n', r"binding\[0\]\.track: expected"),
    (
        '[[binding]]\ncontrol = "x"\ncommand = "transport.play"\nglue = "tap"\n',
        r"binding\[0\]\.glue: expected one of",
    ),
    (
        '[[binding]]\ncontrol = 5\ncommand = "transport.play"\n',
        r"binding\[0\]\.control: expected a control name",
    ),
    ('[[binding]]\ncontrol = "x"\n', r"binding\[0\]: needs a command, a feedback key, or both"),
    (
        '[[binding]]\ncontrol = "x"\ncommand = "transport.play"\ncolour = 1\n',
        r"binding\[0\]\.colour: unknown key",
    ),
    ('[[binding]]\ncontrol = "x"\ncommand = "song"\n', r"binding\[0\]\.song: expected the song name"),
    (
        '[[binding]]\ncontrol = "x"\ncommand = "transport.locate"\nseconds = "1"\n',
        r"\.seconds: expected a number",
    ),
    ("[[binding]\n", r"m\.toml: not valid TOML"),
    ("[bindings]\n", r"m\.toml: bindings: unknown key"),
]


@pytest.mark.parametrize(("text", "message"), MAPPING_MISTAKES)
def test_mapping_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(MappingError, match=message):
        load_mapping(path)


@pytest.mark.parametrize("name", ["korg_nanokontrol2", "behringer_xtouch_mini", "akai_apc_mini"])
def test_shipped_profiles_load_and_match_config_copies(name: str) -> None:
    assert name in shipped_profiles()
    profile = load_profile(name)
    assert profile.controls and profile.input
    copy = ROOT / "configs" / "profiles" / f"{name}.toml"
    assert copy.read_text() == (ROOT / "bridge" / "data" / "profiles" / f"{name}.toml").read_text()


@pytest.mark.parametrize(
    ("mapping", "profile"),
    [
        ("nanokontrol2-tracking.toml", "korg_nanokontrol2"),
        ("xtouchmini-tracking.toml", "behringer_xtouch_mini"),
    ],
)
def test_example_mappings_use_profile_controls(mapping: str, profile: str) -> None:
    studio_map = load_mapping(ROOT / "configs" / "mappings" / mapping)
    controls = load_profile(profile).controls
    assert studio_map.bindings
    assert [b.control for b in studio_map.bindings if b.control not in controls] == []


@pytest.mark.parametrize("room", ["nanokontrol2-room.toml", "mmc-room.toml"])
def test_example_rooms_are_valid(room: str) -> None:
    config = load_config(ROOT / "configs" / room)
    kinds = {spec.kind for spec in config.devices.values()}
    assert kinds & {"generic_midi", "mmc", "mmc_in"}
