"""The web console's doors (issue 11, item 2, security): a browser outside the allowlist, a
cross-origin WebSocket, a foreign Host (DNS rebinding), a wrong token: refused and counted.
Malformed and oversized WebSocket messages: an error reply, nothing lost, the daemon and the other
consoles unaffected. All against the real daemon on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from peers.daemon import Daemon

from web.conftest import Console, console_daemon, get_json


def _status(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


async def _messages_until(ws: aiohttp.ClientWebSocketResponse, pred: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if pred(data):
                return dict(data)


def test_outside_the_allowlist_is_refused_and_counted(tmp_path: Path, browser: Any) -> None:
    config = '[web]\nallow = ["10.0.0.0/8"]\n'
    with console_daemon(tmp_path, config) as d:
        page = browser.new_page()
        response = page.goto(f"http://127.0.0.1:{d.web_port}/")
        assert response is not None and response.status == 403
        assert "not in the allowlist" in page.content()
        ws_opened = page.evaluate(
            """port => new Promise(res => { const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
                ws.onopen = () => res(true); ws.onclose = () => res(false); })""",
            d.web_port,
        )
        assert ws_opened is False
        page.close()
        d.wait_for_log("refused GET /ws from 127.0.0.1")
    refused = [line for line in d.lines if "not in the allowlist" in line]
    assert len(refused) >= 2  # the page and its WebSocket (and whatever else the browser asked for)
    assert any(f"web console: refused so far: denied {len(refused)}" in line for line in d.lines), d.log()
    assert not [line for line in d.lines if " WARNING " in line or " ERROR " in line]


class _EvilSite:
    """Another origin on loopback whose page tries to open the console's WebSocket."""

    def __init__(self, target_port: int) -> None:
        page = f"""<!doctype html><script>
            window.result = new Promise(res => {{
              const ws = new WebSocket("ws://127.0.0.1:{target_port}/ws");
              ws.onopen = () => res("open"); ws.onclose = () => res("closed"); }});
            </script>""".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Daemon]:
    with console_daemon(tmp_path) as d:
        yield d


def test_cross_origin_websocket_and_foreign_host_are_refused(console: Daemon, browser: Any) -> None:
    d = console
    base = f"http://127.0.0.1:{d.web_port}"
    evil = _EvilSite(d.web_port)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{evil.port}/")  # same host, another port: another origin
        assert page.evaluate("window.result") == "closed"
        page.close()
    finally:
        evil.close()
    # DNS rebinding: a name that resolves to us, but is not one of ours
    status, _ = _status(base + "/", {"Host": f"evil.example:{d.web_port}"})
    assert status == 403
    status, _ = _status(base + "/export/json", {"Host": "attacker.test"})
    assert status == 403
    # the console itself still works, and counted each refusal
    stats = get_json(base + "/stats")
    assert stats["bad_origin"] == 1 and stats["bad_host"] == 2, stats
    status, _ = _status(base + "/", {"Host": f"localhost:{d.web_port}"})
    assert status == 200


def test_token(tmp_path: Path, browser: Any) -> None:
    config = '[web]\ntoken = "tape-op-42"\n'
    with console_daemon(tmp_path, config) as d:
        base = f"http://127.0.0.1:{d.web_port}"
        assert _status(base + "/")[0] == 403
        assert _status(base + "/?token=wrong")[0] == 403
        assert _status(base + "/ws", {"Authorization": "Bearer nope"})[0] == 403
        status, headers = _status(base + "/?token=tape-op-42")
        assert status == 302 and "HttpOnly" in headers.get("Set-Cookie", "")
        assert _status(base + "/stats", {"Authorization": "Bearer tape-op-42"})[0] == 200
        # a browser given the address with the token once: the page works (cookie), live
        ctx = browser.new_context()
        page = ctx.new_page()
        page.goto(base + "/?token=tape-op-42")
        assert page.url == base + "/"
        Console(page, base).wait_live()
        ctx.close()
        # a browser with a wrong token sees nothing
        ctx = browser.new_context()
        response = ctx.new_page().goto(base + "/?token=tape-op-41")
        assert response is not None and response.status == 403
        ctx.close()
        stats = get_json(base + "/stats?token=tape-op-42")
        assert stats["bad_token"] >= 4, stats  # (and the refused page's favicon, if the browser asked)


