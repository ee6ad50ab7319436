"""Mackie driver cost per message, without ports (MidiLink with neither pattern: inject/sink).

    /tmp/venv/bin/python bench/bench_mackie.py [--runs 5] [--n 10000]

* input: N messages (touched fader moves, V-Pot turns and one REC ARM press per 100) as
  rtmidi would deliver them (one chunk per message) through MackieSurface.receive(), until
  every press came out as a command. Baseline: the same chunks through MidiLink.messages()
  alone (the shared parser, no driver).
* output: N Feedback messages (fader / position / arm of the banked strips) through
  MackieSurface.send() to a sink. Baseline: encoding the same values with the codec
  directly (no mirror, no cache, no echo bookkeeping).
Prints median [min..max] per message over the runs, the baseline and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bridge.devices.midi import mackie_codec as mc
from bridge.devices.midi.link import MidiLink
from bridge.devices.midi.mackie import MackieSurface
from bridge.options import parse_options
from bridge.vocab import Feedback, SetTrackArm


class BenchSurface(MackieSurface):
    def make_link(self) -> MidiLink:
        link = MidiLink("bench", None, None)

        def sink(data: bytes) -> None:
            if data == mc.device_query(self.desk.model):
                link.inject(mc.host_connection_query(self.desk.model, b"BENCH01", b"\x01\x02\x03\x04"))

        link.attach_sink(sink)
        self.bench_link = link
        return link


def input_messages(n: int) -> tuple[list[list[int]], int]:
    msgs: list[list[int]] = [[0x90, 0x68, 0x7F]]
    presses = 0
    for i in range(n - 1):
        if i % 100 == 50:
            msgs.append([0x90, 0x02, 0x7F])
            presses += 1
        elif i % 2:
            msgs.append([0xE0, i & 0x7F, (i >> 7) & 0x7F])
        else:
            msgs.append([0xB0, 0x11, 0x41])
    return msgs, presses


async def run_input_driver(n: int) -> float:
    opts = parse_options(MackieSurface.Options, {}, where="bench", file="bench")
    driver = BenchSurface("bench", opts)
    await driver.__aenter__()
    msgs, presses = input_messages(n)
    link = driver.bench_link
    t0 = time.perf_counter()
    for m in msgs:
        link.inject(m)
    seen = 0
    async for item in driver.receive():
        if isinstance(item, SetTrackArm):
            seen += 1
            if seen == presses:
                break
    dt = time.perf_counter() - t0
    await driver.__aexit__(None, None, None)
    return dt / n


async def run_input_baseline(n: int) -> float:
    link = MidiLink("base", None, None)
    await link.open()
    msgs, _ = input_messages(n)
    t0 = time.perf_counter()
    for m in msgs:
        link.inject(m)
    count = 0
    async for batch in link.messages():
        count += len(batch)
        if count >= len(msgs):
            break
    dt = time.perf_counter() - t0
    link.close()
    return dt / n


def feedback_items(n: int) -> list[Feedback]:
    items = []
    for i in range(n):
        k = i % 3
        if k == 0:
            items.append(Feedback(f"track/{1 + i % 8}/fader", (i % 1000) / 1000, continuous=True))
        elif k == 1:
            items.append(Feedback("transport/position", i / 30, continuous=True))
        else:
            items.append(Feedback(f"track/{1 + i % 8}/armed", bool(i % 2)))
    return items


async def run_output_driver(n: int) -> float:
    opts = parse_options(MackieSurface.Options, {}, where="bench", file="bench")
    driver = BenchSurface("bench", opts)
    await driver.__aenter__()
    items = feedback_items(n)
    t0 = time.perf_counter()
    for fb in items:
        await driver.send(fb)
    dt = time.perf_counter() - t0
    await driver.__aexit__(None, None, None)
    return dt / n


async def run_output_baseline(n: int) -> float:
    sent: list[bytes] = []
    items = feedback_items(n)
    t0 = time.perf_counter()
    for fb in items:
        key, value = fb.control, fb.value
        if key.endswith("/fader"):
            sent.append(mc.fader(int(key.split("/")[1]) - 1, float(value)))  # type: ignore[arg-type]
        elif key.endswith("/armed"):
            sent.append(mc.led(int(key.split("/")[1]) - 1, mc.led_state(bool(value))))
        else:
            codes = mc.timecode_codes(mc.format_position(float(value)), mc.POSITION_DOTS)  # type: ignore[arg-type]
            sent.extend(mc.timecode_digit(d, c) for d, c in enumerate(codes))
    return (time.perf_counter() - t0) / n


def show(label: str, driver: list[float], base: list[float]) -> None:
    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1e6:.2f} us [{min(xs) * 1e6:.2f}..{max(xs) * 1e6:.2f}]"

    ratio = statistics.median(driver) / statistics.median(base)
    print(f"{label}: driver {fmt(driver)} per message; baseline {fmt(base)}; ratio {ratio:.2f}x")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=10_000)
    a = ap.parse_args()
    runs = max(3, a.runs)
    din, bin_, dout, bout = [], [], [], []
    for _ in range(runs):  # interleaved so load changes hit both sides alike
        bin_.append(await run_input_baseline(a.n))
        din.append(await run_input_driver(a.n))
        bout.append(await run_output_baseline(a.n))
        dout.append(await run_output_driver(a.n))
    print(f"Mackie driver, {a.n} messages x {runs} runs")
    show("input  (MIDI -> commands)", din, bin_)
    show("output (Feedback -> MIDI)", dout, bout)


if __name__ == "__main__":
    asyncio.run(main())
