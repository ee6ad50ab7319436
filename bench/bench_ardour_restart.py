"""How fast the bridge is back after Ardour is killed (-9) and restarted at once.

    .venv/bin/python bench/bench_ardour_restart.py [--cycles 10] [--baseline-cycles 10]

Starts a headless Ardour 7 (tests/peers/ardour.py) and, in this process, the bridge's real
hub and device supervisor (``run_device``) with an ``ardour`` device. Each cycle: wait until
the device is ``ok``, kill -9 Ardour, start it again at once on the same port and session,
and time

* **first answer**: the moment the new Ardour first answers an OSC query (a separate socket
  on another loopback address asks ``/transport_speed`` every 5 ms from the restart on),
* **ok**: the moment the supervisor reports the device ``ok`` again (its state re-learned).

and also when the bridge got the new Ardour's first answer (to its registration query or its
re-registration). Reported: first answer to the bridge -> ok (the issue's figure), Ardour
ready -> ok (ready = the earliest answer seen by either) and kill -> ok. Baseline in the same
run: the same cycles with the registration probe switched off (``probe_after`` = 1000 s), i.e.
noticing the restart only by the heartbeat timeout, as before issue 10.6. Prints each cycle,
then median [min..max].
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from peers.ardour import ArdourPeer, _osc, have_ardour  # noqa: E402

from bridge.devices.ardour import ArdourOsc  # noqa: E402
from bridge.hub import Hub  # noqa: E402
from bridge.log.writer import SessionLog  # noqa: E402
from bridge.supervisor import run_device  # noqa: E402
from bridge.vocab import DeviceStatus  # noqa: E402

STARTER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ardour-starter")


class TimedArdour(ArdourOsc):
    """The driver, noting when the first datagram after ``armed`` arrived (Ardour's first answer
    to the bridge: its answer to a registration query or to the re-registration)."""

    armed = False
    first_rx: float | None = None

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.armed and self.first_rx is None:
            self.first_rx = time.monotonic()
        super()._on_datagram(data, addr)


def first_answer(port: int, stop: threading.Event, out: list[float]) -> None:
    """Ask Ardour /transport_speed every 5 ms until it answers; record when it first did.

    Each query from a fresh socket on another loopback address (127.0.0.2, .3, ...): Ardour
    sends every reply for an address to the port a surface registered for it, and a query
    that reached a half-started Ardour may leave its address unanswered."""
    n = 0
    while not stop.is_set():
        n += 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((f"127.0.{1 + n // 250}.{2 + n % 250}", 0))
            s.settimeout(0.005)
            with contextlib.suppress(OSError):
                s.sendto(_osc("/transport_speed"), ("127.0.0.1", port))
            try:
                s.recvfrom(65536)
            except OSError:
                continue
        out.append(time.monotonic())
        return


Cycle = tuple[float, float, float]  # (bridge's first answer -> ok, Ardour ready -> ok, kill -> ok)


async def run(peer: ArdourPeer, cycles: int, probe: bool, tmp: Path) -> list[Cycle]:
    hub = Hub(SessionLog(tmp / f"log-{probe}.sqlite3"))
    await hub.start()
    opts = ArdourOsc.Options(port=peer.port, **({} if probe else {"probe_after": 1000.0}))
    driver = TimedArdour("ardour", opts)
    slot = hub.add_device(driver, "daw")
    ok_at: list[float] = []
    ok = asyncio.Event()
    device_up = hub.device_up

    def up(name: str) -> None:
        ok_at.append(time.monotonic())
        ok.set()
        device_up(name)

    hub.device_up = up  # type: ignore[method-assign]
    task = asyncio.create_task(run_device(hub, slot))
    out: list[Cycle] = []
    try:
        async with asyncio.timeout(30):
            await ok.wait()
        for i in range(cycles):
            await asyncio.sleep(1.5)  # a few heartbeats while healthy
            assert slot.status == DeviceStatus.OK
            ok.clear()
            peer.kill()
            t_kill = time.monotonic()
            driver.first_rx, driver.armed = None, True
            answers: list[float] = []
            stop = threading.Event()
            watcher = threading.Thread(target=first_answer, args=(peer.port, stop, answers), daemon=True)
            watcher.start()
            # (in a thread that outlives every asyncio.run: Ardour is started with a parent-death
            # signal, and the default executor's threads end with their loop)
            await asyncio.get_running_loop().run_in_executor(STARTER, peer.start)
            async with asyncio.timeout(30):
                await ok.wait()
            stop.set()
            watcher.join(5)
            driver.armed = False
            t_ok, first_rx = ok_at[-1], driver.first_rx
            assert first_rx is not None
            # Ready: the earliest answer seen (the watcher stops seeing answers once the bridge
            # registered: Ardour then sends every reply to the bridge's port).
            ready = min([first_rx, *answers])
            out.append((t_ok - first_rx, t_ok - ready, t_ok - t_kill))
            print(
                f"  cycle {i + 1}: Ardour ready {ready - t_kill:.3f} s after kill; ok "
                f"{t_ok - first_rx:.3f} s after its first answer to the bridge, "
                f"{t_ok - ready:.3f} s after ready, {t_ok - t_kill:.3f} s after kill"
            )
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await hub.log.close()
    return out


def summary(name: str, values: list[float]) -> str:
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{name}: median {med:.3f} s [{lo:.3f}..{hi:.3f}] (n={len(values)})"


def main() -> int:
    import logging

    level = logging.DEBUG if os.environ.get("BENCH_DEBUG") else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--baseline-cycles", type=int, default=10)
    args = ap.parse_args()
    if not have_ardour():
        print("Ardour 7 (luasession) is not installed: apt-get install ardour")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-ardour-restart-") as d:
        tmp = Path(d)
        peer = ArdourPeer(tmp / "ardour")
        peer.root.mkdir(parents=True)
        peer.create()
        peer.start()
        try:
            print("registration probe (this branch):")
            fast = asyncio.run(run(peer, args.cycles, True, tmp))
            base: list[Cycle] = []
            if args.baseline_cycles:
                print("baseline, heartbeat timeout only (probe_after = 1000 s):")
                base = asyncio.run(run(peer, args.baseline_cycles, False, tmp))
        finally:
            peer.stop()
            peer.kill()
    for label, rows in (("probe   ", fast), ("baseline", base)):
        if not rows:
            continue
        print(summary(f"{label} first answer to the bridge -> ok", [r[0] for r in rows]))
        print(summary(f"{label} Ardour ready -> ok          ", [r[1] for r in rows]))
        print(summary(f"{label} kill -> ok                  ", [r[2] for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
