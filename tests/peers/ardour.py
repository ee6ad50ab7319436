"""A real, headless Ardour 7 for tests: ``ardour7-lua`` (luasession) on the Dummy backend.

Each :class:`ArdourPeer` owns a private tmp directory holding

* ``cfg/ardour7/config``: an rc config with ``hide-dummy-backend=0`` and ``osc-port``
  (used as ``XDG_CONFIG_HOME``, so ``~/.config/ardour7`` is never touched),
* ``create.lua`` / ``serve.lua``: Lua scripts for luasession (create a session with mono
  audio tracks "Audio 1", "Audio 2"; host it until a stop file appears),
* ``S/S.ardour``: the session, with the OSC surface patched to ``active="1"
  address-only="0"`` (replies go to the sender's port).

Ardour binds 0.0.0.0 on its OSC port: only ever send to 127.0.0.1. Every step is bounded
in time; :meth:`ArdourPeer.stop` uses the stop file, then SIGTERM, then SIGKILL.

Use the ``ardour`` fixture (function scope): ``from peers.ardour import ardour  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers.procs import die_with_parent

LUASESSION = "/usr/lib/ardour7/luasession"
ARDOUR_LIB = "/usr/lib/ardour7"

CREATE_LUA = """
local dir  = os.getenv("PEER_SESSION_DIR")
local name = os.getenv("PEER_SESSION_NAME")
local n = tonumber(os.getenv("PEER_TRACKS") or "2")
local b = AudioEngine:set_backend("None (Dummy)", "", "")
assert(b, "no Dummy backend (hide-dummy-backend=0 missing from the rc config)")
local s = create_session(dir, name, 48000)
assert(s, "create_session failed")
local tl = s:new_audio_track(1, 2, nil, n, "Audio",
                             ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true)
for t in tl:iter() do print("track:", t:name()) end
s:save_state("", false, false, false, false, false)
print("CREATED", s:nominal_sample_rate())
close_session()
quit()
"""

SERVE_LUA = """
local dir  = os.getenv("PEER_SESSION_DIR")
local name = os.getenv("PEER_SESSION_NAME")
local secs = tonumber(os.getenv("PEER_SECONDS") or "600")
local stopfile = os.getenv("PEER_STOP_FILE")
local b = AudioEngine:set_backend("None (Dummy)", "", "")
assert(b, "no Dummy backend")
local s = load_session(dir, name)
assert(s, "load_session failed")
print(string.format("READY rate=%d", s:nominal_sample_rate()))
io.stdout:flush()
local function exists(p)
  local f = p and io.open(p, "r")
  if f then f:close(); return true end
  return false
end
for i = 1, secs * 20 do
  if exists(stopfile) then break end
  ARDOUR.LuaAPI.usleep(50000)
