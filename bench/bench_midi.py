"""Added latency inside the bridge for generic MIDI input: MIDI bytes in -> OSC bytes out, JACK-free.

    /tmp/venv/bin/python bench/bench_midi.py [--runs 3] [--seconds 2]

Method (performance.md §4 T1/T4): an injector thread stands in for rtmidi's thread and calls the
same callback (``MidiLink.inject`` -> the rtmidi callback path: deque append, one
``call_soon_threadsafe`` per burst), paced in 1 ms bursts (sleep between bursts), stamping each
message with ``perf_counter_ns``. On the loop, ``GenericMidiSurface.receive()`` (the shared
parser, profile lookup, per-batch coalescing, echo guard) yields ControlInputs; each is turned
into an OSC message (``bridge.devices._osc.encode``, what a DAW driver sends) and written with
``sendto`` to a loopback UDP socket; the time after ``sendto`` minus the injection time of the
message it carries is the added latency. Traffic: 9 continuous controls (8 faders + 1 knob of the
nanoKONTROL2 profile) plus a button press or release every 10 ms (discrete, sequence-checked).

Baseline, same run: the same messages handled synchronously in the injector thread with no
asyncio hop (parser + profile lookup + OSC encode + sendto per message, no coalescing).

Reports p50/p99 of the added latency at 1,000 and 9,000 msg/s, CPU (% of one core) of the
event-loop thread and of the whole process at 9,000 msg/s, and the discrete count (sent/received).
Not measured here: the hub (bridge/hub.py) between surface and DAW driver; see the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import threading
import time
from dataclasses import dataclass

from bridge.devices._osc import encode
from bridge.devices.midi.generic import GenericMidiOptions, GenericMidiSurface
from bridge.devices.midi.parser import MidiStreamParser
from bridge.devices.midi.profiles import load_profile
from bridge.vocab import ControlInput

TICKS = os.sysconf("SC_CLK_TCK")
BUTTONS = [32 + i for i in range(8)] + [48 + i for i in range(8)] + [64 + i for i in range(8)]
CONTINUOUS = [*range(8), 16]


def make_traffic(rate: int, seconds: float) -> list[list[bytes]]:
    """Per-millisecond bursts; a button event every 10 ms, the rest continuous."""
    bursts: list[list[bytes]] = []
    per_ms = rate / 1000.0
    acc = 0.0
    i = 0
    held: int | None = None
    presses = 0
    for ms in range(int(seconds * 1000)):
        acc += per_ms
        n = int(acc)
        acc -= n
        burst: list[bytes] = []
        for k in range(n):
            if ms % 10 == 0 and k == 0:
                if held is None:
                    held = BUTTONS[(presses * 7) % len(BUTTONS)]
                    presses += 1
                    burst.append(bytes((0xB0, held, 127)))
                else:
                    burst.append(bytes((0xB0, held, 0)))
                    held = None
            else:
                cc = CONTINUOUS[i % len(CONTINUOUS)]
                burst.append(bytes((0xB0, cc, (i * 7 + cc) % 128)))
                i += 1
        bursts.append(burst)
    final: list[bytes] = []
    if held is not None:
        final.append(bytes((0xB0, held, 0)))
    nxt = BUTTONS[(presses * 7) % len(BUTTONS)]
    final += [bytes((0xB0, nxt, 127)), bytes((0xB0, nxt, 0))]  # traffic always ends with a release
    bursts.append(final)
    return bursts


def thread_cpu(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_cpu() -> float:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pct(sorted_vals: list[float], p: float) -> float:
    return sorted_vals[min(len(sorted_vals) - 1, int(p * len(sorted_vals)))]


@dataclass
class Result:
    p50_us: float
    p99_us: float
    max_us: float
    outputs: int
    discrete_sent: int
    discrete_got: int
    in_order: bool
    loop_cpu: float = 0.0
    proc_cpu: float = 0.0
    button_p50_us: float = 0.0
    button_p99_us: float = 0.0


class Sender:
    def __init__(self) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.rx.setblocking(False)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.setblocking(False)
        self.addr = self.rx.getsockname()

    def send(self, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError):
            self.tx.sendto(data, self.addr)

    def drain(self) -> None:
        """Empty the receiving socket (the sink's work, after the timestamp)."""
        try:
            while True:
                self.rx.recv(2048)
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


def osc_for(item: ControlInput) -> bytes:
    if item.control.endswith(".fader") or item.control.endswith(".knob"):
        return encode("/strip/fader", int(item.control[5]), item.value)
    return encode("/strip/recenable", 1, int(item.value))


async def run_bridge(rate: int, seconds: float) -> Result:
    """The bridge path: injector thread -> MidiLink -> GenericMidiSurface.receive() -> OSC sendto."""
    opts = GenericMidiOptions(profile="korg_nanokontrol2", output="")
    drv = GenericMidiSurface("bench", opts)
    from bridge.devices.midi.link import MidiLink

    drv.link = MidiLink("bench", None, None)
    await drv.link.open()
    bursts = make_traffic(rate, seconds)
    discrete_sent = sum(1 for b in bursts for m in b if m[1] >= 32)
    stamp: dict[bytes, int] = {}
    press_order: list[str] = []
    names = {cc: drv.profile.find(bytes((0xB0, cc, 0))).name for cc in BUTTONS}  # type: ignore[union-attr]
    for b in bursts:
        for m in b:
            if m[1] >= 32:
                press_order.append(names[m[1]] + ("+" if m[2] else "-"))
    lat: list[float] = []
    blat: list[float] = []
    got_order: list[str] = []
    out = Sender()
    done = threading.Event()
    inject = drv.link.inject

    def injector() -> None:
        tick = time.perf_counter()
        for burst in bursts:
            for m in burst:
                stamp[m] = time.perf_counter_ns()
                inject(m)
            tick += 0.001
            delay = tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        done.set()

    loop_tid = threading.get_native_id()
    cpu0, proc0 = thread_cpu(loop_tid), process_cpu()
    wall0 = time.perf_counter()
    th = threading.Thread(target=injector, daemon=True)
    th.start()
    outputs = 0
    async with asyncio.timeout(seconds * 5 + 30):
        async for item in drv.receive():
            assert isinstance(item, ControlInput)
            out.send(osc_for(item))
            t1 = time.perf_counter_ns()
            out.drain()
            outputs += 1
            ctl = item.control
            if ctl.endswith((".solo", ".mute", ".rec")):
                got_order.append(ctl + ("+" if item.value else "-"))
                cc = next(c for c, n in names.items() if n == ctl)
                key = bytes((0xB0, cc, 127 if item.value else 0))
            else:
                cc = int(ctl[5]) - 1 if ctl.endswith(".fader") else 16
                key = bytes((0xB0, cc, round(item.value * 127)))
            t0 = stamp.get(key)
            if t0 is not None:
                lat.append((t1 - t0) / 1000.0)
                if key[1] >= 32:
                    blat.append((t1 - t0) / 1000.0)
            if len(got_order) == discrete_sent:  # the last input is a release: everything is through
                break
    wall = time.perf_counter() - wall0
    loop_cpu = (thread_cpu(loop_tid) - cpu0) / wall * 100
    proc_cpu = (process_cpu() - proc0) / wall * 100
    th.join(5)
    drv.link.close()
    out.close()
    lat.sort()
    blat.sort()
    return Result(
        pct(lat, 0.5),
        pct(lat, 0.99),
        lat[-1],
        outputs,
        discrete_sent,
        len(got_order),
        got_order == press_order,
        loop_cpu,
        proc_cpu,
        pct(blat, 0.5),
        pct(blat, 0.99),
    )


def run_baseline(rate: int, seconds: float) -> Result:
    """Same traffic, handled synchronously in the injecting thread: parse + lookup + encode + sendto."""
    profile = load_profile("korg_nanokontrol2")
    parser = MidiStreamParser()
    bursts = make_traffic(rate, seconds)
    out = Sender()
    lat: list[float] = []
    discrete = 0
    tick = time.perf_counter()
    for burst in bursts:
        for m in burst:
            t0 = time.perf_counter_ns()
            for msg in parser.feed(m):
                spec = profile.find(msg)
                if spec is None:
                    continue
                item = ControlInput(spec.name, spec.decode(spec.raw_value(msg)))
                out.send(osc_for(item))
                if spec.input == "button":
                    discrete += 1
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
            out.drain()
        tick += 0.001
        delay = tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    out.close()
    lat.sort()
    sent = sum(1 for b in bursts for m in b if m[1] >= 32)
    return Result(pct(lat, 0.5), pct(lat, 0.99), lat[-1], len(lat), sent, discrete, True)


def fmt(values: list[float], unit: str = "") -> str:
    return f"{statistics.median(values):8.1f}{unit} [{min(values):.1f}..{max(values):.1f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    print(f"load average: {os.getloadavg()}; {a.runs} runs x {a.seconds:g} s per case")
    ok = True
    for rate in (1000, 9000):
        ours: list[Result] = []
        base: list[Result] = []
        for _ in range(a.runs):  # interleaved so machine noise hits both
            ours.append(asyncio.run(run_bridge(rate, a.seconds)))
            base.append(run_baseline(rate, a.seconds))
        p50 = [r.p50_us for r in ours]
        p99 = [r.p99_us for r in ours]
        b50 = [r.p50_us for r in base]
        b99 = [r.p99_us for r in base]
        print(f"\n{rate:,} msg/s")
        mx = [r.max_us for r in ours]
        print(f"  bridge   p50 {fmt(p50, ' us')}  p99 {fmt(p99, ' us')}  max {fmt(mx, ' us')}")
        print(
            f"  buttons  p50 {fmt([r.button_p50_us for r in ours], ' us')}"
            f"  p99 {fmt([r.button_p99_us for r in ours], ' us')}   (discrete events only)"
        )
        print(f"  baseline p50 {fmt(b50, ' us')}  p99 {fmt(b99, ' us')}   (sync parse+encode+sendto, no hop)")
        print(
            f"  ratio    p50 {statistics.median(p50) / statistics.median(b50):.2f}x"
            f"  p99 {statistics.median(p99) / statistics.median(b99):.2f}x"
        )
        print(
            f"  outputs per run {statistics.median([r.outputs for r in ours]):.0f} "
            f"(coalesced from {int(rate * a.seconds)} inputs)"
        )
        print(
            f"  CPU event-loop thread {fmt([r.loop_cpu for r in ours], ' %')}"
            f"   whole process (incl. injector) {fmt([r.proc_cpu for r in ours], ' %')}"
        )
        lost = [r.discrete_sent - r.discrete_got for r in ours]
        order = all(r.in_order for r in ours)
        print(f"  discrete events: sent {ours[0].discrete_sent} per run, lost {lost}, in order: {order}")
        ok = ok and not any(lost) and order
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
