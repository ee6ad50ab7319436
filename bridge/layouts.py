"""Tablet layouts for the OSC API as it is: TouchOSC (Mk2 ``.tosc``) and Open Stage Control.

``studio-bridge layout touchosc|open-stage-control [--view producer|engineer] -o FILE``

Every control uses an OSC API address, from the command registry's verb list: buttons send a
command address and light from the feedback the API sends (on the same address: ``/transport/record``,
``/talkback``, ``/track/<n>/arm``; or the selected take's flags: CIRCLE sends
``/take/circle/toggle`` and lights from ``/take/selected/circled``); labels show feedback addresses
(``/song``, ``/take/selected``, ``/transport/time``).
``osc_api_addresses()`` lists what the API accepts and sends, and ``addresses_of`` reads a layout
file back, so a test can check that every address a layout uses exists.

Formats (written from their documented shapes, see docs/console.md):

* TouchOSC Mk2: a zlib-compressed UTF-8 XML document ``<lexml version="3">`` with ``<node
  type="GROUP|BUTTON|LABEL|FADER">`` elements (``properties``, ``values``, ``messages/osc``,
  ``children``). A button's OSC message sends its ``x`` value (1 on press, 0 on release; a toggle
  button 1/0) and receives it back (``receive`` = 1), so it shows the daemon's state.
* Open Stage Control: a session JSON (``{"type": "session", "content": {"type": "root", ...}}``)
  with ``button`` (``mode`` ``push`` or ``toggle``, ``on`` 1 / ``off`` 0), ``text`` and ``fader``
  widgets.
"""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bridge import state as S

View = Literal["producer", "engineer"]
Kind = Literal["button", "toggle", "push", "label", "fader", "led"]

WIDTH, HEIGHT = 1024, 768  # a landscape tablet, in layout units
ENGINEER_TRACKS = 8
DAEMON_PORT = 9123


@dataclass(frozen=True)
class Control:
    """One control: ``send`` is the command address it sends (None: display only), ``receive``
    the feedback address it shows (None: no feedback)."""

    name: str
    kind: Kind
    x: int
    y: int
    w: int
    h: int
    text: str = ""
    send: str | None = None
    receive: str | None = None
    color: tuple[float, float, float] = (0.25, 0.29, 0.36)
    size: int = 24


@dataclass
class Layout:
    title: str
    view: View
    controls: list[Control] = field(default_factory=list)


RED, AMBER, GREEN, BLUE, GOLD, GREY = (
    (0.90, 0.20, 0.18),
    (0.94, 0.70, 0.16),
    (0.18, 0.75, 0.44),
    (0.24, 0.45, 0.85),
    (1.0, 0.84, 0.29),
    (0.45, 0.48, 0.55),
)


def build_layout(view: View = "producer") -> Layout:
    """The controls of a view (the same for both formats)."""
    c: list[Control] = [
        Control("onair", "led", 20, 16, 200, 70, "ON AIR", receive="/transport/on_air", color=RED),
        Control("song_prev", "push", 240, 16, 70, 70, "◀", send="/song/previous", color=GREY),
        Control("song", "label", 318, 16, 326, 70, "song", receive="/song", size=34),
        Control("song_next", "push", 652, 16, 70, 70, "▶", send="/song/next", color=GREY),
        Control("sync", "button", 740, 16, 264, 70, "Sync", send="/state", color=GREY),
        Control("take_caption", "label", 20, 100, 160, 40, "TAKE", size=20),
        Control("take", "label", 20, 140, 160, 110, "0", receive="/take/selected", size=72),
        Control("take_label", "label", 200, 100, 520, 60, "", receive="/take/selected/label", size=26),
        Control("time", "label", 200, 160, 520, 90, "00:00:00.000", receive="/transport/time", size=48),
        Control(
            "take_prev",
            "push",
            740,
            100,
            128,
            150,
            "◀ TAKE",
            send="/take/select/previous",
            color=GREY,
            size=20,
        ),
        Control(
            "take_next", "push", 876, 100, 128, 150, "TAKE ▶", send="/take/select/next", color=GREY, size=20
        ),
        Control("mark", "push", 20, 270, 320, 150, "MARK TAKE", send="/take/mark", color=BLUE, size=34),
        Control(
            "circle",
            "push",
            352,
            270,
            320,
            150,
            "CIRCLE",
            send="/take/circle/toggle",
            receive="/take/selected/circled",
            color=GOLD,
            size=30,
        ),
        Control(
            "falsestart",
            "push",
            684,
            270,
            320,
            150,
            "FALSE START",
            send="/take/falsestart/toggle",
            receive="/take/selected/false_start",
            color=GREY,
            size=30,
        ),
        Control(
            "talkback",
            "push",
            20,
            440,
            480,
            150,
            "HOLD TO TALK",
            send="/talkback",
            receive="/talkback",
            color=AMBER,
            size=34,
        ),
        Control(
            "play",
            "push",
            520,
            440,
            150,
            150,
            "PLAY",
            send="/transport/play",
            receive="/transport/play",
            color=GREEN,
        ),
        Control(
            "stop", "push", 687, 440, 150, 150, "STOP", send="/transport/stop", receive="/transport/stop"
        ),
        Control(
            "record",
            "toggle",
            854,
            440,
            150,
            150,
            "REC",
            send="/transport/record",
            receive="/transport/record",
            color=RED,
        ),
    ]
    if view == "engineer":
        width = (WIDTH - 40) // ENGINEER_TRACKS
        for n in range(1, ENGINEER_TRACKS + 1):
            x = 20 + (n - 1) * width
            w = width - 8
            c += [
                Control(f"t{n}_name", "label", x, 604, w, 30, f"{n}", receive=f"/track/{n}/name", size=16),
                Control(
                    f"t{n}_arm", "toggle", x, 636, w, 40, "ARM", f"/track/{n}/arm", f"/track/{n}/arm", RED, 16
                ),
                Control(
                    f"t{n}_mute",
                    "toggle",
                    x,
                    680,
                    w // 2 - 2,
                    40,
                    "M",
                    f"/track/{n}/mute",
                    f"/track/{n}/mute",
                    AMBER,
                    16,
                ),
                Control(
                    f"t{n}_solo",
                    "toggle",
                    x + w // 2 + 2,
                    680,
                    w // 2 - 2,
                    40,
                    "S",
                    f"/track/{n}/solo",
                    f"/track/{n}/solo",
                    GREEN,
                    16,
                ),
                Control(
                    f"t{n}_fader", "fader", x, 724, w, 36, "", f"/track/{n}/fader", f"/track/{n}/fader", BLUE
                ),
            ]
        return Layout("studio-bridge engineer", view, c)
    return Layout("studio-bridge producer", view, c)


