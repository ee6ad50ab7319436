"""Web console benchmarks (issue 11): the real daemon, Debian's Chromium through Playwright.

    python bench/bench_console.py            # full run
    python bench/bench_console.py --quick    # fewer repeats (a smoke run)

Figures: median [min..max] or p50 / p99 over the samples, each with a baseline from the same run.
* action -> confirmed in the page: ``take.circle`` toggles sent through the page's own action path,
  until the page shows "done" (durable in the session log); baseline: the ``ping`` verb (the same
  WebSocket round trip, no hub, no log);
* a change -> shown in 10 open consoles: ``/take/circle`` over OSC, until each of 10 pages has
  rendered the new take sheet (wall clock in the page vs. the send); baseline: OSC ``/ping``;
* memory per open console: daemon RSS with 0 and with N WebSocket consoles (Python clients) and
  with 10 Chromium pages;
* start-up to ready with the console on (target <= 300 ms), with it off, and to the console
  listening; baseline ``python -c "import asyncio, sqlite3"``;
* page load to live list: navigation start -> the first snapshot rendered, on a 100-take session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers.daemon import Daemon, OscClient, free_tcp_port, free_udp_port

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def fmt(values: list[float], unit: str = " ms") -> str:
    return f"{statistics.median(values):.2f}{unit} [{min(values):.2f}..{max(values):.2f}]"


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, round(q * (len(data) - 1)))]


def p50_p99(values: list[float]) -> str:
    return f"p50 {pct(values, 0.5):.2f} ms, p99 {pct(values, 0.99):.2f} ms (n={len(values)})"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_console(d: Daemon) -> None:
    d.wait_for_log("web console on http", timeout=20)


# ------------------------------------------------------------------ start-up


def startup(runs: int) -> None:
    on, off, listening, base = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        off_cfg = Path(tmp) / "off.toml"
        off_cfg.write_text("[web]\nenabled = false\n")
        for i in range(runs + 2):
            for config, bucket in ((None, on), (off_cfg, off)):
                web_port = free_tcp_port()
                args = [sys.executable, "-m", "bridge", "run", "--osc-port", str(free_udp_port()),
                        "--web-port", str(web_port), "--data-dir", str(Path(tmp) / f"d{i}")]  # fmt: skip
                if config is not None:
                    args += ["-c", str(config)]
                t = time.perf_counter()
                proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
                assert proc.stderr is not None
                for line in proc.stderr:
                    if "bridge.app: ready in" in line:
                        break
                ready = time.perf_counter() - t
                if config is None:
                    while True:  # the console is up once it answers (a bench may poll)
                        try:
                            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=2):
                                break
                        except OSError:
                            time.sleep(0.002)
                    up = time.perf_counter() - t
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=10)
                if i >= 2:
                    bucket.append(ready * 1000)
                    if config is None:
                        listening.append(up * 1000)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import asyncio, sqlite3"], check=True, timeout=30)
            if i >= 2:
                base.append((time.perf_counter() - t) * 1000)
    print(f"start-up to ready, console on : {fmt(on)}   target <= 300 ms")
    print(f"start-up to ready, console off: {fmt(off)}")
    print(f"start-up to console answering : {fmt(listening)}")
    print(f"baseline python -c 'import asyncio, sqlite3': {fmt(base)}")


# ------------------------------------------------------------------ pages


def session_with_takes(osc: OscClient, n: int) -> None:
    osc.command("/song", "Bench")
    for _ in range(n):
        assert osc.command("/take/mark")[0] == "/ok"


def actions(browser: Any, d: Daemon, n: int) -> None:
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{d.web_port}/")
    page.wait_for_selector("body[data-live='1']")
    page.wait_for_function("window.console_state.sheet.takes.length > 0")
    run = """async ([verb, n]) => {
        const S = window.console_state, out = [];
        for (let i = 0; i < n; i++) {
            const args = verb === 'take.circle' ? {take: 1, song: 'Bench', on: i % 2 === 0} : {};
            const t = performance.now();
            const error = await new Promise(res => {
                S.onreply = (p, err) => res(err); window.console_act(verb, args, null, verb); });
            if (error) throw new Error(error);
            out.push(performance.now() - t);
        }
        return out; }"""
    ping = page.evaluate(run, ["ping", n])
    circle = page.evaluate(run, ["take.circle", n])
    print(f"action -> confirmed in the page (take.circle, durable): {p50_p99(circle)}")
    print(f"  baseline: ping verb (WebSocket round trip, no hub/log): {p50_p99(ping)}")
    page.close()


def fan_out(browser: Any, d: Daemon, osc: OscClient, pages: int, n: int) -> float:
    ctxs = [browser.new_context() for _ in range(pages)]
    ps = [c.new_page() for c in ctxs]
    for p in ps:
        p.goto(f"http://127.0.0.1:{d.web_port}/")
        p.wait_for_selector("body[data-live='1']")
    rss_pages = rss_mb(d.proc.pid)  # type: ignore[union-attr]
    for p in ps:
        p.evaluate("window.console_state.renders.length = 0")
    sent: list[float] = []
    pings: list[float] = []
    for i in range(n):
        # one change at a time, spaced, and no polling of the pages while they work
        t = time.time() * 1000
        assert osc.command("/take/circle", 1, i % 2) == ("/ok", ["/take/circle"])
        sent.append(t)
        time.sleep(0.1)
        t = time.perf_counter()
        osc.command("/ping")
        pings.append((time.perf_counter() - t) * 1000)
    time.sleep(0.5)
    lat: list[float] = []
    for p in ps:
        # each change is one new record: the i-th new last_seq a page rendered is change i
        first: dict[int, float] = {}
        for at, seq in p.evaluate("window.console_state.renders"):
            first.setdefault(seq, at)
        seqs = sorted(first)
        assert len(seqs) == len(sent), (len(seqs), len(sent))
        lat += [first[seq] - t for seq, t in zip(seqs, sent, strict=True)]
    print(f"a change (OSC /take/circle) -> shown in {pages} consoles: {p50_p99(lat)}   target p99 <= 50 ms")
    print(f"  baseline: OSC /ping round trip: {p50_p99(pings)}")
    for c in ctxs:
        c.close()
    return rss_pages


async def _ws_consoles(port: int, n: int, pid: int) -> tuple[float, float]:
    import aiohttp

    before = rss_mb(pid)
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(f"http://127.0.0.1:{port}/ws") for _ in range(n)]
        for ws in sockets:
            while json.loads((await ws.receive()).data)["t"] != "snapshot":
                pass
        await asyncio.sleep(0.5)
        after = rss_mb(pid)
        for ws in sockets:
            await ws.close()
    return before, after


async def _ws_fan_out(port: int, osc_port: int, clients: int, n: int) -> list[float]:
    """The daemon's side alone: OSC change -> the message in each of N WebSocket clients."""
    import aiohttp

    osc = OscClient(osc_port)
    lat: list[float] = []
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(f"http://127.0.0.1:{port}/ws") for _ in range(clients)]
        for ws in sockets:
            while json.loads((await ws.receive()).data)["t"] != "snapshot":
                pass
        loop = asyncio.get_running_loop()
        for i in range(n):
            t = time.perf_counter()
            await loop.run_in_executor(None, osc.command, "/take/circle", 1, i % 2)
            for ws in sockets:
                while json.loads((await ws.receive()).data)["t"] != "delta":
                    pass
                lat.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(0.02)
        for ws in sockets:
            await ws.close()
    osc.close()
    return lat


