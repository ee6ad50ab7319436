"""The producer's console: a web page served by the daemon, live over a WebSocket.

A supervised device like the OSC API (kind ``web``, the top-level ``[web]`` table). It gets every
studio-state key (``feedback = "state"``) and every durable session-log record (``wants_log``),
folds the open session's records into the take sheet (:func:`bridge.log.takesheet.build_take_sheet`) and
pushes both to every open console. Actions from a page become hub ``Request``s; the page is
answered only when the hub calls ``done`` (durable in the log, or confirmed by the device), so the
page shows pending -> done / error and never an optimistic result.

HTTP (aiohttp, imported when the device starts, in a worker thread, so start-up stays fast):

* ``GET /``: the producer view (``bridge/web/index.html``); ``GET /static/<file>``: its CSS/JS;
* ``GET /ws``: the WebSocket (JSON text frames, see below);
* ``GET /export/<html|csv|json>[?session=<id>]``: the session report / take sheet as a download;
* ``GET /stats``: the counters below, as JSON.

Security: the peer address must be in ``allow`` (the OSC API's private-network list by default),
the ``Host`` header must be an IP literal, ``localhost``, this machine's name (``name``,
``name.local``) or one of ``hosts`` (no DNS rebinding), a WebSocket's ``Origin`` (when a browser
sends one) must be the page's own origin (no cross-site WebSocket), and with ``token`` set every
request needs it (``?token=`` once, then a cookie; or ``Authorization: Bearer``). Refusals are
answered 403 and counted (``denied``, ``bad_host``, ``bad_origin``, ``bad_token``).

WebSocket protocol (server -> page): ``{"t": "hello", "room", "view", "transport", "verbs",
"server_time"}``, ``{"t": "snapshot", "state": {...}, "sheet": {...}}`` at connect,
``{"t": "state", "set": {key: value}}`` for changed keys (``null``: gone), ``{"t": "delta", ...}``
(the takes / cues / notes that changed) when a durable record changes the take sheet, ``{"t":
"sheet", "sheet": {...}}`` when the session changed, and ``{"t": "reply", "id",
"ok": true}`` or ``{"t": "reply", "id", "ok": false, "error": "..."}`` for each action.
Page -> server: ``{"id": n, "verb": "take.mark", "args": {...}}``: a verb of the command registry
(``bridge/commands.py``) in ``PRODUCER_VERBS``, built by ``commands.build``; ``args`` may also
name the ``song`` of the take (refused unless it is the current song). Or ``{"id": n, "verb":
"snapshot"}`` / ``"ping"``. A malformed, oversized (> ``max_message`` bytes) or unknown
message is answered with an error reply and counted; the connection stays open. A console whose
connection closes while it holds talkback releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bridge import state as S
from bridge.devices.base import DeviceContext, FeedbackMode, SyncDevice
from bridge.devices.osc_api import PRIVATE_NETWORKS, Allowlist, _check_networks
from bridge.errors import ConfigError, DeviceUnavailable
from bridge.options import port_check, positive
from bridge.vocab import (
    Command,
    Feedback,
    Inbound,
    LogEntry,
    Outbound,
    Request,
    SetTalkback,
    Value,
)

if TYPE_CHECKING:
    from aiohttp import web

    from bridge.log.records import Record
    from bridge.log.takesheet import TakeSheet

log = logging.getLogger(__name__)

DEFAULT_PORT = 9124
STATIC_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript", "icon.svg": "image/svg+xml"}
LOG_FILE = "session-log.sqlite3"
#: aiohttp's own cap: a frame above this closes the connection (1009); below it, max_message
#: answers with an error reply and keeps the connection
HARD_MESSAGE_LIMIT = 1 << 20
#: messages queued for one console before it is dropped (it reconnects and resyncs)
MAX_BACKLOG = 2000
#: record kinds that change what the take sheet shows
SHEET_KINDS = frozenset(
    {
        "session_start",
        "session_end",
        "take_marker",
        "take_flag",
        "take_rename",
        "daw_marker",
        "note",
        "transport",
        "talkback_start",
        "talkback_end",
        "talkback_audio",
        "song",
    }
)
COOKIE = "studio_bridge_token"


def _check_hosts(value: Any) -> str | None:
    for item in value:
        if not isinstance(item, str) or not item or any(c in item for c in "/:@ "):
            return f'host names such as "studio-a.local" ("{item}" is not one)'
    return None


def _check_message_size(value: Any) -> str | None:
    return None if 256 <= value <= HARD_MESSAGE_LIMIT else f"an integer 256-{HARD_MESSAGE_LIMIT} (bytes)"


@dataclass(frozen=True)
class WebOptions:
    bind: str = "0.0.0.0"
    port: int = field(default=DEFAULT_PORT, metadata={"check": port_check})
    allow: list[str] = field(
        default_factory=lambda: list(PRIVATE_NETWORKS), metadata={"check": _check_networks}
    )
    #: extra names the console is reached by (Host header), besides IPs, localhost, hostname(.local)
    hosts: list[str] = field(default_factory=list, metadata={"check": _check_hosts})
    token: str = ""
    #: the producer view has transport buttons (play / stop / record)
    producer_transport: bool = True
    max_message: int = field(default=16384, metadata={"check": _check_message_size})
    max_consoles: int = field(default=64, metadata={"check": positive})
    #: state pushes per second at most for continuous keys (the playhead)
    position_rate: float = field(default=10.0, metadata={"check": positive})


# ------------------------------------------------------------------------------------------ verbs


#: the verbs of the command registry a producer's page may use (transport ones only while
#: ``producer_transport``); anything else is refused like an unknown verb
PRODUCER_VERBS: frozenset[str] = frozenset(
    {
        "transport.play",
        "transport.stop",
        "transport.record",
        "song",
        "song.add",
        "song.next",
        "song.previous",
        "take.mark",
        "take.select",
        "take.select.next",
        "take.select.previous",
        "take.circle",
        "take.falsestart",
        "take.rename",
        "note",
        "talkback",
    }
)
TEXT_LIMIT = 500


def page_verbs(transport: bool) -> list[dict[str, object]]:
    """The registry's schema of the verbs the page may use."""
    from bridge import commands

    return [
        v
        for v in commands.schema()
        if v["name"] in PRODUCER_VERBS and (transport or not str(v["name"]).startswith("transport."))
    ]


