"""Tablet layouts (issue 11, item 3): TouchOSC Mk2 and Open Stage Control files parse back, every
address they use exists in the OSC API (and a real daemon answers them), buttons light from the
feedback the API really sends, and the shipped files in configs/layouts are the generated ones."""

from __future__ import annotations

import itertools
import json
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
from peers.daemon import Daemon, OscClient, cli

from bridge import layouts
from bridge.layouts import controls as layout_controls
from bridge.layouts.open_stage_control import open_stage_control_addresses
from bridge.layouts.touchosc import touchosc_addresses

ROOT = Path(__file__).resolve().parents[2]
CASES = [(fmt, view) for fmt in ("touchosc", "open-stage-control") for view in ("producer", "engineer")]


def _read(fmt: str, data: bytes) -> tuple[set[str], set[str]]:
    if fmt == "touchosc":
        return touchosc_addresses(data)
    return open_stage_control_addresses(data)


def _shipped(fmt: str, view: str) -> Path:
    return ROOT / "configs" / "layouts" / f"studio-bridge-{view}{layouts.FORMATS[fmt][1]}"


@pytest.mark.parametrize(("fmt", "view"), CASES)
def test_layout_parses_back_and_uses_only_api_addresses(fmt: str, view: str, tmp_path: Path) -> None:
    out = tmp_path / f"layout{layouts.FORMATS[fmt][1]}"
    res = cli("layout", fmt, "--view", view, "-o", str(out))
    assert res.returncode == 0, res.stderr
    data = out.read_bytes()
    assert data == _shipped(fmt, view).read_bytes(), "configs/layouts is stale: regenerate it"
    sends, receives = _read(fmt, data)
    commands, feedback = layout_controls.osc_api_addresses()
    assert sends and receives
    assert sends <= commands, sends - commands
    assert receives <= feedback | commands, receives - feedback - commands
    # a button that shows state receives the same address it sends (it lights from feedback)
    for c in layout_controls.build_layout(view).controls:  # type: ignore[arg-type]
        if c.kind in ("toggle",) or c.name in ("talkback", "play", "stop", "record"):
            assert c.send == c.receive and c.receive in feedback, c
    if fmt == "touchosc":
        root = ET.fromstring(zlib.decompress(data))
        assert root.tag == "lexml" and root.get("version") == "3"
        assert {n.get("type") for n in root.iter("node")} <= {"GROUP", "BUTTON", "LABEL", "FADER"}
        # every button sends its press as a float (the API takes an int as a take number)
        for osc in root.iter("osc"):
            assert osc.findtext("arguments/partial/conversion") in ("FLOAT", "STRING")
    else:
        session = json.loads(data)
        assert session["type"] == "session" and session["content"]["type"] == "root"
        for w in session["content"]["widgets"]:
            if w["type"] in ("button", "fader"):
                assert w["typeTags"] == "f", w


@pytest.mark.parametrize("view", ["producer", "engineer"])
def test_layout_geometry(view: str) -> None:
    controls = layout_controls.build_layout(view).controls  # type: ignore[arg-type]
    for c in controls:
        assert (
            c.x >= 0
            and c.x + c.w <= layout_controls.WIDTH
            and c.y >= 0
            and c.y + c.h <= layout_controls.HEIGHT
        ), c
        assert c.kind == "label" or min(c.w, c.h) >= 36, c  # finger-sized
    for a, b in itertools.combinations(controls, 2):
        overlap = a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h
        assert not overlap, (a.name, b.name)


def test_layout_addresses_against_the_real_daemon(tmp_path: Path) -> None:
    """Press every button of the engineer layout (the larger one) on a running daemon: none is an
    unknown address or bad arguments, and every address a control shows is sent as feedback."""
    sends, receives = touchosc_addresses(_shipped("touchosc", "engineer").read_bytes())
    with Daemon(tmp_path) as d:
        osc = OscClient(d.osc_port)
        assert osc.command("/subscribe")[0] == "/ok"
        order = sorted(sends, key=lambda a: (a != "/take/mark", a))
        for address in order:
            for value in (1.0, 0.0):  # press, release: what a momentary button sends
                reply = osc.command(address, value)
                assert reply[0] == "/ok" or not any(
                    bad in str(reply[1]) for bad in ("unknown address", "bad arguments")
                ), (address, value, reply)
        assert osc.command("/state")[0] == "/ok"
        time.sleep(0.5)
        seen = {m[0] for m in osc.seen}
        while True:
            try:
                seen.add(osc.recv()[0])
            except TimeoutError:
                break
            except OSError:
                break
            if receives <= seen:
                break
    assert receives <= seen, receives - seen