def ws_fan_out(d: Daemon, clients: int, n: int) -> None:
    result: list[list[float]] = []
    thread = threading.Thread(
        target=lambda: result.append(asyncio.run(_ws_fan_out(d.web_port, d.osc_port, clients, n)))
    )
    thread.start()
    thread.join(300)
    print(f"  the daemon's side: the same change -> received by {clients} WebSocket clients: "
          f"{p50_p99(result[0])}")  # fmt: skip


def memory(d: Daemon, n: int, rss_pages: float, base: float) -> None:
    result: list[tuple[float, float]] = []
    pid = d.proc.pid  # type: ignore[union-attr]
    thread = threading.Thread(target=lambda: result.append(asyncio.run(_ws_consoles(d.web_port, n, pid))))
    thread.start()
    thread.join(120)
    before, after = result[0]
    print(f"memory: daemon RSS {before:.1f} MB idle; +{n} WebSocket consoles: {after:.1f} MB "
          f"-> {(after - before) * 1024 / n:.0f} kB per console")  # fmt: skip
    print(f"memory: daemon RSS with 10 Chromium pages open: {rss_pages:.1f} MB (idle before: {base:.1f} MB)")


def page_load(browser: Any, d: Daemon, runs: int) -> None:
    times = []
    for _ in range(runs):
        ctx = browser.new_context()
        p = ctx.new_page()
        p.goto(f"http://127.0.0.1:{d.web_port}/")
        p.wait_for_function("window.console_state.liveAt !== null")
        times.append(p.evaluate("window.console_state.liveAt"))
        ctx.close()
    print(f"page load -> live take list (100 takes): {fmt(times)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-startup", action="store_true")
    args = parser.parse_args()
    n = 30 if args.quick else 200
    if not args.skip_startup:
        startup(3 if args.quick else 10)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, Daemon(Path(tmp)) as d:
        wait_console(d)
        osc = OscClient(d.osc_port)
        session_with_takes(osc, 100)
        time.sleep(0.5)
        base = rss_mb(d.proc.pid)  # type: ignore[union-attr]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page_load(browser, d, 5 if args.quick else 15)
            actions(browser, d, n)
            rss_pages = fan_out(browser, d, osc, 10, 20 if args.quick else 100)
            browser.close()
        ws_fan_out(d, 10, 30 if args.quick else 200)
        memory(d, 50, rss_pages, base)
    print(f"(machine: {os.cpu_count()} cores, shared; loopback)")


if __name__ == "__main__":
    main()