end
close_session()
print("CLOSED"); io.stdout:flush()
quit()
"""

OSC_PROTOCOL = "Open Sound Control (OSC)"
SUPERCLOCK_RATE = 282_240_000


def have_ardour() -> bool:
    return os.access(LUASESSION, os.X_OK)


def require_ardour() -> None:
    """Skip (or fail under CI) when the real Ardour is not installed."""
    if have_ardour():
        return
    msg = f"Ardour 7 luasession not found at {LUASESSION} (apt-get install ardour)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def free_udp_port() -> int:
    """A UDP port free on all interfaces (Ardour binds 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _osc(address: str, *args: int) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (4 - len(b) % 4)

    tags = "," + "i" * len(args)
    return (
        pad(address.encode()) + pad(tags.encode()) + b"".join(a.to_bytes(4, "big", signed=True) for a in args)
    )


class ArdourPeer:
    """One headless Ardour instance with its own config, session and OSC port."""

    def __init__(self, root: Path, port: int | None = None, tracks: int = 2, name: str = "S") -> None:
        self.root = root
        self.port = port or free_udp_port()
        self.tracks = tracks
        self.name = name
        self.cfg = root / "cfg"
        self.session_dir = root / name
        self.session_file = self.session_dir / f"{name}.ardour"
        self.stop_file = root / "stop"
        self.log_path = root / "ardour.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # ------------------------------------------------------------------ setup
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            XDG_CONFIG_HOME=str(self.cfg),
            XDG_CACHE_HOME=str(self.cfg / "cache"),
            XDG_DATA_HOME=str(self.cfg / "data"),
            JACK_NO_START_SERVER="1",
            ARDOUR_DATA_PATH="/usr/share/ardour7",
            ARDOUR_CONFIG_PATH="/etc/ardour7",
            ARDOUR_DLL_PATH=ARDOUR_LIB,
            VAMP_PATH=f"{ARDOUR_LIB}/vamp",
            LD_LIBRARY_PATH=ARDOUR_LIB + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else ""),
            PEER_SESSION_DIR=str(self.session_dir),
            PEER_SESSION_NAME=self.name,
            PEER_TRACKS=str(self.tracks),
            PEER_STOP_FILE=str(self.stop_file),
            PEER_SECONDS="900",
        )
        return env

    def _write_config(self) -> None:
        (self.cfg / "ardour7").mkdir(parents=True, exist_ok=True)
        (self.cfg / "cache").mkdir(exist_ok=True)
        (self.cfg / "data").mkdir(exist_ok=True)
        (self.cfg / "ardour7" / "config").write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n<Ardour><Config>'
            '<Option name="hide-dummy-backend" value="0"/>'
            f'<Option name="osc-port" value="{self.port}"/>'
            "</Config></Ardour>\n"
        )
        (self.root / "create.lua").write_text(CREATE_LUA)
        (self.root / "serve.lua").write_text(SERVE_LUA)

    def create(self) -> None:
        """Create a fresh session (about 1 s) and enable the OSC surface in it."""
        self._write_config()
        shutil.rmtree(self.session_dir, ignore_errors=True)
        out = subprocess.run(
            [LUASESSION, str(self.root / "create.lua")],
            env=self._env(),
            capture_output=True,
            timeout=90,
            check=False,
        )
        if b"CREATED" not in out.stdout or not self.session_file.exists():
            raise RuntimeError(
                f"Ardour session creation failed: {out.stdout[-2000:]!r} {out.stderr[-2000:]!r}"
            )
        self.patch_osc()

    def patch_osc(self) -> None:
        tree = ET.parse(self.session_file)
        cps = tree.getroot().find("ControlProtocols")
        assert cps is not None, "session has no <ControlProtocols>"
        node = next((p for p in cps.findall("Protocol") if p.get("name") == OSC_PROTOCOL), None)
        if node is None:
            node = ET.SubElement(cps, "Protocol", name=OSC_PROTOCOL)
        node.set("active", "1")
        node.set("address-only", "0")
        node.set("debugmode", "0")
        tree.write(self.session_file, encoding="UTF-8", xml_declaration=True)

    # ------------------------------------------------------------------ run
    def start(self, timeout: float = 60.0) -> None:
        """Start luasession on the session; return once OSC answers a query."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.stop_file.unlink(missing_ok=True)
        pending = self.session_dir / f"{self.name}.pending"
        pending.unlink(missing_ok=True)  # left by a kill -9 while recording
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [LUASESSION, str(self.root / "serve.lua")],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Ardour exited ({self.proc.returncode}) during start: {self.log_tail()}")
            # Ready = the session is loaded (READY line of this start) and the OSC port is bound.
            # (Not an OSC query: once a surface has sent /set_surface with a reply port, Ardour
            # sends every reply for 127.0.0.1 to that port.)
            if self.log_text().count("READY") >= self.starts and self.port_bound():
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"Ardour did not open OSC on {self.port} within {timeout} s: {self.log_tail()}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def port_bound(self) -> bool:
        """True if some socket is bound to UDP ``self.port`` (from /proc/net/udp{,6})."""
        hexport = f":{self.port:04X} "
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with contextlib.suppress(OSError), open(table) as fh:
                for line in fh.readlines()[1:]:
                    local = line.split()[1]
                    if (local + " ").endswith(hexport):
                        return True
        return False

    def ping(self, timeout: float = 0.5) -> bool:
        """True if Ardour answers an OSC query (``/transport_speed``) on its port."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(timeout)
            try:
                s.sendto(_osc("/transport_speed"), ("127.0.0.1", self.port))
                s.recvfrom(65536)
            except OSError:
                return False
            return True

    def send(self, address: str, *args: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(_osc(address, *args), ("127.0.0.1", self.port))

    def save(self, timeout: float = 15.0) -> str:
        """Ask Ardour to save (``/save_state``) and return the session XML once rewritten."""
        before = self.session_file.stat().st_mtime_ns
        self.send("/save_state")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(OSError):
                if self.session_file.stat().st_mtime_ns != before:
                    time.sleep(0.3)  # let the write finish (Ardour writes a tmp file and renames)
                    text = self.session_file.read_text(encoding="utf-8")
                    if text.rstrip().endswith("</Session>"):
                        return text
        raise TimeoutError("Ardour did not save the session")

    def session_xml(self) -> ET.Element:
        return ET.fromstring(self.session_file.read_text(encoding="utf-8"))

    def markers(self) -> list[tuple[str, float]]:
        """(name, seconds) of every plain marker in the saved session file.

        Ardour 7 writes audio-time positions as ``a<superclock>`` (282240000 ticks/s)."""
        out: list[tuple[str, float]] = []
        for loc in self.session_xml().iter("Location"):
            if "IsMark" not in (loc.get("flags") or "").split(","):
                continue
            start = loc.get("start") or "0"
            seconds = int(start[1:]) / SUPERCLOCK_RATE if start.startswith("a") else int(start) / 48000
            out.append((loc.get("name") or "", seconds))
        return out

    def marker_samples(self, rate: int = 48000) -> list[tuple[str, int]]:
        """(name, exact sample) of every plain marker in the saved session file, by position.

        ``a<superclock>`` is converted exactly (282240000 / 48000 = 5880 ticks per sample)."""
        out: list[tuple[str, int]] = []
        for loc in self.session_xml().iter("Location"):
            if "IsMark" not in (loc.get("flags") or "").split(","):
                continue
            start = loc.get("start") or "0"
            if start.startswith("a"):
                ticks = int(start[1:])
                assert ticks * rate % SUPERCLOCK_RATE == 0, f"marker at {ticks} ticks is not on a sample"
                sample = ticks * rate // SUPERCLOCK_RATE
            else:
                sample = int(start)
            out.append((loc.get("name") or "", sample))
        return sorted(out, key=lambda m: m[1])

    def armed_tracks(self) -> list[str]:
        """Names of the routes whose rec-enable control is on in the saved session file."""
        names = []
        for route in self.session_xml().iter("Route"):
            for c in route.iter("Controllable"):
                if c.get("name") == "rec-enable" and c.get("value") == "1":
                    names.append(route.get("name") or "")
        return names

    def take_files(self) -> list[Path]:
        return sorted((self.session_dir / "interchange" / self.name / "audiofiles").glob("*.wav"))

    def stop(self, timeout: float = 10.0) -> None:
        """Clean stop: stop file, then SIGTERM, then SIGKILL."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self.stop_file.touch()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        finally:
            self.stop_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """kill -9 (what a crash looks like to the bridge)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def restart(self, timeout: float = 60.0) -> None:
        """Start again on the same port and session (after :meth:`kill` or :meth:`stop`)."""
        self.kill()
        self.start(timeout)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def ardour(tmp_path: Path) -> Iterator[ArdourPeer]:
    """A fresh session with 2 mono tracks, served by a running headless Ardour."""
    require_ardour()
    peer = ArdourPeer(tmp_path / "ardour")
    peer.root.mkdir(parents=True)
    peer.create()
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()
        peer.kill()
