"""Benchmark the session log against an inline sqlite3 baseline (WAL, synchronous=FULL, on the loop).

    /tmp/venv/bin/python bench/bench_sessionlog.py [--runs 3] [--burst 10000] [--paced 1000]

Per run, in a fresh temporary directory:
  * enqueue: time spent on the loop in ``SessionLog.append`` (per call, burst of ``--burst``);
    baseline: one inline INSERT + COMMIT on the loop thread.
  * durable (paced): ``--paced`` single appends 1 ms apart, append -> future resolved on the loop;
    baseline: the inline INSERT + COMMIT time (durable when it returns).
  * burst: records/s for ``--burst`` appends issued at once until the last future resolves;
    baseline: inline commit per record.
  * loop stall: max and p99 gap of a 1 ms asyncio ticker while the burst is written (minus 1 ms);
    baseline: the inline writer yields to the loop between records.
Prints median [min..max] over the runs and the gain (baseline / SessionLog for times, SessionLog /
baseline for throughput: above 1 means the SessionLog is better).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bridge.log.kinds import RecordKind
from bridge.log.records import Record
from bridge.log.writer import SessionLog

DATA = {"flags": ["circled"], "device": "reaper", "detail": "x" * 40}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Ticker:
    """A 1 ms asyncio ticker recording how late each tick is."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.gaps.append(max(0.0, now - last - 0.001))
            last = now

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def idle_noise() -> float:
    """p99 lateness of the 1 ms ticker with nothing else running: this machine's floor."""
    with Ticker() as ticker:
        await asyncio.sleep(0.3)
    return pct(ticker.gaps, 0.99) * 1e6


async def bench_sessionlog(tmp: Path, burst: int, paced: int) -> dict[str, float]:
    out: dict[str, float] = {"idle_p99_us": await idle_noise()}
    slog = SessionLog(tmp / "bench.db")
    await slog.open("bench")

    # Paced single appends: append -> durable.
    lat: list[float] = []
    for i in range(paced):
        t0 = time.perf_counter()
        fut = slog.append(
            RecordKind.TAKE_MARKER, song="Blue", take=i, daw_seconds=i * 0.5, source="bench", data=DATA
        )
        fut.add_done_callback(lambda _f, t0=t0: lat.append(time.perf_counter() - t0))
        await asyncio.sleep(0.001)
    await fut
    out["durable_p50_us"] = pct(lat, 0.5) * 1e6
    out["durable_p99_us"] = pct(lat, 0.99) * 1e6

    # Burst: enqueue cost per call, throughput, loop stall.
    enqueue: list[float] = []
    futures: list[asyncio.Future[Record]] = []
    with Ticker() as ticker:
        await asyncio.sleep(0.005)
        start = time.perf_counter()
        for i in range(burst):
            t0 = time.perf_counter_ns()
            futures.append(slog.append(RecordKind.NOTE, song="Blue", take=i, text="burst note", data=DATA))
            enqueue.append((time.perf_counter_ns() - t0) / 1000)
            if i % 100 == 99:
                await asyncio.sleep(0)  # a real loop interleaves other work between appends
        await futures[-1]  # futures resolve in seq order
        elapsed = time.perf_counter() - start
        assert all(f.done() and not f.exception() for f in futures)
        await asyncio.sleep(0.005)
    out["enqueue_p50_us"] = pct(enqueue, 0.5)
    out["enqueue_p99_us"] = pct(enqueue, 0.99)
    out["burst_per_s"] = burst / elapsed
    out["stall_max_us"] = max(ticker.gaps) * 1e6
    out["stall_p99_us"] = pct(ticker.gaps, 0.99) * 1e6
    await slog.close()
    return out


