"""Core daemon benchmarks: start-up, idle CPU, memory, and durable take-mark latency.

    python bench/bench_core.py                 # full run (idle CPU over 60 s, 3 repeats)
    python bench/bench_core.py --quick         # 10 s idle, fewer marks (a smoke run)

Every figure is the median [min..max] over the repeats. Baselines in the same run:
* start-up: ``python -c "import asyncio, sqlite3"`` (interpreter + the stdlib we cannot avoid);
* mark latency: ``/ping`` -> ``/pong`` through the same daemon (UDP + OSC decode/encode + the
  event loop, no hub, no disk), and a bare Python UDP echo server.
Targets (issue 2): start-up <= 300 ms, idle CPU <= 0.5 % of a core, RSS <= 60 MB.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers.daemon import Daemon, OscClient

from bridge.devices._osc import encode

TICK = os.sysconf("SC_CLK_TCK")


def fmt(values: list[float], unit: str = "", scale: float = 1.0) -> str:
    vals = [v * scale for v in values]
    return f"{statistics.median(vals):.3f}{unit} [{min(vals):.3f}..{max(vals):.3f}]"


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, round(q * (len(data) - 1)))]


def startup(runs: int) -> tuple[list[float], list[float]]:
    ours, base = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs + 2):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "bridge", "run", "--exit-when-ready", "--osc-port", str(29000 + i),
                 "--data-dir", tmp, "--log-level", "warning"],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            dt = time.perf_counter() - t
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import asyncio, sqlite3"], check=True, timeout=30)
            db = time.perf_counter() - t
            if i >= 2:  # warm-up
                ours.append(dt)
                base.append(db)
    return ours, base


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle(seconds: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp, Daemon(Path(tmp)) as d:
        assert d.proc is not None
        time.sleep(2.0)
        c0, t0 = proc_cpu_seconds(d.proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = proc_cpu_seconds(d.proc.pid), time.monotonic()
        return 100.0 * (c1 - c0) / (t1 - t0), rss_mb(d.proc.pid)


def round_trips(client: OscClient, address: str, args: tuple[object, ...], n: int, reply: str) -> list[float]:
    out = []
    data = encode(address, *args)
    for _ in range(n):
        t = time.perf_counter()
        client.send_raw(data)
        while True:
            msg = client.recv()
            if msg[0] == reply:
                break
        out.append(time.perf_counter() - t)
        time.sleep(0.001)
    return out


def echo_baseline(n: int) -> list[float]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                data, addr = server.recvfrom(2048)
            except TimeoutError:
                continue
            server.sendto(data, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = OscClient(server.getsockname()[1])
    try:
        out = []
        data = encode("/ping")
        for _ in range(n):
            t = time.perf_counter()
            client.send_raw(data)
            client.recv()
            out.append(time.perf_counter() - t)
            time.sleep(0.001)
        return out
    finally:
        stop.set()
        thread.join(1)
        client.close()
        server.close()


def marks(n: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp, Daemon(Path(tmp)) as d:
        client = OscClient(d.osc_port)
        try:
            client.command("/song", "Bench")
            round_trips(client, "/ping", (), 100, "/pong")  # warm-up
            ping = round_trips(client, "/ping", (), n, "/pong")
            mark = round_trips(client, "/take/mark", (), n, "/ok")
            return mark, ping
        finally:
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    idle_seconds = 10.0 if args.quick else 60.0
    n_marks = 300 if args.quick else 1000
    load = os.getloadavg()[0]
    print(f"# bench_core  python {sys.version.split()[0]}  load {load:.2f}  cores {os.cpu_count()}")

    ours, base = startup(5 if args.quick else 10)
    print(f"start-up to ready (wall, incl. interpreter): {fmt(ours, ' ms', 1000)}   target <= 300 ms")
    print(f"  baseline python -c 'import asyncio, sqlite3': {fmt(base, ' ms', 1000)}"
          f"   ratio {statistics.median(ours) / statistics.median(base):.2f}")  # fmt: skip

    cpus, rss = [], []
    for _ in range(args.repeats):
        cpu, mem = idle(idle_seconds)
        cpus.append(cpu)
        rss.append(mem)
    print(f"idle CPU over {idle_seconds:.0f} s: {fmt(cpus, ' % of a core')}   target <= 0.5 %")
    print(f"RSS: {fmt(rss, ' MB')}   target <= 60 MB")

    p50s, p99s, b50s, b99s, e50s, e99s = [], [], [], [], [], []
    for _ in range(args.repeats):
        mark, ping = marks(n_marks)
        echo = echo_baseline(n_marks)
        p50s.append(pct(mark, 0.5))
        p99s.append(pct(mark, 0.99))
        b50s.append(pct(ping, 0.5))
        b99s.append(pct(ping, 0.99))
        e50s.append(pct(echo, 0.5))
        e99s.append(pct(echo, 0.99))
    print(f"/take/mark -> /ok (durable, synchronous=FULL), {n_marks} marks:")
    print(f"  p50 {fmt(p50s, ' ms', 1000)}   p99 {fmt(p99s, ' ms', 1000)}")
    print(
        f"  baseline /ping -> /pong same daemon: p50 {fmt(b50s, ' ms', 1000)}   p99 {fmt(b99s, ' ms', 1000)}"
    )
    print(
        f"  baseline bare UDP echo:             p50 {fmt(e50s, ' ms', 1000)}   p99 {fmt(e99s, ' ms', 1000)}"
    )
    print(f"  ratio mark/ping p50 {statistics.median(p50s) / statistics.median(b50s):.1f}"
          f"   p99 {statistics.median(p99s) / statistics.median(b99s):.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
