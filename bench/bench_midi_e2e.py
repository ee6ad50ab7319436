"""The MIDI path end to end, against the floor of the same JACK server (issue: MIDI path speed).

    .venv/bin/python bench/bench_midi_e2e.py [--runs 3] [--seconds 3] [--rates 100,1000]
        [--period 128] [--helpers native,python] [--load]

One jackd (dummy driver, asynchronous mode as studios run it, 48 kHz, --period frames: 128 is
a 2.67 ms period), started here. A sender process (rtmidi, a virtual JACK output) plays
nanoKONTROL2 button presses and releases (CC 32-39 solo, 48-55 mute, 64-71 rec; value 127
then 0). Per repeat and rate, interleaved:

* **floor alone**: sender -> a receiver process (rtmidi input callback) through the same jackd,
  no bridge: press sent -> press received.
* **bridge**, with each MIDI helper: the daemon from its console script (``studio-bridge run``)
  with the shipped ``korg_nanokontrol2`` profile and a mapping that toggles arm / mute / solo of
  tracks 1-8 on the internal transport; a listener in this process receives the OSC feedback
  (``/track/<n>/arm|mute|solo i 0|1``, one per press): press sent -> feedback datagram received.
  The floor's receiver is connected to the same sender port in the same run, so every press has
  its own floor arrival: **added latency = bridge arrival - floor arrival of the same press**
  (free of the JACK period's phase, which makes separate runs differ by up to a period).
  All processes stamp CLOCK_MONOTONIC.

Loss is counted per press: a press with no feedback on its address before the next press of the
same button is lost, and the daemon's own counters (logged at its clean stop) say where: MIDI
messages that reached the daemon from its helper vs commands and feedback. ``--load`` runs a
busy process on every core during the bridge runs (the issue's "while another process loads both
cores").

Prints, per variant and rate, median [min..max] over the repeats of each repeat's p50 and p99,
the added latency, the CPU of the daemon and its MIDI helper during the bridge runs (percent of
one core, from /proc), presses lost, and the load average.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import multiprocessing
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
        got.append((msg[1], t))
inp.set_callback(cb)
inp.open_virtual_port("in")
print("ready", flush=True)
sys.stdin.readline()
print("got " + " ".join(f"{cc}:{t}" for cc, t in got), flush=True)
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
log_level = "info"

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


def start_jackd(period: int, realtime: bool, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    name = f"e2e-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    cmd = ["jackd", "-n", name, "-R" if realtime else "--no-realtime", "-t", "2000"]
    cmd += ["-d", "dummy", "-r", "48000", "-p", str(period)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
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


def read_pairs(proc: subprocess.Popen[str], tag: str) -> list[tuple[int, int]]:
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != tag:
        raise SystemExit(f"peer said {line[:3]!r}, expected {tag!r}")
    return [(int(a), int(b)) for a, b in (x.split(":") for x in line[1:])]


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
        got = read_pairs(rx, "got")
    finally:
        end(tx)
        end(rx)
    at = pair_floor(sent, got)
    return [(at[i] - sent[i]) / 1000.0 for i in sorted(at)], len(sent), len(at)


def pair_floor(sent: list[int], floor: list[tuple[int, int]]) -> dict[int, int]:
    """Press index -> its arrival at the floor receiver, matched per button (a press JACK lost
    in an xrun has none, and does not shift the others)."""
    at: dict[int, int] = {}
    for b, (_, cc) in enumerate(BUTTONS):
        idx = list(range(b, len(sent), len(BUTTONS)))
        on_floor = _match([sent[i] for i in idx], [t for c, t in floor if c == cc])
        at.update((idx[k], t) for k, t in on_floor.items())
    return at


def studio_bridge() -> list[str]:
    exe = Path(sys.executable).with_name("studio-bridge")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("studio-bridge")
    return [found] if found else [sys.executable, "-m", "bridge"]


class BridgeRun:
    """One bridge run's results."""

    def __init__(self) -> None:
        self.lat: list[float] = []  # press sent -> OSC feedback, us
        self.added: list[float] = []  # OSC feedback - floor arrival of the same press, us
        self.floor: list[float] = []  # press sent -> floor receiver, us (same run)
        self.sent = 0
        self.lost: list[float] = []  # seconds into the run of each press with no feedback
        self.floor_lost = 0
        self.cpu = 0.0
        self.cpu_daemon = 0.0
        self.stats: dict[str, dict[str, int]] = {}
        self.warnings: list[str] = []


def _match(presses: list[int], arrivals: list[int]) -> dict[int, int]:
    """Press index (into ``presses``) -> its arrival: each arrival belongs to the latest press of
    that button sent before it (presses of one button are 24 presses apart, far longer than the
    latency); a press no arrival belongs to was lost."""
    out: dict[int, int] = {}
    j = 0
    for t in sorted(arrivals):
        while j + 1 < len(presses) and presses[j + 1] <= t:
            j += 1
        if presses and presses[j] <= t and j not in out:
            out[j] = t
    return out


