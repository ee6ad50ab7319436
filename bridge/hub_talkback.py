"""The hub's talkback routing: a press goes to the mixer (role ``talkback``, else ``mixer``);
the mixer's confirmed on and off become the ledger's cue (who pressed: the surface the bridge
was asked by, ``console`` for a press on the desk, ``auto_release`` for the stuck-talkback
release); without a mixer the press is the fact. The stuck-talkback release runs on the
hub's injected timer."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from bridge import state as S
from bridge.devices.base import Device
from bridge.errors import CommandError, SessionLogClosed, SessionLogUnavailable
from bridge.hub_ledger import NOT_CARRIED_OUT
from bridge.routing import Done, TimerHandle
from bridge.vocab import DeviceStatus, Request, SetTalkback, TalkbackChanged

if TYPE_CHECKING:
    from bridge.hub import Hub
    from bridge.ledger_load import Effect

log = logging.getLogger("bridge.hub")


class TalkbackRouter:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: what the bridge last asked the mixer per channel: (who, on, until when)
        self._wanted: dict[str, tuple[str, bool, float]] = {}
        #: stuck-talkback timers per channel, and channels being released by them (max_on)
        self._stuck: dict[str, TimerHandle] = {}
        self._auto: dict[str, float] = {}
        self._release_failed: set[str] = set()

    def mixer(self, name: str) -> Device[Any] | None:
        """The device if ``name`` carries out talkback (role talkback, else mixer)."""
        slot = self.hub.slots.get(name)
        if slot is None or slot.role not in ("talkback", "mixer") or SetTalkback not in slot.device.handles:
            return None
        return slot.device

    def changed(self, source: str, event: TalkbackChanged) -> list[Effect]:
        """A talk channel's state changed (reported by ``source``): the ledger's cue."""
        hub = self.hub
        ledger = hub.ledger
        ch, on = event.channel, event.on
        at = hub._moment()
        mixer = self.mixer(source)
        who = source
        if mixer is not None:
            wanted = self._wanted.get(ch)
            who = "console"
            if wanted is not None and wanted[1] == on and at.clock <= wanted[2]:
                who = wanted[0]
                del self._wanted[ch]
        auto = None
        if on:
            max_on = float(getattr(mixer, "talkback_max_on", 0.0) or 0.0) if mixer is not None else 0.0
            if max_on > 0:
                self._arm_stuck_release(ch, source, max_on, max_on)
        else:
            self._cancel_stuck_release(ch)
            if ledger.cues.cue_open(ch):
                auto = self._auto.pop(ch, None)
        return ledger.cues.talkback(
            ch,
            on,
            song=ledger.song,
            take=ledger.takes.last_take.get(ledger.song) or None,
            who=who,
            mixer=source if mixer is not None else None,
            assumed=event.assumed,
            at=at,
            next_seq=hub.log.next_seq(),
            auto_released=auto,
        )

    def execute(self, source: str, command: SetTalkback, done: Done) -> None:
        hub = self.hub
        ch = command.channel
        if ch not in S.TALK_CHANNELS:
            raise CommandError(f"no talk channel {ch!r} (channels: {', '.join(S.TALK_CHANNELS)})")
        target = hub._target("talkback", command) or hub._target("mixer", command)
        if target is None:
            self._self_talkback(source, command, done)
            return
        slot = hub.slots[target]
        channels = tuple(getattr(slot.device, "talkback_channels", ("A",)))
        if ch not in channels:
            have = ", ".join(channels)
            raise CommandError(f"{slot.role} '{target}' has no talk channel {ch} (it has {have})")
        if slot.status != DeviceStatus.OK:
            detail = hub.details.get(target)
            raise CommandError(f"{slot.role} '{target}' is {slot.status}" + (f": {detail}" if detail else ""))
        wanted = (source, command.on, hub.clock() + hub.confirm_timeout)
        self._wanted[ch] = wanted

        def finished(error: str | None) -> None:
            if error:
                if self._wanted.get(ch) is wanted:
                    del self._wanted[ch]
                detail = hub.details.get(target)
                if slot.status != DeviceStatus.OK and detail and detail not in error:
                    error = f"{error}: {detail}"
            done(error)

        hub._send(target, command, finished)

    def _self_talkback(self, source: str, command: SetTalkback, done: Done) -> None:
        futures = self.hub._apply_event(source, TalkbackChanged(command.on, command.channel))
        if not futures:
            done(None)
            return
        fut = futures[-1]
        if isinstance(fut, SessionLogClosed):
            done(NOT_CARRIED_OUT)
            return
        if isinstance(fut, BaseException):
            done(f"session log write failed: {fut}")
            return

        def finish(f: asyncio.Future[Any]) -> None:
            # Talkback works while the log cannot write: the press took effect (the OSC answer
            # says "not logged"); only a closed log is an error.
            if f.cancelled():
                done("session log closed before the record was written")
            elif isinstance(f.exception(), SessionLogUnavailable):
                done(None)
            elif f.exception() is not None:
                done(f"session log write failed: {f.exception()}")
            else:
                done(None)

        fut.add_done_callback(finish)

    def _arm_stuck_release(self, ch: str, mixer: str, delay: float, max_on: float) -> None:
        self._cancel_stuck_release(ch)
        self._stuck[ch] = self.hub.timer(delay, lambda: self._release_stuck(ch, mixer, max_on))

    def _cancel_stuck_release(self, ch: str) -> None:
        handle = self._stuck.pop(ch, None)
        if handle is not None:
            handle.cancel()
        self._release_failed.discard(ch)

    def _release_stuck(self, ch: str, mixer: str, max_on: float) -> None:
        """A talk channel stayed on past ``max_on``: release it at the mixer (a stuck talkback
        puts the control room into the artist's headphones). The cue's end record says so."""
        hub = self.hub
        self._stuck.pop(ch, None)
        if hub.store.get(S.talkback_key(ch)) is not True:
            return
        if ch not in self._release_failed:
            log.warning("talkback %s on %s for more than max_on = %g s: releasing it", ch, mixer, max_on)
        self._auto[ch] = max_on

        def released(error: str | None) -> None:
            if error is None:
                if ch in self._release_failed:
                    log.info("talkback %s on %s released", ch, mixer)
                self._release_failed.discard(ch)
                return
            self._auto.pop(ch, None)  # a later release by hand is not an auto-release
            if hub.store.get(S.talkback_key(ch)) is not True:
                return
            retry = max(1.0, hub.confirm_timeout)
            if ch not in self._release_failed:
                log.error(
                    "talkback %s on %s could not be released: %s; retrying every %g s",
                    ch,
                    mixer,
                    error,
                    retry,
                )
            else:
                log.debug("talkback %s on %s still not released: %s", ch, mixer, error)
            self._arm_stuck_release(ch, mixer, retry, max_on)
            self._release_failed.add(ch)

        hub.submit("auto_release", Request(SetTalkback(False, ch), released))
