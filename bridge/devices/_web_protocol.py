"""The web console's protocol: JSON text frames over the WebSocket ``/ws`` (the message shapes are
listed in :mod:`bridge.devices.web`).

Here: the verbs a producer's page may use (:data:`PRODUCER_VERBS`, built through the command
registry by :func:`build_command`), :func:`read_message` (a page's frame -> an :class:`Action`, or a
:class:`Refusal` naming the counter and the reason of the error reply), the server's messages, and
:class:`ConsoleConnection` (one open page's outgoing queue).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.devices._takesheet import dumps
from bridge.vocab import Command, Value

if TYPE_CHECKING:
    from aiohttp import web

#: aiohttp's own cap: a frame above this closes the connection (1009); below it, max_message
#: answers with an error reply and keeps the connection
HARD_MESSAGE_LIMIT = 1 << 20
#: messages queued for one console before it is dropped (it reconnects and resyncs)
MAX_BACKLOG = 2000

#: the verbs of the command registry a producer's page may use (transport ones only while
#: ``producer_transport``); anything else is refused like an unknown verb
PRODUCER_VERBS: frozenset[str] = frozenset(
    {
        "transport.play",
        "transport.stop",
        "transport.record",
        "song",
        "song.add",
        "song.next",
        "song.previous",
        "take.mark",
        "take.select",
        "take.select.next",
        "take.select.previous",
        "take.circle",
        "take.falsestart",
        "take.rename",
        "note",
        "talkback",
    }
)
TEXT_LIMIT = 500


def page_verbs(transport: bool) -> list[dict[str, object]]:
    """The registry's schema of the verbs the page may use."""
    from bridge import commands

    return [
        v
        for v in commands.schema()
        if v["name"] in PRODUCER_VERBS and (transport or not str(v["name"]).startswith("transport."))
    ]


def build_command(verb: str, args: dict[str, Any], transport: bool) -> Command:
    """A page's action -> the Command, through the command registry; ``commands.ArgError`` (an
    ``UnknownVerb`` for a verb the page may not use) with a one-line reason when it cannot be."""
    from bridge import commands

    if verb not in PRODUCER_VERBS:
        raise commands.UnknownVerb(f"unknown verb {verb!r}")
    if verb.startswith("transport.") and not transport:
        raise commands.ArgError("transport is switched off for the producer view")
    for key, value in args.items():
        if isinstance(value, str) and len(value) > TEXT_LIMIT:
            raise commands.ArgError(f"{verb}: {key}: at most {TEXT_LIMIT} characters")
    return commands.build(verb, args)


# ------------------------------------------------------------------------------------ page -> server


class Refusal(Exception):
    """A page's message answered with an error reply; ``counter`` is the stats counter it counts."""

    def __init__(self, counter: str, ident: Any, reason: str) -> None:
        super().__init__(reason)
        self.counter, self.ident, self.reason = counter, ident, reason


@dataclass(frozen=True, slots=True)
class Action:
    """A page's message that is carried out: ``command`` is None for ``snapshot`` and ``ping``."""

    ident: Any
    verb: str
    command: Command | None = None


def read_message(data: str, max_message: int, song: Value, transport: bool) -> Action:
    """``{"id": n, "verb": ..., "args": {...}}`` -> the Action, or Refusal. ``song`` is the current
    song: ``args`` may name the ``song`` of a take (take numbers are per song), refused unless it is
    the current one."""
    from bridge import commands

    if len(data.encode()) > max_message:
        raise Refusal("oversized", None, f"message too large (limit {max_message} bytes)")
    try:
        message = json.loads(data)
    except ValueError:
        raise Refusal("malformed", None, "not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("verb"), str):
        ident = message.get("id") if isinstance(message, dict) else None
        raise Refusal("malformed", ident, "expected {id, verb, args}")
    ident = message.get("id")
    if not (ident is None or (isinstance(ident, int | str) and not isinstance(ident, bool))):
        ident = None
    verb, args = message["verb"], message.get("args", {})
    if verb in ("snapshot", "ping"):
        return Action(ident, verb)
    if not isinstance(args, dict):
        raise Refusal("bad_args", ident, "args: expected an object")
    args = dict(args)
    take_song = args.pop("song", None)
    if take_song is not None and take_song != (song or ""):
        raise Refusal("bad_args", ident, f"that take is of song {take_song!r}: pick the song first")
    try:
        return Action(ident, verb, build_command(verb, args, transport))
    except commands.UnknownVerb as exc:
        raise Refusal("unknown_verb", ident, str(exc)) from None
    except commands.ArgError as exc:
        raise Refusal(
            "refused_transport" if "switched off" in str(exc) else "bad_args", ident, str(exc)
        ) from None


# ------------------------------------------------------------------------------------ server -> page


def hello_message(room: str, transport: bool, roles: dict[str, Any]) -> str:
    return dumps(
        {
            "t": "hello",
            "room": room,
            "view": "producer",
            "transport": transport,
            "roles": roles,
            "verbs": page_verbs(transport),
            "server_time": time.time(),
        }
    )


def snapshot_message(state: dict[str, Value], sheet_text: str) -> str:
    return '{"t":"snapshot","state":' + dumps(state) + ',"sheet":' + sheet_text + "}"


def state_message(changed: dict[str, Value]) -> str:
    return dumps({"t": "state", "set": changed})


def reply_message(ident: Any, error: str | None) -> str:
    message: dict[str, Any] = {"t": "reply", "id": ident, "ok": error is None}
    if error is not None:
        message["error"] = error
    return dumps(message)


@dataclass(eq=False)
class ConsoleConnection:
    """One open page: its WebSocket and the messages queued for it (a writer task sends them)."""

    ws: web.WebSocketResponse
    peer: str
    queue: deque[str] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    talkback: bool = False
    closed: bool = False
    opened: float = field(default_factory=time.monotonic)

    def push(self, text: str) -> bool:
        if self.closed:
            return False
        if len(self.queue) >= MAX_BACKLOG:
            return False
        self.queue.append(text)
        self.wake.set()
        return True