def bridge_run(env: dict[str, str], rate: float, seconds: float, helper: str, load: bool) -> BridgeRun:
    env = dict(env, STUDIO_BRIDGE_MIDI_HELPER=helper)
    res = BridgeRun()
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
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

    hogs: list[multiprocessing.Process] = []
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
        errlog = Path(tmp) / "daemon.log"
        ccs = ",".join(str(cc) for _, cc in BUTTONS)
        rx = spawn(RECEIVER, [], env)
        tx = spawn(SENDER, [str(rate), str(seconds), "", ccs], env)
        if helper.startswith("c:"):  # the C peer instead of the daemon (--c-peer)
            c_cfg = Path(tmp) / "jackmidi2osc.cfg"
            c_cfg.write_text(c_peer_config())
            args = [helper[2:], "-c", str(c_cfg), "-i", "E2ESender:out", "-o", f"127.0.0.1:{port}"]
        else:
            osc_port = free_udp_port()
            args = [*studio_bridge(), "run", "-c", str(cfg), "--osc-port", str(osc_port)]
            args += ["--data-dir", str(Path(tmp) / "data"), "--new-session"]
        with errlog.open("w") as err:
            daemon = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        thread = threading.Thread(target=listen, daemon=True)
        try:
            connect(env, "E2ESender:out", "E2EReceiver:in")
            wait_connected(env)
            thread.start()
            if load:
                hogs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(os.cpu_count() or 2)]
                for h in hogs:
                    h.start()
            time.sleep(0.5)
            pids = family(daemon.pid)
            c0 = [cpu_seconds(p) for p in pids]
            t0 = time.monotonic()
            t_go[0] = time.monotonic_ns()
            tell(tx)
            sent = read_ints(tx, "stamps")
            t1 = time.monotonic()
            c1 = [cpu_seconds(p) for p in pids]
            time.sleep(0.3)
            tell(rx)
            floor = read_pairs(rx, "got")
        finally:
            for h in hogs:
                h.terminate()
                h.join(5)
            stop.set()
            daemon.terminate()  # before the sender goes: its port vanishing is not part of the run
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(5)
            end(tx)
            end(rx)
            if thread.is_alive():
                thread.join(2)
            listener.close()
        for line in errlog.read_text(errors="replace").splitlines():
            if " stats: " in line:
                name, _, text = line.partition(" stats: ")
                with contextlib.suppress(ValueError, SyntaxError):
                    res.stats[name.rsplit(" ", 1)[-1]] = ast.literal_eval(text.strip())
            elif "WARNING" in line or "ERROR" in line:
                res.warnings.append(line)
    res.sent = len(sent)
    floor_at = pair_floor(sent, floor)
    res.floor_lost = len(sent) - len(floor_at)
    names = {"rec": "arm", "mute": "mute", "solo": "solo"}
    for b, (kind, cc) in enumerate(BUTTONS):
        idx = list(range(b, len(sent), len(BUTTONS)))  # this button's presses
        n = cc - dict(KINDS)[kind] + 1
        matched = _match([sent[i] for i in idx], arrivals.get(f"/track/{n}/{names[kind]}", []))
        for k, i in enumerate(idx):
            if k not in matched:
                res.lost.append((sent[i] - sent[0]) / 1e9)
                continue
            res.lat.append((matched[k] - sent[i]) / 1000.0)
            if i in floor_at:
                res.added.append((matched[k] - floor_at[i]) / 1000.0)
    res.floor = [(floor_at[i] - sent[i]) / 1000.0 for i in floor_at]
    res.cpu = 100.0 * (sum(c1) - sum(c0)) / (t1 - t0)
    res.cpu_daemon = 100.0 * (c1[0] - c0[0]) / (t1 - t0)  # the rest: its MIDI helper
    return res


def c_peer_config() -> str:
    """x42/jackmidi2osc rules giving the bridge's feedback for each press (stateless: /track/<n>/..
    i 1 for every press; the matching only needs one datagram per press on its address)."""
    names = {"rec": "arm", "mute": "mute", "solo": "solo"}
    rules = [
        f'[rule]\n0xb0 {cc} 127\n"/track/{cc - dict(KINDS)[kind] + 1}/{names[kind]}" "i" "1"\n'
        for kind, cc in BUTTONS
    ]
    return "[config]\nsyncmode=immediate\n\n" + "\n".join(rules)


def _hog() -> None:
    while True:
        pass


