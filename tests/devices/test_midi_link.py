"""MidiLink through real JACK MIDI ports fed by a separate process (the parser alone:
test_midi_parser.py)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from peers.jack import JackServer, PeerFactory, unique_name

from bridge.devices.midi.link import MidiLink
from bridge.errors import DeviceLost, DeviceUnavailable


def h(s: str) -> bytes:
    return bytes.fromhex(s)


@pytest.fixture(autouse=True, params=["native", "python"])
def midi_helper(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every MidiLink test runs with the native JACK helper (bridge/devices/midi/jackmidi) and with
    the Python helper; the native one only where scripts/setup could build it."""
    if request.param == "python":
        monkeypatch.setenv("STUDIO_BRIDGE_MIDI_HELPER", "python")
    else:
        from bridge.devices.midi.jackmidi import native_helper

        if native_helper() is None and "jack_server" in request.fixturenames:
            if os.environ.get("CI") == "true":
                pytest.fail("the native JACK MIDI helper was not built (scripts/setup test builds it)")
            pytest.skip("the native JACK MIDI helper is not built (scripts/setup test builds it)")
    return str(request.param)


#: The data-path tests run twice: the native helper writes input from JACK's thread when it can
#: ("direct"); "ring" forces every event through its ring buffer and writer thread (the path it
#: takes when it cannot: pipe full, lock busy, before the ready frame). The Python helper ignores it.
RING = pytest.mark.parametrize("ring", [False, True], ids=["direct", "ring"])


