"""The web console's HTTP side, apart from the WebSocket: who may ask (the ``Host`` header and the
token; the allowlist is :class:`bridge.devices._netapi.Allowlist`), the page and its static files
(``bridge/web/``), the export downloads, and importing aiohttp off the event loop.

The handlers take the ``aiohttp.web`` module as an argument: it is imported when the device
starts (:func:`import_aiohttp_web`), never at module import.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import DeviceUnavailable

if TYPE_CHECKING:
    from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript", "icon.svg": "image/svg+xml"}
COOKIE = "studio_bridge_token"


# ------------------------------------------------------------------------------------ who may ask


def private_hostnames() -> set[str]:
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


def host_ok(header: str | None, hostnames: set[str]) -> bool:
    """The ``Host`` header names an IP literal or one of ``hostnames`` (no DNS rebinding)."""
    if not header:
        return False
    name = _host_name(header)
    return _is_ip(name) or name in hostnames


def token_ok(request: web.Request, token: str) -> bool:
    """No token configured, or the request has it (``?token=``, the cookie, or a Bearer header)."""
    if not token:
        return True
    offered = [
        request.query.get("token", ""),
        request.cookies.get(COOKIE, ""),
        request.headers.get("Authorization", "").removeprefix("Bearer ").strip(),
    ]
    return any(o and hmac.compare_digest(o.encode(), token.encode()) for o in offered)


def origin_ok(request: web.Request) -> bool:
    """A WebSocket's ``Origin`` (when a browser sends one) is the page's own (no cross-site)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    expected = {f"http://{request.headers.get('Host', '')}", f"https://{request.headers.get('Host', '')}"}
    return origin.lower() in {e.lower() for e in expected}


# ------------------------------------------------------------------------------------ the page


def index(web_mod: Any, request: web.Request, token: str) -> web.StreamResponse:
    if token and request.query.get("token"):
        # the token once in the address, then a cookie (and a clean address bar)
        response: web.StreamResponse = web_mod.HTTPFound("/")
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return web_mod.Response(  # type: ignore[no-any-return]
        text=page, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def static(web_mod: Any, request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    kind = STATIC_FILES.get(name)
    if kind is None:
        raise web_mod.HTTPNotFound()
    return web_mod.Response(  # type: ignore[no-any-return]
        body=(STATIC_DIR / name).read_bytes(),
        content_type=kind,
        headers={"Cache-Control": "no-cache"},
    )


async def export(web_mod: Any, request: web.Request, path: Path, room: str) -> web.StreamResponse:
    """``/export/<html|csv|json>[?session=<id>]``: the session report / take sheet as a download."""
    fmt = request.match_info["fmt"]
    if fmt not in ("html", "csv", "json"):
        raise web_mod.HTTPNotFound()
    session_text = request.query.get("session", "")
    session = int(session_text) if session_text.isdigit() else None
    if not path.exists():  # noqa: ASYNC240 - one stat
        raise web_mod.HTTPNotFound(text="no session log yet\n")
    text = await asyncio.to_thread(_render_export, path, session, fmt, room)
    stamp = time.strftime("%Y%m%d-%H%M")
    ext = {"html": "html", "csv": "csv", "json": "json"}[fmt]
    types = {"html": "text/html", "csv": "text/csv", "json": "application/json"}
    return web_mod.Response(  # type: ignore[no-any-return]
        text=text,
        content_type=types[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{room}-session-{stamp}.{ext}"',
            "Cache-Control": "no-store",
        },
    )


def _render_export(path: Path, session: int | None, fmt: str, room: str) -> str:
    from bridge.log import formats
    from bridge.log.reader import read_records
    from bridge.log.takesheet import build_take_sheet

    records = read_records(path, session, amending=True)  # corrections made in later sessions too
    out = formats.get(fmt).render(build_take_sheet(records), records=records, room=room)
    return out if isinstance(out, str) else out.decode()


# ------------------------------------------------------------------------------------ aiohttp


async def import_aiohttp_web() -> Any:
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

    # not a daemon thread: a stop while it still imports aiohttp's C extensions must wait for it
    # rather than finalize the interpreter under it (the import is bounded, about 0.5 s)
    threading.Thread(target=work, name="web-import").start()
    try:
        return await fut
    except ImportError as exc:
        raise DeviceUnavailable(f"the web console needs aiohttp ({exc})") from exc
