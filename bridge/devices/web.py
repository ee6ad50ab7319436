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

Modules: this one is the device (lifecycle, the hub's side, the consoles); the message shapes and
the verbs a page may use are in :mod:`bridge.devices._web_protocol`, the HTTP checks, page, static
files and exports in :mod:`bridge.devices._web_http`, the take sheet it keeps in
:mod:`bridge.devices._takesheet`, the allowlist and the ``bind``/``port``/``allow`` options it
shares with the OSC API in :mod:`bridge.devices._netapi`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bridge import state as S
from bridge.devices import _web_http as http
from bridge.devices._netapi import Allowlist, ListenOptions, RateLimitedLog
from bridge.devices._takesheet import SessionSheet, record_from_entry
from bridge.devices._web_protocol import (
    HARD_MESSAGE_LIMIT,
    ConsoleConnection,
    Refusal,
    hello_message,
    read_message,
    reply_message,
    snapshot_message,
    state_message,
)
from bridge.devices.base import DeviceContext, FeedbackMode, SyncDevice
from bridge.errors import DeviceUnavailable
from bridge.options import port_check, positive
from bridge.vocab import Feedback, Inbound, LogEntry, Outbound, Request, SetTalkback, Value

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_PORT = 9124
LOG_FILE = "session-log.sqlite3"


def _check_hosts(value: Any) -> str | None:
    for item in value:
        if not isinstance(item, str) or not item or any(c in item for c in "/:@ "):
            return f'host names such as "studio-a.local" ("{item}" is not one)'
    return None


def _check_message_size(value: Any) -> str | None:
    return None if 256 <= value <= HARD_MESSAGE_LIMIT else f"an integer 256-{HARD_MESSAGE_LIMIT} (bytes)"


@dataclass(frozen=True)
class WebOptions(ListenOptions):
    TABLE: ClassVar[str] = "web"
    port: int = field(default=DEFAULT_PORT, metadata={"check": port_check})
    #: extra names the console is reached by (Host header), besides IPs, localhost, hostname(.local)
    hosts: list[str] = field(default_factory=list, metadata={"check": _check_hosts})
    token: str = ""
    #: the producer view has transport buttons (play / stop / record)
    producer_transport: bool = True
    max_message: int = field(default=16384, metadata={"check": _check_message_size})
    max_consoles: int = field(default=64, metadata={"check": positive})


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
        self._hostnames = http.private_hostnames() | {h.lower() for h in self.options.hosts}
        self._inbox: deque[Inbound] = deque()
        self._wake = asyncio.Event()
        self._state: dict[str, Value] = {}
        self._sheet = SessionSheet()
        self._sheet_dirty = True
        self._state_pending: dict[str, Value] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._consoles: set[ConsoleConnection] = set()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._caught_up = False
        self._web: Any = None  # the aiohttp.web module, once imported
        self._refusals = RateLimitedLog(
            log, "web console: %d more refusals in the last %.0f s", level=logging.INFO
        )
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
        self._web = await http.import_aiohttp_web()
        web_mod = self._web
        await self._sheet.load(self._log_path())
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
        self._refusals.close()
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

    async def _catch_up(self) -> None:
        await self._sheet.load(self._log_path(), after=self._sheet.last_seq)
        self._caught_up = True
        self._mark_sheet_dirty()

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
            record = record_from_entry(message)
            if record is None:
                log.error("web console: unreadable log entry %s", message.seq)
                return
            if self._sheet.add(record):
                self._mark_sheet_dirty()

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
            text = state_message(self._state_pending)
            self._state_pending = {}
            self._broadcast(text)
        if self._sheet_dirty and self._consoles:  # nobody looking: built at the next connect
            self._broadcast(self._rebuild_sheet())

    def _rebuild_sheet(self) -> str:
        self._sheet_dirty = False
        return self._sheet.rebuild()

    def _broadcast(self, text: str) -> None:
        for console in list(self._consoles):
            if not console.push(text):
                self._drop(console, "too far behind")

    def _drop(self, console: ConsoleConnection, why: str) -> None:
        if console in self._consoles:
            self.counters["dropped_consoles"] += 1
            log.info("web console: closing the connection of %s (%s); it will resync", console.peer, why)
        self._consoles.discard(console)
        self._release_talkback(console)
        console.closed = True
        console.wake.set()

    # ------------------------------------------------------------------ HTTP

    def _refuse(self, counter: str, request: web.Request, why: str) -> web.Response:
        self.counters[counter] += 1
        self._refusals.log(
            "web console: refused %s %s from %s: %s", request.method, request.path, request.remote, why
        )
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
            if not http.host_ok(request.headers.get("Host"), self._hostnames):
                return self._refuse("bad_host", request, f"unknown Host {request.headers.get('Host')!r}")
            if not http.token_ok(request, self.options.token):
                return self._refuse("bad_token", request, "missing or wrong token")
            response: web.StreamResponse = await handler(request)
            return response

        return guard

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return http.index(self._web, request, self.options.token)

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return http.static(self._web, request)

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = self._web.json_response(self.stats())
        return response

    async def _export(self, request: web.Request) -> web.StreamResponse:
        return await http.export(self._web, request, self._log_path(), self.ctx.room)

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        web_mod = self._web
        if not http.origin_ok(request):
            origin = request.headers.get("Origin")
            return self._refuse("bad_origin", request, f"cross-origin WebSocket from {origin!r}")
        if len(self._consoles) >= self.options.max_consoles:
            return web_mod.Response(status=503, text="too many consoles\n")  # type: ignore[no-any-return]
        ws = web_mod.WebSocketResponse(heartbeat=10.0, max_msg_size=HARD_MESSAGE_LIMIT, compress=False)
        await ws.prepare(request)
        response: web.StreamResponse = ws
        console = ConsoleConnection(ws, request.remote or "?")
        if self._sheet_dirty:  # the others get what changed first; the new one the whole sheet
            self._broadcast(self._rebuild_sheet())
        self._consoles.add(console)
        self.counters["consoles_opened"] += 1
        roles = self.ctx.roles() if self.ctx.roles is not None else {}
        console.push(hello_message(self.ctx.room, self.options.producer_transport, roles))
        console.push(self._snapshot_text())
        writer = asyncio.get_running_loop().create_task(self._write(console), name=f"{self.name}-ws-writer")
        try:
            async for msg in ws:
                if msg.type == web_mod.WSMsgType.TEXT:
                    self._on_message(console, msg.data)
                elif msg.type == web_mod.WSMsgType.BINARY:
                    self.counters["malformed"] += 1
                    console.push(reply_message(None, "text frames only"))
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
        return snapshot_message(self._state, self._sheet.text)

    async def _write(self, console: ConsoleConnection) -> None:
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

    def _reply(self, console: ConsoleConnection, ident: Any, error: str | None) -> None:
        # the facts first (state and take sheet the action changed), then the answer
        self.flush()
        console.push(reply_message(ident, error))

    def _on_message(self, console: ConsoleConnection, data: str) -> None:
        self.counters["messages"] += 1
        try:
            action = read_message(
                data, self.options.max_message, self._state.get(S.SONG), self.options.producer_transport
            )
        except Refusal as exc:
            self.counters[exc.counter] += 1
            self._reply(console, exc.ident, exc.reason)
            return
        command = action.command
        if command is None:  # "snapshot" or "ping"
            if action.verb == "snapshot":
                console.push(self._snapshot_text())
            self._reply(console, action.ident, None)
            return
        self.counters["actions"] += 1
        if isinstance(command, SetTalkback):
            console.talkback = command.on
        ident = action.ident

        def done(error: str | None) -> None:
            self._reply(console, ident, error)

        self._submit(Request(command, done))

    def _submit(self, item: Inbound) -> None:
        self._inbox.append(item)
        self._wake.set()

    def _release_talkback(self, console: ConsoleConnection) -> None:
        """A page that held talkback and went away (closed, lost, dropped) lets go of it."""
        if console.talkback:
            console.talkback = False
            if self._state.get(S.TALKBACK) is True and not any(c.talkback for c in self._consoles):
                log.info("web console: %s went away holding talkback; released", console.peer)
                self._submit(SetTalkback(False))
