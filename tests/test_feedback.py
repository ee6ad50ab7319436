from bridge import state as S
from bridge.feedback import FeedbackEngine
from bridge.mapping import parse_mapping
from bridge.vocab import (
    DeviceStatus,
    DeviceStatusChanged,
    Feedback,
    TalkbackChanged,
    TrackChanged,
    TransportChanged,
)

MAP = parse_mapping(
    {
        "binding": [
            {"control": "rec", "command": "transport.record"},
            {"control": "arm2", "command": "track.arm", "track": 2},
            {"control": "armvox", "command": "track.arm", "track": "Vox"},
            {"control": "onair", "feedback": "transport/recording", "blink": True},
        ]
    },
    "m.toml",
)


def resolver(store: S.Store):
    return lambda ref: ref if isinstance(ref, int) else store.track_by_name(ref)


def setup() -> tuple[FeedbackEngine, S.Store]:
    store = S.Store()
    engine = FeedbackEngine()
    engine.add_state_device("tablet")
    engine.add_mapped_device("nano", MAP, resolver(store))
    return engine, store


def apply(engine: FeedbackEngine, store: S.Store, event) -> dict[str, list[Feedback]]:
    return engine.on_changes(store.apply(event), store.get, resolver(store))


def test_state_and_mapped_feedback() -> None:
    engine, store = setup()
    out = apply(engine, store, TransportChanged(recording=True))
    assert Feedback("transport/recording", True) in out["tablet"]
    assert out["nano"] == [Feedback("rec", 1.0), Feedback("onair", "blink")]


def test_no_duplicate_sends() -> None:
    engine, store = setup()
    apply(engine, store, TrackChanged(2, arm=True))
    # the same value again through another route: nothing new for the LED
    assert (
        engine.on_changes([S.Change("track/2/armed", True, True)], store.get, resolver(store)).get("nano")
        is None
    )
    assert engine.suppressed >= 1


def test_named_binding_follows_renames() -> None:
    engine, store = setup()
    apply(engine, store, TrackChanged(5, name="Vox", arm=True))
    out = apply(engine, store, TrackChanged(5, arm=False))
    assert Feedback("armvox", 0.0) in out["nano"]
    # rename: "Vox" is now track 6, whose arm state is shown at once
    store.apply(TrackChanged(6, arm=True))
    apply(engine, store, TrackChanged(5, name="Gtr"))
    out = apply(engine, store, TrackChanged(6, name="Vox"))
    assert Feedback("armvox", 1.0) in out["nano"]


def test_resync_clears_cache_and_sends_everything() -> None:
    engine, store = setup()
    apply(engine, store, TransportChanged(recording=True, playing=True))
    again = engine.resync("nano", store.items(), resolver(store))
    controls = {f.control: f.value for f in again}
    # no track is called "Vox" yet, so that button shows nothing
    assert controls == {"rec": 1.0, "arm2": 0.0, "onair": "blink"}
    full = engine.resync("tablet", store.items(), resolver(store))
    assert {f.control for f in full} == {
        "transport/recording",
        "transport/playing",
        "transport/assumed",
        "transport/on_air",
    }


def test_blackout_turns_every_mapped_control_off() -> None:
    engine, store = setup()
    apply(engine, store, TransportChanged(recording=True))
    off = engine.blackout("nano")
    assert {f.control: f.value for f in off} == {"rec": 0.0, "arm2": 0.0, "armvox": 0.0, "onair": 0.0}
    assert engine.blackout("tablet") == []


DAW_MAP = parse_mapping(
    {
        "binding": [
            {"control": "rec", "command": "transport.record"},
            {"control": "play", "command": "transport.play"},
            {"control": "arm1", "command": "track.arm", "track": 1},
            {"control": "fader1", "command": "track.fader", "track": 1},
            {"control": "talk", "command": "talkback"},
            {"control": "daw.ok", "feedback": "daw/online"},
            {"control": "daw.alarm", "feedback": "daw/online", "feedback_invert": True},
        ]
    },
    "m.toml",
)


def test_mapped_leds_of_an_offline_daw_go_dark_and_come_back() -> None:
    """Issue 10 item 4: while the DAW is away its transport and arm LEDs claim nothing; the DAW's
    status can light a control itself; faders stay; what the bridge owns (talkback) stays lit."""
    store = S.Store(daw="ardour")
    engine = FeedbackEngine()
    engine.add_mapped_device("nano", DAW_MAP, resolver(store))
    apply(engine, store, DeviceStatusChanged("ardour", DeviceStatus.OK))
    apply(engine, store, TransportChanged(playing=True, recording=True))
    apply(engine, store, TrackChanged(1, arm=True, fader=0.7))
    apply(engine, store, TalkbackChanged(True))
    out = apply(engine, store, DeviceStatusChanged("ardour", DeviceStatus.DISCONNECTED, "no heartbeat"))
    assert sorted(out["nano"], key=lambda f: f.control) == [
        Feedback("arm1", 0.0),
        Feedback("daw.alarm", 1.0),
        Feedback("daw.ok", 0.0),
        Feedback("play", 0.0),
        Feedback("rec", 0.0),
    ]
    # the stale state moves on (a reconnect attempt, an old report): nothing lights up
    assert apply(engine, store, DeviceStatusChanged("ardour", DeviceStatus.CONNECTING)) == {}
    assert apply(engine, store, TransportChanged(recording=False)) == {}
    # a surface that connects meanwhile is dark too
    picture = {f.control: f.value for f in engine.resync("nano", store.items(), resolver(store))}
    assert picture["rec"] == picture["play"] == picture["arm1"] == 0.0
    assert picture["fader1"] == 0.7 and picture["talk"] == 1.0 and picture["daw.alarm"] == 1.0
    # back: the state as it is now, and only what differs from what the LEDs show
    out = apply(engine, store, DeviceStatusChanged("ardour", DeviceStatus.OK))
    assert sorted(out["nano"], key=lambda f: f.control) == [
        Feedback("arm1", 1.0),
        Feedback("daw.alarm", 0.0),
        Feedback("daw.ok", 1.0),
        Feedback("play", 1.0),
    ]  # rec: recording went off meanwhile, its LED is already off
