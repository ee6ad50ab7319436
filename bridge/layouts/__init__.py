"""Tablet layouts for the OSC API as it is: TouchOSC (Mk2 ``.tosc``) and Open Stage Control.

``studio-bridge layout touchosc|open-stage-control [--view producer|engineer] -o FILE``

Every control uses an OSC API address, from the command registry's verb list: buttons send a
command address and light from the feedback the API sends (on the same address: ``/transport/record``,
``/talkback``, ``/track/<n>/arm``; or the selected take's flags: CIRCLE sends
``/take/circle/toggle`` and lights from ``/take/selected/circled``); labels show feedback addresses
(``/song``, ``/take/selected``, ``/transport/time``).

Formats, each written from its documented shape (see docs/console.md): TouchOSC Mk2 (a
zlib-compressed ``<lexml>`` XML document) and Open Stage Control (a session JSON).

Modules: :mod:`bridge.layouts.controls` (the controls of each view, and the addresses the OSC
API accepts and sends), :mod:`bridge.layouts.touchosc` and :mod:`bridge.layouts.open_stage_control`
(per file format: a writer, and a reader giving a file's addresses back, so a test can check
that every address a layout uses exists). A new format: such a module and an entry in
:data:`FORMATS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bridge.layouts.controls import Layout, View, build_layout
from bridge.layouts.open_stage_control import to_open_stage_control
from bridge.layouts.touchosc import to_touchosc

#: format name (``studio-bridge layout <format>``) -> (writer, file suffix)
FORMATS: dict[str, tuple[Callable[[Layout], bytes], str]] = {
    "touchosc": (to_touchosc, ".tosc"),
    "open-stage-control": (to_open_stage_control, ".json"),
}


def write(fmt: str, view: View, path: Path) -> None:
    writer, _ = FORMATS[fmt]
    path.write_bytes(writer(build_layout(view)))
