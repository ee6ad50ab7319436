"""Child processes of drivers (the MIDI helper, the talkback recorder): started the same way."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from bridge.errors import DeviceUnavailable


async def spawn_module(
    module: str, config: dict[str, Any], what: str, stdout: int | None = None
) -> asyncio.subprocess.Process:
    """``python -m <module> <config as JSON>`` with pipes on stdin, stdout and stderr; raises
    DeviceUnavailable("cannot start <what>: ...") when the process cannot start."""
    return await spawn_program([sys.executable, "-m", module, json.dumps(config)], what, stdout)


async def spawn_program(argv: list[str], what: str, stdout: int | None = None) -> asyncio.subprocess.Process:
    """``argv`` with pipes on stdin, stdout and stderr (see :func:`spawn_module`); ``stdout``: a
    file descriptor of the caller's for the child's stdout instead (it stays the caller's to
    close)."""
    env = dict(os.environ)
    env.setdefault("JACK_NO_START_SERVER", "1")  # never let libjack start a server of its own
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE if stdout is None else stdout,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise DeviceUnavailable(f"cannot start {what}: {exc}") from exc
