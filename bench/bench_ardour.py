"""Latency of a transport command through the bridge to a real Ardour, against talking to Ardour directly.

    /tmp/venv/bin/python bench/bench_ardour.py [--cycles 200] [--repeats 3]

Starts a headless Ardour 7 (tests/peers/ardour.py). Each repeat measures, in the same run:

* direct (baseline): a plain UDP socket registered with ``/set_surface`` sends
  ``/transport_play`` and waits for Ardour's ``/transport_play 1`` feedback, then
  ``/transport_stop`` / ``/transport_stop 1``;
* bridge: ``python -m bridge run`` with an ``ardour`` device; a plain UDP socket sends
  ``/transport/play`` and ``/transport/stop`` to the bridge's OSC API and waits for ``/ok``,
  which the bridge sends only after Ardour's feedback confirmed the command.

The two phases run one after the other (not interleaved): Ardour sends every reply for a host
to the port the last ``/set_surface`` named, so two surfaces on 127.0.0.1 cannot share it.
Prints p50/p99 per repeat, then the median [min..max] over the repeats and bridge - direct.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from peers.ardour import ArdourPeer, free_udp_port, have_ardour  # noqa: E402

from bridge.devices._osc import decode, encode  # noqa: E402


class Client:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def send(self, address: str, *args: Any) -> None:
        self.sock.sendto(encode(address, *args), self.target)

    def wait(self, address: str, args: list[Any] | None, timeout: float = 5.0) -> float:
        deadline = time.perf_counter() + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"no {address} {args}")
            self.sock.settimeout(left)
            data, _ = self.sock.recvfrom(65536)
            now = time.perf_counter()
            for a, v in decode(data):
                if a == address and (args is None or v == args):
                    return now

    def close(self) -> None:
        self.sock.close()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def direct(port: int, cycles: int) -> list[float]:
    c = Client(("127.0.0.1", port))
    try:
        c.send("/set_surface", 0, 3, 16, 0, 0, 0, c.port)
        c.wait("/transport_stop", None)
        time.sleep(0.3)
        rtts = []
        for _ in range(cycles):
            for cmd in ("/transport_play", "/transport_stop"):
                t0 = time.perf_counter()
                c.send(cmd)
                rtts.append(c.wait(cmd, [1.0]) - t0)
        c.send("/transport_stop")
        c.send("/set_surface", 0, 0, 0)
        return rtts
    finally:
        c.close()


def through_bridge(ardour_port: int, cycles: int, tmp: Path) -> list[float]:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "bench.toml"
    cfg.write_text(f'[devices.ardour]\nkind = "ardour"\nrole = "daw"\nport = {ardour_port}\n')
    api = free_udp_port()
    cmd = [sys.executable, "-m", "bridge", "run", "-c", str(cfg), "--osc-port", str(api)]
    cmd += ["--data-dir", str(tmp / "data"), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    c = Client(("127.0.0.1", api))
    try:
        deadline = time.monotonic() + 30
        while True:  # until the bridge answers and Ardour is connected (a command gets /ok)
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("bridge did not come up")
            c.send("/transport/stop")
            try:
                c.wait("/ok", ["/transport/stop"], timeout=0.5)
                break
            except (TimeoutError, OSError):
                time.sleep(0.2)
        time.sleep(0.3)
        rtts = []
        for _ in range(cycles):
            for address in ("/transport/play", "/transport/stop"):
                t0 = time.perf_counter()
                c.send(address)
                rtts.append(c.wait("/ok", [address]) - t0)
        return rtts
    finally:
        c.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=200, help="play/stop cycles per phase")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if not have_ardour():
        print("Ardour 7 (luasession) is not installed: apt-get install ardour")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-ardour-") as td:
        tmp = Path(td)
        peer = ArdourPeer(tmp / "ardour")
        peer.root.mkdir()
        peer.create()
        peer.start()
        rows = []
        try:
            for r in range(a.repeats):
                d = direct(peer.port, a.cycles)
                b = through_bridge(peer.port, a.cycles, tmp / f"run{r}")
                row = {
                    "direct_p50": pct(d, 0.5),
                    "direct_p99": pct(d, 0.99),
                    "bridge_p50": pct(b, 0.5),
                    "bridge_p99": pct(b, 0.99),
                }
                rows.append(row)
                print(
                    f"repeat {r + 1}: direct p50 {row['direct_p50'] * 1e3:.2f} ms"
                    f" p99 {row['direct_p99'] * 1e3:.2f} ms"
                    f" | bridge p50 {row['bridge_p50'] * 1e3:.2f} ms p99 {row['bridge_p99'] * 1e3:.2f} ms"
                    f" ({len(d)} + {len(b)} commands)",
                    flush=True,
                )
        finally:
            peer.stop()
            peer.kill()

    def summary(key: str) -> str:
        v = [row[key] * 1e3 for row in rows]
        return f"{statistics.median(v):.2f} ms [{min(v):.2f}..{max(v):.2f}]"

    print(
        f"\nAll {a.repeats} repeats, {2 * a.cycles} commands each (median [min..max] of per-repeat values):"
    )
    for key in ("direct_p50", "direct_p99", "bridge_p50", "bridge_p99"):
        print(f"  {key:11s} {summary(key)}")
    for q in ("p50", "p99"):
        diff = [(row[f"bridge_{q}"] - row[f"direct_{q}"]) * 1e3 for row in rows]
        ratio = [row[f"bridge_{q}"] / row[f"direct_{q}"] for row in rows]
        print(
            f"  bridge - direct {q}: {statistics.median(diff):+.2f} ms [{min(diff):+.2f}..{max(diff):+.2f}],"
            f" ratio {statistics.median(ratio):.2f} [{min(ratio):.2f}..{max(ratio):.2f}]"
        )
    print(f"  (cpu count {os.cpu_count()}; target: bridge adds <= 1 ms at p99)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
