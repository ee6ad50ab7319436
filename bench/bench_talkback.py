"""Talkback on a real-protocol mixer: press latency, /xremote renewals at idle, idle CPU.

    python bench/bench_talkback.py            # 200 presses per mixer, 60 s renewal count, 3 x 10 s CPU
    python bench/bench_talkback.py --quick    # 50 presses, 20 s, 3 x 3 s

A "press" is ``/talkback 1`` from a tablet socket to the daemon's OSC API; the daemon sends it to
the mixer (a fake X32 / fake TotalMix process on loopback), the mixer engages, reports it, and
the daemon answers ``/ok`` (the confirmation). Measured per press:

* press -> mixer engaged: the fake X32 records ``time.monotonic()`` (one clock for all processes
  of the machine) when its talk state changes;
* press -> confirmed: the tablet gets ``/ok``.

Baselines in the same run, against the same fake process: a bare UDP round trip (set + get from
a plain socket: what the console's part costs), and ``/ping`` -> ``/pong`` through the daemon
(the bridge's OSC API without the hub or a mixer). Then the release (``/talkback 0``), timed the
same way but not reported separately.

Every figure: median [min..max] over the samples (and p99 for the latencies).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers.daemon import Daemon, OscClient, free_udp_port
from peers.fake_totalmix import FakeTotalMix
from peers.fake_x32 import FakeX32

from bridge.devices._osc import decode, encode

TICK = os.sysconf("SC_CLK_TCK")


def fmt(values: list[float], unit: str = "ms", scale: float = 1000.0, p99: bool = True) -> str:
    vals = sorted(v * scale for v in values)
    text = f"{statistics.median(vals):.3f} [{vals[0]:.3f}..{vals[-1]:.3f}]"
    if p99:
        text += f" p99 {vals[min(len(vals) - 1, round(0.99 * (len(vals) - 1)))]:.3f}"
    return f"{text} {unit}"


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` in ns resolution (/proc/<pid>/task/*/schedstat; the
    clock-tick counters of /proc/<pid>/stat are 10 ms coarse). Falls back to those."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


def x32_room(port: int) -> str:
    return (
        '[devices.x32]\nkind = "x32"\nrole = "mixer"\nhost = "127.0.0.1"\nlocal_host = "127.0.0.1"\n'
        f"port = {port}\n"
    )


def wait_ok(client: OscClient, device: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        client.send("/state")
        if client.value(f"/device/{device}/status")[0] == "ok":
            return
        time.sleep(0.1)
    raise RuntimeError(f"{device} never became ok")


def presses(tablet: OscClient, n: int) -> tuple[list[float], list[float]]:
    sent, confirmed = [], []
    for _ in range(n):
        for value in (1, 0):
            t = time.monotonic()
            reply = tablet.command("/talkback", value)
            done = time.monotonic()
            if reply != ("/ok", ["/talkback"]):
                raise RuntimeError(f"press failed: {reply}")
            if value == 1:
                sent.append(t)
                confirmed.append(done - t)
        tablet.seen.clear()
    return sent, confirmed


def udp_baseline(port: int, n: int) -> list[float]:
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        for i in range(n):
            t = time.monotonic()
            s.sendto(encode("/-stat/talk/B", (i + 1) % 2), ("127.0.0.1", port))
            s.sendto(encode("/-stat/talk/B"), ("127.0.0.1", port))
            data = s.recv(1024)
            out.append(time.monotonic() - t)
            assert decode(data)[0][0] == "/-stat/talk/B"
    return out


def ping_baseline(tablet: OscClient, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.monotonic()
        assert tablet.command("/ping") == ("/pong", [])
        out.append(time.monotonic() - t)
    return out


def bench_x32(n: int) -> None:
    with FakeX32() as console, tempfile.TemporaryDirectory() as tmp:
        base = udp_baseline(console.port, n)
        with Daemon(Path(tmp), x32_room(console.port)) as d:
            tablet = OscClient(d.osc_port)
            wait_ok(tablet, "x32")
            ping = ping_baseline(tablet, n)
            console.talk_changes()  # forget the baseline's changes
            sent, confirmed = presses(tablet, n)
            changes = console.talk_changes()  # on, off, on, off, ...
            engaged = [changes[2 * i] - sent[i] for i in range(n)]
            tablet.close()
        print(f"X32, {n} presses (tablet /talkback 1 -> daemon -> fake X32 -> /ok):")
        print(f"  press -> console engaged    {fmt(engaged)}")
        print(f"  press -> confirmed (/ok)    {fmt(confirmed)}")
        print(f"  baseline: bare UDP set+get round trip to the same fake  {fmt(base)}")
        print(f"  baseline: /ping -> /pong through the daemon             {fmt(ping)}")


def bench_totalmix(n: int) -> None:
    local = free_udp_port()
    with FakeTotalMix(remote_port=local) as mixer, tempfile.TemporaryDirectory() as tmp:
        room = (
            '[devices.totalmix]\nkind = "totalmix"\nrole = "mixer"\nhost = "127.0.0.1"\n'
            f'port = {mixer.port}\nlocal_host = "127.0.0.1"\nlocal_port = {local}\n'
        )
        with Daemon(Path(tmp), room) as d:
            tablet = OscClient(d.osc_port)
            wait_ok(tablet, "totalmix")
            _, confirmed = presses(tablet, n)
            ping = ping_baseline(tablet, n)
            tablet.close()
        print(f"TotalMix, {n} presses (toggle, confirmed by its feedback on the remote port):")
        print(f"  press -> confirmed (/ok)    {fmt(confirmed)}")
        print(f"  baseline: /ping -> /pong through the daemon             {fmt(ping)}")


def renewals(seconds: float) -> None:
    with FakeX32() as console, tempfile.TemporaryDirectory() as tmp:
        with Daemon(Path(tmp), x32_room(console.port)) as d:
            tablet = OscClient(d.osc_port)
            wait_ok(tablet, "x32")
            tablet.close()
            first = console.state()["counts"]["xremote"]
            time.sleep(seconds)
            got = console.state()["counts"]["xremote"] - first
        print(f"/xremote renewals at idle over {seconds:.0f} s: {got} = {got * 60 / seconds:.1f} per minute"
              " (renew_interval 4 s; the console drops a subscriber after 10 s)")  # fmt: skip


def idle_cpu(seconds: float, repeats: int) -> None:
    results: dict[str, list[float]] = {"x32 connected": [], "no mixer (baseline)": []}
    for _ in range(repeats):
        for label in results:
            with FakeX32() as console, tempfile.TemporaryDirectory() as tmp:
                room = x32_room(console.port) if label.startswith("x32") else None
                with Daemon(Path(tmp), room) as d:
                    assert d.proc is not None
                    if room:
                        tablet = OscClient(d.osc_port)
                        wait_ok(tablet, "x32")
                        tablet.close()
                    time.sleep(1.0)
                    c0, t0 = cpu_seconds(d.proc.pid), time.monotonic()
                    time.sleep(seconds)
                    c1, t1 = cpu_seconds(d.proc.pid), time.monotonic()
                    results[label].append(100.0 * (c1 - c0) / (t1 - t0))
    for label, values in results.items():
        shown = fmt(values, "% of a core", 1.0, p99=False)
        print(f"idle CPU of the daemon, {label}, {repeats} x {seconds:.0f} s: {shown}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["presses", "renewals", "cpu"], help="run one part")
    args = ap.parse_args()
    n, renew_s, cpu_s = (50, 20.0, 3.0) if args.quick else (200, 60.0, 10.0)
    load = os.getloadavg()[0]
    print(f"# bench_talkback  python {sys.version.split()[0]}  load {load:.2f}  cores {os.cpu_count()}")
    if args.only in (None, "presses"):
        bench_x32(n)
        bench_totalmix(n)
    if args.only in (None, "renewals"):
        renewals(renew_s)
    if args.only in (None, "cpu"):
        idle_cpu(cpu_s, 3)


if __name__ == "__main__":
    main()
