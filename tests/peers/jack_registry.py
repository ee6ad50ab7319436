"""Keep JACK's server registry usable across test runs on one machine.

JACK2 keeps at most 8 servers in ``/dev/shm/jack-shm-registry``. A server that dies without
a clean shutdown (SIGKILL, a killed test run) keeps its slot until a server with the *same
name* starts again, so test fixtures that use unique names leak slots, and after eight such
leaks no jackd can start on the machine ("Too many servers already active").

``reclaim()`` fixes that before a fixture starts its jackd:
* no jackd running at all: the registry and JACK's shm segments are stale; remove them
  (JACK recreates them);
* otherwise: for each registered name without a live ``jackd -n <name>``, start that
  server briefly and stop it cleanly, which frees its slot.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path

SHM = Path("/dev/shm")
REGISTRY = SHM / "jack-shm-registry"
_done = False


def _jackd_names() -> set[str] | None:
    """Names of running jackd servers (None if none runs)."""
    names: set[str] = set()
    running = False
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"jackd"):
            continue
        running = True
        for i, arg in enumerate(argv[:-1]):
            if arg in (b"-n", b"--name"):
                names.add(argv[i + 1].decode(errors="replace"))
        if b"-n" not in argv and b"--name" not in argv:
            names.add("default")
    return names if running else None


def registered_names() -> list[str]:
    try:
        data = REGISTRY.read_bytes()
    except OSError:
        return []
    uid = os.getuid()
    return sorted({m.decode(errors="replace") for m in re.findall(rb"jack-%d:([^:\x00]+):" % uid, data)})


def _restart_and_stop(name: str, jackd: str = "jackd") -> None:
    env = dict(os.environ, JACK_NO_START_SERVER="1")
    cmd = [jackd, "-n", name, "--no-realtime", "-d", "dummy", "-r", "48000", "-p", "256"]
    with contextlib.suppress(OSError):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(0.5)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def reclaim(force: bool = False) -> None:
    """Free stale registry slots (once per process unless ``force``)."""
    global _done
    if _done and not force:
        return
    _done = True
    running = _jackd_names()
    if running is None:
        for path in SHM.glob("jack*"):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    for child in path.rglob("*"):
                        if child.is_file():
                            child.unlink()
                else:
                    path.unlink()
        return
    for name in registered_names():
        if name not in running:
            _restart_and_stop(name)
