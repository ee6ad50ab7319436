"""MMC: byte-exact codec tests, and the drivers through real JACK MIDI ports (separate peer processes)."""

from __future__ import annotations

import asyncio

import pytest
from peers.jack import JackServer, PeerFactory, unique_name

from bridge.devices.midi import mmc
from bridge.devices.midi.mmc import MmcInput, MmcInputOptions, MmcTransport, MmcTransportOptions
from bridge.errors import DeviceError, DeviceUnavailable
from bridge.options import parse_options
from bridge.vocab import (
    AddMarker,
    Locate,
    Play,
    PositionChanged,
    SetRecord,
    SetTrackArm,
    Stop,
    TrackChanged,
    TransportChanged,
)


def h(s: str) -> bytes:
    return bytes.fromhex(s)


# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (mmc.stop(), "F0 7F 7F 06 01 F7"),
        (mmc.play(), "F0 7F 7F 06 02 F7"),
        (mmc.deferred_play(), "F0 7F 7F 06 03 F7"),
        (mmc.record_strobe(), "F0 7F 7F 06 06 F7"),
        (mmc.record_exit(), "F0 7F 7F 06 07 F7"),
        (mmc.stop(0x10), "F0 7F 10 06 01 F7"),
        (mmc.play(0), "F0 7F 00 06 02 F7"),
        # locate: 01:02:03 + 4 frames + 50/100 at 25 fps, type bits 01 -> hr 0x21
        (mmc.locate(3723 + 4.5 / 25, "25"), "F0 7F 7F 06 44 06 01 21 02 03 04 32 F7"),
        (mmc.locate(3723 + 4.5 / 25, "25", type_bits=False), "F0 7F 7F 06 44 06 01 01 02 03 04 32 F7"),
        (mmc.locate(0.0), "F0 7F 7F 06 44 06 01 60 00 00 00 00 F7"),
        (mmc.locate(90.5, "24", 0x05), "F0 7F 05 06 44 06 01 00 01 1E 0C 00 F7"),
        (mmc.locate(61.0, "30df"), "F0 7F 7F 06 44 06 01 40 01 01 00 00 F7"),
        # track record-ready masked writes (protocols.md §3.1 examples)
        (mmc.track_arm(1, True), "F0 7F 7F 06 41 04 4F 00 20 20 F7"),
        (mmc.track_arm(2, True), "F0 7F 7F 06 41 04 4F 00 40 40 F7"),
        (mmc.track_arm(3, False), "F0 7F 7F 06 41 04 4F 01 01 00 F7"),
        (mmc.track_arm(9, True), "F0 7F 7F 06 41 04 4F 01 40 40 F7"),
        (mmc.track_arm(10, True), "F0 7F 7F 06 41 04 4F 02 01 01 F7"),
        (mmc.track_arm(16, False, 0x22), "F0 7F 22 06 41 04 4F 02 40 00 F7"),
    ],
)
def test_codec_bytes(data: bytes, expected: str) -> None:
    assert data == h(expected)


def test_track_bitmap_layout() -> None:
    assert mmc.track_bit(1) == (0, 5)
    assert mmc.track_bit(2) == (0, 6)
    assert [mmc.track_bit(t) for t in range(3, 10)] == [(1, b) for b in range(7)]
    assert mmc.track_bit(10) == (2, 0)
    with pytest.raises(ValueError):
        mmc.track_bit(0)


def test_codec_rejects_bad_device_id() -> None:
    with pytest.raises(ValueError):
        mmc.play(0x80)


def test_locate_round_trip() -> None:
    for rate in ("24", "25", "30df", "30"):
        for secs in (0.0, 1.0, 59.99, 3599.5, 36000.25):
            (cmd,) = mmc.decode(mmc.locate(secs, rate)) or []
            assert isinstance(cmd, Locate)
            assert cmd.seconds == pytest.approx(secs, abs=1 / 2400)


def test_decode_commands() -> None:
    assert mmc.decode(mmc.play()) == [Play()]
    assert mmc.decode(mmc.deferred_play()) == [Play()]
    assert mmc.decode(mmc.stop()) == [Stop()]
    assert mmc.decode(mmc.record_strobe()) == [SetRecord(True)]
    assert mmc.decode(mmc.record_exit()) == [SetRecord(False)]
    assert mmc.decode(mmc.track_arm(1, True)) == [SetTrackArm(1, True)]
    assert mmc.decode(mmc.track_arm(12, False)) == [SetTrackArm(12, False)]
    # several tracks in one masked write, in bit order
    assert mmc.decode(h("F0 7F 7F 06 41 04 4F 01 05 04 F7")) == [SetTrackArm(3, False), SetTrackArm(5, True)]
    # a command stream: stop then locate
    assert mmc.decode(h("F0 7F 7F 06 01 44 06 01 00 00 0A 00 00 F7")) == [Stop(), Locate(10.0)]


def test_decode_device_ids() -> None:
    assert mmc.decode(mmc.play(0x10), device_id=0x10) == [Play()]
    assert mmc.decode(mmc.play(0x7F), device_id=0x10) == [Play()]  # all-call
    assert mmc.decode(mmc.play(0x11), device_id=0x10) is None  # another machine
    assert mmc.decode(mmc.play(0x11)) == [Play()]  # we listen as all-call


