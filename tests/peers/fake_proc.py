"""The test side of the fake peers that run as separate processes (fake X32, fake TotalMix, fake
OSC talkback): start one (on a given or a free UDP port), drive it with JSON lines on its
stdin, read its JSON answers, kill it (SIGKILL: the peer vanishes without a word) or stop it.

A peer script prints ``{"ready": <port>}`` once it listens, answers each command with one
JSON line (``{"ok": op}``, ``{"state": ...}`` or ``{"error": ...}``) and exits when its stdin
closes, so it never outlives the test (``die_with_parent`` covers a killed test run).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any, ClassVar


def emit(obj: dict[str, Any]) -> None:
    """Peer side: one JSON answer line on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_commands(commands: queue.SimpleQueue[dict[str, Any]]) -> None:
    """Peer side: feed stdin's JSON lines into ``commands`` (a final quit when stdin closes)."""

    def run() -> None:
        for line in sys.stdin:
            line = line.strip()
            if line:
                try:
                    commands.put(json.loads(line))
                except ValueError:
                    emit({"error": "bad json"})
        commands.put({"op": "quit"})

    threading.Thread(target=run, daemon=True).start()


class FakeProcess:
    """Test side: one peer process."""

    script: ClassVar[str]

    def __init__(self, port: int = 0, args: list[str] | None = None) -> None:
        self.port = port
        self.args = list(args or [])
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def start(self) -> Any:
        from peers.procs import die_with_parent

        self._lines = queue.SimpleQueue()
        cmd = [sys.executable, os.path.abspath(self.script), "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.port = int(self.expect("ready")["ready"])
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                self._lines.put(json.loads(line))
            except ValueError:
                continue

    def expect(self, key: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc is not None and self.proc.poll() is not None and self._lines.empty()):
                raise TimeoutError(f"{type(self).__name__}: no {key!r} reply")
            try:
                obj = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if "error" in obj:
                raise RuntimeError(obj["error"])
            if key in obj or obj.get("ok") == key:
                return obj

    def command(self, cmd: dict[str, Any], key: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.expect(key)

    def kill(self) -> None:
        """SIGKILL: the peer vanishes without a word."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
