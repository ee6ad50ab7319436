"""MQTT benchmark (performance.md T9): state-change -> subscriber latency and the broker message
rate during a fader flood, against a private mosquitto on a free loopback port.

    /tmp/venv/bin/python bench/bench_mqtt.py [--runs 3] [--n 400] [--flood-seconds 2]

Per run:
* latency: ``n`` discrete state changes (``Feedback("take", i)``, QoS 1 retained) fed to
  ``MqttBridge.send`` 4 ms apart, timestamped on arrival by a subscriber in another process
  (CLOCK_MONOTONIC is system-wide, so the clocks compare). Baseline in the same run: a plain
  aiomqtt client publishing the same payloads (QoS 1, retained, awaited) to the same subscriber.
* flood: 9,000 msg/s of continuous fader feedback over two topics for ``--flood-seconds``;
  the subscriber counts what the broker delivers per topic (cap: 20/s per topic) and checks the
  final value. The driver process's CPU time during the flood is reported too.

Prints median [min..max] over the runs and the bridge/baseline ratio.

    /tmp/venv/bin/python bench/bench_mqtt.py --reconnect [--runs 3] [--outages 1,2,9]

Reconnect (issue 9 item 10): two bridges, each under the real supervisor and hub, connected
to one private mosquitto: one with ``MqttBridge``'s reconnect policy, the baseline with the
policy it had before (``Device.retry_delay``: 0.25 s doubling, capped at 10 s, no jitter).
Per run and outage length the broker is stopped (SIGTERM), kept down that long, and started
again on the same port; measured: from the port accepting connections again to the room's
retained ``state/talkback`` arriving at a fresh subscriber.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- subscriber process


async def subscriber_main(port: int, topic: str, end: str) -> None:
    import aiomqtt

    seen: list[tuple[str, str, float]] = []
    async with aiomqtt.Client(HOST, port, identifier=f"bench-sub-{os.getpid()}") as client:
        await client.subscribe(topic, qos=1)
        await client.subscribe(end, qos=1)
        print("READY", flush=True)
        async for m in client.messages:
            now = time.monotonic()
            if str(m.topic) == end:
                break
            payload = m.payload.decode() if isinstance(m.payload, bytes | bytearray) else str(m.payload)
            seen.append((str(m.topic), payload, now))
    print(json.dumps(seen), flush=True)


# --------------------------------------------------------------------------- broker


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = int(s.getsockname()[1])
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\npersistence false\nlog_dest stderr\n")
    os.chmod(conf, 0o644)
    proc = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(200):
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


# --------------------------------------------------------------------------- one run


async def noop(message: object) -> None:
    return None


async def flood(send: Callable[[Any], Awaitable[None]], seconds: float) -> tuple[float, float, int]:
    """9,000 fader feedbacks per second over two topics -> (offered msg/s, CPU share, count)."""
    from bridge.vocab import Feedback

    loop = asyncio.get_running_loop()
    cpu0, start = time.process_time(), loop.time()
    k = 0
    for tick in range(int(seconds * 100)):
        for _ in range(90):
            k += 1
            await send(Feedback(f"track/{k % 2 + 1}/fader", k / 1_000_000, continuous=True))
        await asyncio.sleep(max(0.0, start + (tick + 1) * 0.01 - loop.time()))
    elapsed = loop.time() - start
    return k / elapsed, (time.process_time() - cpu0) / elapsed, k


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_run(port: int, run: int, n: int, flood_seconds: float) -> dict[str, float]:
    import aiomqtt

    from bridge.devices.mqtt import MqttBridge, MqttOptions
    from bridge.vocab import Feedback

    room = f"bench-{os.getpid()}-{run}"
    root = f"studio-bridge/{room}"
    raw_root = f"bench-raw/{room}"
    end = f"bench-end/{room}"
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--subscriber", "--port", str(port), "--topic", f"+/{room}/#", "--end", end,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    async with asyncio.timeout(20):
        assert (await child.stdout.readline()).strip() == b"READY"

    bridge = MqttBridge("mqtt", MqttOptions(host=HOST, port=port, room=room))
    sent_bridge: dict[str, float] = {}
    sent_raw: dict[str, float] = {}
    async with aiomqtt.Client(HOST, port, identifier=f"bench-warm-{os.getpid()}") as warm:
        for i in range(50):  # warm the broker -> subscriber path (the first ~40 ms stall otherwise)
            await warm.publish(f"bench-warm/{room}/x", str(i).encode(), qos=1)
            await asyncio.sleep(0.004)
    await bridge.__aenter__()
    try:
        # steady state: after connecting, the bridge looks at retained state topics for
        # stale_window seconds (and so also gets its own publishes back); measure after that
        await asyncio.sleep(bridge.opts.stale_window + 0.2)
        # latency through the bridge
        for i in range(n):
            sent_bridge[str(i)] = time.monotonic()
            await bridge.send(Feedback("take", i))
            await asyncio.sleep(0.004)
        await bridge.flush()
        # baseline: plain aiomqtt publish of the same messages
        async with aiomqtt.Client(HOST, port, identifier=f"bench-raw-{os.getpid()}") as raw:
            for i in range(n):
                sent_raw[str(i)] = time.monotonic()
                await raw.publish(f"{raw_root}/state/take", str(i).encode(), qos=1, retain=True)
                await asyncio.sleep(0.004)
        # fader flood: 9,000 msg/s over two topics; the same loop with a no-op send is the CPU baseline
        _, cpu_idle, _ = await flood(noop, flood_seconds)
        offered, cpu, k = await flood(bridge.send, flood_seconds)
        await bridge.flush()
        await asyncio.sleep(0.2)
        final = {
            f"track/{k % 2 + 1}/fader": k / 1_000_000,
            f"track/{(k - 1) % 2 + 1}/fader": (k - 1) / 1_000_000,
        }
    finally:
        await bridge.__aexit__(None, None, None)
    async with aiomqtt.Client(HOST, port) as c:
        await c.publish(end, b"end", qos=1)
    async with asyncio.timeout(30):
        out, _ = await child.communicate()
    seen = json.loads(out.decode().strip().splitlines()[-1])

    lat_bridge = [(t - sent_bridge[p]) * 1000 for topic, p, t in seen if topic == f"{root}/state/take"]
    lat_raw = [(t - sent_raw[p]) * 1000 for topic, p, t in seen if topic == f"{raw_root}/state/take"]
    assert len(lat_bridge) == n and len(lat_raw) == n, (len(lat_bridge), len(lat_raw))
    rates, counts, windows = [], [], []
    for key, value in final.items():
        msgs = [(p, t) for topic, p, t in seen if topic == f"{root}/state/{key}"]
        assert float(msgs[-1][0]) == round(value, 6), (key, msgs[-1], value)  # latest value wins, exactly
        rates.append((len(msgs) - 1) / (msgs[-1][1] - msgs[0][1]))
        counts.append(len(msgs))
        times = [t for _, t in msgs]
        windows.append(max(sum(1 for u in times if t <= u < t + 1.0) for t in times))
    return {
        "bridge_p50": statistics.median(lat_bridge),
        "bridge_p99": pct(lat_bridge, 0.99),
        "raw_p50": statistics.median(lat_raw),
        "raw_p99": pct(lat_raw, 0.99),
        "flood_offered": offered,
        "flood_topic_rate": max(rates),
        "flood_topic_count": max(counts),
        "flood_window_max": max(windows),
        "flood_cpu": cpu * 100,
        "flood_cpu_idle": cpu_idle * 100,
    }


# --------------------------------------------------------------------------- reconnect


async def reconnect_main(args: argparse.Namespace) -> int:
    import aiomqtt

    from bridge.devices.base import Device
    from bridge.devices.mqtt import MqttBridge, MqttOptions
    from bridge.hub import Hub
    from bridge.log.writer import SessionLog
    from bridge.supervisor import run_device

    class Before(MqttBridge):
        """The reconnect policy of before: 0.25 s doubling to 10 s, no jitter."""

        max_backoff = 10.0

        def retry_delay(self, attempt: int) -> float:
            return Device.retry_delay(self, attempt)

    logging.getLogger("bridge").setLevel(logging.ERROR)  # the expected "connection lost" lines
    outages = [float(x) for x in args.outages.split(",")]
    took: dict[tuple[str, float], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_broker(Path(tmp))
        hub = Hub(SessionLog(Path(tmp) / "log.sqlite3"))
        await hub.start()
        rooms = {"bridge": f"bench-now-{os.getpid()}", "baseline": f"bench-before-{os.getpid()}"}
        tasks = []
        for name, cls in (("bridge", MqttBridge), ("baseline", Before)):
            device = cls(name, MqttOptions(port=port, room=rooms[name]))
            tasks.append(asyncio.create_task(run_device(hub, hub.add_device(device, None))))

        async def republished(room: str, since: float) -> float:
            async with aiomqtt.Client(HOST, port) as client:
                await client.subscribe(f"studio-bridge/{room}/state/talkback", qos=1)
                async for _ in client.messages:
                    return time.perf_counter() - since
            raise RuntimeError("no message")

        try:
            await asyncio.sleep(1.0)
            for run in range(args.runs):
                for outage in outages:
                    os.kill(proc.pid, signal.SIGTERM)
                    await asyncio.to_thread(proc.wait, 5)
                    await asyncio.sleep(outage)
                    conf = Path(tmp) / "mosquitto.conf"
                    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it is quick; the bench times from the port
                        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                    )  # fmt: skip
                    while True:  # the port accepting again is "the broker answering"
                        try:
                            socket.create_connection((HOST, port), timeout=0.2).close()
                            break
                        except OSError:
                            await asyncio.sleep(0.005)
                    back = time.perf_counter()
                    async with asyncio.timeout(60):
                        results = await asyncio.gather(*(republished(rooms[k], back) for k in rooms))
                    for key, seconds in zip(rooms, results, strict=True):
                        took.setdefault((key, outage), []).append(seconds)
                    line = ", ".join(f"{k} {t:.3f} s" for k, t in zip(rooms, results, strict=True))
                    print(f"run {run + 1} outage {outage:g} s: {line}", flush=True)
                    await asyncio.sleep(1.0)  # both connected and settled before the next outage
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await hub.log.close()
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)

    print(f"\nbroker answering again -> retained state republished, {args.runs} runs, median [min..max]")
    for outage in outages:
        cells = []
        for key in rooms:
            values = took[(key, outage)]
            cells.append(f"{key} {statistics.median(values):.3f} s [{min(values):.3f}..{max(values):.3f}]")
        print(f"outage {outage:>4g} s: " + "   ".join(cells))
    return 0


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_broker(Path(tmp))
        try:
            results = [await one_run(port, run, args.n, args.flood_seconds) for run in range(args.runs)]
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)

    def show(key: str, unit: str, digits: int = 3) -> str:
        values = [r[key] for r in results]
        return (
            f"{statistics.median(values):.{digits}f} {unit} "
            f"[{min(values):.{digits}f}..{max(values):.{digits}f}]"
        )

    print(f"mosquitto {HOST}:{port}, {args.runs} runs, {args.n} state changes per run, median [min..max]")
    print(
        f"state change -> subscriber, bridge : p50 {show('bridge_p50', 'ms')}  p99 {show('bridge_p99', 'ms')}"
    )
    print(f"baseline raw aiomqtt publish       : p50 {show('raw_p50', 'ms')}  p99 {show('raw_p99', 'ms')}")
    ratios = [r["bridge_p50"] / r["raw_p50"] for r in results]
    ratio = f"{statistics.median(ratios):.2f} [{min(ratios):.2f}..{max(ratios):.2f}]"
    print(f"ratio bridge/baseline p50          : {ratio}")
    print(f"fader flood offered                : {show('flood_offered', 'msg/s', 0)} over 2 topics")
    print(f"broker rate per fader topic        : {show('flood_topic_rate', 'msg/s', 1)} (cap 20/s)")
    count = show("flood_topic_count", "", 0)
    print(f"messages per fader topic           : {count} in {args.flood_seconds:g} s")
    print(f"most in any 1 s window (subscriber): {show('flood_window_max', '', 0)}")
    cpu = show("flood_cpu", "% of one core", 1)
    print(f"process CPU during flood, bridge   : {cpu} (incl. generating the flood)")
    print(f"same flood loop, no-op send        : {show('flood_cpu_idle', '% of one core', 1)}")
    worst = max(r["flood_window_max"] for r in results)
    if worst > 20:
        print(f"FAIL: {worst:.0f} messages on one topic within one second exceed the cap of 20")
        return 1
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--flood-seconds", type=float, default=2.0)
    ap.add_argument("--reconnect", action="store_true", help="measure reconnect after broker outages")
    ap.add_argument("--outages", default="1,2,9", help="outage lengths in seconds (with --reconnect)")
    ap.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--end", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.subscriber:
        asyncio.run(subscriber_main(a.port, a.topic, a.end))
        sys.exit(0)
    sys.exit(asyncio.run(reconnect_main(a) if a.reconnect else main(a)))
