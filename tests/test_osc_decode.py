"""bridge.devices._osc.decode on input python-osc only warns about (no peers: pure parsing).

python-osc logs an unknown type tag or an unknown bundle element with ``logging.warning`` on
the root logger and goes on parsing: one unrated WARNING line per packet (a loopback flood of
3000 such packets wrote 3000 ``WARNING root: Unhandled parameter type: Q`` lines to the
daemon's journal, and the packets were not counted as malformed)."""

from __future__ import annotations

import logging
import struct

import pytest

from bridge.devices._osc import OscDecodeError, decode, encode


def _s(text: str) -> bytes:
    raw = text.encode()
    return raw + b"\0" * (4 - len(raw) % 4)


def _bundle(*elements: bytes) -> bytes:
    body = b"".join(struct.pack(">i", len(e)) + e for e in elements)
    return b"#bundle\0" + b"\0" * 7 + b"\1" + body


UNKNOWN_TAG = _s("/song") + _s(",Qs") + b"\0\0\0\0" + _s("Blue")
UNKNOWN_ELEMENT = _bundle(encode("/ping"), b"nope")


@pytest.mark.parametrize("datagram", [UNKNOWN_TAG, UNKNOWN_ELEMENT], ids=["type-tag", "bundle-element"])
def test_what_python_osc_only_warns_about_is_malformed(
    datagram: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(OscDecodeError, match="malformed OSC packet"):
        decode(datagram)
    assert [r.getMessage() for r in caplog.records] == []


def test_a_flood_of_them_writes_nothing_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(500):
        with pytest.raises(OscDecodeError):
            decode(UNKNOWN_TAG)
    assert caplog.records == []


def test_other_root_warnings_still_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    logging.warning("a warning of somebody else")
    assert [r.getMessage() for r in caplog.records] == ["a warning of somebody else"]


def test_good_packets_still_decode() -> None:
    assert decode(encode("/take/circle", 3, False)) == [("/take/circle", [3, False])]
    assert decode(_bundle(encode("/song", "Blue"), encode("/take/mark"))) == [
        ("/song", ["Blue"]),
        ("/take/mark", []),
    ]
