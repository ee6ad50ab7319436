"""Suite-wide test configuration.

The fast lane: ``pytest -m "not peers"`` runs only the tests that start no other process
(no daemon subprocess, jackd, Ardour, mosquitto, fake peer process or browser). A test is
marked ``peers`` here, automatically, when it carries one of the peer markers, lives in a
directory of whole-daemon tests, or uses a fixture that starts a peer.

Any order of the test files passes: ``--file-order reverse`` runs the files last to first,
``--file-order shuffle`` (or ``shuffle:<seed>``) in a random order it prints (tests within a
file keep their order).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

# The peer fixtures, defined once for the whole suite. Import them here only: a fixture
# imported into a test module is a fixture of its own there, and a session-scoped one then
# starts its own peer per module (it used to be one jackd per JACK test module).
from mcu_emulator_proc import jack_sync  # noqa: F401
from peers.ardour import ardour  # noqa: F401
from peers.jack import jack_server, midi_peer  # noqa: F401
from peers.jack_audio import audio_env, jack_audio  # noqa: F401
from peers.mosquitto import mosquitto, mosquitto_tls  # noqa: F401

PEER_MARKERS = frozenset({"ardour", "jack", "mqtt", "slow", "browser"})
PEER_DIRS = frozenset({"integration", "web"})
PEER_FIXTURES = frozenset(
    {
        "ardour",
        "jack_server",
        "jack_sync",
        "midi_peer",
        "jack_audio",
        "audio_env",
        "mosquitto",
        "mosquitto_tls",
    }
)
HERE = Path(__file__).resolve().parent


def _uses_peers(item: pytest.Item) -> bool:
    if any(m.name in PEER_MARKERS for m in item.iter_markers()):
        return True
    try:
        rel = Path(str(item.path)).resolve().relative_to(HERE)
    except ValueError:
        rel = Path(item.name)
    if rel.parts and rel.parts[0] in PEER_DIRS:
        return True
    names = set(getattr(item, "fixturenames", ()))
    if names & PEER_FIXTURES:
        return True
    # tests that start a daemon or a fake peer process by hand say so in their module
    return bool(getattr(getattr(item, "module", None), "STARTS_PROCESSES", False))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--file-order",
        default="",
        help="run the test files in another order: reverse, shuffle, shuffle:<seed>",
    )


def _reorder_files(order: str, items: list[pytest.Item]) -> str:
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(str(item.path), []).append(item)
    names = list(files)
    if order == "reverse":
        names.reverse()
        what = "reversed"
    elif order == "shuffle" or order.startswith("shuffle:"):
        seed = int(order.partition(":")[2] or random.randrange(1 << 30))
        random.Random(seed).shuffle(names)
        what = f"shuffled with seed {seed} (--file-order shuffle:{seed} repeats it)"
    else:
        raise pytest.UsageError(f"--file-order: reverse, shuffle or shuffle:<seed>, not {order!r}")
    items[:] = [item for name in names for item in files[name]]
    return f"test files {what}: {len(names)} files"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_peers(item):
            item.add_marker(pytest.mark.peers)
    order = config.getoption("--file-order")
    if order:
        message = _reorder_files(order, items)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(message)
