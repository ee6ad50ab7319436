"""The controls of a tablet layout for the OSC API, the same for every file format: a producer
view (transport, takes, talkback) and an engineer view (the same, plus track strips).

Every control uses an OSC API address, from the command registry's verb list: buttons send a
command address and light from the feedback the API sends on the same address (or, for the
selected take's flags, from ``/take/selected/circled``); labels show feedback addresses.
:func:`osc_api_addresses` lists what the API accepts and sends, so a test can check that every
address a layout uses exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
    from bridge.devices import _osc_api_grammar

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
        for address, _ in _osc_api_grammar.feedback_messages(key, None):
            feedback.add(address)
    return command_set, feedback
