"""The MIDI path end to end, against the floor of the same JACK server (issue: MIDI path speed).

    .venv/bin/python bench/bench_midi_e2e.py [--runs 3] [--seconds 3] [--rates 100,1000] [--period 128]

One jackd (dummy driver, asynchronous mode as studios run it, 48 kHz, --period frames: 128 is
a 2.67 ms period), started here. Per repeat and rate, interleaved:

* **floor**: a sender process (rtmidi, a virtual JACK output) plays nanoKONTROL2 button presses
  and releases (CC 32-39 solo, 48-55 mute, 64-71 rec; value 127 then 0) to a receiver process
  (rtmidi input callback) through the same jackd, no bridge: press sent -> press received.
* **bridge**, with each MIDI helper (``--helpers native,python``): the daemon from its console
  script (``studio-bridge run``) with the shipped
  ``korg_nanokontrol2`` profile and a mapping that toggles arm / mute / solo of tracks 1-8 on
  the internal transport; a listener in this process receives the OSC feedback
  (``/track/<n>/arm|mute|solo i 0|1``, one per press): press sent -> feedback datagram
  received. Both ends stamp CLOCK_MONOTONIC (shared by all processes).

Prints, per variant and rate, median [min..max] over the repeats of each repeat's p50 and p99,
the added latency (bridge - floor) and the ratio; the CPU of the daemon and its MIDI helper
during the bridge runs (percent of one core, from /proc); presses sent vs feedback received
(any loss is a bug: discrete messages must never be dropped); and the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from peers.jack import stop_process  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_midi_ports import cpu_seconds, family  # noqa: E402

KINDS = [("solo", 32), ("mute", 48), ("rec", 64)]
BUTTONS = [(kind, base + s) for kind, base in KINDS for s in range(8)]  # 24 buttons

# Plays presses and releases at a fixed rate; prints the send stamp of every press.
SENDER = r"""
import sys, time, rtmidi
rate, seconds, dest = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ccs = [int(x) for x in sys.argv[4].split(",")]
out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="E2ESender")
out.open_virtual_port("out")
print("ready", flush=True)
sys.stdin.readline()
interval = 1.0 / rate
n = int(rate * seconds)
stamps = []
t_next = time.monotonic()
for i in range(n):
    press, k = i % 2 == 0, (i // 2) % len(ccs)
    now = time.monotonic()
    if t_next > now:
        time.sleep(t_next - now)
    t = time.monotonic_ns()
    out.send_message([0xB0, ccs[k], 127 if press else 0])
    if press:
        stamps.append(t)
    t_next += interval
time.sleep(0.5)
print("stamps " + " ".join(map(str, stamps)), flush=True)
sys.stdin.readline()
out.delete()
"""

# The floor's receiver: an rtmidi input callback stamps every press.
RECEIVER = r"""
import sys, time, rtmidi
inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="E2EReceiver")
got = []
def cb(ev, data):
    t = time.monotonic_ns()
    msg = ev[0]
    if len(msg) == 3 and msg[0] == 0xB0 and msg[2] == 127:
        got.append(t)
inp.set_callback(cb)
inp.open_virtual_port("in")
print("ready", flush=True)
sys.stdin.readline()
print("got " + " ".join(map(str, got)), flush=True)
inp.delete()
"""

MAPPING_ROW = """
[[binding]]
control = "strip{n}.{kind}"
command = "track.{cmd}"
track = {n}
glue = "toggle"
"""

CONFIG = """
[bridge]
log_level = "warning"

[osc]
bind = "127.0.0.1"
clients = ["127.0.0.1:{listen}"]
position_rate = 1

[internal]
tracks = 8

