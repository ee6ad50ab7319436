"""TouchOSC Mk2 layouts (``.tosc``): a zlib-compressed UTF-8 XML document ``<lexml version="3">``
with ``<node type="GROUP|BUTTON|LABEL|FADER">`` elements (``properties``, ``values``,
``messages/osc``, ``children``), written from its documented shape (see docs/console.md). A
button's OSC message sends its ``x`` value (1 on press, 0 on release; a toggle button 1/0) and
receives it back (``receive`` = 1), so it shows the daemon's state.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
import zlib

from bridge.layouts.controls import HEIGHT, WIDTH, Control, Layout


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
