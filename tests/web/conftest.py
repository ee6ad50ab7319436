"""Fixtures for the web console: the real daemon, Debian's Chromium driven by Playwright (no browser
download), and a page helper that waits for the page's own "live" and reply marks."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.daemon import Daemon

CHROMIUM = "/usr/bin/chromium"
#: Chromium on this closed network (shared research, peers §7): no sandbox as root, nothing
#: reaching outside hosts
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: where screenshots go (STUDIO_BRIDGE_SHOTS, else each test's tmp_path)
SHOTS = os.environ.get("STUDIO_BRIDGE_SHOTS")


def _playwright() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing (scripts/setup test installs Debian's chromium)")
    return sync_api


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Per module: sync Playwright keeps an event loop running in this thread while it is open,
    which asyncio tests (pytest-asyncio) of other modules must not find."""
    sync_api = _playwright()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(SHOTS) if SHOTS else tmp_path / "shots"
    where.mkdir(parents=True, exist_ok=True)
    return where


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


@contextlib.contextmanager
def console_daemon(tmp: Path, config: str | None = None, **kwargs: Any) -> Iterator[Daemon]:
    """The real daemon, once its web console listens ("ready" comes before: the console's
    library is imported in the background)."""
    with Daemon(tmp, config=config, **kwargs) as d:
        d.wait_for_log("web console on http", timeout=20)
        yield d


class Console:
    """One page of the producer view, with waits on what the page itself shows."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self) -> Console:
        self.page.goto(self.base + "/")
        self.wait_live()
        return self

    def wait_live(self, timeout: float = 15_000) -> None:
        self.page.wait_for_selector("body[data-live='1']", timeout=timeout)

    def wait(self, js: str, arg: Any = None, timeout: float = 10_000) -> Any:
        return self.page.wait_for_function(js, arg=arg, timeout=timeout)

    def sheet(self) -> dict[str, Any]:
        return dict(self.page.evaluate("window.console_state.sheet"))

    def takes(self) -> list[dict[str, Any]]:
        return list(self.sheet()["takes"])

    def rows(self) -> list[dict[str, Any]]:
        """What the page shows for each take row (the DOM, not the data behind it)."""
        return list(
            self.page.eval_on_selector_all(
                ".take",
                """els => els.map(e => ({
                    song: e.dataset.song, take: Number(e.dataset.take),
                    label: e.querySelector('.label').firstChild.textContent,
                    circled: e.classList.contains('circled'), false_start: e.classList.contains('false'),
                    notes: [...e.querySelectorAll('.notes div')].map(n => n.textContent)}))""",
            )
        )

    def row(self, take: int) -> Any:
        return self.page.locator(f".take[data-take='{take}']")

    def act_and_confirm(self, locator: Any, timeout: float = 10_000) -> str:
        """Tap a control and wait until the page shows the daemon's answer on it."""
        before = int(self.page.evaluate("window.console_state.replies"))
        locator.click()
        self.wait("n => window.console_state.replies > n", before, timeout)
        return str(self.page.evaluate("document.body.dataset.lastReply"))

    def last_error(self) -> str:
        return str(self.page.evaluate("document.body.dataset.lastError"))
