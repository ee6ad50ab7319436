"""The native JACK MIDI helper (``sb_jackmidi.c``): where its binary is and how it is built.

``scripts/setup`` builds it (``python -m bridge.devices.midi.jackmidi build``) when a C compiler and
JACK's headers are there (as root it installs ``libjack-jackd2-dev``). MidiLink uses it for
JACK links when the binary exists and is not older than its source; otherwise, and for ALSA,
the Python helper (``bridge/devices/midi/helper_proc.py``). ``STUDIO_BRIDGE_MIDI_HELPER=python``
forces the Python helper (tests run both).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "sb_jackmidi.c"
BINARY = HERE / "sb-jackmidi"


def native_helper() -> str | None:
    """Path of a usable native helper binary, or None (use the Python helper)."""
    if os.environ.get("STUDIO_BRIDGE_MIDI_HELPER", "").lower() == "python":
        return None
    try:
        if BINARY.stat().st_mtime < SOURCE.stat().st_mtime or not os.access(BINARY, os.X_OK):
            return None
    except OSError:
        return None
    return str(BINARY)


def build(quiet: bool = False) -> str | None:
    """Compile the helper next to its source; the reason when it cannot be built."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler (cc)"
    if not Path("/usr/include/jack/jack.h").exists() and not os.environ.get("CFLAGS"):
        return "JACK's headers are missing (Debian: libjack-jackd2-dev)"
    tmp = BINARY.with_suffix(".tmp")
    cmd = [cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE), "-ljack", "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        return f"compiling failed: {r.stderr.strip()[-2000:]}"
    tmp.replace(BINARY)
    return None


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"]:
        sys.stderr.write("usage: python -m bridge.devices.midi.jackmidi build\n")
        return 2
    why = build()
    if why:
        sys.stderr.write(f"native JACK MIDI helper not built ({why}); the Python helper is used\n")
        return 1
    sys.stderr.write(f"native JACK MIDI helper built: {BINARY}\n")
    return 0