async def bench_inline(tmp: Path, burst: int, paced: int) -> dict[str, float]:
    import json

    conn = sqlite3.connect(tmp / "inline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, ts TEXT, kind TEXT, song TEXT, take INTEGER, "
        "daw_seconds REAL, source TEXT, text TEXT, data TEXT)"
    )
    insert = "INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?)"
    seq = 0

    def write(kind: str, take: int, text: str) -> None:
        nonlocal seq
        seq += 1
        ts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        conn.execute("BEGIN")
        conn.execute(insert, (seq, ts, kind, "Blue", take, take * 0.5, "bench", text, json.dumps(DATA)))
        conn.execute("COMMIT")

    out: dict[str, float] = {"idle_p99_us": await idle_noise()}
    lat: list[float] = []
    for i in range(paced):
        t0 = time.perf_counter()
        write("take_marker", i, "")
        lat.append(time.perf_counter() - t0)
        await asyncio.sleep(0.001)
    out["durable_p50_us"] = pct(lat, 0.5) * 1e6
    out["durable_p99_us"] = pct(lat, 0.99) * 1e6

    enqueue: list[float] = []
    with Ticker() as ticker:
        await asyncio.sleep(0.005)
        start = time.perf_counter()
        for i in range(burst):
            t0 = time.perf_counter_ns()
            write("note", i, "burst note")
            enqueue.append((time.perf_counter_ns() - t0) / 1000)
            await asyncio.sleep(0)  # yield after every record so the ticker can run
        elapsed = time.perf_counter() - start
        await asyncio.sleep(0.005)
    out["enqueue_p50_us"] = pct(enqueue, 0.5)
    out["enqueue_p99_us"] = pct(enqueue, 0.99)
    out["burst_per_s"] = burst / elapsed
    out["stall_max_us"] = max(ticker.gaps) * 1e6
    out["stall_p99_us"] = pct(ticker.gaps, 0.99) * 1e6
    conn.close()
    return out


def summarize(values: list[float]) -> str:
    return f"{statistics.median(values):>10.1f} [{min(values):.1f}..{max(values):.1f}]"


LABELS = {
    "enqueue_p50_us": "append on loop p50 (µs)",
    "enqueue_p99_us": "append on loop p99 (µs)",
    "durable_p50_us": "append->durable p50, paced (µs)",
    "durable_p99_us": "append->durable p99, paced (µs)",
    "burst_per_s": "burst throughput (records/s)",
    "stall_max_us": "loop stall max during burst (µs)",
    "stall_p99_us": "loop stall p99 during burst (µs)",
    "idle_p99_us": "ticker lateness p99, idle (µs)",
}


async def run(
    kind: Callable[[Path, int, int], Awaitable[dict[str, float]]], burst: int, paced: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-sessionlog-") as tmp:
        return await kind(Path(tmp), burst, paced)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burst", type=int, default=10000)
    parser.add_argument("--paced", type=int, default=1000)
    args = parser.parse_args()
    ours: dict[str, list[float]] = {k: [] for k in LABELS}
    base: dict[str, list[float]] = {k: [] for k in LABELS}
    for i in range(args.runs):
        for name, fn, into in (("sessionlog", bench_sessionlog, ours), ("inline", bench_inline, base)):
            result = asyncio.run(run(fn, args.burst, args.paced))
            for key, value in result.items():
                into[key].append(value)
            print(
                f"run {i + 1}/{args.runs} {name}: " + ", ".join(f"{k}={v:.1f}" for k, v in result.items()),
                file=sys.stderr,
            )
    print(f"session log bench: {args.runs} runs, burst {args.burst}, paced {args.paced} x 1 ms")
    print("median [min..max]; gain > 1 means the SessionLog is better")
    print(f"{'metric':34} {'SessionLog':>28} {'inline sqlite3 FULL (baseline)':>32} {'gain':>14}")
    for key, label in LABELS.items():
        ratio = statistics.median(base[key]) / statistics.median(ours[key])
        if key == "burst_per_s":
            ratio = 1 / ratio
        print(f"{label:34} {summarize(ours[key]):>28} {summarize(base[key]):>32} {ratio:>13.2f}x")
    print("enqueue target: p99 <= 20 µs on the loop (T7); durable target: p99 <= 2 ms here (T8).")


if __name__ == "__main__":
    main()
