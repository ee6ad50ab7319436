"""The OSC API's client table (bridge.devices._osc_api_clients.ClientTable), with explicit clock values."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bridge.devices._osc import decode, encode
from bridge.devices._osc_api_clients import ClientTable
from bridge.devices.osc_api import OscApi, OscApiOptions
from bridge.vocab import Request

A = "192.168.1.40"
B = "192.168.1.41"


def table(**kw: object) -> ClientTable:
    args: dict[str, object] = {"ttl": 100.0, "max_clients": 6, "per_host": 3}
    args.update(kw)
    return ClientTable(**args)  # type: ignore[arg-type]


def test_a_newcomer_takes_the_place_of_the_longest_silent_implicit_client() -> None:
    t = table()
    assert t.touch((A, 1000), 0.0, subscribe=True)
    assert t.touch((A, 1001), 1.0)
    assert t.touch((A, 1002), 2.0)
    assert t.touch((A, 1003), 3.0)  # host A is full: 1001 (implicit, longest silent) goes
    assert t.targets(3.0) == ((A, 1000), (A, 1002), (A, 1003))
    assert t.counters["evicted"] == 1


def test_subscribers_keep_their_places_newcomers_are_refused() -> None:
    t = table()
    for port in (1000, 1001, 1002):
        assert t.touch((A, port), 0.0, subscribe=True)
    assert not t.touch((A, 2000), 50.0, subscribe=True)
    assert not t.touch((A, 2001), 50.0)
    assert t.counters["refused"] == 2
    assert (A, 1000) in t
    # another host is not affected by A's churn
    assert t.touch((B, 1000), 50.0)
    # a subscriber silent for longer than the TTL makes room
    assert t.touch((A, 2002), 100.5)
    assert t.counters["expired"] == 3 and len(t) == 2


def test_the_whole_table_is_bounded_too() -> None:
    t = table(max_clients=4, per_host=3)
    for i, host in enumerate(("10.0.0.1", "10.0.0.2", "10.0.0.3")):
        assert t.touch((host, 1), float(i), subscribe=True)
    assert t.touch(("10.0.0.4", 1), 3.0)  # implicit
    assert t.touch(("10.0.0.5", 1), 4.0)  # pushes out the implicit one
    assert ("10.0.0.4", 1) not in t
    assert t.touch(("10.0.0.6", 1), 5.0, subscribe=True)  # and so on, while implicit ones are left
    assert ("10.0.0.5", 1) not in t and len(t) == 4
    assert not t.touch(("10.0.0.7", 1), 6.0)  # four subscribers: no place
    assert t.counters == {"refused": 1, "evicted": 2, "expired": 0, "unreachable": 0}


def test_a_bounce_retires_the_client_at_once_but_never_a_configured_one() -> None:
    t = table(static=[(B, 9000)])
    t.touch((A, 1000), 0.0, subscribe=True)
    assert t.targets(0.0) == ((A, 1000), (B, 9000))
    assert t.unreachable((A, 1000))
    assert not t.unreachable((B, 9000))
    assert t.targets(0.0) == ((B, 9000),)
    assert t.counters["unreachable"] == 1
    # a configured client takes no place in the table
    assert t.touch((B, 9000), 1.0) and len(t) == 0


def test_reply_ports_make_a_hosts_source_ports_one_client() -> None:
    t = table(reply_ports={A: 9000})
    for port in range(50000, 50010):  # TouchOSC restarted ten times
        assert t.touch((A, port), float(port - 50000))
    assert t.targets(10.0) == ((A, 9000),)
    assert t.counters["evicted"] == 0 and t.counters["refused"] == 0
    assert t.forget((A, 50123))  # /unsubscribe from any of its ports
    assert len(t) == 0


def test_reply_ports_apply_to_ipv4_on_a_dual_stack_socket() -> None:
    t = table(reply_ports={A: 9000})
    assert t.target_of(("::ffff:" + A, 50000)) == ("::ffff:" + A, 9000)


def test_reconfigure_keeps_the_clients_and_applies_the_new_limits() -> None:
    t = table()
    t.touch((A, 1000), 0.0, subscribe=True)
    t.touch((A, 1001), 1.0)
    t.touch((A, 1002), 2.0)
    t.touch((B, 1000), 3.0, subscribe=True)
    t.reconfigure(ttl=100.0, max_clients=6, per_host=2, static=[], reply_ports={}, now=4.0)
    # over the new per-host cap: the longest-silent implicit client goes, the subscriber stays
    assert t.targets(4.0) == ((A, 1000), (A, 1002), (B, 1000))
    # a reply port for B joins B's entries under the reply port; the subscription is kept
    t.reconfigure(ttl=100.0, max_clients=6, per_host=2, static=[], reply_ports={B: 9000}, now=5.0)
    assert t.targets(5.0) == ((A, 1000), (A, 1002), (B, 9000))
    assert t.subscribers == 2
    # a shorter TTL applies to who is already there
    t.reconfigure(ttl=2.5, max_clients=6, per_host=2, static=[], reply_ports={B: 9000}, now=5.0)
    assert t.targets(5.0) == ((B, 9000),)


def test_hosts_taken_off_the_allowlist_lose_their_places() -> None:
    t = table()
    t.touch((A, 1000), 0.0, subscribe=True)
    t.touch((B, 1000), 0.0)
    assert t.discard_hosts(lambda host: host == A) == 1
    assert t.targets(1.0) == ((B, 1000),)


# ------------------------------------------------------------------ the API over real UDP (loopback)


class Peer:
    """A tablet: one UDP socket on loopback."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.target = ("127.0.0.1", port)

    def send(self, address: str, *args: object) -> None:
        self.sock.sendto(encode(address, *args), self.target)

    async def recv(self) -> tuple[str, list[object]]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            data = await loop.sock_recv(self.sock, 65536)
        return decode(data)[0]

    async def reply(self, address: str) -> tuple[str, list[object]]:
        while True:
            msg = await self.recv()
            if msg[0] in ("/ok", "/error") and msg[1][:1] == [address]:
                return msg

    def close(self) -> None:
        self.sock.close()


