"""Devices that learn a fact synchronously hand it to the hub at once (``Device.report_now``).

The internal transport confirms a command inside the hub's delivery of it: the answer comes
before the hub returns, with no loop turn, and the confirmation is never lost, whether the
command came from a surface (inside the hub's drain) or from a callback outside it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.devices.internal import InternalTransport
from bridge.hub import Hub
from bridge.log.writer import SessionLog
from bridge.supervisor import run_device
from bridge.vocab import Play, Request, SetTrackArm, Stop


async def test_internal_transport_confirms_in_the_same_call(tmp_path: Path) -> None:
    hub = Hub(SessionLog(tmp_path / "log.sqlite3"), confirm_timeout=0.3)
    await hub.start()
    daw = InternalTransport("daw")
    task = asyncio.create_task(run_device(hub, hub.add_device(daw, "daw")))
    try:
        for _ in range(500):  # until connected and the starting facts are through receive
            if hub.store.get("device/daw/status") == "ok" and daw._events.empty():
                break
            await asyncio.sleep(0.01)
        assert daw.report_now is not None
        answers: list[str | None] = []
        hub.submit("tablet", Request(SetTrackArm(3, True), answers.append))
        assert answers == [None]  # answered before submit returned
        assert hub.store.get("track/3/armed") is True
        # outside any drain of the hub (as from a durable-record callback)
        hub.execute("cb", Play(), answers.append)
        assert answers == [None, None]
        assert hub.store.get("transport/playing") is True
        hub.execute("cb", Stop(), answers.append)
        assert answers == [None, None, None]
        assert not hub._pending
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hub.log.close()
    assert daw.report_now is None  # not connected any more: facts would go through receive
