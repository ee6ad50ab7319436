"""Small JACK queries through ctypes, for the MIDI links.

Two users:

* :class:`JackWatch` (in the MIDI helper process): is our port still connected? A peer that
  closes its JACK port and opens it again faster than the port-list check looks (rtmidi gives
  no event) comes back under the same name, but JACK dropped our connection to it: the name
  check alone would never notice. It can also break a connection (``disconnect``), which the
  helper does before closing its input so that no input callback is in flight at teardown.
* :func:`list_ports` (in the daemon): which JACK MIDI ports exist, so that the daemon only
  starts a MIDI helper process when the configured pattern matches a port.

Both open one small JACK client that is **never activated** (it takes no part in the audio
graph and runs no process callback), through the **same** libjack that python-rtmidi loaded
(two libjack copies in one process would each keep their own view of the server). ctypes
releases the GIL during every call, so a call that waits for the JACK server never blocks
a Python callback that another JACK thread of this process is waiting to run.

Everything here is best effort: if libjack cannot be found or the client cannot open, the
functions return None and the callers fall back to rtmidi's own view.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_JACK_NO_START_SERVER = 0x01
_JACK_PORT_IS_INPUT = 0x1
_JACK_PORT_IS_OUTPUT = 0x2
_MIDI_TYPE = b"8 bit raw midi"
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
        lib.jack_disconnect.restype = ctypes.c_int
        lib.jack_disconnect.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.jack_get_ports.restype = ctypes.POINTER(ctypes.c_char_p)
        lib.jack_get_ports.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong]
        lib.jack_free.restype = None
        lib.jack_free.argtypes = [ctypes.c_void_p]
        lib.jack_on_shutdown.restype = None
        lib.jack_on_shutdown.argtypes = [ctypes.c_void_p, _SHUTDOWN_CB, ctypes.c_void_p]
        lib.jack_set_error_function.restype = None
        lib.jack_set_error_function.argtypes = [_MESSAGE_CB]
        lib.jack_set_info_function.restype = None
        lib.jack_set_info_function.argtypes = [_MESSAGE_CB]
    except (OSError, AttributeError) as exc:
        log.debug("libjack not usable through ctypes: %s", exc)
        _lib_failed = True
        return None
    _lib = lib
    return lib


_SHUTDOWN_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_MESSAGE_CB = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


def _jack_message(text: bytes | None) -> None:
    log.debug("libjack: %s", (text or b"").decode("utf-8", "replace"))


_jack_message_cb = _MESSAGE_CB(_jack_message)


def route_messages_to_log() -> bool:
    """Send libjack's own messages (printed on stderr by default, e.g. "Cannot connect to server
    socket" at every probe while JACK is down) to this module's logger at DEBUG level.
    Only for the daemon process: the callback needs the GIL, so never where a JACK thread runs
    Python (the MIDI helper keeps libjack's default printer)."""
    lib = _libjack()
    if lib is None:
        return False
    lib.jack_set_error_function(_jack_message_cb)
    lib.jack_set_info_function(_jack_message_cb)
    return True


def _release() -> None:
    """At exit, before the interpreter goes: no libjack thread may call into Python afterwards."""
    global _probe
    with _probe_lock:
        if _probe is not None:
            _probe[1].close()
            _probe = None
    if _lib is not None:
        _lib.jack_set_error_function(_MESSAGE_CB())  # NULL: libjack's own printer again
        _lib.jack_set_info_function(_MESSAGE_CB())


class JackWatch:
    """One non-activated JACK client; every method returns None when it is not available."""

    def __init__(self, client_name: str) -> None:
        self._client: int | None = None
        self.dead = False
        self._on_shutdown = _SHUTDOWN_CB(self._shutdown)  # kept referenced while the client lives
        lib = _libjack()
        if lib is None:
            return
        status = ctypes.c_int(0)
        client = lib.jack_client_open(client_name.encode()[:60], _JACK_NO_START_SERVER, ctypes.byref(status))
        if not client:
            log.debug("JACK client %r not opened (status 0x%x)", client_name, status.value)
            return
        lib.jack_on_shutdown(client, self._on_shutdown, None)
        self._client = client

    def _shutdown(self, _arg: object) -> None:
        # runs in a JACK thread when the server goes away; the client is unusable from now on
        self.dead = True

    @property
    def ok(self) -> bool:
        return self._client is not None and not self.dead

    def connected(self, port: str) -> bool | None:
        """Whether ``port`` (a full JACK port name) has a connection; None if unknown."""
        lib = _lib
        if not self.ok or lib is None:
            return None
        handle = lib.jack_port_by_name(self._client, port.encode())
        if not handle:
            return None
        return bool(lib.jack_port_connected(handle) > 0)

    def disconnect(self, source: str, destination: str) -> bool | None:
        """Break the connection ``source`` -> ``destination``; None if unknown."""
        lib = _lib
        if not self.ok or lib is None:
            return None
        return bool(lib.jack_disconnect(self._client, source.encode(), destination.encode()) == 0)

    def midi_ports(self, inputs: bool) -> list[str] | None:
        """Full names of the JACK MIDI input ports (``inputs``) or output ports; None if unknown."""
        lib = _lib
        if not self.ok or lib is None:
            return None
        flags = _JACK_PORT_IS_INPUT if inputs else _JACK_PORT_IS_OUTPUT
        array = lib.jack_get_ports(self._client, None, _MIDI_TYPE, flags)
        if not array:
            return []
        names: list[str] = []
        try:
            i = 0
            while array[i] is not None:
                names.append(array[i].decode("utf-8", "replace"))
                i += 1
        finally:
            lib.jack_free(ctypes.cast(array, ctypes.c_void_p))
        return names

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and _lib is not None:
            _lib.jack_client_close(client)  # also after a server shutdown: frees libjack's state


_probe: tuple[str, JackWatch] | None = None
_probe_lock = threading.Lock()


def list_ports(inputs: bool) -> list[str] | None:
    """JACK MIDI ports seen by one shared, non-activated client of this process, opened on
    first use and again after its server went away or ``JACK_DEFAULT_SERVER`` changed (libjack
    keeps one view of one server per process while any client is open, so the old one is
    closed first). None when JACK is not reachable."""
    global _probe
    server = os.environ.get("JACK_DEFAULT_SERVER", "default")
    with _probe_lock:
        if _probe is not None and (_probe[0] != server or not _probe[1].ok):
            _probe[1].close()
            _probe = None
        if _probe is None:
            probe = JackWatch("studio-bridge-probe")
            if not probe.ok:
                probe.close()
                return None
            _probe = (server, probe)
        return _probe[1].midi_ports(inputs)


atexit.register(_release)
