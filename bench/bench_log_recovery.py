"""Session log recovery after a full disk, through the real daemon on a real tmpfs (needs root).

    sudo .venv/bin/python bench/bench_log_recovery.py            # 10 episodes
    sudo .venv/bin/python bench/bench_log_recovery.py --episodes 3 --hold 0.3

One daemon runs with its data dir on a small tmpfs. Each episode: a filler file fills the disk,
take marks are sent until one is refused (``/error``), the disk stays full for ``--hold`` seconds
(the writer's retry backoff reaches its cap), then the filler is deleted and marks are sent back
to back (each waits for its answer) until ``--after`` of them were ``/ok``.

* recovery: space freed -> the first ``/ok`` mark (durable: acknowledged after its commit)
* ``/ok`` latency of the marks answered ``/ok`` during the recovery (the ``--after`` first after
  the disk was freed) and ``/error`` latency of the refusals while it was failing
* baseline in the same run: ``/ok`` mark latency on the same daemon with a healthy disk

Every figure is the median [min..max] over all episodes' samples (recovery: one per episode).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers.daemon import Daemon, OscClient


def fmt(values: list[float], unit: str = " ms", scale: float = 1000.0) -> str:
    vals = [v * scale for v in values]
    return f"{statistics.median(vals):.2f}{unit} [{min(vals):.2f}..{max(vals):.2f}] (n={len(vals)})"


def fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def mark(client: OscClient, label: str) -> tuple[bool, float]:
    t = time.perf_counter()
    reply = client.command("/take/mark", label, timeout=10)
    return reply[0] == "/ok", time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--hold", type=float, default=1.0, help="seconds the disk stays full")
    parser.add_argument("--after", type=int, default=20, help="/ok marks timed after each recovery")
    parser.add_argument(
        "--size", default="16m", help="tmpfs size (larger than the 4 MB WAL SQLite checkpoints at)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_log_recovery: needs root (it mounts a tmpfs)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-log-recovery-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "small"
        data.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size}", "tmpfs", str(data)], check=True)
        filler = data / "filler"
        try:
            daemon = Daemon(tmp, data_dir=data)
            daemon.start()
            client = OscClient(daemon.osc_port)
            try:
                healthy: list[float] = []
                recovery: list[float] = []
                ok_during: list[float] = []
                refused: list[float] = []
                for _ in range(50):  # warm-up
                    mark(client, "warm-up")
                for episode in range(args.episodes):
                    for i in range(args.after):
                        ok, dt = mark(client, f"healthy {episode}.{i}")
                        assert ok, "a mark was refused on a healthy disk"
                        healthy.append(dt)
                    fill(filler)
                    for i in range(5000):
                        ok, dt = mark(client, f"filling {episode}.{i} " + "x" * 200)
                        if not ok:
                            refused.append(dt)
                            break
                    else:
                        raise AssertionError("the full disk never refused a mark")
                    end = time.monotonic() + args.hold
                    while time.monotonic() < end:  # marks keep coming while the disk is full
                        ok, dt = mark(client, "while full")
                        assert not ok
                        refused.append(dt)
                        time.sleep(0.02)
                    filler.unlink()
                    freed = time.perf_counter()
                    first: float | None = None
                    oks = 0
                    while oks < args.after:
                        ok, dt = mark(client, f"recovering {episode}")
                        if ok:
                            if first is None:
                                first = time.perf_counter() - freed
                            oks += 1
                            ok_during.append(dt)
                        elif time.perf_counter() - freed > 30:
                            du = subprocess.run(
                                ["ls", "-la", str(data)], capture_output=True, text=True
                            ).stdout
                            raise AssertionError(
                                f"episode {episode}: no recovery within 30 s\n{du}\n"
                                + "\n".join(daemon.lines[-10:])
                            )
                        else:
                            refused.append(dt)
                    assert first is not None
                    recovery.append(first)
            finally:
                client.close()
                code = daemon.stop()
            print(
                f"bench_log_recovery: {args.episodes} episodes, disk full for {args.hold:g} s each, "
                f"tmpfs {args.size}"
            )
            print(f"  recovery (space freed -> first durable /ok mark): {fmt(recovery)}")
            print(f"  /ok mark latency during recovery:                 {fmt(ok_during)}")
            print(f"  baseline /ok mark latency, healthy disk:          {fmt(healthy)}")
            print(f"  /error latency of refused marks while failing:    {fmt(refused)}")
            print(f"  daemon exit code after the episodes: {code}")
        finally:
            subprocess.run(["umount", "-l", str(data)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
