"""Suite-wide test configuration.

The fast lane: ``pytest -m "not peers"`` runs only the tests that start no other process
(no daemon subprocess, jackd, Ardour, mosquitto, fake peer process or browser). A test is
marked ``peers`` here, automatically, when it carries one of the peer markers, lives in a
directory of whole-daemon tests, or uses a fixture that starts a peer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_peers(item):
            item.add_marker(pytest.mark.peers)