def wait_connected(env: dict[str, str]) -> None:
    """Until the daemon's MIDI helper has connected to the sender's port."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = subprocess.run(["jack_lsp", "-c", "E2ESender:out"], env=env, capture_output=True, text=True)
        peers = [line.strip() for line in r.stdout.splitlines()[1:]]
        if r.returncode == 0 and any(not p.startswith("E2EReceiver:") for p in peers):
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
    ap.add_argument(
        "--c-peer",
        default="",
        help="x42/jackmidi2osc built beside the project (not part of it): one more variant",
    )
    ap.add_argument("--load", action="store_true", help="a busy process per core during the bridge runs")
    ap.add_argument(
        "--realtime",
        action="store_true",
        help="jackd -R (its clients' process threads SCHED_FIFO, as on a studio machine; needs rtprio)",
    )
    a = ap.parse_args()
    helpers = a.helpers.split(",")
    if a.c_peer:
        helpers.append("c:" + a.c_peer)
    rates = [float(r) for r in a.rates.split(",")]
    jack_log = Path(tempfile.mkdtemp(prefix="e2e-jackd-")) / "jackd.log"
    jackd, env = start_jackd(a.period, a.realtime, jack_log)
    floors: dict[float, dict[str, list[float]]] = {}
    runs: dict[tuple[str, float], list[BridgeRun]] = {}
    try:
        for _ in range(a.runs):
            for rate in rates:
                lat, sent, got = floor_run(env, rate, a.seconds)
                r = floors.setdefault(rate, {"p50": [], "p99": [], "lost": []})
                r["p50"].append(pct(lat, 0.5))
                r["p99"].append(pct(lat, 0.99))
                r["lost"].append(sent - got)
                for helper in helpers:
                    runs.setdefault((helper, rate), []).append(
                        bridge_run(env, rate, a.seconds, helper, a.load)
                    )
    finally:
        stop_process(jackd)
    load = os.getloadavg()
    ms = a.period / 48
    xruns = jack_log.read_text(errors="replace").count("XRun: client")
    shutil.rmtree(jack_log.parent, ignore_errors=True)
    mode = "realtime (-R)" if a.realtime else "non-realtime"
    print(
        f"jackd dummy 48 kHz, {mode}, period {a.period} ({ms:.2f} ms), {a.runs} repeats x {a.seconds:.0f} s"
    )
    print(f"jackd reported {xruns} late clients (XRun: a client not finished in its cycle loses its MIDI)")
    if a.load:
        print(f"bridge runs with a busy process on each of the {os.cpu_count()} cores")
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")
    for rate in rates:
        fl = floors[rate]
        print(f"\n{rate:.0f} msg/s (presses and releases; one feedback per press)")
        lost = fmt(fl["lost"], "")
        print(f"  floor alone (JACK loopback)  p50 {fmt(fl['p50'])}   p99 {fmt(fl['p99'])}   lost {lost}")
        for helper in helpers:
            rs = runs[(helper, rate)]
            what = (
                f"C peer {Path(helper[2:]).name}" if helper.startswith("c:") else f"bridge, {helper} helper"
            )
            print(f"  {what} (floor receiver on the same presses)")
            row = {
                "floor, same run": [r.floor for r in rs],
                "MIDI -> OSC feedback": [r.lat for r in rs],
                "added (same press)": [r.added for r in rs],
            }
            for what, per_run in row.items():
                if not all(per_run):
                    print(f"    {what:22} no data")
                    continue
                p50 = fmt([pct(x, 0.5) for x in per_run])
                p99 = fmt([pct(x, 0.99) for x in per_run])
                print(f"    {what:22} p50 {p50}   p99 {p99}")
            cpu = [r.cpu for r in rs]
            c = f"{statistics.median(cpu):.1f} % [{min(cpu):.1f}..{max(cpu):.1f}]"
            own = statistics.median(r.cpu_daemon for r in rs)
            print(f"    CPU daemon + helper    {c} of one core (daemon {own:.1f} %)")
            lost_n = [len(r.lost) for r in rs]
            print(f"    presses lost           {sum(lost_n)} of {sum(r.sent for r in rs)} (per run {lost_n})")
            # what JACK did not deliver to the daemon's helper (a late cycle) vs what the bridge lost
            # after it: with each message lost on the way at most one press goes unanswered
            if all("nano" in r.stats for r in rs):
                undelivered = [2 * r.sent - r.stats["nano"].get("received", 0) for r in rs]
                inside = [max(0, len(r.lost) - u) for r, u in zip(rs, undelivered, strict=True)]
                print(f"    not delivered by JACK  {sum(undelivered)} MIDI messages (per run {undelivered})")
                print(
                    f"    lost inside the bridge {sum(inside)} presses (after its helper; per run {inside})"
                )
            c_peer = next((h for h in helpers if h.startswith("c:")), None)
            if c_peer is not None and helper != c_peer and all(r.added for r in runs[(c_peer, rate)]):
                ours = statistics.median(pct(r.added, 0.5) for r in rs)
                theirs = statistics.median(pct(r.added, 0.5) for r in runs[(c_peer, rate)])
                base = statistics.median(pct(r.floor, 0.5) for r in rs)
                ratio = (base + ours) / (base + theirs)
                gap = f"+{ours - theirs:.0f} us added"
                print(f"    vs the C peer          {gap}; end to end {ratio:.2f}x on this floor")
            for r in rs:
                if r.lost:
                    at = ", ".join(f"{t:.3f}" for t in r.lost[:10])
                    print(f"      lost at s: {at}; daemon counters: {r.stats}")
                for w in r.warnings[:5]:
                    print(f"      daemon: {w}")


if __name__ == "__main__":
    main()
