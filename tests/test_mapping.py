from pathlib import Path

import pytest

from bridge.errors import MappingError
from bridge.mapping import Mapper, load_mapping, parse_binding, parse_mapping
from bridge.vocab import (
    ControlInput,
    MarkTake,
    Play,
    SetRecord,
    SetTalkback,
    SetTrackArm,
    SetTrackFader,
)


def mapper(*tables: dict) -> Mapper:
    return Mapper(parse_mapping({"binding": list(tables)}, "m.toml"))


def resolve(values: dict):
    names = {v: int(k.split("/")[1]) for k, v in values.items() if k.endswith("/name")}
    return values.get, lambda ref: ref if isinstance(ref, int) else names.get(ref)


def test_toggle_reads_current_state() -> None:
    m = mapper({"control": "rec", "command": "transport.record"})
    get, res = resolve({"transport/recording": False})
    assert m.resolve(ControlInput("rec", 1.0), get, res) == [SetRecord(True)]
    assert m.resolve(ControlInput("rec", 0.0), get, res) == []  # release does nothing
    get, res = resolve({"transport/recording": True})
    assert m.resolve(ControlInput("rec", 1.0), get, res) == [SetRecord(False)]


def test_track_by_name_toggle() -> None:
    m = mapper({"control": "b1", "command": "track.arm", "track": "Lead Vox"})
    get, res = resolve({"track/4/name": "Lead Vox", "track/4/armed": True})
    assert m.resolve(ControlInput("b1", 1.0), get, res) == [SetTrackArm("Lead Vox", False)]


def test_press_momentary_continuous_relative() -> None:
    m = mapper(
        {"control": "play", "command": "transport.play"},
        {"control": "tb", "command": "talkback"},
        {"control": "f1", "command": "track.fader", "track": 1, "min": 0.0, "max": 0.5},
        {"control": "k1", "command": "track.fader", "track": 2, "glue": "relative", "step": 0.1},
        {"control": "mark", "command": "take.mark", "label": "pedal"},
    )
    get, res = resolve({"track/2/fader": 0.5})
    assert m.resolve(ControlInput("play", 1.0), get, res) == [Play()]
    assert m.resolve(ControlInput("play", 0.0), get, res) == []
    assert m.resolve(ControlInput("tb", 1.0), get, res) == [SetTalkback(True)]
    assert m.resolve(ControlInput("tb", 0.0), get, res) == [SetTalkback(False)]
    assert m.resolve(ControlInput("f1", 1.0), get, res) == [SetTrackFader(1, 0.5)]
    assert m.resolve(ControlInput("k1", -2, relative=True), get, res) == [
        SetTrackFader(2, pytest.approx(0.3))
    ]
    assert m.resolve(ControlInput("k1", 0.7), get, res) == []  # absolute into a relative binding: filtered
    assert m.resolve(ControlInput("mark", 1.0), get, res) == [MarkTake("pedal")]
    assert m.resolve(ControlInput("unknown", 1.0), get, res) == []


def test_feedback_values() -> None:
    b = parse_binding({"control": "led", "feedback": "transport/recording", "blink": True}, "b", "m.toml")
    assert b.feedback_value(True) == "blink" and b.feedback_value(False) == 0.0
    stop = parse_binding({"control": "stop", "command": "transport.stop"}, "b", "m.toml")
    assert stop.feedback == "transport/playing" and stop.feedback_value(False) == 1.0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"command": "transport.play"}, "binding[0].control: expected a control name"),
        ({"control": "x", "command": "transport.jump"}, "binding[0].command: expected one of"),
        ({"control": "x", "command": "track.arm"}, "binding[0].track: expected a track number"),
        ({"control": "x", "command": "track.arm", "track": 0}, "binding[0].track: expected a track number"),
        ({"control": "x", "command": "transport.play", "glue": "sticky"}, "binding[0].glue: expected one of"),
        ({"control": "x", "command": "transport.play", "colour": 1}, "binding[0].colour: unknown key"),
        ({"control": "x"}, "binding[0]: needs a command, a feedback key, or both"),
        (
            {"control": "x", "command": "track.fader", "track": 1, "min": "low"},
            "binding[0].min: expected a number",
        ),
    ],
)
def test_mapping_errors_name_file_key_and_expectation(table: dict, message: str) -> None:
    with pytest.raises(MappingError) as err:
        parse_mapping({"binding": [table]}, "tracking.toml")
    assert str(err.value).startswith("tracking.toml: ")
    assert message in str(err.value)


def test_load_mapping_file_errors(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="mapping file not found"):
        load_mapping(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[binding]\n")
    with pytest.raises(MappingError, match="not valid TOML"):
        load_mapping(bad)


def test_shorthand_track_by_name() -> None:
    m = mapper({"control": "b4", "arm": "Lead Vox"})
    get, res = resolve({"track/4/name": "Lead Vox", "track/4/armed": False})
    assert m.resolve(ControlInput("b4", 1.0), get, res) == [SetTrackArm("Lead Vox", True)]
    with pytest.raises(
        MappingError, match=r"binding\[0\]\.arm: use either arm = <track> or command \+ track"
    ):
        parse_mapping({"binding": [{"control": "b", "arm": 2, "command": "track.arm"}]}, "m.toml")
