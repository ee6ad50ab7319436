"""The producer view in a real headless Chromium against the real daemon (issue 11, item 2).

Driven by Playwright for Python with Debian's /usr/bin/chromium. Every action goes through the page
(tap), waits for the page to show the daemon's answer, and then checks what the page shows; the
export afterwards must hold exactly what the pages showed."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from peers.daemon import OscClient, cli, free_udp_port

from web.conftest import Console, console_daemon, get_json
from web.proxy import CutProxy

pytestmark = pytest.mark.slow


def _wait_takes(c: Console, n: int) -> None:
    c.wait("n => window.console_state.sheet && window.console_state.sheet.takes.length === n", n)


def _trail_ok(c: Console) -> list[Any]:
    """Every action the page sent went pending, then done (never done without pending)."""
    trail = c.page.evaluate("window.console_state.trail")
    by_id: dict[int, list[str]] = {}
    for ident, _verb, state, _at in trail:
        by_id.setdefault(ident, []).append(state)
    for ident, states in by_id.items():
        assert states[0] == "pending", (ident, states)
        assert len(states) == 2, (ident, states)
    return list(trail)


def test_producer_session_in_chromium(tmp_path: Path, browser: Any, shots: Path) -> None:
    with console_daemon(tmp_path) as d:
        osc = OscClient(d.osc_port)
        base = f"http://127.0.0.1:{d.web_port}"
        proxy = CutProxy(d.web_port)  # page a's connection goes through it, so it can be cut
        ctx = browser.new_context(viewport={"width": 1180, "height": 820}, has_touch=True)
        a = Console(ctx.new_page(), f"http://127.0.0.1:{proxy.port}").open()
        b = Console(ctx.new_page(), base).open()  # a second console on the same session

        # the song, picked from the page
        a.page.click("#newsong")
        a.page.fill("#askinput", "Blue Monday")
        before = a.page.evaluate("window.console_state.replies")
        a.page.click("#askok")
        a.wait("n => window.console_state.replies > n", before)
        assert a.page.evaluate("window.console_state.state.song") == "Blue Monday"

        # three takes marked from the page: each confirmed, the list grows in both pages
        for n in (1, 2, 3):
            assert a.act_and_confirm(a.page.locator("#mark")) == "done"
            _wait_takes(a, n)
            assert a.page.locator("#takeno").inner_text() == str(n)
        _wait_takes(b, 3)
        assert [r["take"] for r in b.rows()] == [1, 2, 3]

        # circle take 2, un-circle it, circle it again (the row shows the fact each time)
        for want in (True, False, True):
            assert a.act_and_confirm(a.row(2).locator("[data-act=circle]")) == "done"
            a.wait("w => window.console_state.sheet.takes[1].circled === w", want)
            assert ("circled" in (a.row(2).get_attribute("class") or "")) is want
        b.wait("() => window.console_state.sheet.takes[1].circled === true")
        assert "circled" in (b.row(2).get_attribute("class") or "")

        # false start on take 1, and off again
        for want in (True, False):
            assert a.act_and_confirm(a.row(1).locator("[data-act=falsestart]")) == "done", a.last_error()
            a.wait("w => window.console_state.sheet.takes[0].false_start === w", want)
            assert ("false" in (a.row(1).get_attribute("class") or "").split()) is want
        b.wait("() => window.console_state.sheet.takes[0].false_start === false")

        # rename take 3
        a.row(3).locator("[data-act=rename]").click()
        a.page.fill("#askinput", "the keeper?")
        before = a.page.evaluate("window.console_state.replies")
        a.page.click("#askok")
        a.wait("n => window.console_state.replies > n", before)
        assert a.page.evaluate("document.body.dataset.lastReply") == "done", a.last_error()
        a.wait("() => window.console_state.sheet.takes[2].label === 'the keeper?'")
        b.wait("() => window.console_state.sheet.takes[2].label === 'the keeper?'")
        assert b.row(3).locator(".label").inner_text().startswith("the keeper?")

        # a note on take 1 while take 3 is the current take (and the selected one)
        assert a.page.locator("#takeno").inner_text() == "3"
        assert "selected" in (a.row(3).get_attribute("class") or "").split()
        a.row(1).locator("[data-act=note]").click()
        a.page.fill("#askinput", "great feel, pitchy at the end")
        before = a.page.evaluate("window.console_state.replies")
        a.page.click("#askok")
        a.wait("n => window.console_state.replies > n", before)
        assert a.page.evaluate("document.body.dataset.lastReply") == "done", a.last_error()
        a.wait("() => window.console_state.sheet.takes[0].notes.length === 1")
        assert a.row(1).locator(".notes").inner_text().strip() == "great feel, pitchy at the end"
        assert a.row(3).locator(".notes").count() == 0  # not on the current take
        assert a.page.evaluate("window.console_state.state['take/selected']") == 3

        # push-to-talk held for about 0.5 s: exactly one cue
        talk = a.page.locator("#talk")
        box = talk.bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] >= 44
        a.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        a.page.mouse.down()
        a.wait("() => window.console_state.state.talkback === true")
        b.wait("() => window.console_state.state.talkback === true")
        a.page.screenshot(path=str(shots / "producer-talkback.png"))
        time.sleep(0.5)
        a.page.mouse.up()
        a.wait("() => window.console_state.state.talkback === false")
        a.wait("() => window.console_state.sheet.talkback.length === 1 && "
               "window.console_state.sheet.talkback[0].duration !== null")  # fmt: skip
        cue = a.sheet()["talkback"][0]
        assert 0.3 <= cue["duration"] <= 2.0, cue
        time.sleep(0.3)
        assert len(a.sheet()["talkback"]) == 1

        # a take marked over OSC shows in both pages
        assert osc.command("/take/mark", "from the desk") == ("/ok", ["/take/mark"])
        _wait_takes(a, 4)
        _wait_takes(b, 4)
        assert b.rows()[3]["label"] == "from the desk"

        # every action so far went pending, then done (never done without pending)
        trail = _trail_ok(a)
        assert len(trail) >= 2 * 12, trail

        # reload mid-session: the list is intact
        shown = a.rows()
        a.page.reload()
        a.wait_live()
        _wait_takes(a, 4)
        assert a.rows() == shown

        # drop the page's connection: it shows it, then resyncs by itself (and catches up)
        proxy.drop()
        a.page.wait_for_selector("body[data-live='0']", state="attached", timeout=15_000)
        assert osc.command("/take/mark", "while away") == ("/ok", ["/take/mark"])
        proxy.restore()
        a.wait_live(timeout=20_000)
        _wait_takes(a, 5)
        shown = a.rows()
        _wait_takes(b, 5)
        assert b.rows() == shown

        a.page.screenshot(path=str(shots / "producer-landscape.png"), full_page=True)
        a.page.set_viewport_size({"width": 820, "height": 1180})
        a.page.click("#tab-session")
        a.page.screenshot(path=str(shots / "producer-portrait.png"), full_page=True)

        assert not a.errors and not b.errors, a.errors + b.errors

        # the export holds exactly what the pages showed
        exported = get_json(base + "/export/json")
        rows = [
            {
                "song": t["song"],
                "take": t["take"],
                "label": t["label"] or f"Take {t['take']}",
                "circled": t["circled"],
                "false_start": t["false_start"],
                "notes": t["notes"],
            }
            for t in exported["takes"]
        ]
        assert rows == shown
        assert len(exported["talkback"]) == 1
        ctx.close()
        proxy.close()
    # closed pages, a cut connection, a reload: normal events, nothing in the journal above INFO
    assert not [line for line in d.lines if " WARNING " in line or " ERROR " in line], d.log()
    # and so does the CLI export of the log the daemon left
    out = cli("log", "export", "--data-dir", str(d.data_dir), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert [t["label"] for t in json.loads(out.stdout)["takes"]] == [t["label"] for t in exported["takes"]]


def test_touch_targets_and_orientations(tmp_path: Path, browser: Any, shots: Path) -> None:
    """Every control is at least 44 px in both orientations (a tablet at arm's length)."""
    with console_daemon(tmp_path) as d:
        osc = OscClient(d.osc_port)
        osc.command("/song", "Night Drive")
        for _ in range(3):
            osc.command("/take/mark")
        osc.command("/take/circle", 2)
        for name, size in (("landscape", (1024, 768)), ("portrait", (768, 1024))):
            ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, has_touch=True)
            c = Console(ctx.new_page(), f"http://127.0.0.1:{d.web_port}").open()
            _wait_takes(c, 3)
            small = c.page.evaluate(
                """() => [...document.querySelectorAll('button, select, a.btn')]
                    .filter(e => e.offsetParent !== null)
                    .map(e => [e.id || e.textContent.trim(), e.getBoundingClientRect()])
                    .filter(([_, r]) => r.width < 44 || r.height < 44).map(([n]) => n)"""
            )
            assert small == [], (name, small)
            # nothing sticks out sideways
            assert c.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name
            c.page.screenshot(path=str(shots / f"targets-{name}.png"))
            ctx.close()


