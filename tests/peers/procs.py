"""Processes a test starts must not outlive it, even when the test run is killed.

``die_with_parent`` (a ``preexec_fn`` for ``subprocess.Popen``) asks Linux to send the child
SIGTERM when the process that started it exits, however it exits (finalizers do not run when
pytest itself is killed by a timeout). Finalizers still stop everything in the normal case.
"""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
