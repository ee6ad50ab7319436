"""relearn_events: how the OSC DAW drivers re-report their track list (issue 10.3)."""

from __future__ import annotations

from bridge.devices._osc import relearn_events
from bridge.state import Store
from bridge.vocab import TrackChanged, TracksReset


def _store() -> Store:
    store = Store()
    for n, name in ((1, "Kick"), (2, "Snare"), (3, "Bass")):
        store.apply(TrackChanged(n, name=name, arm=n == 2, mute=False, solo=False, fader=0.25 * n))
    return store


def test_same_values_change_nothing() -> None:
    store = _store()
    before = store.snapshot()
    tracks = {
        n: {
            "name": store.get(f"track/{n}/name"),
            "arm": n == 2,
            "mute": False,
            "solo": False,
            "fader": 0.25 * n,
        }
        for n in (1, 2, 3)
    }
    changes = [c for e in relearn_events(tracks) for c in store.apply(e)]
    assert changes == []
    assert store.snapshot() == before


def test_only_real_differences_and_vanished_tracks() -> None:
    store = _store()
    tracks = {
        1: {"name": "Kick", "arm": False, "mute": True, "solo": False, "fader": 0.25},
        2: {"name": "Snare", "arm": True, "mute": False, "solo": False, "fader": 0.5},
    }
    events = relearn_events(tracks)
    assert events[-1] == TracksReset(first=3)
    assert not any(isinstance(e, TracksReset) and e.first <= 2 for e in events)
    changes = [c for e in events for c in store.apply(e)]
    assert [
        (c.key, c.old, c.new) for c in changes if c.key.startswith("track/1") or c.key.startswith("track/2")
    ] == [("track/1/mute", False, True)]
    assert sorted(c.key for c in changes if c.key.startswith("track/3")) == [
        "track/3/armed",
        "track/3/fader",
        "track/3/mute",
        "track/3/name",
        "track/3/solo",
    ]
    assert all(c.new is None for c in changes if c.key.startswith("track/3"))
    assert store.tracks() == [1, 2]


def test_unknown_fields_are_left_alone_and_an_empty_list_forgets_all() -> None:
    store = _store()
    changes = [c for e in relearn_events({1: {"name": "Kick", "fader": None}}) for c in store.apply(e)]
    assert store.get("track/1/fader") == 0.25  # not reported: not cleared
    assert {c.key.split("/")[1] for c in changes} == {"2", "3"}
    assert [c for e in relearn_events({}) for c in store.apply(e)] != []
    assert store.tracks() == []