def build_command(verb: str, args: dict[str, Any], transport: bool) -> Command:
    """A page's action -> the Command, through the command registry; ``commands.ArgError`` (an
    ``UnknownVerb`` for a verb the page may not use) with a one-line reason when it cannot be."""
    from bridge import commands

    if verb not in PRODUCER_VERBS:
        raise commands.UnknownVerb(f"unknown verb {verb!r}")
    if verb.startswith("transport.") and not transport:
        raise commands.ArgError("transport is switched off for the producer view")
    for key, value in args.items():
        if isinstance(value, str) and len(value) > TEXT_LIMIT:
            raise commands.ArgError(f"{verb}: {key}: at most {TEXT_LIMIT} characters")
    return commands.build(verb, args)


# ------------------------------------------------------------------------------------------ helpers


def _private_hostnames() -> set[str]:
    names = {"localhost"}
    with contextlib.suppress(OSError):
        name = socket.gethostname().lower()
        if name:
            names.update({name, name + ".local", name.split(".")[0]})
    return names


def _host_name(header: str) -> str:
    """``Host`` header -> the host part (``[::1]:9124`` -> ``::1``), lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]")[0]
    if header.count(":") == 1:
        return header.split(":")[0]
    return header


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    return True


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


class _Limited:
    """Log refusals without letting a flood fill the journal: 5 per 10 s, then a count."""

    def __init__(self, per_window: int = 5, window: float = 10.0) -> None:
        self.per_window, self.window = per_window, window
        self._start, self._count, self._suppressed = float("-inf"), 0, 0

    def flush(self) -> None:
        if self._suppressed:
            log.info("web console: %d more refusals in the last %.0f s", self._suppressed, self.window)
            self._suppressed = 0

    def note(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start > self.window:
            self.flush()
            self._start, self._count = now, 0
        if self._count < self.per_window:
            self._count += 1
            log.info("web console: " + msg, *args)
        else:
            self._suppressed += 1


@dataclass(eq=False)
class _Console:
    """One open page."""

    ws: web.WebSocketResponse
    peer: str
    queue: deque[str] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    talkback: bool = False
    closed: bool = False
    opened: float = field(default_factory=time.monotonic)

    def push(self, text: str) -> bool:
        if self.closed:
            return False
        if len(self.queue) >= MAX_BACKLOG:
            return False
        self.queue.append(text)
        self.wake.set()
        return True


class WebConsole(SyncDevice[WebOptions]):
    kind: ClassVar[str] = "web"
    feedback: ClassVar[FeedbackMode] = "state"
    wants_log: ClassVar[bool] = True
    Options: ClassVar[type[WebOptions]] = WebOptions

    def __init__(
        self, name: str, options: WebOptions | None = None, ctx: DeviceContext | None = None
    ) -> None:
        super().__init__(name, options or WebOptions(), ctx)
        self._allowed = Allowlist(self.options.allow)
        self._hostnames = _private_hostnames() | {h.lower() for h in self.options.hosts}
        self._inbox: deque[Inbound] = deque()
        self._wake = asyncio.Event()
        self._state: dict[str, Value] = {}
        self._records: dict[int, Record] = {}
        self._session: int | None = None
        self._sheet_text = "null"
        self._sheet_seen: dict[str, Any] | None = None
        self._sheet_dirty = True
        self._state_pending: dict[str, Value] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._consoles: set[_Console] = set()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._log_ok: bool | None = None
        self._log_detail = ""
        self._last_seq = 0
        self._caught_up = False
        self._web: Any = None  # the aiohttp.web module, once imported
        self._refusals = _Limited()
        self.counters = {
            "requests": 0,
            "consoles_opened": 0,
            "messages": 0,
            "actions": 0,
            "denied": 0,
            "bad_host": 0,
            "bad_origin": 0,
            "bad_token": 0,
            "malformed": 0,
            "oversized": 0,
            "unknown_verb": 0,
            "bad_args": 0,
            "refused_transport": 0,
            "dropped_consoles": 0,
        }

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> WebConsole:
        if self.ctx.ready is not None:
            await self.ctx.ready.wait()  # the import would slow the daemon's start-up to ready
        self._web = await _import_aiohttp_web()
        web_mod = self._web
        await self._load_records()
        app = web_mod.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/export/{fmt}", self._export)
        app.router.add_get("/stats", self._stats)
        runner = web_mod.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web_mod.TCPSite(runner, self.options.bind, self.options.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise DeviceUnavailable(
                f"cannot listen on tcp {self.options.bind}:{self.options.port}: {exc.strerror or exc}"
            ) from exc
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self._port = int(sockets[0].getsockname()[1]) if sockets else self.options.port
        log.info("web console on http://%s:%d/", self.options.bind, self._port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        consoles = list(self._consoles)
        for console in consoles:
            self._release_talkback(console)
            console.closed = True
            console.wake.set()
        for console in consoles:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(console.ws.close(code=1001, message=b"daemon stopping"), 0.5)
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._runner.cleanup(), 1.0)
            self._runner = None
        self._refusals.flush()
        refused = {
            k: v
            for k, v in self.counters.items()
            if k in ("denied", "bad_host", "bad_origin", "bad_token", "malformed", "oversized") and v
        }
        if refused:
            log.info("web console: refused so far: %s", ", ".join(f"{k} {v}" for k, v in refused.items()))

    @property
    def port(self) -> int:
        return self._port

    def outbox_interval(self) -> float:
        return 1.0 / self.options.position_rate

    def stats(self) -> dict[str, int]:
        return dict(self.counters, consoles=len(self._consoles))

    async def receive(self) -> AsyncIterator[Inbound]:
        # records that became durable between the first read and the device going up
        asyncio.get_running_loop().create_task(self._catch_up(), name=f"{self.name}-catch-up")
        while True:
            while not self._inbox:
                self._wake.clear()
                await self._wake.wait()
            yield self._inbox.popleft()

    # ------------------------------------------------------------------ the session's records

    def _log_path(self) -> Path:
        return self.ctx.data_dir / LOG_FILE

    async def _load_records(self, after: int = 0) -> None:
        from bridge.log.reader import read_records

        path = self._log_path()
        if not path.exists():
            self._log_ok, self._log_detail = True, "no log yet"
            return
        try:
            records = await asyncio.to_thread(read_records, path)
        except Exception as exc:  # the console still runs; the page shows the log as failed
            self._log_ok, self._log_detail = False, str(exc)
            log.error("web console: cannot read the session log: %s", exc)
            return
        self._log_ok, self._log_detail = True, ""
        for record in records:
            if record.seq > after:
                self._add_record(record)

    async def _catch_up(self) -> None:
        await self._load_records(after=self._last_seq)
        self._caught_up = True
        self._mark_sheet_dirty()

    def _add_record(self, record: Record) -> None:
        if record.seq in self._records:
            return
        if record.kind == "session_start" and record.session != self._session:
            self._records = {}
            self._session = record.session
        elif self._session is None:
            self._session = record.session
        elif record.session != self._session:
            if record.session < self._session:
                return
            self._records = {}
            self._session = record.session
        self._records[record.seq] = record
        self._last_seq = max(self._last_seq, record.seq)
        if record.kind in SHEET_KINDS:
            self._mark_sheet_dirty()

    def _sheet(self) -> dict[str, Any]:
        from bridge.log import takesheet as export

        records = sorted(self._records.values(), key=lambda r: r.seq)
        sheet = _sheet_json(export.build_take_sheet(records))
        songs: list[str] = []
        for record in records:
            if record.song and record.song not in songs:
                songs.append(record.song)
        sheet["songs"] = songs
        sheet["log"] = {"ok": self._log_ok, "detail": self._log_detail, "last_seq": self._last_seq}
        return sheet

    # ------------------------------------------------------------------ from the hub

    def send_now(self, message: Outbound) -> None:
        if isinstance(message, Feedback):
            if message.value is None:
                self._state.pop(message.control, None)
            else:
                self._state[message.control] = message.value
            if self._consoles:  # nobody looking: a console gets the whole state when it connects
                self._state_pending[message.control] = message.value
                self._schedule_flush()
        elif isinstance(message, LogEntry):
            from bridge.log.records import Record

            r = message.record
            try:
                record = Record(
                    seq=int(r["seq"]),  # type: ignore[call-overload]
                    session=int(r["session"]),  # type: ignore[call-overload]
                    ts=str(r["ts"]),
                    kind=str(r["kind"]),
                    song=r["song"] if isinstance(r["song"], str) else None,
                    take=r["take"] if isinstance(r["take"], int) else None,
                    daw_seconds=float(r["daw_seconds"])
                    if isinstance(r["daw_seconds"], int | float)
                    else None,
                    source=str(r["source"]),
                    text=str(r["text"]),
                    amends=r["amends"] if isinstance(r["amends"], int) else None,
                    data=dict(r["data"]) if isinstance(r["data"], dict) else {},
                )
            except (KeyError, TypeError, ValueError) as exc:
                log.error("web console: unreadable log entry %s: %s", message.seq, exc)
                return
            self._add_record(record)

    def _mark_sheet_dirty(self) -> None:
        self._sheet_dirty = True
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            with contextlib.suppress(RuntimeError):
                self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Push pending state changes and a changed take sheet to every console (coalesced)."""
        self._flush_handle = None
        if self._state_pending:
            text = _dumps({"t": "state", "set": self._state_pending})
            self._state_pending = {}
            self._broadcast(text)
        if self._sheet_dirty and self._consoles:  # nobody looking: built at the next connect
            self._broadcast(self._rebuild_sheet())

    def _rebuild_sheet(self) -> str:
        """Rebuild the take sheet; returns the message for open consoles: only the takes, cues
        and notes that changed (by seq; they never go away within a session), or the whole
        sheet when the session changed."""
        self._sheet_dirty = False
        sheet = self._sheet()
        self._sheet_text = _dumps(sheet)
        previous, self._sheet_seen = (
            self._sheet_seen,
            {kind: {item["seq"]: item for item in sheet[kind]} for kind in ("takes", "talkback", "notes")},
        )
        if previous is None or previous["session"] != sheet["session"]:
            self._sheet_seen["session"] = sheet["session"]
            return '{"t":"sheet","sheet":' + self._sheet_text + "}"
        self._sheet_seen["session"] = sheet["session"]
        delta: dict[str, Any] = {"t": "delta"}
        for kind in ("takes", "talkback", "notes"):
            old = previous[kind]
            delta[kind] = [item for seq, item in self._sheet_seen[kind].items() if old.get(seq) != item]
        for key in ("songs", "log", "session"):
            delta[key] = sheet[key]
        return _dumps(delta)

    def _broadcast(self, text: str) -> None:
        for console in list(self._consoles):
            if not console.push(text):
                self._drop(console, "too far behind")

    def _drop(self, console: _Console, why: str) -> None:
        if console in self._consoles:
            self.counters["dropped_consoles"] += 1
            log.info("web console: closing the connection of %s (%s); it will resync", console.peer, why)
        self._consoles.discard(console)
        self._release_talkback(console)
        console.closed = True
        console.wake.set()

    # ------------------------------------------------------------------ HTTP

    def _host_ok(self, header: str | None) -> bool:
        if not header:
            return False
        name = _host_name(header)
        return _is_ip(name) or name in self._hostnames

    def _token_ok(self, request: web.Request) -> bool:
        token = self.options.token
        if not token:
            return True
        offered = [
            request.query.get("token", ""),
            request.cookies.get(COOKIE, ""),
            request.headers.get("Authorization", "").removeprefix("Bearer ").strip(),
        ]
        return any(o and hmac.compare_digest(o.encode(), token.encode()) for o in offered)

    def _refuse(self, counter: str, request: web.Request, why: str) -> web.Response:
        self.counters[counter] += 1
        self._refusals.note("refused %s %s from %s: %s", request.method, request.path, request.remote, why)
        response: web.Response = self._web.Response(status=403, text=f"refused: {why}\n")
        return response

    @property
    def _guard(self) -> Any:
        web_mod = self._web

        @web_mod.middleware  # type: ignore[untyped-decorator]
        async def guard(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
            self.counters["requests"] += 1
            peer = request.remote or ""
            if not self._allowed(peer):
                return self._refuse("denied", request, f"{peer} is not in the allowlist")
            if not self._host_ok(request.headers.get("Host")):
                return self._refuse("bad_host", request, f"unknown Host {request.headers.get('Host')!r}")
            if not self._token_ok(request):
                return self._refuse("bad_token", request, "missing or wrong token")
            response: web.StreamResponse = await handler(request)
            return response

        return guard

    async def _index(self, request: web.Request) -> web.StreamResponse:
        web_mod = self._web
        if self.options.token and request.query.get("token"):
            # the token once in the address, then a cookie (and a clean address bar)
            response: web.StreamResponse = web_mod.HTTPFound("/")
            response.set_cookie(COOKIE, self.options.token, httponly=True, samesite="Strict")
            return response
        page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        return web_mod.Response(  # type: ignore[no-any-return]
            text=page, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    async def _static(self, request: web.Request) -> web.StreamResponse:
        web_mod = self._web
        name = request.match_info["name"]
        kind = STATIC_FILES.get(name)
        if kind is None:
            raise web_mod.HTTPNotFound()
        return web_mod.Response(  # type: ignore[no-any-return]
            body=(STATIC_DIR / name).read_bytes(),
            content_type=kind,
            headers={"Cache-Control": "no-cache"},
        )

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = self._web.json_response(self.stats())
        return response

    async def _export(self, request: web.Request) -> web.StreamResponse:
        web_mod = self._web
        fmt = request.match_info["fmt"]
        if fmt not in ("html", "csv", "json"):
            raise web_mod.HTTPNotFound()
        session_text = request.query.get("session", "")
        session = int(session_text) if session_text.isdigit() else None
        path = self._log_path()
        if not path.exists():
            raise web_mod.HTTPNotFound(text="no session log yet\n")
        text = await asyncio.to_thread(_render_export, path, session, fmt, self.ctx.room)
        stamp = time.strftime("%Y%m%d-%H%M")
        ext = {"html": "html", "csv": "csv", "json": "json"}[fmt]
        types = {"html": "text/html", "csv": "text/csv", "json": "application/json"}
        return web_mod.Response(  # type: ignore[no-any-return]
            text=text,
            content_type=types[fmt],
            headers={
                "Content-Disposition": f'attachment; filename="{self.ctx.room}-session-{stamp}.{ext}"',
                "Cache-Control": "no-store",
            },
        )

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        web_mod = self._web
        origin = request.headers.get("Origin")
        if origin is not None:
            expected = {
                f"http://{request.headers.get('Host', '')}",
                f"https://{request.headers.get('Host', '')}",
            }
            if origin.lower() not in {e.lower() for e in expected}:
                return self._refuse("bad_origin", request, f"cross-origin WebSocket from {origin!r}")
        if len(self._consoles) >= self.options.max_consoles:
            return web_mod.Response(status=503, text="too many consoles\n")  # type: ignore[no-any-return]
        ws = web_mod.WebSocketResponse(heartbeat=10.0, max_msg_size=HARD_MESSAGE_LIMIT, compress=False)
        await ws.prepare(request)
        response: web.StreamResponse = ws
        console = _Console(ws, request.remote or "?")
        if self._sheet_dirty:  # the others get what changed first; the new one the whole sheet
            self._broadcast(self._rebuild_sheet())
        self._consoles.add(console)
        self.counters["consoles_opened"] += 1
        console.push(
            _dumps(
                {
                    "t": "hello",
                    "room": self.ctx.room,
                    "view": "producer",
                    "transport": self.options.producer_transport,
                    "roles": self.ctx.roles() if self.ctx.roles is not None else {},
                    "verbs": page_verbs(self.options.producer_transport),
                    "server_time": time.time(),
                }
            )
        )
        console.push(self._snapshot_text())
        writer = asyncio.get_running_loop().create_task(self._write(console), name=f"{self.name}-ws-writer")
        try:
            async for msg in ws:
                if msg.type == web_mod.WSMsgType.TEXT:
                    self._on_message(console, msg.data)
                elif msg.type == web_mod.WSMsgType.BINARY:
                    self.counters["malformed"] += 1
                    console.push(_dumps({"t": "reply", "id": None, "ok": False, "error": "text frames only"}))
                elif msg.type == web_mod.WSMsgType.ERROR:
                    self.counters["oversized" if "size" in str(ws.exception()) else "malformed"] += 1
                    break
        finally:
            self._consoles.discard(console)
            self._release_talkback(console)
            console.closed = True
            console.wake.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 1.0)
            if not writer.done():
                writer.cancel()
        return response

    def _snapshot_text(self) -> str:
        return '{"t":"snapshot","state":' + _dumps(self._state) + ',"sheet":' + self._sheet_text + "}"

    async def _write(self, console: _Console) -> None:
        ws = console.ws
        try:
            while True:
                while console.queue:
                    await ws.send_str(console.queue.popleft())
                if console.closed:
                    break
                console.wake.clear()
                await console.wake.wait()
        except Exception as exc:  # a page that went away: its reader ends too
            log.debug("web console: send to %s failed: %s", console.peer, exc)
        finally:
            if console.closed and not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close(code=1008, message=b"too far behind")

    def _reply(self, console: _Console, ident: Any, error: str | None) -> None:
        # the facts first (state and take sheet the action changed), then the answer
        self.flush()
        message: dict[str, Any] = {"t": "reply", "id": ident, "ok": error is None}
        if error is not None:
            message["error"] = error
        console.push(_dumps(message))

    def _on_message(self, console: _Console, data: str) -> None:
        self.counters["messages"] += 1
        if len(data.encode()) > self.options.max_message:
            self.counters["oversized"] += 1
            self._reply(console, None, f"message too large (limit {self.options.max_message} bytes)")
            return
        try:
            message = json.loads(data)
        except ValueError:
            self.counters["malformed"] += 1
            self._reply(console, None, "not JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("verb"), str):
            self.counters["malformed"] += 1
            self._reply(
                console, message.get("id") if isinstance(message, dict) else None, "expected {id, verb, args}"
            )
            return
        ident = message.get("id")
        if not (ident is None or (isinstance(ident, int | str) and not isinstance(ident, bool))):
            ident = None
        verb, args = message["verb"], message.get("args", {})
        if verb == "snapshot":
            console.push(self._snapshot_text())
            self._reply(console, ident, None)
            return
        if verb == "ping":
            self._reply(console, ident, None)
            return
        if not isinstance(args, dict):
            self.counters["bad_args"] += 1
            self._reply(console, ident, "args: expected an object")
            return
        # a take is named by song and number on the page; take numbers are per song
        args = dict(args)
        song = args.pop("song", None)
        if song is not None and song != (self._state.get(S.SONG) or ""):
            self.counters["bad_args"] += 1
            self._reply(console, ident, f"that take is of song {song!r}: pick the song first")
            return
        from bridge import commands

        try:
            command = build_command(verb, args, self.options.producer_transport)
        except commands.UnknownVerb as exc:
            self.counters["unknown_verb"] += 1
            self._reply(console, ident, str(exc))
            return
        except commands.ArgError as exc:
            self.counters["refused_transport" if "switched off" in str(exc) else "bad_args"] += 1
            self._reply(console, ident, str(exc))
            return
        self.counters["actions"] += 1
        if isinstance(command, SetTalkback):
            console.talkback = command.on

        def done(error: str | None) -> None:
            self._reply(console, ident, error)

        self._submit(Request(command, done))

    def _submit(self, item: Inbound) -> None:
        self._inbox.append(item)
        self._wake.set()

    def _release_talkback(self, console: _Console) -> None:
        """A page that held talkback and went away (closed, lost, dropped) lets go of it."""
        if console.talkback:
            console.talkback = False
            if self._state.get(S.TALKBACK) is True and not any(c.talkback for c in self._consoles):
                log.info("web console: %s went away holding talkback; released", console.peer)
                self._submit(SetTalkback(False))


async def _import_aiohttp_web() -> Any:
    """aiohttp costs ~120 ms to import: in a daemon thread, so the daemon is ready meanwhile, and
    a daemon stopping while the import runs (``--exit-when-ready``) does not wait for it."""
    import importlib
    import sys
    import threading

    loaded = sys.modules.get("aiohttp.web")
    if loaded is not None:
        return loaded
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)

    def work() -> None:
        try:
            module, error = importlib.import_module("aiohttp.web"), None
        except BaseException as exc:  # ImportError and anything the import raised
            module, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, module, error)

    threading.Thread(target=work, name="web-import", daemon=True).start()
    try:
        return await fut
    except ImportError as exc:
        raise DeviceUnavailable(f"the web console needs aiohttp ({exc})") from exc