# ------------------------------------------------------------------------------------ OSC API


QUERIES = ("/ping", "/state", "/subscribe", "/unsubscribe", "/stats")


def osc_api_addresses(tracks: int = ENGINEER_TRACKS) -> tuple[set[str], set[str]]:
    """(command addresses the OSC API accepts, feedback addresses it sends), from the command
    registry's verb list, with track numbers 1..``tracks`` filled in."""
    from bridge import commands
    from bridge.devices import osc_api

    command_set: set[str] = set(QUERIES)
    for v in commands.VERBS:
        if "osc" not in v.grammars:
            continue
        addresses = (
            [v.osc_address.replace("<n>", str(n)) for n in range(1, tracks + 1)]
            if v.is_track
            else [v.osc_address]
        )
        for address in addresses:
            command_set.add(address)
            if v.toggle is not None:
                command_set.add(address + "/toggle")
    feedback: set[str] = set()
    keys = [
        S.PLAYING,
        S.RECORDING,
        S.POSITION,
        S.ASSUMED,
        S.ON_AIR,
        S.TALKBACK,
        S.SESSION,
        S.SONG,
        S.SONGS,
        S.TAKE,
        S.NEXT_TAKE,
        S.TAKE_LABEL,
        S.SELECTED,
        S.SELECTED_CIRCLED,
        S.SELECTED_FALSE_START,
        S.SELECTED_LABEL,
        S.ELAPSED,
    ]
    for n in range(1, tracks + 1):
        keys += [S.track_key(n, f) for f in ("name", "armed", "mute", "solo", "fader")]
    for key in keys:
        for address, _ in osc_api.feedback_messages(key, None):
            feedback.add(address)
    return command_set, feedback


# ------------------------------------------------------------------------------------ TouchOSC


def _prop(parent: ET.Element, kind: str, key: str, value: str | dict[str, str]) -> None:
    prop = ET.SubElement(parent, "property", type=kind)
    ET.SubElement(prop, "key").text = key
    val = ET.SubElement(prop, "value")
    if isinstance(value, dict):
        for k, v in value.items():
            ET.SubElement(val, k).text = v
    else:
        val.text = value


def _color(rgb: tuple[float, float, float], a: float = 1.0) -> dict[str, str]:
    return {"r": f"{rgb[0]:g}", "g": f"{rgb[1]:g}", "b": f"{rgb[2]:g}", "a": f"{a:g}"}


def _partial(
    parent: ET.Element, kind: str, conversion: str, value: str, lo: str = "0", hi: str = "1"
) -> None:
    p = ET.SubElement(parent, "partial")
    for tag, text in (
        ("type", kind),
        ("conversion", conversion),
        ("value", value),
        ("scaleMin", lo),
        ("scaleMax", hi),
    ):
        ET.SubElement(p, tag).text = text


def _osc(messages: ET.Element, address: str, *, send: bool, receive: bool, var: str, conversion: str) -> None:
    osc = ET.SubElement(messages, "osc")
    for tag, text in (
        ("enabled", "1"),
        ("send", "1" if send else "0"),
        ("receive", "1" if receive else "0"),
        ("feedback", "0"),
        ("noDuplicates", "0"),
        ("connections", "1111111111"),
    ):
        ET.SubElement(osc, tag).text = text
    triggers = ET.SubElement(osc, "triggers")
    trigger = ET.SubElement(triggers, "trigger")
    ET.SubElement(trigger, "var").text = var
    ET.SubElement(trigger, "condition").text = "ANY"
    _partial(ET.SubElement(osc, "path"), "CONSTANT", "STRING", address)
    _partial(ET.SubElement(osc, "arguments"), "VALUE", conversion, var)


