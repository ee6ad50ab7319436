"""MIDI bytes in -> OSC bytes out inside one process, no JACK (issue: MIDI path speed).

    .venv/bin/python bench/bench_midi_inproc.py [--runs 3] [--seconds 2] [--rates 100,1000]

The real parts of a daemon in this process: the session log (SQLite in a temp dir), the hub,
the internal transport (role daw), the OSC API (bound on loopback, a client reading in another
thread) and a generic MIDI surface (the shipped nanoKONTROL2 profile, a mapping that toggles the
arm of tracks 1-8 with the strips' R buttons). No ports: the bytes a MIDI helper would hand over
are fed to the surface's ``MidiLink``.

Two measurements per run:

* **processing**: on the event loop, one press at a time, from the bytes handed to the link to
  the OSC feedback datagram's ``sendto`` returning (surface -> mapper -> SetTrackArm -> internal
  transport -> TrackChanged -> state -> feedback -> OSC API). Pure CPU per press: no wake-ups.
* **through the pipes**: a feeder process plays presses and releases at each rate as the MIDI
  helper's frames on a pipe that the link reads exactly as it reads its helper's stdout (a
  ``FrameReader`` handing frames to ``MidiLink._on_frame``); a listener process stamps the
  feedback datagram's arrival (both stamp CLOCK_MONOTONIC). Baseline in the same run: the same
  feeder and pipe read by a ``FrameReader`` whose handler sends a fixed OSC datagram to the same
  listener at once
  (the bare hop: pipe -> event loop -> UDP).

Prints median [min..max] over the runs of each run's p50 and p99, and the added latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from bridge.devices.internal import InternalOptions, InternalTransport
from bridge.devices.midi.frames import FrameReader
from bridge.devices.midi.generic import GenericMidiOptions, GenericMidiSurface
from bridge.devices.osc_api import OscApi, OscApiOptions
from bridge.hub import Hub
from bridge.log.writer import SessionLog
from bridge.mapping import parse_mapping
from bridge.supervisor import run_device

REC_CC = list(range(64, 72))  # strip 1-8 R buttons
MAPPING = "".join(
    f'[[binding]]\ncontrol = "strip{n}.rec"\ncommand = "track.arm"\ntrack = {n}\nglue = "toggle"\n\n'
    for n in range(1, 9)
)


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, round(q * (len(data) - 1)))]


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} us [{min(values):.1f}..{max(values):.1f}]"


# Plays presses and releases of the eight R buttons as MIDI helper frames on stdout; prints
# nothing until told, then the press stamps on stderr.
FEEDER = r"""
import struct, sys, time
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
head = struct.Struct(">cI")
out = sys.stdout.buffer
sys.stdin.readline()
interval = 1.0 / rate
stamps = []
t_next = time.monotonic()
for i in range(int(rate * seconds)):
    press, cc = i % 2 == 0, 64 + (i // 2) % 8
    delay = t_next - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    t = time.monotonic_ns()
    out.write(head.pack(b"M", 3) + bytes([0xB0, cc, 127 if press else 0]))
    out.flush()
    if press:
        stamps.append(t)
    t_next += interval
sys.stderr.write(" ".join(map(str, stamps)) + "\n")
sys.stderr.flush()
sys.stdin.readline()
"""

# Stamps every datagram to /track/... or /bench from the first line on stdin on; prints the
# stamps at the second.
LISTENER = r"""
import socket, sys, threading, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
sock.bind(("127.0.0.1", 0))
got = []
counting = [False]
def run():
    while True:
        data = sock.recv(2048)
        t = time.monotonic_ns()
        if counting[0] and (data.startswith(b"/track/") or data.startswith(b"/bench")):
            got.append(t)
threading.Thread(target=run, daemon=True).start()
print(sock.getsockname()[1], flush=True)
sys.stdin.readline()
counting[0] = True
sys.stdin.readline()
print(" ".join(map(str, got)), flush=True)
"""


class Peers:
    """The feeder and listener processes of one run."""

    async def start(self, rate: float, seconds: float) -> None:
        exe = sys.executable
        self.listener = await asyncio.create_subprocess_exec(
            exe, "-c", LISTENER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert self.listener.stdout is not None
        self.port = int((await self.listener.stdout.readline()).decode())
        self.frames, wfd = os.pipe()  # read as the link reads its helper's stdout (FrameReader)
        self.feeder = await asyncio.create_subprocess_exec(
            exe,
            "-c",
            FEEDER,
            str(rate),
            str(seconds),
            stdin=asyncio.subprocess.PIPE,
            stdout=wfd,
            stderr=asyncio.subprocess.PIPE,
        )
        os.close(wfd)

    async def play(self) -> tuple[list[int], list[int]]:
        """Run the feeder; (press stamps, feedback arrival stamps)."""
        feeder, listener = self.feeder, self.listener
        assert feeder.stdin and feeder.stderr and listener.stdin and listener.stdout
        listener.stdin.write(b"\n")
        await listener.stdin.drain()
        await asyncio.sleep(0.05)
        feeder.stdin.write(b"\n")
        await feeder.stdin.drain()
        presses = [int(x) for x in (await feeder.stderr.readline()).split()]
        await asyncio.sleep(0.3)
        listener.stdin.write(b"\n")
        await listener.stdin.drain()
        arrivals = [int(x) for x in (await listener.stdout.readline()).split()]
        return presses, arrivals

    async def stop(self) -> None:
        for proc in (self.feeder, self.listener):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def bridge_run(rate: float, seconds: float) -> dict[str, float]:
    peers = Peers()
    await peers.start(rate, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(SessionLog(Path(tmp) / "log.sqlite3"))
        await hub.start()
        daw = InternalTransport("internal", InternalOptions(tracks=8))
        osc = OscApi("osc", OscApiOptions(bind="127.0.0.1", port=0, clients=[f"127.0.0.1:{peers.port}"]))
        nano = GenericMidiSurface("nano", GenericMidiOptions(profile="korg_nanokontrol2", echo_window=0.0))
        nano.link.in_pattern = nano.link.out_pattern = None  # no ports: bytes fed in, LEDs dropped
        nano.link.attach_sink(lambda data: None)
        tasks = []
        for device, role, mapping in (
            (daw, "daw", None),
            (osc, None, None),
            (nano, None, parse_mapping(tomllib.loads(MAPPING), "bench mapping")),
        ):
            slot = hub.add_device(device, role, mapping)
            tasks.append(asyncio.create_task(run_device(hub, slot)))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if all(hub.store.get(f"device/{n}/status") == "ok" for n in ("internal", "osc", "nano")):
                break
        await asyncio.sleep(0.2)
        link = nano.link
        listen = link._listener  # the surface's frame handler (MidiLink.listen)
        assert listen is not None, "the surface is not listening"

        # processing: one press at a time on the loop, bytes in -> feedback sendto returned
        sent_at: list[int] = []
        api_send = osc.send_now

        def stamped(message: object) -> None:
            api_send(message)  # type: ignore[arg-type]
            sent_at.append(time.perf_counter_ns())

        osc.send_now = stamped  # type: ignore[method-assign]
        proc: list[float] = []
        for i in range(2000):
            cc = REC_CC[i % len(REC_CC)]
            sent_at.clear()
            t0 = time.perf_counter_ns()
            link._deliver(listen, bytes([0xB0, cc, 127]))
            if sent_at:
                proc.append((sent_at[0] - t0) / 1000)
            link._deliver(listen, bytes([0xB0, cc, 0]))
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the log writer's callbacks run
        osc.send_now = api_send  # type: ignore[method-assign]
        await asyncio.sleep(0.2)

        # through the pipes: feeder process -> frames on a pipe -> the link's frame reader -> ...
        # -> feedback datagram at the listener process
        reader = FrameReader(peers.frames, link._on_frame, lambda error: None)
        reader.start(asyncio.get_running_loop())
        presses, arrivals = await peers.play()
        reader.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.log.close()
    await peers.stop()
    lat = [(b - a) / 1000 for a, b in zip(presses, arrivals, strict=False)]
    return {
        "proc50": pct(proc, 0.5),
        "proc99": pct(proc, 0.99),
        "p50": pct(lat, 0.5),
        "p99": pct(lat, 0.99),
        "lost": len(presses) - len(arrivals),
    }


async def baseline_run(rate: float, seconds: float) -> dict[str, float]:
    peers = Peers()
    await peers.start(rate, seconds)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    target = ("127.0.0.1", peers.port)
    datagram = b"/bench\x00\x00,i\x00\x00\x00\x00\x00\x01"

    def hop(kind: bytes, payload: bytes) -> None:
        if kind == b"M" and payload[2] == 127:
            sock.sendto(datagram, target)

    reader = FrameReader(peers.frames, hop, lambda error: None)
    reader.start(asyncio.get_running_loop())
    presses, arrivals = await peers.play()
    reader.close()
    sock.close()
    await peers.stop()
    lat = [(b - a) / 1000 for a, b in zip(presses, arrivals, strict=False)]
    return {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rates", default="100,1000")
    args = parser.parse_args()
    import os

    print(f"# bench_midi_inproc  python {sys.version.split()[0]}  load {os.getloadavg()[0]:.2f}")
    for rate in [float(r) for r in args.rates.split(",")]:
        ours: list[dict[str, float]] = []
        base: list[dict[str, float]] = []
        for _ in range(args.runs):
            base.append(asyncio.run(baseline_run(rate, args.seconds)))
            ours.append(asyncio.run(bridge_run(rate, args.seconds)))

        def col(key: str, runs: list[dict[str, float]]) -> list[float]:
            return [r[key] for r in runs]

        print(f"{rate:.0f} msg/s (presses and releases; one OSC feedback per press)")
        add50 = [o - b for o, b in zip(col("p50", ours), col("p50", base), strict=True)]
        add99 = [o - b for o, b in zip(col("p99", ours), col("p99", base), strict=True)]
        rows = {
            "processing, bytes in -> OSC sendto": (col("proc50", ours), col("proc99", ours)),
            "through the pipes: bridge": (col("p50", ours), col("p99", ours)),
            "through the pipes: bare hop": (col("p50", base), col("p99", base)),
            "added by the bridge": (add50, add99),
        }
        for what, (p50, p99) in rows.items():
            print(f"  {what:36}  p50 {fmt(p50)}   p99 {fmt(p99)}")
        print(f"  presses without feedback: {sum(int(r['lost']) for r in ours)}")


if __name__ == "__main__":
    main()