[devices.nano]
kind = "generic_midi"
profile = "korg_nanokontrol2"
mapping = "{mapping}"
input = "E2ESender"
output = ""
api = "jack"
"""


def start_jackd(period: int) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    name = f"e2e-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    cmd = ["jackd", "-n", name, "--no-realtime", "-t", "2000"]
    cmd += ["-d", "dummy", "-r", "48000", "-p", str(period)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=10).returncode == 0:
            return proc, env
        time.sleep(0.1)
    stop_process(proc)
    raise SystemExit("jackd did not start")


def spawn(code: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise SystemExit(f"peer did not start: {line!r}")
    return proc


def tell(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


def read_ints(proc: subprocess.Popen[str], tag: str) -> list[int]:
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != tag:
        raise SystemExit(f"peer said {line[:3]!r}, expected {tag!r}")
    return [int(x) for x in line[1:]]


def end(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        tell(proc)
    with contextlib.suppress(OSError, ValueError):
        assert proc.stdin is not None
        proc.stdin.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def connect(env: dict[str, str], src: str, dst: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if subprocess.run(["jack_connect", src, dst], env=env, capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    raise SystemExit(f"jack_connect {src} {dst} failed")


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def floor_run(env: dict[str, str], rate: float, seconds: float) -> tuple[list[float], int, int]:
    ccs = ",".join(str(cc) for _, cc in BUTTONS)
    rx = spawn(RECEIVER, [], env)
    tx = spawn(SENDER, [str(rate), str(seconds), "", ccs], env)
    try:
        connect(env, "E2ESender:out", "E2EReceiver:in")
        time.sleep(0.3)
        tell(tx)
        sent = read_ints(tx, "stamps")
        tell(rx)
        got = read_ints(rx, "got")
    finally:
        end(tx)
        end(rx)
    lat = [(g - s) / 1000.0 for s, g in zip(sent, got, strict=False)]
    return lat, len(sent), len(got)


def studio_bridge() -> list[str]:
    exe = Path(sys.executable).with_name("studio-bridge")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("studio-bridge")
    return [found] if found else [sys.executable, "-m", "bridge"]


def bridge_run(
    env: dict[str, str], rate: float, seconds: float, helper: str
) -> tuple[list[float], int, int, float]:
    env = dict(env, STUDIO_BRIDGE_MIDI_HELPER=helper)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    arrivals: dict[str, list[int]] = {}
    stop = threading.Event()
    t_go = [1 << 62]  # feedback before the presses start (the state dump at connect) is not counted

    def listen() -> None:
        while not stop.is_set():
            try:
                data, _ = listener.recvfrom(2048)
            except TimeoutError:
                continue
            t = time.monotonic_ns()
            addr = data[: data.index(b"\0")].decode()
            if addr.startswith("/track/") and t >= t_go[0]:
                arrivals.setdefault(addr, []).append(t)

    with tempfile.TemporaryDirectory() as tmp:
        mapping = Path(tmp) / "map.toml"
        cmd = {"rec": "arm", "mute": "mute", "solo": "solo"}
        mapping.write_text(
            "".join(
                MAPPING_ROW.format(n=n, kind=kind, cmd=cmd[kind]) for kind, _ in KINDS for n in range(1, 9)
            )
        )
        cfg = Path(tmp) / "studio.toml"
        cfg.write_text(CONFIG.format(listen=port, mapping=mapping))
        ccs = ",".join(str(cc) for _, cc in BUTTONS)
        tx = spawn(SENDER, [str(rate), str(seconds), "", ccs], env)
        osc_port = free_udp_port()
        args = [*studio_bridge(), "run", "-c", str(cfg), "--osc-port", str(osc_port)]
        args += ["--data-dir", str(Path(tmp) / "data"), "--new-session"]
        daemon = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        thread = threading.Thread(target=listen, daemon=True)
        try:
            wait_connected(env)
            thread.start()
            time.sleep(0.5)
            pids = family(daemon.pid)
            c0 = sum(cpu_seconds(p) for p in pids)
            t0 = time.monotonic()
            t_go[0] = time.monotonic_ns()
            tell(tx)
            sent = read_ints(tx, "stamps")
            t1 = time.monotonic()
            c1 = sum(cpu_seconds(p) for p in pids)
            time.sleep(0.3)
        finally:
            stop.set()
            end(tx)
            daemon.terminate()
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(5)
            if thread.is_alive():
                thread.join(2)
            listener.close()
    # The j-th press of button k is answered by the j-th feedback on its address.
    lat: list[float] = []
    got = 0
    names = {"rec": "arm", "mute": "mute", "solo": "solo"}
    per_button: dict[int, int] = {}
    for i, t_sent in enumerate(sent):
        kind, cc = BUTTONS[i % len(BUTTONS)]
        n = cc - dict(KINDS)[kind] + 1
        j = per_button.get(i % len(BUTTONS), 0)
        per_button[i % len(BUTTONS)] = j + 1
        seen = arrivals.get(f"/track/{n}/{names[kind]}", [])
        if j < len(seen):
            got += 1
            lat.append((seen[j] - t_sent) / 1000.0)
    cpu = 100.0 * (c1 - c0) / (t1 - t0)
    return lat, len(sent), got, cpu


def wait_connected(env: dict[str, str]) -> None:
    """Until the daemon's MIDI helper has connected to the sender's port."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = subprocess.run(["jack_lsp", "-c", "E2ESender:out"], env=env, capture_output=True, text=True)
        if r.returncode == 0 and len(r.stdout.strip().splitlines()) > 1:
            return
        time.sleep(0.1)
    raise SystemExit("the daemon did not connect to the sender's port")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fmt(xs: list[float], unit: str = " us") -> str:
    return f"{statistics.median(xs):.0f}{unit} [{min(xs):.0f}..{max(xs):.0f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rates", default="100,1000")
    ap.add_argument("--period", type=int, default=128)
    ap.add_argument(
        "--helpers",
        default="native,python",
        help="MIDI helpers to run the bridge with: native (bridge/devices/midi/jackmidi), python",
    )
    a = ap.parse_args()
    helpers = a.helpers.split(",")
    rates = [float(r) for r in a.rates.split(",")]
    jackd, env = start_jackd(a.period)
    res: dict[tuple[str, float], dict[str, list[float]]] = {}
    try:
        for _ in range(a.runs):
            for rate in rates:
                lat, sent, got = floor_run(env, rate, a.seconds)
                r = res.setdefault(("floor", rate), {"p50": [], "p99": [], "lost": [], "cpu": []})
                r["p50"].append(pct(lat, 0.5))
                r["p99"].append(pct(lat, 0.99))
                r["lost"].append(sent - got)
                for helper in helpers:
                    lat, sent, got, cpu = bridge_run(env, rate, a.seconds, helper)
                    r = res.setdefault((helper, rate), {"p50": [], "p99": [], "lost": [], "cpu": []})
                    r["p50"].append(pct(lat, 0.5) if lat else float("nan"))
                    r["p99"].append(pct(lat, 0.99) if lat else float("nan"))
                    r["lost"].append(sent - got)
                    r["cpu"].append(cpu)
    finally:
        stop_process(jackd)
    load = os.getloadavg()
    ms = a.period / 48
    print(f"jackd dummy 48 kHz, period {a.period} ({ms:.2f} ms), {a.runs} repeats x {a.seconds:.0f} s")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")
    for rate in rates:
        fl = res[("floor", rate)]
        print(f"\n{rate:.0f} msg/s (presses and releases; one feedback per press)")
        lost = fmt(fl["lost"], "")
        print(f"  floor (JACK loopback)     p50 {fmt(fl['p50'])}   p99 {fmt(fl['p99'])}   lost {lost}")
        for helper in helpers:
            br = res[(helper, rate)]
            print(f"  bridge, {helper} helper")
            lost = fmt(br["lost"], "")
            print(f"    MIDI -> OSC feedback    p50 {fmt(br['p50'])}   p99 {fmt(br['p99'])}   lost {lost}")
            add50 = [b - f for b, f in zip(br["p50"], fl["p50"], strict=True)]
            add99 = [b - f for b, f in zip(br["p99"], fl["p99"], strict=True)]
            rt = statistics.median([b / f for b, f in zip(br["p50"], fl["p50"], strict=True)])
            print(f"    added over the floor    p50 {fmt(add50)}   p99 {fmt(add99)}   ratio p50 {rt:.2f}x")
            cpu = br["cpu"]
            c = f"{statistics.median(cpu):.1f} % [{min(cpu):.1f}..{max(cpu):.1f}]"
            print(f"    CPU daemon + helper     {c} of one core")


if __name__ == "__main__":
    main()
