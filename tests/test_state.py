from bridge import state as S
from bridge.vocab import (
    DeviceStatus,
    DeviceStatusChanged,
    PositionChanged,
    SessionChanged,
    TalkbackChanged,
    TrackChanged,
    TracksReset,
    TransportChanged,
)


def test_reduce_is_pure_and_reports_changes() -> None:
    values = {S.PLAYING: False}
    changes = S.reduce(values, TransportChanged(playing=True))
    assert values == {S.PLAYING: False}
    assert [(c.key, c.old, c.new) for c in changes] == [
        (S.PLAYING, False, True),
        (S.ASSUMED, None, False),
        (S.ON_AIR, None, False),
    ]


def test_no_change_no_changes() -> None:
    store = S.Store()
    store.apply(TransportChanged(playing=True, recording=False))
    assert store.apply(TransportChanged(playing=True, recording=False)) == []


def test_partial_track_update_and_type_change() -> None:
    store = S.Store()
    changes = store.apply(TrackChanged(3, name="Kick", arm=True))
    assert {c.key for c in changes} == {"track/3/name", "track/3/armed"}
    assert store.apply(TrackChanged(3, mute=False))[0].key == "track/3/mute"
    assert store.get("track/3/name") == "Kick"
    # 1 and True are equal in Python but a different fact for a fader
    store.apply(TrackChanged(3, fader=1.0))
    assert store.apply(TrackChanged(3, fader=1.0)) == []


def test_invalid_track_number_ignored() -> None:
    assert S.reduce({}, TrackChanged(0, arm=True)) == []
    assert S.reduce({}, TrackChanged(-4, arm=True)) == []


def test_tracks_reset_removes_keys() -> None:
    store = S.Store()
    store.apply(TrackChanged(1, name="A", arm=True))
    store.apply(TrackChanged(2, name="B"))
    changes = store.apply(TracksReset(first=2))
    assert [(c.key, c.new) for c in changes] == [("track/2/name", None)]
    assert store.tracks() == [1]


def test_track_by_name_exact_then_casefold() -> None:
    store = S.Store()
    store.apply(TrackChanged(1, name="lead vox"))
    store.apply(TrackChanged(2, name="Lead Vox"))
    assert store.track_by_name("Lead Vox") == 2
    assert store.track_by_name("LEAD VOX") == 1
    assert store.track_by_name("Bass") is None


def test_other_events() -> None:
    store = S.Store()
    store.apply(PositionChanged(12))
    assert store.get(S.POSITION) == 12.0 and isinstance(store.get(S.POSITION), float)
    store.apply(TalkbackChanged(True))
    assert store.get(S.TALKBACK) is True
    store.apply(DeviceStatusChanged("desk", DeviceStatus.OK))
    assert store.get("device/desk/status") == "ok"
    store.apply(SessionChanged(song="Blue", take=2, next_take=3))
    assert (store.get(S.SONG), store.get(S.TAKE), store.get(S.NEXT_TAKE)) == ("Blue", 2, 3)


def test_continuous_keys() -> None:
    assert S.is_continuous_key("transport/position")
    assert S.is_continuous_key("track/4/fader")
    assert not S.is_continuous_key("track/4/armed")
    assert S.parse_track_key("track/12/armed") == (12, "armed")
    assert S.parse_track_key("track/x/armed") is None


def test_on_air_is_rolling_and_recording() -> None:
    store = S.Store()
    store.apply(TransportChanged(playing=False, recording=True))  # armed, stopped: not on air
    assert store.get(S.ON_AIR) is False
    changes = store.apply(TransportChanged(playing=True))
    assert S.Change(S.ON_AIR, False, True) in changes
    store.apply(TransportChanged(recording=False))  # punched out, still rolling
    assert store.get(S.ON_AIR) is False


def test_defaults_then_a_daw_report() -> None:
    """The hub's store starts with the keys that have a default (issue 9 item 9: talkback was
    unknown until first used); the first DAW report replaces the assumption."""
    store = S.Store(S.DEFAULTS)
    assert store.get(S.TALKBACK) is False and store.get(S.ON_AIR) is False
    assert store.get(S.ASSUMED) is True
    changes = store.apply(TransportChanged(playing=False, recording=False))
    assert [(c.key, c.new) for c in changes] == [(S.ASSUMED, False)]
    changes = store.apply(TransportChanged(playing=True, recording=True))
    assert {c.key: c.new for c in changes} == {S.PLAYING: True, S.RECORDING: True, S.ON_AIR: True}


def test_daw_status_mirrors_the_daw_device_only() -> None:
    store = S.Store(daw="ardour")
    changes = store.apply(DeviceStatusChanged("ardour", DeviceStatus.CONNECTING))
    assert {c.key: c.new for c in changes} == {
        "device/ardour/status": "connecting",
        S.DAW_STATUS: "connecting",
        S.DAW_ONLINE: False,
    }
    store.apply(DeviceStatusChanged("ardour", DeviceStatus.OK))
    assert store.get(S.DAW_STATUS) == "ok" and store.get(S.DAW_ONLINE) is True
    # another device's status is not the DAW's
    assert [c.key for c in store.apply(DeviceStatusChanged("nano", DeviceStatus.DISCONNECTED))] == [
        "device/nano/status"
    ]
    store.apply(DeviceStatusChanged("ardour", DeviceStatus.DISCONNECTED, "silent"))
    assert store.get(S.DAW_STATUS) == "disconnected" and store.get(S.DAW_ONLINE) is False
    # no DAW known: no daw/ keys
    assert S.DAW_STATUS not in {c.key for c in S.reduce({}, DeviceStatusChanged("x", DeviceStatus.OK))}


def test_daw_keys() -> None:
    assert S.is_daw_key("transport/recording") and S.is_daw_key("track/3/armed")
    assert not S.is_daw_key("talkback") and not S.is_daw_key("take") and not S.is_daw_key(S.DAW_ONLINE)
    assert S.daw_offline("disconnected") and S.daw_offline("connecting")
    assert not S.daw_offline("ok") and not S.daw_offline(None)