async def test_a_subscribe_without_a_place_is_answered_error() -> None:
    api = OscApi("osc", OscApiOptions(bind="127.0.0.1", port=0, max_clients_per_host=1))
    async with api:
        first, second = Peer(api.port), Peer(api.port)
        try:
            first.send("/subscribe")
            assert await first.reply("/subscribe") == ("/ok", ["/subscribe"])
            second.send("/subscribe")
            reply = await second.reply("/subscribe")
            assert reply[0] == "/error" and "too many clients" in str(reply[1])
            second.send("/ping")  # still served
            assert (await second.recv())[0] == "/pong"
            assert api.stats()["clients_refused"] == 2 and api.stats()["subscribers"] == 1
        finally:
            first.close()
            second.close()


async def test_answers_owed_at_close_go_out_before_the_socket_closes() -> None:
    api = OscApi("osc", OscApiOptions(bind="127.0.0.1", port=0))
    tablet = None
    try:
        async with api:
            tablet = Peer(api.port)
            tablet.send("/take/mark", "taken")
            tablet.send("/take/mark", "never handed over")
            tablet.send("/ping")
            assert (await tablet.recv())[0] == "/pong"  # both marks were taken in by now
            inbox = api.receive()
            taken = await anext(inbox)  # the core took the first one and is writing it
            await inbox.aclose()
        # closed, but the socket stays for the answer still owed; the other one was refused
        reply = await tablet.reply("/take/mark")
        assert reply[0] == "/error" and "not carried out" in str(reply[1])
        assert isinstance(taken, Request)
        taken.done(None)  # durable now
        assert await tablet.reply("/take/mark") == ("/ok", ["/take/mark"])
        async with asyncio.timeout(1):
            await api.wait_closed()
        assert api._sock is None
    finally:
        if tablet is not None:
            tablet.close()


async def test_oversized_datagrams_and_texts_are_refused_and_counted() -> None:
    """QA: a 65,000-byte /note was /ok'd and stored (a 150 kB CSV cell); /stats had no
    ``oversized``. Datagrams over 8 KiB and texts over 1,000 characters: /error, counted."""
    from bridge.devices._mqtt_topics import CommandParseError, parse_command

    MAX_DATAGRAM, MAX_TEXT = 8192, 1000
    api = OscApi("osc", OscApiOptions(bind="127.0.0.1", port=0))
    async with api:
        tablet = Peer(api.port)
        try:
            tablet.send("/note", "x" * 65000)
            reply = await tablet.reply("/note")
            assert reply[0] == "/error" and f"over the limit of {MAX_DATAGRAM}" in str(reply[1])
            tablet.sock.sendto(b"#bundle\0" + b"\0" * 9000, tablet.target)  # no address: dropped
            tablet.send("/note", "y" * (MAX_TEXT + 1))  # fits a datagram, too long for a note
            reply = await tablet.reply("/note")
            assert reply[0] == "/error" and f"over the limit of {MAX_TEXT}" in str(reply[1])
            tablet.send("/take/mark", "z" * 5000)
            assert (await tablet.reply("/take/mark"))[0] == "/error"
            tablet.send("/note", "n" * MAX_TEXT)  # the limit itself is fine
            inbox = api.receive()
            taken = await anext(inbox)
            await inbox.aclose()
            assert isinstance(taken, Request) and len(taken.command.text) == MAX_TEXT  # type: ignore[attr-defined]
            assert api.stats()["oversized"] == 4
            assert api.stats()["commands"] == 1
            taken.done(None)
        finally:
            tablet.close()
    with pytest.raises(CommandParseError, match=f"over the limit of {MAX_TEXT}"):
        parse_command("note", b"m" * 2000)


async def test_a_suppressed_flood_is_summarised_when_its_window_ends_and_as_info_at_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The "N more like this" summary came only with the next bad packet (maybe hours later) or
    at stop, where it was a WARNING at a clean stop."""
    import logging

    from bridge.devices.osc_api import _limited_log

    caplog.set_level(logging.INFO, logger="bridge.devices.osc_api")
    limiter = _limited_log(per_window=1, window=0.2)
    limiter.log("bad %d", 1)
    assert getattr(limiter, "_timer", None) is None  # nothing suppressed: no timer
    limiter.log("bad %d", 2)
    limiter.log("bad %d", 3)

    def summaries() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "more like this" in r.getMessage()]

    async with asyncio.timeout(10):
        while not summaries():  # noqa: ASYNC110 - bounded wait for the window's timer
            await asyncio.sleep(0.02)
    [summary] = summaries()
    assert summary.levelno == logging.WARNING and summary.getMessage().startswith("osc api: 2 more")
    assert limiter._timer is None
    caplog.clear()
    await asyncio.sleep(0.25)  # the window is over: a new one
    for n in range(3):
        limiter.log("bad %d", n)
    limiter.close()  # a clean stop
    assert [r.levelno for r in summaries()] == [logging.INFO]
    assert limiter._timer is None
