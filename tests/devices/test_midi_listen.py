"""MidiLink.listen: batches handed to a listener in order; loss and listener faults end it."""

from __future__ import annotations

import asyncio

import pytest

from bridge.devices.midi.link import MidiLink
from bridge.errors import DeviceLost


async def test_listener_gets_every_message_in_order_then_loss_ends_it() -> None:
    link = MidiLink("t", None, None)
    await link.open()
    got: list[bytes] = []
    task = asyncio.create_task(link.listen(got.extend))
    link.inject([0x90, 60, 100, 61])  # running status split across two injections
    link.inject([101, 0xF8])
    for _ in range(100):
        if len(got) == 3:
            break
        await asyncio.sleep(0.01)
    assert got == [bytes([0x90, 60, 100]), bytes([0x90, 61, 101]), bytes([0xF8])]
    link.close()
    with pytest.raises(DeviceLost):
        await asyncio.wait_for(task, 2)


async def test_a_listener_fault_ends_listen_with_that_error() -> None:
    link = MidiLink("t", None, None)
    await link.open()

    def broken(batch: list[bytes]) -> None:
        raise ValueError("decoder bug")

    task = asyncio.create_task(link.listen(broken))
    link.inject([0xB0, 1, 2])
    with pytest.raises(ValueError, match="decoder bug"):
        await asyncio.wait_for(task, 2)
    link.close()
