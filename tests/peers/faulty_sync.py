"""Build the fsync/fdatasync fault shim (faulty_sync.c) for LD_PRELOAD.

so = build(tmp_path)                 # None when there is no C compiler
env = {"LD_PRELOAD": str(so), "FAULTY_SYNC_FLAG": str(flag)}
flag.touch()   # from now on syncs of *-wal files fail with EIO; flag.unlink() heals the "disk"
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("faulty_sync.c")


def build(directory: Path) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = directory / "faulty_sync.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SOURCE), "-ldl"], check=True)
    return out
