"""Talk channel B and latching talkback in every grammar derived from the command registry."""

from __future__ import annotations

from bridge import commands
from bridge.devices._mqtt_topics import parse_command
from bridge.mapping import Mapper, parse_mapping
from bridge.vocab import ControlInput, SetTalkback


def test_osc_and_mqtt_addresses_for_channel_b() -> None:
    assert commands.verb("talkback.B").osc_address == "/talkback/B"
    assert commands.build("talkback.B", [1]) == SetTalkback(True, "B")
    assert commands.build("talkback", [0, "B"]) == SetTalkback(False, "B")
    assert parse_command("talkback/B", b"1") == (SetTalkback(True, "B"), None)
    assert parse_command("talkback", b'{"value": 0, "channel": "B"}') == (SetTalkback(False, "B"), None)


def test_latch_reads_the_state_of_the_channel_it_toggles() -> None:
    state = {"talkback": True, "talkback/B": False}
    get = state.get
    # A is on, B is off: toggling B engages B, toggling A releases A
    assert parse_command("talkback/B/toggle", b"", get)[0] == SetTalkback(True, "B")
    assert parse_command("talkback/toggle", b'{"channel": "B"}', get)[0] == SetTalkback(True, "B")
    assert parse_command("talkback/toggle", b"", get)[0] == SetTalkback(False, "A")
    assert commands.build_toggle("talkback", {"channel": "B"}, get) == SetTalkback(True, "B")


def test_mapping_push_to_talk_and_latch_on_channel_b() -> None:
    studio_map = parse_mapping(
        {
            "binding": [
                {"control": "ptt", "command": "talkback.B"},
                {"control": "latch", "command": "talkback.B", "glue": "toggle"},
            ]
        },
        "m.toml",
    )
    assert studio_map.bindings[0].glue == "momentary" and studio_map.bindings[0].feedback == "talkback/B"
    m = Mapper(studio_map)
    state: dict[str, object] = {"talkback/B": False}

    def res(ref: int | str) -> int | None:
        return None

    get = state.get
    assert m.resolve(ControlInput("ptt", 1.0), get, res) == [SetTalkback(True, "B")]  # type: ignore[arg-type]
    assert m.resolve(ControlInput("ptt", 0.0), get, res) == [SetTalkback(False, "B")]  # type: ignore[arg-type]
    assert m.resolve(ControlInput("latch", 1.0), get, res) == [SetTalkback(True, "B")]  # type: ignore[arg-type]
    assert m.resolve(ControlInput("latch", 0.0), get, res) == []  # type: ignore[arg-type]
    state["talkback/B"] = True
    assert m.resolve(ControlInput("latch", 1.0), get, res) == [SetTalkback(False, "B")]  # type: ignore[arg-type]