def test_decode_ignores_non_mmc_and_garbage() -> None:
    assert mmc.decode(h("90 3C 7F")) is None
    assert mmc.decode(h("F0 7E 7F 06 01 F7")) is None  # non-realtime universal
    assert mmc.decode(h("F0 7F 7F 07 01 F7")) is None  # an MMC response, not a command
    assert mmc.decode(h("F0 7F 7F 06 44 06 01 00 F7")) == []  # truncated locate: skipped
    assert mmc.decode(h("F0 7F 7F 06 60 F7")) == []  # unknown command without its count


# --------------------------------------------------------------------------- drivers (offline)


def test_transport_encodes_and_assumes() -> None:
    opts = parse_options(MmcTransportOptions, {"output": "x", "device_id": 5}, "devices.mmc", "t.toml")
    drv = MmcTransport("rec", opts)
    assert drv.encode(Play()) == (mmc.play(5), TransportChanged(playing=True, assumed=True))
    assert drv.encode(Stop()) == (mmc.stop(5), TransportChanged(playing=False, recording=False, assumed=True))
    assert drv.encode(SetRecord(True)) == (
        mmc.record_strobe(5),
        TransportChanged(playing=True, recording=True, assumed=True),
    )
    assert drv.encode(SetRecord(False)) == (
        mmc.record_exit(5),
        TransportChanged(recording=False, assumed=True),
    )
    assert drv.encode(Locate(10.0)) == (mmc.locate(10.0, "30", 5), PositionChanged(10.0))
    assert drv.encode(SetTrackArm(2, True)) == (
        mmc.track_arm(2, True, 5),
        TrackChanged(2, arm=True, assumed=True),
    )
    assert drv.encode(AddMarker("x")) is None
    with pytest.raises(DeviceError):
        drv.encode(SetTrackArm("Lead Vox", True))
    deferred = MmcTransport("rec", MmcTransportOptions(output="x", deferred_play=True))
    assert deferred.encode(Play()) == (mmc.deferred_play(), TransportChanged(playing=True, assumed=True))


def test_options_errors_name_file_and_key() -> None:
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"studio.toml: devices.rec.device_id: expected an integer 0-127"):
        parse_options(MmcTransportOptions, {"device_id": 200}, "devices.rec", "studio.toml")
    with pytest.raises(ConfigError, match=r"devices.rec.frame_rate: expected one of"):
        parse_options(MmcTransportOptions, {"frame_rate": "29.97"}, "devices.rec", "studio.toml")


# --------------------------------------------------------------------------- drivers through JACK


@pytest.mark.jack
async def test_transport_bytes_reach_a_reader_process(
    jack_server: JackServer, midi_peer: PeerFactory
) -> None:
    client = unique_name("rec")
    peer = midi_peer(client, "MMC in")
    opts = MmcTransportOptions(output=f"{client}-fb:MMC in", api="jack", client_name=unique_name("mmct"))
    drv = MmcTransport("rec", opts)
    async with asyncio.timeout(30):
        async with drv:
            events = []
            reader = drv.receive()
            for cmd in (
                Play(),
                SetRecord(True),
                SetTrackArm(3, True),
                Locate(61.0),
                SetRecord(False),
                Stop(),
            ):
                await drv.send(cmd)
                events.append(await anext(reader))
            got = await peer.areceived(6, timeout=10)
            await reader.aclose()
    assert [bytes(m) for m in got] == [
        mmc.play(),
        mmc.record_strobe(),
        mmc.track_arm(3, True),
        mmc.locate(61.0),
        mmc.record_exit(),
        mmc.stop(),
    ]
    assert events == [
        TransportChanged(playing=True, assumed=True),
        TransportChanged(playing=True, recording=True, assumed=True),
        TrackChanged(3, arm=True, assumed=True),
        PositionChanged(61.0),
        TransportChanged(recording=False, assumed=True),
        TransportChanged(playing=False, recording=False, assumed=True),
    ]


@pytest.mark.jack
async def test_input_from_a_writer_process(jack_server: JackServer, midi_peer: PeerFactory) -> None:
    client = unique_name("recorder")
    peer = midi_peer(client, "MMC out", with_in=False)
    drv = MmcInput("mmcin", MmcInputOptions(input=client, api="jack", client_name=unique_name("mmci")))
    async with asyncio.timeout(30):
        async with drv:
            reader = drv.receive()
            await peer.asend(
                [
                    list(mmc.play()),
                    [0xB0, 7, 100],  # other traffic on the same port: ignored and counted
                    list(mmc.record_strobe()),
                    list(mmc.play(0x33)),  # another id: we listen as all-call, so accepted
                    list(mmc.track_arm(2, True)),
                    list(mmc.locate(12.5, "25")),
                    [0x90, 0x3C, 0x7F],
                    list(mmc.record_exit()),
                    list(mmc.stop()),
                ]
            )
            got = [await anext(reader) for _ in range(7)]
            await reader.aclose()
    assert got == [
        Play(),
        SetRecord(True),
        Play(),
        SetTrackArm(2, True),
        Locate(12.5),
        SetRecord(False),
        Stop(),
    ]
    assert drv.stats()["ignored"] == 2


@pytest.mark.jack
async def test_transport_unavailable_lists_ports(jack_server: JackServer) -> None:
    drv = MmcTransport("rec", MmcTransportOptions(output="no-such-recorder", api="jack"))
    with pytest.raises(DeviceUnavailable, match="no MIDI output port matches 'no-such-recorder'"):
        async with asyncio.timeout(20):
            await drv.__aenter__()
    drv.link.close()