def _tosc_node(parent: ET.Element, control: Control) -> None:
    kind = {"button": "BUTTON", "push": "BUTTON", "toggle": "BUTTON", "led": "BUTTON", "fader": "FADER"}.get(
        control.kind, "LABEL"
    )
    node = ET.SubElement(parent, "node", ID=str(uuid.uuid5(uuid.NAMESPACE_URL, control.name)), type=kind)
    props = ET.SubElement(node, "properties")
    _prop(props, "s", "name", control.name)
    _prop(
        props,
        "r",
        "frame",
        {"x": str(control.x), "y": str(control.y), "w": str(control.w), "h": str(control.h)},
    )
    _prop(props, "c", "color", _color(control.color))
    _prop(props, "b", "background", "1")
    _prop(props, "b", "outline", "1")
    _prop(props, "f", "cornerRadius", "8")
    if kind == "BUTTON":
        # 0 momentary (1 on press, 0 on release), 1 toggle
        _prop(props, "i", "buttonType", "1" if control.kind == "toggle" else "0")
        _prop(props, "b", "interactive", "0" if control.kind == "led" else "1")
    if kind == "LABEL":
        _prop(props, "i", "textSize", str(control.size))
        _prop(props, "c", "textColor", _color((0.93, 0.94, 0.96)))
        _prop(props, "b", "background", "0")
        _prop(props, "b", "interactive", "0")
    values = ET.SubElement(node, "values")
    var = "text" if kind == "LABEL" else "x"
    value = ET.SubElement(values, "value")
    ET.SubElement(value, "key").text = var
    for tag, text in (
        ("locked", "0"),
        ("lockedDefaultCurrent", "0"),
        ("default", control.text if var == "text" else "0"),
        ("defaultPull", "0"),
    ):
        ET.SubElement(value, tag).text = text
    messages = ET.SubElement(node, "messages")
    conversion = "STRING" if kind == "LABEL" else "FLOAT"
    if control.send and control.send == control.receive:
        _osc(messages, control.send, send=True, receive=True, var=var, conversion=conversion)
    else:
        if control.send:
            _osc(messages, control.send, send=True, receive=False, var=var, conversion=conversion)
        if control.receive:
            _osc(messages, control.receive, send=False, receive=True, var=var, conversion=conversion)
    if kind in ("BUTTON", "FADER") and control.text:
        # a caption on top of the button (TouchOSC buttons have no text of their own)
        ET.SubElement(node, "children")
        caption = Control(
            control.name + "_caption", "label", 0, 0, control.w, control.h, control.text, size=control.size
        )
        _tosc_node(node.find("children"), caption)  # type: ignore[arg-type]


def to_touchosc(layout: Layout) -> bytes:
    root = ET.Element("lexml", version="3")
    group = ET.SubElement(root, "node", ID=str(uuid.uuid5(uuid.NAMESPACE_URL, layout.title)), type="GROUP")
    props = ET.SubElement(group, "properties")
    _prop(props, "s", "name", layout.title)
    _prop(props, "r", "frame", {"x": "0", "y": "0", "w": str(WIDTH), "h": str(HEIGHT)})
    _prop(props, "c", "color", _color((0.05, 0.06, 0.07)))
    _prop(props, "b", "background", "1")
    children = ET.SubElement(group, "children")
    for control in layout.controls:
        _tosc_node(children, control)
    xml = b"<?xml version='1.0' encoding='UTF-8'?>" + ET.tostring(
        root, encoding="utf-8", xml_declaration=False
    )
    return zlib.compress(xml, 9)


def touchosc_addresses(data: bytes) -> tuple[set[str], set[str]]:
    """Read a ``.tosc`` back: (addresses it sends, addresses it receives)."""
    root = ET.fromstring(zlib.decompress(data))
    if root.tag != "lexml":
        raise ValueError("not a TouchOSC layout (no <lexml> root)")
    sends: set[str] = set()
    receives: set[str] = set()
    for osc in root.iter("osc"):
        address = osc.findtext("path/partial/value") or ""
        if osc.findtext("send") == "1":
            sends.add(address)
        if osc.findtext("receive") == "1":
            receives.add(address)
    return sends, receives


# ------------------------------------------------------------------------------------ Open Stage Control


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


# ------------------------------------------------------------------------------------ CLI


FORMATS = {"touchosc": (to_touchosc, ".tosc"), "open-stage-control": (to_open_stage_control, ".json")}


def write(fmt: str, view: View, path: Path) -> None:
    writer, _ = FORMATS[fmt]
    path.write_bytes(writer(build_layout(view)))
