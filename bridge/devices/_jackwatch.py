"""Is a JACK port still connected? (for MIDI hot-plug on JACK)

A peer that closes its JACK port and opens it again faster than the port-list check looks
(rtmidi gives no event) comes back under the same name, but JACK dropped our connection to
it: the name check alone would never notice. ``JackWatch`` asks JACK itself how many
connections our own ports have. It opens one small JACK client (never activated, so it takes
no part in the audio graph) through the **same** libjack that python-rtmidi loaded (two
libjack copies in one process would each keep their own view of the server).

Everything here is best effort: if libjack cannot be found or the client cannot open,
``connected`` returns None and the caller keeps its name-based check.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from pathlib import Path

log = logging.getLogger(__name__)

_JACK_NO_START_SERVER = 0x01
_lib: ctypes.CDLL | None = None
_lib_failed = False


def _libjack() -> ctypes.CDLL | None:
    global _lib, _lib_failed
    if _lib is not None or _lib_failed:
        return _lib
    path: str | None = None
    try:  # the copy python-rtmidi loaded (its wheel bundles one)
        for line in Path("/proc/self/maps").read_text().splitlines():
            candidate = line.split()[-1] if line.split() else ""
            if "libjack" in Path(candidate).name:
                path = candidate
                break
    except OSError:
        pass
    path = path or ctypes.util.find_library("jack")
    if path is None:
        _lib_failed = True
        return None
    try:
        lib = ctypes.CDLL(path)
        lib.jack_client_open.restype = ctypes.c_void_p
        lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.jack_client_close.restype = ctypes.c_int
        lib.jack_client_close.argtypes = [ctypes.c_void_p]
        lib.jack_port_by_name.restype = ctypes.c_void_p
        lib.jack_port_by_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.jack_port_connected.restype = ctypes.c_int
        lib.jack_port_connected.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError) as exc:
        log.debug("libjack not usable for connection checks: %s", exc)
        _lib_failed = True
        return None
    _lib = lib
    return lib


class JackWatch:
    def __init__(self, client_name: str) -> None:
        self._client: int | None = None
        lib = _libjack()
        if lib is None:
            return
        status = ctypes.c_int(0)
        client = lib.jack_client_open(client_name.encode()[:60], _JACK_NO_START_SERVER, ctypes.byref(status))
        if not client:
            log.debug("JACK watch client %r not opened (status 0x%x)", client_name, status.value)
            return
        self._client = client

    def connected(self, port: str) -> bool | None:
        """Whether ``port`` (a full JACK port name) has a connection; None if unknown."""
        lib = _lib
        if self._client is None or lib is None:
            return None
        handle = lib.jack_port_by_name(self._client, port.encode())
        if not handle:
            return None
        return bool(lib.jack_port_connected(handle) > 0)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and _lib is not None:
            _lib.jack_client_close(client)
