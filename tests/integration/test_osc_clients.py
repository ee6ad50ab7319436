"""The OSC API's client table over real UDP against the real daemon: a churn of short-lived
source ports (tablets restarting, scripts, a misbehaving app) never pushes out a live subscriber,
dead clients are retired as soon as their feedback bounces, and one host's churn is bounded.

The cost is measured as feedback datagrams the daemon sent per state change (its ``/stats``),
compared with what the live clients actually received in the same window."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

from peers.daemon import Daemon, OscClient

from bridge.devices._osc import encode

CHURN = 500
PER_HOST = 8  # [osc] max_clients_per_host, default (README)
REPLIES = ("/ok", "/error", "/pong", "/stats")
# the web console off: its device coming up after "ready" would be one more state change here
CONFIG = "[internal]\ntracks = 8\n\n[web]\nenabled = false\n"


def stats(client: OscClient) -> dict[str, int]:
    client.send("/stats")
    args = client.wait_for(lambda m: m[0] == "/stats", 10)[1]
    return {str(k): int(v) for k, v in zip(args[::2], args[1::2], strict=True)}


def drain(client: OscClient, quiet: float = 0.3) -> list[tuple[str, list[Any]]]:
    """Everything that arrives until the socket has been quiet for ``quiet`` seconds."""
    got, client.seen = list(client.seen), []
    client.sock.settimeout(quiet)
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(client.recv())
    return got


def feedback_count(messages: list[tuple[str, list[Any]]]) -> int:
    return sum(1 for m in messages if m[0] not in REPLIES)


def state_changes(ctl: OscClient, listeners: list[OscClient], count: int) -> tuple[int, list[int]]:
    """``count`` state changes (track 1 mute flips); returns (feedback datagrams the daemon
    sent, feedback datagrams each listener received) over that window."""
    for c in listeners:
        drain(c, 0.1)
    before = stats(ctl)["feedback"]
    for i in range(count):
        assert ctl.command("/track/1/mute", (i + 1) % 2, timeout=10) == ("/ok", ["/track/1/mute"])
    received = [feedback_count(drain(c)) for c in listeners]
    sent = stats(ctl)["feedback"] - before
    return sent, received


def churn(port: int, count: int, keep: bool) -> list[socket.socket]:
    """``count`` source ports that each send /subscribe once. ``keep=False``: each socket is
    closed at once (the app is gone: its feedback bounces). ``keep=True``: they stay open and
    never read (a host gone without ICMP, as on a real network): returned, to close later."""
    kept: list[socket.socket] = []
    data = encode("/subscribe")
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.sendto(data, ("127.0.0.1", port))
        if keep:
            kept.append(s)
        else:
            s.close()
    return kept


def test_a_churn_of_dead_sources_never_pushes_out_a_live_subscriber(tmp_path: Path) -> None:
    with Daemon(tmp_path, CONFIG) as daemon:
        live = OscClient(daemon.osc_port)  # a display: subscribes once, then only listens
        ctl = OscClient(daemon.osc_port)  # a tablet sending commands
        try:
            assert live.command("/subscribe") == ("/ok", ["/subscribe"])
            drain(live)
            # 1. sources that subscribe and vanish: their replies bounce, they are retired
            churn(daemon.osc_port, CHURN, keep=False)
            assert ctl.command("/ping") == ("/pong", [])
            sent, (got_live, got_ctl) = state_changes(ctl, [live, ctl], 6)
            print(f"vanishing churn: {sent / 6:.1f} feedback datagrams per change, live got {got_live}/6")
            assert got_live == 6, f"the live subscriber got {got_live} of 6 changes"
            # every datagram sent reached a live client: none went to the dead
            assert sent == got_live + got_ctl == 12, (sent, got_live, got_ctl)
            table = stats(ctl)
            assert table["clients"] == 2 and table["subscribers"] == 1, table
            assert table["clients_unreachable"] >= CHURN - 2 * PER_HOST, table

            # 2. sources that subscribe and stay silent (no ICMP comes back): bounded per host,
            # the live subscriber keeps its place, the newcomers beyond the cap are refused
            silent = churn(daemon.osc_port, CHURN, keep=True)
            try:
                assert ctl.command("/ping") == ("/pong", [])
                sent, (got_live, _got_ctl) = state_changes(ctl, [live, ctl], 6)
                print(f"silent churn: {sent / 6:.1f} feedback datagrams per change, live got {got_live}/6")
                assert got_live == 6, f"the live subscriber got {got_live} of 6 changes"
                assert sent <= 6 * PER_HOST, f"{sent / 6:.1f} datagrams per change"
                table = stats(ctl)
                assert table["clients"] <= PER_HOST and table["subscribers"] >= 1, table
                assert table["clients_refused"] >= CHURN - PER_HOST, table
            finally:
                for s in silent:
                    s.close()
            # 3. ... and once they are gone, their first bounce retires them
            state_changes(ctl, [live, ctl], 2)
            sent, (got_live, got_ctl) = state_changes(ctl, [live, ctl], 6)
            assert got_live == 6 and sent == got_live + got_ctl, (sent, got_live, got_ctl)
        finally:
            live.close()
            ctl.close()
        assert daemon.stop() == 0


def test_a_configured_client_is_never_retired(tmp_path: Path) -> None:
    """``[osc] clients`` get feedback even while nothing listens there (a tablet switched off)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        gone = probe.getsockname()[1]  # closed below: its feedback bounces
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    config = CONFIG + f'\n[osc]\nclients = ["127.0.0.1:{gone}", "127.0.0.1:{listener.getsockname()[1]}"]\n'
    try:
        with Daemon(tmp_path, config) as daemon:
            ctl = OscClient(daemon.osc_port)
            try:
                sent, (got_ctl,) = state_changes(ctl, [ctl], 4)
                # both configured clients and ctl got every change, bounce or not
                assert sent == 3 * 4 and got_ctl == 4, (sent, got_ctl)
                assert stats(ctl)["clients_unreachable"] == 0
            finally:
                ctl.close()
            assert daemon.stop() == 0
    finally:
        listener.close()
