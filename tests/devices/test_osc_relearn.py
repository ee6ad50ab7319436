"""relearn_events: how the OSC DAW drivers re-report their track list (issue 10.3)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from peers.fake_device import FakeDevice

from bridge.devices._osc import relearn_events
from bridge.hub import DAW_COMMANDS, Hub
from bridge.log.writer import SessionLog
from bridge.state import Store
from bridge.supervisor import run_device
from bridge.vocab import DeviceStatus, Feedback, TrackChanged, TracksReset


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


async def test_hub_sends_surfaces_only_what_a_relearn_changed(tmp_path: Path) -> None:
    """The whole core: a DAW drops and comes back re-reporting its tracks the way the OSC drivers
    do; a state-feedback surface gets feedback only for the value that really changed."""
    hub = Hub(SessionLog(tmp_path / "log.sqlite3"))
    await hub.start()
    daw = FakeDevice("daw", handles=DAW_COMMANDS)
    desk = FakeDevice("desk", feedback="state")
    tasks = [
        asyncio.create_task(run_device(hub, hub.add_device(d, r))) for d, r in ((daw, "daw"), (desk, None))
    ]
    tracks = {
        1: {"name": "Kick", "arm": False, "mute": False, "solo": False, "fader": 0.5},
        2: {"name": "Snare", "arm": True, "mute": False, "solo": False, "fader": 0.75},
    }

    async def until(pred: Any) -> None:
        async with asyncio.timeout(5):
            while not pred():  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    def track_feedback() -> list[tuple[str, Any]]:
        return [
            (m.control, m.value)
            for m in desk.sent
            if isinstance(m, Feedback) and m.control.startswith("track/")
        ]

    try:
        await until(
            lambda: hub.slots["desk"].status == DeviceStatus.OK and hub.slots["daw"].status == DeviceStatus.OK
        )
        for e in relearn_events(tracks):
            daw.report(e)
        await until(lambda: ("track/2/fader", 0.75) in track_feedback())
        desk.sent.clear()
        daw.lose("DAW restarted")
        await until(lambda: hub.slots["daw"].status != DeviceStatus.OK)
        await until(lambda: hub.slots["daw"].status == DeviceStatus.OK)  # the supervisor reconnects
        tracks[2]["mute"] = True
        for e in relearn_events(tracks):
            daw.report(e)
        await until(lambda: ("track/2/mute", True) in track_feedback())
        await asyncio.sleep(0.2)
        assert track_feedback() == [("track/2/mute", True)]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.log.close()
