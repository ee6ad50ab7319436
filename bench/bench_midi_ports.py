"""Real JACK MIDI ports through the MIDI helper processes (jackd2, dummy driver, started here).

    /tmp/venv/bin/python bench/bench_midi_ports.py [--runs 3] [--n 400] [--idle 20] [--period 256]

jackd runs as studios run it (asynchronous mode, no -S, client timeout 2000 ms; see
shared/research/peers.md). Three measurements:

* latency: a sender process stamps SysEx messages with CLOCK_MONOTONIC (shared by all
  processes) every 5 ms; a MidiLink (helper process, pipe, event loop) and, as the baseline
  in the same run, an rtmidi input callback inside this process handing over to the event
  loop (what MidiLink did before the helpers) both listen to the same port. Per message:
  arrival on the event loop minus the stamp. Prints median and p99 per run, and the ratio.
* churn: while the sender streams 1000 messages/s to a listening link, a second link opens
  and closes again and again; time per cycle and how many cycles hung (more than 10 s).
* idle CPU of a whole daemon (with its helper processes) over --idle seconds: a Mackie
  surface (emulated, tests/mcu_emulator_proc.py) connected; the same surface absent (the
  daemon looks for it twice a second); baseline: the daemon with no MIDI device.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import rtmidi  # noqa: E402
from mcu_emulator_proc import McuEmulator  # noqa: E402
from peers.daemon import Daemon  # noqa: E402
from peers.jack import stop_process  # noqa: E402

from bridge.devices.midi.link import MidiLink  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")

SENDER = r"""
import os, sys, time, rtmidi
n, interval, flood = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "flood"
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="BenchSender")
out.open_virtual_port("out")
print("ready", flush=True)
sys.stdin.readline()  # go
try:
    i = 0
    while n <= 0 or i < n:
        if flood:
            out.send_message([0xB0, i % 128, (i // 128) % 128])
        else:
            t = time.monotonic_ns()
            out.send_message([0xF0, 0x7D] + [(t >> (7 * k)) & 0x7F for k in range(10)] + [0xF7])
        i += 1
        time.sleep(interval)
    print("done", flush=True)
    sys.stdin.readline()
finally:
    out.delete()
"""


def start_jackd(period: int) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    name = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    cmd = ["jackd", "-n", name, "--no-realtime", "-t", "2000"]
    cmd += ["-d", "dummy", "-r", "48000", "-p", str(period)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=10).returncode == 0:
            os.environ.update(JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
            return proc, env
        time.sleep(0.1)
    stop_process(proc)
    raise SystemExit("jackd did not start")


def sender(n: int, interval: float, flood: bool, env: dict[str, str]) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", SENDER, str(n), str(interval), "flood" if flood else "stamp"]
    proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stamp(msg: bytes | list[int]) -> int | None:
    if len(msg) != 13 or msg[0] != 0xF0 or msg[1] != 0x7D:
        return None
    return sum(msg[2 + k] << (7 * k) for k in range(10))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def latency_run(n: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    loop = asyncio.get_running_loop()
    proc = sender(n, 0.005, False, env)
    helper_lat: list[float] = []
    direct_lat: list[float] = []
    # baseline: rtmidi callback in this process -> event loop (the design before the helpers)
    direct = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="bench-direct-in")
    direct.ignore_types(sysex=False)

    def on_loop(msg: list[int]) -> None:
        t = stamp(msg)
        if t is not None:
            direct_lat.append((time.monotonic_ns() - t) / 1e3)

    direct.set_callback(lambda ev, _d: loop.call_soon_threadsafe(on_loop, ev[0]))
    ports = direct.get_ports()
    direct.open_port(next(i for i, p in enumerate(ports) if p.startswith("BenchSender:")), "in")
    link = MidiLink("bench-helper", "BenchSender:", None, api="jack")
    await link.open()
    await asyncio.sleep(0.3)
    go(proc)
    try:
        async with asyncio.timeout(30 + n * 0.01):
            async for batch in link.messages():
                now = time.monotonic_ns()
                for msg in batch:
                    t = stamp(msg)
                    if t is not None:
                        helper_lat.append((now - t) / 1e3)
                if len(helper_lat) >= n:
                    break
        await asyncio.sleep(0.2)
    finally:
        await link.aclose()
        direct.cancel_callback()
        direct.close_port()
        direct.delete()
        finish(proc)
    return helper_lat, direct_lat


async def churn_run(cycles: int, env: dict[str, str]) -> tuple[list[float], int, int]:
    proc = sender(0, 0.001, True, env)
    keep = MidiLink("bench-keep", "BenchSender:", None, api="jack")
    await keep.open()
    got = 0

    async def listen() -> None:
        nonlocal got
        async for batch in keep.messages():
            got += len(batch)

    listener = asyncio.ensure_future(listen())
    go(proc)
    times: list[float] = []
    hung = 0
    try:
        for i in range(cycles):
            other = MidiLink(f"bench-cyc{i}", "BenchSender:", None, api="jack")
            t = time.perf_counter()
            try:
                async with asyncio.timeout(10):
                    await other.open()
                    await other.aclose()
            except TimeoutError:
                hung += 1
                other.close()
                continue
            times.append((time.perf_counter() - t) * 1e3)
    finally:
        listener.cancel()
        await keep.aclose()
        finish(proc)
    return times, hung, got


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def family(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    out = [pid]
    for k in kids:
        out += family(int(k))
    return out


def idle_cpu(config: str | None, seconds: float, env: dict[str, str]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp, Daemon(Path(tmp), config, env=env) as d:
        assert d.proc is not None
        time.sleep(3.0)
        pids = family(d.proc.pid)
        c0, t0 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        time.sleep(seconds)
        c1, t1 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        return 100.0 * (c1 - c0) / (t1 - t0), len(pids)


MACKIE = """
[devices.desk]
kind = "mackie"
input = "{inp}"
output = "{out}"
api = "jack"
"""


def fmt(xs: list[float], unit: str) -> str:
    return f"{statistics.median(xs):.1f}{unit} [{min(xs):.1f}..{max(xs):.1f}]"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--period", type=int, default=256)
    args = ap.parse_args()
    jackd, env = start_jackd(args.period)
    try:
        print(f"jackd dummy, {args.period} frames at 48 kHz ({args.period / 48:.2f} ms period), async mode")
        h50, h99, d50, d99, ratio = [], [], [], [], []
        for _ in range(args.runs):
            helper, direct = await latency_run(args.n, env)
            h50.append(statistics.median(helper))
            h99.append(pct(helper, 0.99))
            d50.append(statistics.median(direct))
            d99.append(pct(direct, 0.99))
            ratio.append(h50[-1] / d50[-1])
        print(f"latency sender -> event loop, {args.n} messages x {args.runs} runs:")
        print(f"  through the helper  p50 {fmt(h50, ' us')}  p99 {fmt(h99, ' us')}")
        print(
            f"  rtmidi in-process   p50 {fmt(d50, ' us')}  p99 {fmt(d99, ' us')}   (baseline, same messages)"
        )
        r = statistics.median(ratio)
        print(f"  ratio p50 helper/baseline {r:.3f} [{min(ratio):.3f}..{max(ratio):.3f}]")
        times, hung, got = await churn_run(args.cycles, env)
        print(
            f"open+close of a second link while 1000 msg/s stream: {fmt(times, ' ms')} per cycle, "
            f"{hung} of {args.cycles} hung; the listening link got {got} messages"
        )
        emu = McuEmulator(f"BenchDesk{os.getpid()}", env)
        try:
            present = MACKIE.format(inp=emu.in_pattern, out=emu.out_pattern)
            absent = MACKIE.format(inp="NoSuchDesk:out", out="NoSuchDesk-fb:in")
            for label, cfg in (
                ("no MIDI device (baseline)", None),
                ("Mackie surface connected", present),
                ("Mackie surface absent", absent),
            ):
                cpus = []
                procs = 0
                for _ in range(args.runs):
                    cpu, procs = idle_cpu(cfg, args.idle, env)
                    cpus.append(cpu)
                what = f"idle CPU over {args.idle:.0f} s, {label}"
                print(f"{what}: {fmt(cpus, ' %')} of a core ({procs} processes)")
        finally:
            emu.stop()
    finally:
        stop_process(jackd)


if __name__ == "__main__":
    asyncio.run(main())
