"""Latency inside the whole bridge: MIDI bytes in -> hub -> DAW -> state -> feedback bytes out.

    python bench/bench_bridge_path.py [--runs 3] [--seconds 2]

In one process, the real parts of a daemon: the session log (SQLite in a temp dir), the hub,
the internal transport (role daw), the OSC API (bound on loopback, with a subscribed UDP client
reading in another thread) and a generic MIDI surface (nanoKONTROL2 profile + the shipped
tracking mapping). An injector thread stands in for rtmidi's thread and feeds raw MIDI through
``MidiLink.inject`` (the same deque + ``call_soon_threadsafe`` path as the rtmidi callback), in
1 ms bursts: faders 1-4 continuously, and every 10 ms a press (+ release) of a strip's REC
button. Each press toggles that track's arm: surface -> mapper -> SetTrackArm -> internal
transport -> TrackChanged -> store -> feedback engine -> the surface's outbox -> driver ->
LED bytes. The LED bytes are caught at ``MidiLink.send`` (``attach_sink``), stamped, and matched
to the press in order: that is the added latency inside the bridge for a discrete control.

Baseline, same run: the bare thread hop: the same injector, a ``call_soon_threadsafe`` per burst
into a loop callback that hands the bytes straight to the same kind of sink.

Also: CPU (% of one core, whole process incl. the injector) during the 9,000 msg/s flood, and
proof that no discrete event was lost (every press got exactly its LED, in order) and that the
faders' final values reached the state exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bridge.devices.internal import InternalOptions, InternalTransport
from bridge.devices.midi.generic import GenericMidiOptions, GenericMidiSurface
from bridge.devices.osc_api import OscApi, OscApiOptions
from bridge.hub import Hub
from bridge.log.writer import SessionLog
from bridge.mapping import load_mapping
from bridge.supervisor import run_device
from bridge.vocab import SetTrackArm

ROOT = Path(__file__).resolve().parents[1]
MAPPING = ROOT / "configs" / "mappings" / "nanokontrol2-tracking.toml"
TICK = os.sysconf("SC_CLK_TCK")
REC_CC = [64, 65, 66, 67]  # strip 1-4 R buttons
FADER_CC = [0, 1, 2, 3]


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, round(q * (len(data) - 1)))]


def fmt(values: list[float], unit: str) -> str:
    return f"{statistics.median(values):.1f}{unit} [{min(values):.1f}..{max(values):.1f}]"


class Injector(threading.Thread):
    def __init__(self, feed: object, rate: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.feed = feed
        self.rate = rate
        self.seconds = seconds
        self.press_times: list[int] = []
        self.press_ccs: list[int] = []
        self.sent = 0
        self.final: dict[int, int] = {}

    def run(self) -> None:
        per_ms = self.rate / 1000
        acc = 0.0
        start = time.perf_counter()
        value = 0
        for ms in range(int(self.seconds * 1000)):
            acc += per_ms
            n = int(acc)
            acc -= n
            burst: list[tuple[bool, bytes]] = []
            for k in range(n):
                if ms % 10 == 0 and k == 0:
                    cc = REC_CC[(ms // 10) % 4]
                    burst.append((True, bytes([0xB0, cc, 127])))
                elif ms % 10 == 1 and k == 0:
                    cc = REC_CC[((ms - 1) // 10) % 4]
                    burst.append((False, bytes([0xB0, cc, 0])))
                else:
                    fader = FADER_CC[k % 4]
                    value = (value + 7) % 128
                    self.final[fader] = value
                    burst.append((False, bytes([0xB0, fader, value])))
            for is_press, data in burst:
                if is_press:
                    self.press_times.append(time.perf_counter_ns())
                    self.press_ccs.append(data[1])
                self.feed(data)  # type: ignore[operator]
                self.sent += 1
            target = start + (ms + 1) / 1000
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


async def bridge_run(rate: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(SessionLog(Path(tmp) / "log.sqlite3"))
        await hub.start()
        hub_task = asyncio.create_task(hub.run())
        # track 4 is "Lead Vox": the shipped mapping binds strip 4 to that name
        daw = InternalTransport(
            "internal", InternalOptions(tracks=8, names=["Kick", "Snare", "Bass", "Lead Vox"])
        )
        osc = OscApi("osc", OscApiOptions(bind="127.0.0.1", port=0))
        nano = GenericMidiSurface("nano", GenericMidiOptions(profile="korg_nanokontrol2", echo_window=0.0))
        led_times: list[tuple[int, bytes]] = []

        def sink(data: bytes) -> None:
            if data[0] == 0xB0 and data[1] in REC_CC:
                led_times.append((time.perf_counter_ns(), data))

        daw_times: list[tuple[int, int]] = []  # (time, track) when SetTrackArm reaches the DAW driver
        daw_send = daw.send_now

        def stamped(message: object) -> None:
            if isinstance(message, SetTrackArm):
                daw_times.append((time.perf_counter_ns(), int(message.track)))
            daw_send(message)  # type: ignore[arg-type]

        daw.send_now = stamped  # type: ignore[method-assign]
        nano.link.attach_sink(sink)
        nano.link.in_pattern = nano.link.out_pattern = None  # no ports: injector in, sink out
        tasks = []
        for device, role, mapping in (
            (daw, "daw", None),
            (osc, None, None),
            (nano, None, load_mapping(MAPPING)),
        ):
            slot = hub.add_device(device, role, mapping)
            tasks.append(asyncio.create_task(run_device(hub, slot)))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if all(hub.store.get(f"device/{n}/status") == "ok" for n in ("internal", "osc", "nano")):
                break
        await asyncio.sleep(0.2)
        led_times.clear()
        daw_times.clear()
        injector = Injector(nano.link.inject, rate, seconds)
        c0, w0 = cpu_seconds(), time.perf_counter()
        injector.start()
        await asyncio.to_thread(injector.join)
        await asyncio.sleep(0.3)
        cpu = 100 * (cpu_seconds() - c0) / (time.perf_counter() - w0 - 0.3)
        presses = injector.press_times
        leds = list(led_times)  # before teardown (the blackout adds LED-off messages)
        # pair presses and LED changes per strip, in order (each press toggles that strip's arm)
        lat: list[float] = []
        one_way: list[float] = []
        lost = 0
        for cc in REC_CC:
            ins = [t for t, c in zip(presses, injector.press_ccs, strict=True) if c == cc]
            outs = [t for t, data in leds if data[1] == cc]
            lost += max(0, len(ins) - len(outs))
            lat += [(b - a) / 1000 for a, b in zip(ins, outs, strict=False)]
            track = REC_CC.index(cc) + 1
            to_daw = [t for t, n in daw_times if n == track]
            one_way += [(b - a) / 1000 for a, b in zip(ins, to_daw, strict=False)]
        faders_ok = all(
            abs((hub.store.get(f"track/{FADER_CC.index(cc) + 1}/fader") or -1) - v / 127) < 1e-6
            for cc, v in injector.final.items()
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        hub_task.cancel()
        await hub.log.close()
        return {
            "p50": pct(lat, 0.5),
            "p99": pct(lat, 0.99),
            "in50": pct(one_way, 0.5),
            "in99": pct(one_way, 0.99),
            "cpu": cpu,
            "presses": len(presses),
            "leds": len(presses) - lost,
            "faders_ok": float(faders_ok),
            "sent": injector.sent,
        }


async def baseline_run(rate: int, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    pending: list[bytes] = []
    out: list[int] = []

    def drain() -> None:
        batch = pending[:]
        pending.clear()
        for data in batch:
            if data[0] == 0xB0 and data[1] in REC_CC and data[2] == 127:
                out.append(time.perf_counter_ns())

    def feed(data: bytes) -> None:
        was_empty = not pending
        pending.append(data)
        if was_empty:
            loop.call_soon_threadsafe(drain)

    injector = Injector(feed, rate, seconds)
    injector.start()
    await asyncio.to_thread(injector.join)
    await asyncio.sleep(0.1)
    lat = [(b - a) / 1000 for a, b in zip(injector.press_times, out, strict=False)]
    return {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"# bench_bridge_path  python {sys.version.split()[0]}  load {os.getloadavg()[0]:.2f}")
    for rate in (1000, 9000):
        ours: list[dict[str, float]] = []
        base: list[dict[str, float]] = []
        for _ in range(args.runs):
            base.append(asyncio.run(baseline_run(rate, args.seconds)))
            ours.append(asyncio.run(bridge_run(rate, args.seconds)))

        def med(key: str, runs: list[dict[str, float]]) -> float:
            return statistics.median(r[key] for r in runs)

        def line(key50: str, key99: str, runs: list[dict[str, float]]) -> str:
            return f"p50 {fmt([r[key50] for r in runs], ' us')}   p99 {fmt([r[key99] for r in runs], ' us')}"

        print(f"{rate} msg/s, discrete (a REC press every 10 ms among the fader flood):")
        print(f"  MIDI in -> command at the DAW driver: {line('in50', 'in99', ours)}")
        print("  MIDI in -> hub -> DAW -> state -> feedback -> LED bytes out (round trip):")
        print(f"  bridge   {line('p50', 'p99', ours)}")
        print(f"  baseline {line('p50', 'p99', base)}  (bare thread hop)")
        print(f"  added over the hop: p50 {med('p50', ours) - med('p50', base):.1f} us")
        print(f"  CPU whole process {fmt([r['cpu'] for r in ours], ' %')} of one core")
        presses = sum(int(r["presses"]) for r in ours)
        leds = sum(int(r["leds"]) for r in ours)
        exact = sum(int(r["faders_ok"]) for r in ours)
        print(f"  presses {presses}, LED changes {leds}, lost {presses - leds}; "
              f"fader final values exact in {exact}/{len(ours)} runs")  # fmt: skip


if __name__ == "__main__":
    main()