def _in_thread(coro: Any) -> None:
    """Run a coroutine on its own loop in a thread (the sync Playwright of the browser fixture owns
    this thread's loop)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the WebSocket client did not finish"
    if errors:
        raise errors[0]


def test_malformed_and_oversized_messages(console: Daemon) -> None:
    _in_thread(_malformed_and_oversized(console))


async def _malformed_and_oversized(d: Daemon) -> None:
    url = f"http://127.0.0.1:{d.web_port}/ws"
    async with aiohttp.ClientSession() as session:
        bad = await session.ws_connect(url)
        other = await session.ws_connect(url)
        for ws in (bad, other):
            await _messages_until(ws, lambda m: m["t"] == "snapshot")

        async def error_for(payload: str | bytes) -> str:
            if isinstance(payload, bytes):
                await bad.send_bytes(payload)
            else:
                await bad.send_str(payload)
            reply = await _messages_until(bad, lambda m: m["t"] == "reply")
            assert reply["ok"] is False
            return str(reply["error"])

        assert "not JSON" in await error_for("{not json")
        assert "expected" in await error_for('{"verb": 5}')
        assert "expected" in await error_for("[1, 2, 3]")
        assert "unknown verb" in await error_for('{"id": 1, "verb": "take.explode"}')
        assert "take number" in await error_for('{"id": 2, "verb": "take.circle", "args": {"take": "two"}}')
        assert "too large" in await error_for(
            json.dumps({"id": 3, "verb": "note", "args": {"text": "x" * 100_000}})
        )
        assert "text frames" in await error_for(b"\x00\x01")
        # the same connection still works, and nothing was lost or half-done
        await bad.send_str(json.dumps({"id": 4, "verb": "take.mark", "args": {"label": "after the garbage"}}))
        reply = await _messages_until(bad, lambda m: m["t"] == "reply" and m["id"] == 4)
        assert reply["ok"] is True
        delta = await _messages_until(other, lambda m: m["t"] == "delta" and m["takes"])
        assert [t["label"] for t in delta["takes"]] == ["after the garbage"]
        # beyond the hard limit (1 MiB) only that connection is closed (1009); the other lives on
        # the server may see the frame's length and close before the client finished sending it
        with contextlib.suppress(ConnectionError, aiohttp.ClientOSError):
            await bad.send_str("x" * (1 << 20) + "y")
        async with asyncio.timeout(10):
            while (msg := await bad.receive()).type == aiohttp.WSMsgType.TEXT:
                pass  # what was already on its way
        ended = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert msg.type in (*ended, aiohttp.WSMsgType.ERROR), msg
        assert bad.close_code in (1009, None), bad.close_code  # None: the reset won the race
        await other.send_str(json.dumps({"id": 5, "verb": "ping"}))
        assert (await _messages_until(other, lambda m: m["t"] == "reply"))["ok"] is True
        await other.close()
        await bad.close()
    # the server counts the over-limit frame when its reader gets to it: wait (bounded) for it
    deadline = time.monotonic() + 10
    while (stats := get_json(f"http://127.0.0.1:{d.web_port}/stats"))["oversized"] < 2:
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.05)
    assert stats["malformed"] == 4 and stats["oversized"] == 2 and stats["unknown_verb"] == 1, stats
    assert stats["bad_args"] == 1 and stats["actions"] == 1, stats
    out = d.proc
    assert out is not None and out.poll() is None  # the daemon is fine
    assert not [line for line in d.lines if " ERROR " in line]