def test_transport_off_for_producer(tmp_path: Path, browser: Any) -> None:
    config = "[web]\nproducer_transport = false\n"
    with console_daemon(tmp_path, config) as d:
        ctx = browser.new_context()
        c = Console(ctx.new_page(), f"http://127.0.0.1:{d.web_port}").open()
        assert not c.page.locator("#play").is_visible()
        # a page that sends it anyway is refused, and nothing rolls
        reply = c.page.evaluate(
            """() => new Promise(res => {
                const ws = new WebSocket(`ws://${location.host}/ws`);
                ws.onmessage = ev => { const m = JSON.parse(ev.data);
                    if (m.t === 'snapshot') ws.send(JSON.stringify({id: 7, verb: 'transport.play'}));
                    if (m.t === 'reply' && m.id === 7) res(m); };
            })"""
        )
        assert reply["ok"] is False and "switched off" in reply["error"]
        assert c.page.evaluate("window.console_state.state['transport/playing']") is not True
        ctx.close()


def test_health_and_a_refused_action_shown_as_the_error(tmp_path: Path, browser: Any, shots: Path) -> None:
    """A DAW that is not there: its chip says so, and Play is answered with the reason (pending,
    then the error: never "done")."""
    port = free_udp_port()  # nothing listens there: Ardour is "not running"
    config = f'[devices.ardour]\nkind = "ardour"\nrole = "daw"\nhost = "127.0.0.1"\nport = {port}\n'
    with console_daemon(tmp_path, config) as d:
        ctx = browser.new_context(viewport={"width": 1024, "height": 768})
        c = Console(ctx.new_page(), f"http://127.0.0.1:{d.web_port}").open()
        chip = c.page.locator(".chip[data-device='ardour']")
        assert chip.inner_text() == "DAW · ardour"
        assert "ok" not in (chip.get_attribute("class") or "").split()
        assert "ok" in (c.page.locator(".chip[data-device='log']").get_attribute("class") or "").split()
        assert c.act_and_confirm(c.page.locator("#play")) == "error"
        assert "ardour" in c.last_error()
        assert c.page.locator("#status").inner_text().startswith("play: ")
        assert c.page.locator("#play").get_attribute("data-state") == "error"
        c.page.screenshot(path=str(shots / "producer-daw-down.png"))
        trail = _trail_ok(c)
        assert [state for _id, _verb, state, _at in trail] == ["pending", "error"]
        ctx.close()


