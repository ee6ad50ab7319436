"""Ardour's markers at Ardour's own sample: the bundle and the read-back (issue 10.7).

A marker is one OSC bundle ``/transport_frame``, ``/add_marker <label>``, ``/transport_frame``.
Ardour handles the three in a row and puts the marker at the playhead it reads in between: both
answers equal are the marker's exact sample. Different (Ardour's process cycle ended inside the
bundle) the marker is at one of the two: it is reported at once without a position and read
back once the transport stops (locate to it by name, read the playhead, locate back), then
reported again with its exact sample. Ardour's OSC has no query for a marker's position.

:class:`ArdourMarkers` is a part of :class:`bridge.devices.ardour.ArdourOsc` kept in its
own module for size: it works on the driver's internals (frame queries, the pending markers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bridge.devices._osc import bundle, encode
from bridge.devices._osc_daw import MARKER_WAIT, PendingMarker
from bridge.errors import DeviceError
from bridge.vocab import AddMarker, MarkerAdded

if TYPE_CHECKING:
    from bridge.devices.ardour import ArdourOsc

log = logging.getLogger("bridge.devices.ardour")  # the driver's messages, under its name


@dataclass(slots=True, eq=False)
class ArdourMarker(PendingMarker):
    #: Ardour's playhead right before and right after it created the marker (one bundle)
    frames: list[int] = field(default_factory=list)
    waiters: list[Callable[[int], None]] = field(default_factory=list)


class ArdourMarkers:
    """The markers of one connection to Ardour."""

    def __init__(self, daw: ArdourOsc) -> None:
        self.daw = daw
        #: markers whose position is one of two samples (Ardour's cycle moved on while it made
        #: them): read back from Ardour once the transport is stopped
        self.unresolved: deque[tuple[ArdourMarker, int, int]] = deque()
        self.resolver: asyncio.Task[None] | None = None

    def add(self, cmd: AddMarker) -> None:
        """One bundle: playhead, marker (named with the label), playhead. Ardour handles the three
        in a row; the marker is at the playhead it read in between. Both playheads equal: that
        is the marker's exact sample. Different (a process cycle ended in between): it is one of
        the two, read back from Ardour once the transport is stopped."""
        daw = self.daw
        m = ArdourMarker(cmd.label, cmd.tag, daw._clock() + MARKER_WAIT)

        def frame(samples: int) -> None:
            self._frame(m, samples)

        m.waiters = [frame, frame]
        daw._pending.append(m)
        daw._frame_waiters.extend(m.waiters)
        query = encode("/transport_frame")
        add = encode("/add_marker", cmd.label) if cmd.label else encode("/add_marker")
        daw._tx_raw(bundle(query, add, query))

    def _frame(self, m: ArdourMarker, samples: int) -> None:
        daw = self.daw
        m.frames.append(samples)
        if len(m.frames) < 2:
            return
        daw._on_frame(samples)
        with contextlib.suppress(ValueError):
            daw._pending.remove(m)
        before, after = m.frames
        if before == after:
            daw._emit(MarkerAdded(m.label, daw._seconds(before), str(before), m.tag))
            return
        # Logged now without a position (the take is marked); the exact one follows.
        daw._emit(MarkerAdded(m.label, None, None, m.tag))
        self.unresolved.append((m, min(before, after), max(before, after)))
        daw._stats["markers_read_back"] += 1
        if daw._playing is False:
            self.start()

    def timed_out(self, m: ArdourMarker) -> None:
        # Ardour's /transport_frame answers were lost: the marker exists, its position is unknown.
        daw = self.daw
        for waiter in m.waiters:
            with contextlib.suppress(ValueError):
                daw._frame_waiters.remove(waiter)
        log.warning("%s: no position from Ardour for marker %r", daw.name, m.label)
        daw._emit(MarkerAdded(m.label, None, None, m.tag))

    def start(self) -> None:
        """Read back the unresolved markers now (the transport has stopped)."""
        if self.unresolved and (self.resolver is None or self.resolver.done()):
            self.resolver = asyncio.create_task(self._resolve(), name=f"{self.daw.name}-markers")

    def cancel(self) -> None:
        if self.resolver is not None:
            self.resolver.cancel()
            self.resolver = None

    async def _playhead(self) -> int | None:
        """Ardour's playhead now (None if it does not answer within 0.5 s)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def got(samples: int) -> None:
            if not fut.done():
                fut.set_result(samples)

        self.daw._query_frame(got)
        try:
            async with asyncio.timeout(0.5):
                return await fut
        except TimeoutError:
            with contextlib.suppress(ValueError):
                self.daw._frame_waiters.remove(got)
            return None

    async def _locate_back(self, home: int) -> None:
        """Put the stopped playhead back at ``home`` (Ardour drops a locate that comes while it
        is still finishing the previous one: ask again until it is there)."""
        daw = self.daw
        t0 = sent = daw._clock()
        daw._tx("/locate", home, 0)
        while daw._clock() - t0 < 2.0 and daw._playing is False:
            await asyncio.sleep(0.02)
            now = await self._playhead()
            if now == home:
                daw._on_frame(home)
                return
            if daw._clock() - sent > 0.25:
                daw._tx("/locate", home, 0)
                sent = daw._clock()
        if daw._playing is False:
            log.warning("%s: the playhead did not return to %d after a marker read-back", daw.name, home)

    async def _resolve(self) -> None:
        """Read back the markers whose position is one of two samples: with the transport
        stopped, locate to the marker by its name (``/marker s``), read the playhead, and
        locate back to where the playhead was. Stops when the transport rolls again."""
        daw = self.daw
        try:
            while self.unresolved and daw._playing is False:
                m, low, high = self.unresolved[0]
                home = await self._playhead()
                if home is None or daw._playing is not False:
                    return
                found: int | None = None
                t0 = sent = daw._clock()
                daw._tx("/marker", m.label)
                while daw._clock() - t0 < 2.0 and daw._playing is False:
                    await asyncio.sleep(0.02)
                    if daw._clock() - sent > 0.25:  # a locate right after a stop can be dropped
                        daw._tx("/marker", m.label)
                        sent = daw._clock()
                    now = await self._playhead()
                    log.debug("%s: reading back %r (%d or %d): at %s", daw.name, m.label, low, high, now)
                    # (home may itself be a candidate: then give the locate a few cycles)
                    if now in (low, high) and (now != home or daw._clock() - t0 > 0.2):
                        found = now
                        break
                if found is None and daw._playing is not False:
                    return  # rolling again: read it back at the next stop
                self.unresolved.popleft()
                if found is None:
                    log.warning("%s: could not read back marker %r from Ardour", daw.name, m.label)
                else:
                    daw._emit(MarkerAdded(m.label, daw._seconds(found), str(found), m.tag))
                if home != found:
                    await self._locate_back(home)
        except DeviceError:
            return  # closed meanwhile
