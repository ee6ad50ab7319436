"""The command registry: one table, every grammar derived from it, docs generated from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge import command_docs, commands
from bridge.devices._mqtt_topics import parse_command
from bridge.devices.midi.mackie import MackieSurface
from bridge.devices.midi.mackie_keys import ACTIONS
from bridge.devices.osc_api import OscApi
from bridge.mapping import COMMANDS, parse_binding
from bridge.vocab import (
    SESSION_COMMANDS,
    AddNote,
    CircleTake,
    FalseStart,
    Locate,
    MarkTake,
    SetRecord,
    SetTalkback,
    SetTrackArm,
    SetTrackFader,
    SetTrackMute,
)

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ the generic entry point


def test_build_from_dict_list_scalar_and_none() -> None:
    assert commands.build("take.circle", {"take": 3, "on": False}) == CircleTake(3, False)
    assert commands.build("take.circle", [3, 0]) == CircleTake(3, False)
    assert commands.build("take.circle", [3]) == CircleTake(3, True)
    assert commands.build("take.circle") == CircleTake(None, True)
    assert commands.build("note", "bass too loud") == AddNote("bass too loud")
    assert commands.build("note", [2, "tempo"]) == AddNote("tempo", 2)
    assert commands.build("note", ["tempo"]) == AddNote("tempo")
    assert commands.build("track.fader", {"track": "Lead Vox", "value": 0.25}) == SetTrackFader(
        "Lead Vox", 0.25
    )
    assert commands.build("track.arm", ["3", "on"]) == SetTrackArm(3, True)
    assert commands.build("talkback", {"on": "off", "channel": "B"}) == SetTalkback(False, "B")
    assert commands.build("transport.record", None) == SetRecord(True)


@pytest.mark.parametrize(
    ("name", "args", "reason"),
    [
        ("take.explode", None, "unknown command 'take.explode'"),
        ("take.circle", {"take": 0}, "take: expected a take number >= 1, got 0"),
        ("take.circle", {"tkae": 2}, "take.circle: unknown argument 'tkae' (arguments: take, on)"),
        ("note", None, "note: missing text (the note)"),
        ("note", [1.0], "text: expected text, got the button value 1.0"),
        ("note", {"text": 1.0}, "text: expected text, got the button value 1.0"),
        ("track.arm", {"track": 0, "on": 1}, "track: track numbers start at 1"),
        ("track.fader", {"track": 1, "value": 1.5}, "value: expected a fader value 0-1"),
        ("transport.locate", {"seconds": float("nan")}, "seconds: expected seconds (a number >= 0), got nan"),
        ("transport.record", {"on": "maybe"}, "on: expected 1 or 0 (on/off, true/false), got 'maybe'"),
    ],
)
def test_build_refuses_with_a_clear_reason(name: str, args: object, reason: str) -> None:
    with pytest.raises(commands.ArgError) as exc:
        commands.build(name, args)  # type: ignore[arg-type]
    assert str(exc.value) == reason


def test_clamp_is_the_tablet_grammar_only() -> None:
    assert commands.build("track.fader", {"track": 1, "value": 1.2}, clamp=True) == SetTrackFader(1, 1.0)
    assert commands.build("transport.locate", [-3], clamp=True) == Locate(0.0)
    with pytest.raises(commands.ArgError):
        commands.build("transport.locate", [-3])


def test_toggle_reads_the_state() -> None:
    state = {"transport/recording": True, "track/2/mute": False}
    assert commands.build_toggle("transport.record", None, state.get) == SetRecord(False)
    assert commands.build_toggle("track.mute", {"track": 2}, state.get) == SetTrackMute(2, True)
    with pytest.raises(commands.ArgError, match="no toggle form"):
        commands.build_toggle("take.mark", None, state.get)


def test_schema_lists_every_verb_json_ready() -> None:
    listed = json.loads(json.dumps(commands.schema()))
    assert [v["name"] for v in listed] == [v.name for v in commands.VERBS]
    circle = next(v for v in listed if v["name"] == "take.circle")
    assert circle["osc"] == "/take/circle" and circle["mqtt"] == "cmd/take/circle"
    assert [(a["name"], a["type"], a["required"]) for a in circle["args"]] == [
        ("take", "take", False),
        ("on", "flag", False),
    ]
    assert all(v["description"] for v in listed)


def test_routes_agree_with_the_vocabulary() -> None:
    assert commands.SESSION_TYPES == SESSION_COMMANDS
    assert commands.route_of(SetTalkback(True)) == "talkback"
    assert commands.route_of(SetRecord(True)) == "daw"


def test_aliases_resolve() -> None:
    assert commands.verb("take.false_start") is commands.BY_NAME["take.falsestart"]
    assert OscApi("osc")._parse("/take/false_start", [3]) == FalseStart(3)
    assert parse_command("song/pick", b"Gold")[0] == commands.build("song", "Gold")
    assert commands.verb("mark_take") is commands.BY_NAME["take.mark"]
    for alias, name in commands.ALIASES.items():
        assert name in commands.BY_NAME, alias


# ------------------------------------------------------------------ every grammar has every verb

SAMPLE_ARGS = {
    "flag": 1,
    "take": 1,
    "track": 2,
    "seconds": 1.5,
    "level": 0.5,
    "text": "words",
    "channel": "A",
}


def sample(verb: commands.Verb) -> dict[str, object]:
    return {a.name: SAMPLE_ARGS[a.kind] for a in verb.args if a.required or a.kind == "track"}


@pytest.mark.parametrize("verb", [v for v in commands.VERBS if "osc" in v.grammars], ids=lambda v: v.name)
def test_every_verb_has_its_osc_address(verb: commands.Verb) -> None:
    api = OscApi("osc")
    args = sample(verb)
    expected = commands.build(verb, args)
    address = verb.osc_address
    if verb.is_track:
        address = address.replace("<n>", str(args.pop("track")))
    positional = [args[a.name] for a in verb.args if a.name in args]
    assert api._parse(address, positional) == expected
    if verb.toggle is not None:
        assert api._parse(address + "/toggle", [1.0]) == commands.build_toggle(
            verb, {"track": 2} if verb.is_track else None, {}.get
        )


@pytest.mark.parametrize("verb", [v for v in commands.VERBS if "mqtt" in v.grammars], ids=lambda v: v.name)
def test_every_verb_has_its_mqtt_topic(verb: commands.Verb) -> None:
    args = sample(verb)
    expected = commands.build(verb, args)
    topic = verb.mqtt_topic.removeprefix("cmd/")
    if verb.is_track:
        topic = topic.replace("<n>", str(args.pop("track")))
    payload = json.dumps(args).encode()
    assert parse_command(topic, payload)[0] == expected
    if verb.toggle is not None:
        assert parse_command(topic + "/toggle", b"", {}.get)[0] == commands.build_toggle(
            verb, {"track": 2} if verb.is_track else None, {}.get
        )


@pytest.mark.parametrize("verb", [v for v in commands.VERBS if "mapping" in v.grammars], ids=lambda v: v.name)
def test_every_verb_has_its_mapping_name(verb: commands.Verb) -> None:
    assert verb.name in COMMANDS
    table: dict[str, object] = {"control": "c", "command": verb.name}
    if verb.is_track:
        table["track"] = 2
    keys = {"name": "song", "label": "label", "text": "text", "take": "take", "seconds": "seconds"}
    for arg in verb.args:
        if arg.required and arg.kind != "track" and arg.name in keys:
            table[keys[arg.name]] = SAMPLE_ARGS[arg.kind]
    binding = parse_binding(table, "binding[0]", "m.toml")
    assert binding.glue == verb.glue
    assert type(binding.build(1.0)) is verb.command


def test_mapping_accepts_the_documented_alias() -> None:
    binding = parse_binding({"control": "c", "command": "take.false_start"}, "binding[0]", "m.toml")
    assert binding.command == "take.falsestart" and binding.build(1.0) == FalseStart()


def test_mapping_args_are_checked_at_load() -> None:
    from bridge.errors import MappingError

    with pytest.raises(MappingError, match=r"m.toml: binding\[0\]: seconds: expected seconds >= 0"):
        parse_binding({"control": "c", "command": "transport.locate", "seconds": -2}, "binding[0]", "m.toml")


def test_every_desk_verb_is_a_mackie_action() -> None:
    desk = MackieSurface("desk", MackieSurface.Options()).keys
    for verb in commands.VERBS:
        if verb.mackie is None or "mackie" not in verb.grammars:
            continue
        assert verb.mackie in ACTIONS
        assert desk.action(verb.mackie) == commands.build(verb)
    assert desk.action("mark_take") == MarkTake()


# ------------------------------------------------------------------ the docs are the registry's


@pytest.mark.parametrize("which", sorted(command_docs.DOCS))
def test_generated_tables_match_the_docs(which: str) -> None:
    file, render = command_docs.DOCS[which]
    text = (ROOT / file).read_text(encoding="utf-8")
    assert command_docs.generated(text, which) == render(), (
        f"{file} is out of date: run `python -m bridge.commands --write-docs`"
    )


def test_every_verb_is_in_the_tables_and_nothing_else() -> None:
    readme = command_docs.generated((ROOT / "README.md").read_text(encoding="utf-8"), "osc commands")
    mqtt = command_docs.generated((ROOT / "docs/mqtt.md").read_text(encoding="utf-8"), "mqtt commands")
    osc_rows = {line.split("`")[1] for line in readme.splitlines()[2:] if line.startswith("|")}
    mqtt_rows = {line.split("`")[1] for line in mqtt.splitlines()[2:] if line.startswith("|")}
    assert "`/take/false_start` = `/take/falsestart`" in readme
    assert "`cmd/song/pick` = `cmd/song`" in mqtt
    want_osc = {v.osc_address for v in commands.VERBS if "osc" in v.grammars}
    want_mqtt = {v.mqtt_topic for v in commands.VERBS if "mqtt" in v.grammars}
    assert want_osc <= osc_rows
    assert want_mqtt <= mqtt_rows
    extra_osc = {r for r in osc_rows - want_osc if not r.endswith("/toggle") and "/name/" not in r}
    extra_mqtt = {r for r in mqtt_rows - want_mqtt if not r.endswith("/toggle")}
    assert extra_osc == set() and extra_mqtt == set()


def test_a_button_value_is_neither_text_nor_a_take_number() -> None:
    api = OscApi("osc")
    for address in ("/note", "/take/select", "/take/rename"):
        with pytest.raises(ValueError, match=r"button value 1\.0"):
            api._parse(address, [1.0])
    assert api._parse("/take/circle", [1.0]) == CircleTake()  # a trigger: the press fires
    with pytest.raises(commands.Release):
        api._parse("/take/circle", [0.0])
    assert api._parse("/take/falsestart", [2, 0]) == FalseStart(2, False)
    assert api._parse("/take/circle/toggle", [1.0]) == CircleTake(None, True)


@pytest.mark.parametrize("verb", [v for v in commands.VERBS if v.toggle is not None], ids=lambda v: v.name)
def test_a_toggle_button_that_sends_ints_flips_once_per_tap(verb: commands.Verb) -> None:
    """``i 1`` on press, ``i 0`` on release (a button set to send ints): one flip per tap. The
    release flipped it back (``/take/circle/toggle i 1`` then ``i 0`` circled and un-circled)."""
    api = OscApi("osc")
    address = verb.osc_address.replace("<n>", "2") + "/toggle"
    assert api._parse(address, [1]) == commands.build_toggle(
        verb, {"track": 2} if verb.is_track else None, {}.get
    )
    with pytest.raises(commands.Release):
        api._parse(address, [0])
    if verb.is_track:
        api._state["track/2/name"] = "Snare"
        by_name = verb.osc_address.replace("/<n>/", "/name/") + "/toggle"
        assert api._parse(by_name, ["Snare", 1]) == api._parse(address, [1])
        with pytest.raises(commands.Release):
            api._parse(by_name, ["Snare", 0])


_INT_BUTTONS = [
    v
    for v in commands.VERBS
    if v.trigger and "osc" in v.grammars and (not v.args or v.args[0].kind == "text")
]


@pytest.mark.parametrize("verb", _INT_BUTTONS, ids=lambda v: v.name)
def test_a_trigger_button_that_sends_ints_fires_once_per_tap(verb: commands.Verb) -> None:
    """Stream Deck / Companion style ``i 1`` on press, ``i 0`` on release: one take (not the
    takes "1" and "0"), one song step, one new session."""
    api = OscApi("osc")
    assert api._parse(verb.osc_address, [1]) == commands.build(verb, [])
    with pytest.raises(commands.Release):
        api._parse(verb.osc_address, [0])


def test_ints_stay_take_numbers_and_other_ints_stay_labels() -> None:
    api = OscApi("osc")
    assert api._parse("/take/circle", [1]) == CircleTake(1, True)
    with pytest.raises(ValueError, match="take number"):
        api._parse("/take/circle", [0])
    assert api._parse("/take/mark", [7]) == MarkTake("7")
    assert api._parse("/take/mark", ["1"]) == MarkTake("1")