def test_talkback_never_sticks_on(tmp_path: Path, browser: Any) -> None:
    """Held talkback is released when the page loses focus, and by the daemon when the page's
    connection is lost while the button is still held."""
    with console_daemon(tmp_path) as d:
        proxy = CutProxy(d.web_port)
        ctx = browser.new_context()
        a = Console(ctx.new_page(), f"http://127.0.0.1:{proxy.port}").open()
        watcher = Console(ctx.new_page(), f"http://127.0.0.1:{d.web_port}").open()
        talk = a.page.locator("#talk").bounding_box()
        assert talk is not None
        a.page.mouse.move(talk["x"] + 20, talk["y"] + 20)
        for ending in ("blur", "lost connection"):
            a.page.mouse.down()
            watcher.wait("() => window.console_state.state.talkback === true")
            if ending == "blur":
                a.page.evaluate("window.dispatchEvent(new Event('blur'))")
            else:
                proxy.drop()  # the button is still held down
                a.page.wait_for_selector("body[data-live='0']", state="attached", timeout=15_000)
            watcher.wait("() => window.console_state.state.talkback === false")
            a.page.mouse.up()
        # the state says "off" at once; each cue's end is in the sheet once it is durable
        watcher.wait(
            "() => { const c = window.console_state.sheet.talkback;"
            " return c.length === 2 && c.every(x => x.duration !== null); }"
        )
        proxy.restore()
        a.wait_live(timeout=20_000)
        assert a.page.evaluate("window.console_state.state.talkback") is False
        ctx.close()
        proxy.close()
    assert any("went away holding talkback; released" in line for line in d.lines), d.log()


@pytest.mark.mqtt
def test_a_take_marked_over_mqtt_shows(tmp_path: Path, browser: Any, mosquitto: Any) -> None:
    """A change made on the facility bus (a real mosquitto) shows in the open console."""
    config = (
        '[bridge]\nroom = "room-m"\n\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\ncommands = true\n'
    )
    with console_daemon(tmp_path, config) as d:
        d.wait_for_log("mqtt (mqtt): connected", timeout=20)
        ctx = browser.new_context()
        c = Console(ctx.new_page(), f"http://127.0.0.1:{d.web_port}").open()
        pub = subprocess.run(
            ["mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-q", "1",
             "-t", "studio-bridge/room-m/cmd/take/mark", "-m", "from the bus"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert pub.returncode == 0, pub.stderr
        _wait_takes(c, 1)
        assert c.rows()[0]["label"] == "from the bus"
        ctx.close()