def ring_path(ring: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if ring:
        monkeypatch.setenv("SB_JACKMIDI_RING_ONLY", "1")


async def test_injected_bursts_wake_once_and_parse() -> None:
    link = MidiLink("inj", None, None)
    await link.open()
    link.inject(h("90 3C 7F"))
    link.inject([0x3D, 0x7F])  # running status across callbacks
    link.inject(h("F0 01"))
    link.inject(h("02 F7"))
    async with asyncio.timeout(5):
        batches = link.messages()
        got = await anext(batches)
    assert got == [h("90 3C 7F"), h("90 3D 7F"), h("F0 01 02 F7")]
    assert link.stats() == {"received": 4, "messages": 3, "dropped": 0, "sent": 0}
    await link.aclose()
    link.close()  # idempotent
    with pytest.raises(DeviceLost):
        await anext(batches)


# --------------------------------------------------------------------------- through JACK


async def collect(link: MidiLink, n: int, timeout: float = 10) -> list[bytes]:  # noqa: ASYNC109
    got: list[bytes] = []
    async with asyncio.timeout(timeout):
        async for batch in link.messages():
            got.extend(batch)
            if len(got) >= n:
                return got
    return got


@pytest.mark.jack
@RING
async def test_open_by_pattern_and_receive(
    jack_server: JackServer, midi_peer: PeerFactory, ring: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring_path(ring, monkeypatch)
    dev = unique_name("Synth")
    peer = midi_peer(dev, "Synth MIDI 1")
    link = MidiLink(unique_name("lnk"), f"{dev.upper()}:synth midi", f"re:^{dev}-fb:", api="jack")
    await link.open()
    try:
        assert link.in_port == peer.out_port
        assert link.out_port == peer.in_port
        await peer.asend(
            [
                [0x90, 0x3C, 0x7F],
                [0x3D, 0x7F],  # running status, as its own JACK event
                [0x3E, 0x00],
                [0xF0, 0x00, 0x20, 0x29],  # SysEx split over three events
                [0x01, 0xF8, 0x02],  # with a realtime byte inside
                [0x03, 0xF7],
                [0x05, 0x06],  # stray data bytes (no running status after SysEx)
                [0xF0, 0x01, 0x02],  # truncated SysEx: a new status byte arrives before F7
                [0xB0, 0x07, 0x64],
                [0xF7],  # now a stray end of SysEx
                [0xB0, 0x08, 0x01],
            ]
        )
        got = await collect(link, 6)
        assert got == [
            h("90 3C 7F"),
            h("90 3D 7F"),
            h("90 3E 00"),
            h("F8"),
            h("F0 00 20 29 01 02 03 F7"),
            h("B0 07 64"),
        ] or got[:6] == [
            h("90 3C 7F"),
            h("90 3D 7F"),
            h("90 3E 00"),
            h("F8"),
            h("F0 00 20 29 01 02 03 F7"),
            h("B0 07 64"),
        ]
        got += await collect(link, 1) if len(got) < 7 else []
        assert got[6] == h("B0 08 01")
        # stray 05 06 (2), the truncated SysEx (1), the stray F7 after B0 07 64 (1)
        assert link.stats()["dropped"] == 4
        link.send(h("B0 29 7F"))
        link.send(h("F0 7F 7F 06 02 F7"))
        assert await peer.areceived(2) == [[0xB0, 0x29, 0x7F], [0xF0, 0x7F, 0x7F, 0x06, 0x02, 0xF7]]
        assert link.stats()["sent"] == 2
    finally:
        await link.aclose()


@pytest.mark.jack
async def test_unplug_raises_device_lost_and_replug_reopens(
    jack_server: JackServer, midi_peer: PeerFactory
) -> None:
    dev = unique_name("Pad")
    peer = midi_peer(dev, "Pad MIDI 1")
    link = MidiLink(unique_name("lnk"), dev, f"{dev}-fb", api="jack")
    await link.open()
    try:
        await peer.asend([[0x90, 1, 1]])
        assert await collect(link, 1) == [h("90 01 01")]
        await peer.aclose_ports()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(DeviceLost, match="MIDI port gone"):
            async with asyncio.timeout(10):
                async for _ in link.messages():
                    pass
        assert loop.time() - t0 < 3.0  # watch timer is 2 Hz; generous bound for a loaded machine
        with pytest.raises(DeviceLost):
            link.send(h("90 01 01"))
        await link.aclose()
        # while unplugged, open() reports what it sees
        with pytest.raises(DeviceUnavailable, match="no MIDI input port matches"):
            await link.open()
        await peer.aopen_ports()
        await link.open()
        assert link.in_port == peer.out_port
        await peer.asend([[0x90, 2, 2]])
        assert await collect(link, 1) == [h("90 02 02")]
        link.send(h("90 05 05"))
        assert await peer.areceived(1) == [[0x90, 5, 5]]
    finally:
        await link.aclose()


@pytest.mark.jack
async def test_own_ports_are_never_matched(jack_server: JackServer) -> None:
    name = unique_name("selfie")
    link = MidiLink(name, name, None, api="jack")
    with pytest.raises(DeviceUnavailable, match=f"no MIDI input port matches '{name}'"):
        await link.open()
    await link.aclose()


@pytest.mark.jack
async def test_fast_replug_is_noticed_by_the_connection_check(
    jack_server: JackServer,
    midi_peer: PeerFactory,
) -> None:
    """Closed and opened again between two port-list checks: the name is back, but JACK dropped
    our connection; the link must still report the device lost (so it reconnects)."""
    dev = unique_name("Quick")
    peer = midi_peer(dev, "Quick MIDI 1")
    link = MidiLink(unique_name("lnk"), dev, f"{dev}-fb", api="jack")
    await link.open()
    try:
        await peer.asend([[0x90, 1, 1]])
        assert await collect(link, 1) == [h("90 01 01")]
        await peer.aclose_ports()
        await peer.aopen_ports()  # back at once, same names
        # the Python helper notices the dropped connection at its next check, the native one
        # the port's unregistration as it happens
        with pytest.raises(DeviceLost, match="MIDI port gone"):
            async with asyncio.timeout(10):
                async for _ in link.messages():
                    pass
        await link.aclose()
        await link.open()
        await peer.asend([[0x90, 2, 2]])
        assert await collect(link, 1) == [h("90 02 02")]
    finally:
        await link.aclose()


@pytest.mark.jack
@RING
async def test_links_open_and_close_while_a_controller_streams(
    jack_server: JackServer, midi_peer: PeerFactory, ring: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller sends without pause while other links open and close next to a link that
    keeps listening. With rtmidi in the daemon process this deadlocked (an opening thread held
    the GIL waiting for JACK, JACK waited for our input callback, the callback for the GIL);
    with the helper processes nothing waits and nothing is lost or reordered."""
    ring_path(ring, monkeypatch)
    dev = unique_name("Stream")
    peer = midi_peer(dev, "Stream MIDI 1", with_in=False)
    keep = MidiLink(unique_name("keep"), dev, None, api="jack")
    await keep.open()
    expected = [bytes((0xB0, i % 128, (i // 128) % 128)) for i in range(3000)]
    got: list[bytes] = []
    all_in = asyncio.Event()

    async def listen() -> None:
        async for batch in keep.messages():
            got.extend(batch)
            if len(got) >= len(expected):
                all_in.set()

    listener = asyncio.ensure_future(listen())
    sender = asyncio.ensure_future(peer.asend([list(m) for m in expected], burst=2))  # ~1.5 s
    cycles = 0
    try:
        async with asyncio.timeout(60):
            while not sender.done() or cycles < 3:
                other = MidiLink(unique_name("cyc"), dev, None, api="jack")
                await other.open()
                helper = other._proc
                assert helper is not None
                await asyncio.sleep(0.02)
                await other.aclose()
                assert helper.returncode == 0  # closed cleanly, not killed
                cycles += 1
            assert await sender == len(expected)
            await all_in.wait()
        assert got == expected
        assert keep.stats()["dropped"] == 0
    finally:
        listener.cancel()
        await keep.aclose()


@pytest.mark.jack
async def test_a_helper_that_ends_is_a_lost_device(jack_server: JackServer, midi_peer: PeerFactory) -> None:
    dev = unique_name("Crash")
    peer = midi_peer(dev, "Crash MIDI 1")
    link = MidiLink(unique_name("lnk"), dev, f"{dev}-fb", api="jack")
    await link.open()
    try:
        assert link._proc is not None
        # SIGTERM and SIGINT are ignored (the daemon closes its helpers itself)...
        link._proc.terminate()
        link._proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        assert link._proc.returncode is None
        # ...SIGUSR1 ends one cleanly. (Not SIGKILL: a JACK client killed outright wedges this
        # synchronous-mode jackd for good, jackd's behaviour with any client.)
        link._proc.send_signal(signal.SIGUSR1)
        with pytest.raises(DeviceLost, match=r"MIDI helper process ended \(exit 0\)"):
            async with asyncio.timeout(10):
                async for _ in link.messages():
                    pass
        with pytest.raises(DeviceLost):
            link.send(h("90 01 01"))
        await link.aclose()
        await link.open()  # and a new helper takes over
        await peer.asend([[0x90, 3, 3]])
        assert await collect(link, 1) == [h("90 03 03")]
    finally:
        await link.aclose()


@pytest.mark.jack
async def test_a_client_of_our_name_left_over_is_not_taken_for_our_port(
    jack_server: JackServer, midi_peer: PeerFactory
) -> None:
    """A JACK client named as our link's would be (an earlier helper not yet gone) makes JACK
    name ours ``<name>-01``; the port checks must look at our port, not at the other client's
    (unconnected) one, or a live link is reported lost every half second."""
    dev = unique_name("Busy")
    peer = midi_peer(dev, "Busy MIDI 1", with_in=False)
    name = unique_name("lnk")
    midi_peer(f"{name}-in", "in", with_in=False)  # the leftover: a port "<name>-in:in", unconnected
    link = MidiLink(name, dev, None, api="jack")
    await link.open()
    try:
        for i in range(3):  # across several of the Python helper's 0.5 s checks
            await peer.asend([[0x90, i, 1]])
            assert await collect(link, 1) == [bytes([0x90, i, 1])]
            await asyncio.sleep(0.6)
        assert link.is_open
    finally:
        await link.aclose()
