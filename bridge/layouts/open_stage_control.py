"""Open Stage Control sessions: a session JSON (``{"type": "session", "content": {"type": "root",
...}}``) with ``button`` (``mode`` ``push`` or ``toggle``, ``on`` 1 / ``off`` 0), ``text`` and
``fader`` widgets, written from its documented shape (see docs/console.md).
"""

from __future__ import annotations

import json
from typing import Any

from bridge.layouts.controls import HEIGHT, WIDTH, Control, Layout


def _osc_widget(control: Control) -> dict[str, Any]:
    css_color = "#{:02x}{:02x}{:02x}".format(*(round(v * 255) for v in control.color))
    base: dict[str, Any] = {
        "id": control.name,
        "top": control.y,
        "left": control.x,
        "width": control.w,
        "height": control.h,
        "label": control.text or False,
        "colorWidget": css_color,
        "css": f"font-size: {control.size}px;",
        "preArgs": [],
        "target": [],
    }
    if control.kind == "label":
        return {
            **base,
            "type": "text",
            "address": control.receive or "auto",  # static text: no API address
            "value": control.text,
            "default": control.text,
            "interaction": False,
            "bypass": True,
        }
    if control.kind == "fader":
        return {
            **base,
            "type": "fader",
            "address": control.send,
            "typeTags": "f",
            "range": {"min": 0, "max": 1},
            "horizontal": True,
        }
    widget = {
        **base,
        "type": "button",
        "mode": "toggle" if control.kind == "toggle" else "push",
        "on": 1,
        "off": 0,
        "address": control.send or control.receive,
        # floats: the OSC API takes an int on a trigger address as a take number
        "typeTags": "f",
    }
    if control.kind == "led":
        widget["interaction"] = False
        widget["bypass"] = True  # shows feedback, sends nothing
    return widget


def to_open_stage_control(layout: Layout) -> bytes:
    session = {
        "version": "1.26.0",
        "type": "session",
        "createdWith": "studio-bridge",
        "content": {
            "type": "root",
            "id": "root",
            "label": layout.title,
            "colorBg": "#0d0f12",
            "width": WIDTH,
            "height": HEIGHT,
            "widgets": [_osc_widget(c) for c in layout.controls],
            "tabs": [],
        },
    }
    return (json.dumps(session, indent=2) + "\n").encode()


def open_stage_control_addresses(data: bytes) -> tuple[set[str], set[str]]:
    """Read a session back: (addresses it sends, addresses it receives)."""
    session = json.loads(data)
    if session.get("type") != "session":
        raise ValueError("not an Open Stage Control session")
    sends: set[str] = set()
    receives: set[str] = set()
    for w in session["content"]["widgets"]:
        if w["address"] == "auto":
            continue
        if not w.get("bypass"):
            sends.add(w["address"])
        receives.add(w["address"])
    return sends, receives