def _fields(item: Any) -> dict[str, Any]:
    return {name: getattr(item, name) for name in item.__slots__}


def _sheet_json(sheet: TakeSheet) -> dict[str, Any]:
    """``export.sheet_to_json`` without ``dataclasses.asdict`` (10x faster; tuples dump as lists)."""
    from bridge.log.takesheet import FORMAT

    return {
        "format": FORMAT,
        "version": 1,
        "session": {"id": sheet.session, "name": sheet.name, "started": sheet.started, "ended": sheet.ended},
        "takes": [_fields(t) for t in sheet.takes],
        "talkback": [_fields(c) for c in sheet.talkback],
        "notes": [_fields(n) for n in sheet.notes],
    }


def _render_export(path: Path, session: int | None, fmt: str, room: str) -> str:
    from bridge.log import formats
    from bridge.log.reader import read_records
    from bridge.log.takesheet import build_take_sheet

    records = read_records(path, session, amending=True)  # corrections made in later sessions too
    out = formats.get(fmt).render(build_take_sheet(records), records=records, room=room)
    return out if isinstance(out, str) else out.decode()


def check_bind(options: WebOptions, file: str) -> None:
    try:
        ipaddress.ip_address(options.bind)
    except ValueError as exc:
        raise ConfigError(
            f'{file}: web.bind: expected an IP address such as "0.0.0.0", got "{options.bind}"'
        ) from exc
