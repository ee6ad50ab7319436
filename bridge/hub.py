"""The hub: the single consumer of everything devices report, and the one place that decides.

One task drains one inbox, so the core has no locks and a fixed order:

* **Events** change the studio state (``Store.apply``); the changes become feedback for
  surfaces (``FeedbackEngine``) and confirm pending commands; the take ledger
  (``bridge.ledger``) turns the ones that matter to it into session-log records.
* **Commands** (from surfaces, the OSC API, MQTT, a mapped ControlInput) are either
  session commands (song, take marks, circles, notes: the ledger's, answered once the log
  record is durable) or device commands, routed by role (``daw``, ``mixer``, ``talkback``)
  to one device's outbox and answered when the state confirms them.
  A command for a device that is not connected fails at once; one that is not confirmed
  within ``confirm_timeout`` fails then: nothing is queued to fire late.

The ledger is pure: the hub carries out its effects (appends its records to the log, applies
its events, sends its DAW markers, answers) and reports each record back once it is durable
or has failed, in the hub's order (a ``_Call`` in the inbox). The clock (``clock=``) and the
timers (``timer=``: confirmation timeouts, the stuck-talkback release) are injected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bridge import commands
from bridge import state as S
from bridge.devices.base import Device
from bridge.errors import CommandError
from bridge.feedback import FeedbackEngine
from bridge.hub_ledger import Appended, LedgerDriver
from bridge.hub_talkback import TalkbackRouter
from bridge.ledger import Ledger
from bridge.ledger_load import Effect, Moment, close_open_cues
from bridge.mapping import Mapper, StudioMap
from bridge.outbox import Outbox
from bridge.routing import (
    DAW_COMMANDS,
    Confirmations,
    Done,
    Slot,
    Timer,
    confirmation,
    describe,
    loop_timer,
    ranges,
)
from bridge.vocab import (
    AudioCaptured,
    Command,
    ControlInput,
    DeviceStatus,
    DeviceStatusChanged,
    Event,
    Inbound,
    LogEntry,
    LogStatusChanged,
    MarkerAdded,
    PositionChanged,
    Request,
    SetTalkback,
    SetTrackArm,
    SetTrackFader,
    SetTrackMute,
    SetTrackSolo,
    TalkbackChanged,
    TrackRef,
    TransportChanged,
    Value,
)

if TYPE_CHECKING:
    from bridge.log.api import SessionLogLike
    from bridge.log.records import LogStatus, Record, SessionInfo

__all__ = ["DAW_COMMANDS", "Hub", "Slot"]

#: The facts with a side beyond the state (position clock, device table, ledger, talkback);
#: every other fact only changes the state, which confirms and shows it.
_LEDGER_EVENTS = frozenset(
    {PositionChanged, TransportChanged, DeviceStatusChanged, TalkbackChanged, MarkerAdded, AudioCaptured}
)

log = logging.getLogger(__name__)

#: how many durable log records a reconnecting wants_log device can catch up on
RECENT_LOG = 4096


@dataclass(frozen=True, slots=True)
class _Connected:
    """Internal: a device is up; send it the full feedback picture."""


@dataclass(frozen=True, slots=True)
class _Call:
    """Internal: run ``fn`` in the hub's order (a durable log record's follow-up)."""

    fn: Callable[[], None]


class Hub:
    def __init__(
        self,
        session_log: SessionLogLike,
        *,
        roles: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timer: Timer = loop_timer,
        confirm_timeout: float = 2.0,
        auto_take: str = "record",
        songs: Sequence[str] = (),
    ) -> None:
        self.log = session_log
        self.ledger = Ledger(auto_take=auto_take, songs=songs)
        self.roles: dict[str, str] = dict(roles or {})
        self.clock = clock
        self.timer = timer
        self.confirm_timeout = confirm_timeout
        self.store = S.Store(S.DEFAULTS, daw=self.roles.get("daw"))
        self.feedback = FeedbackEngine()
        self.slots: dict[str, Slot] = {}
        #: last status detail per device ("cannot bind udp ...: Address already in use")
        self.details: dict[str, str] = {}
        self._inbox: deque[tuple[str, Inbound | _Connected | _Call]] = deque()
        self._draining = False
        self.confirms = Confirmations(clock, timer, lambda: self.confirm_timeout)
        self._pending = self.confirms.pending
        self.talkback = TalkbackRouter(self)
        self.driver = LedgerDriver(self)
        self._position_at = clock()
        self._position_base = 0.0
        #: durable log records kept to replay to a wants_log device that was down (MQTT)
        self._recent_log: deque[LogEntry] = deque(maxlen=RECENT_LOG)
        self._log_resume: dict[str, int] = {}
        self.processed = 0
        self.failed = 0

    @property
    def auto_take(self) -> str:
        """``record``: a new take starts when recording starts; ``off``: only explicit marks."""
        return self.ledger.auto_take

    @auto_take.setter
    def auto_take(self, value: str) -> None:
        self.ledger.auto_take = value

    @property
    def songs(self) -> list[str]:
        """The song list every session starts with (``[bridge] songs``)."""
        return self.ledger.songs

    @songs.setter
    def songs(self, value: Sequence[str]) -> None:
        self.ledger.songs = [s.strip() for s in value if s.strip()]

    # ------------------------------------------------------------------ setup

    async def start(self, session_name: str | None = None, new_session: bool = False) -> SessionInfo:
        """Open the session log and load the take counters of the (re)opened session (a resumed
        session's takes, flags, labels and song list are read back from its records)."""
        info = await self.log.open(session_name=session_name, new_session=new_session)
        self.log.on_durable(self._on_durable)
        self.log.on_status(self._on_log_status)
        self._on_log_status(self.log.status)
        session: list[Record] = []
        # take numbers are log-wide: every earlier take can be circled, renamed, selected
        records = await self.log.take_records()
        if info.resumed:
            session = await self.log.session_records(info.session_id)
            records = sorted({r.seq: r for r in [*records, *session]}.values(), key=lambda r: r.seq)
        self.loaded(info, self.ledger.load(info, records))
        closing = close_open_cues(session)
        futures = [self.driver.append(a) for a in closing]
        for cue in closing:
            log.info(
                "talkback %s: the cue open when the bridge stopped was closed (as of %s)",
                cue.fields["data"]["channel"],
                session[-1].ts,
            )
        await asyncio.gather(*(f for f in futures if isinstance(f, asyncio.Future)), return_exceptions=True)
        return info

    def loaded(self, info: SessionInfo, effects: list[Effect]) -> None:
        self.driver.run(effects)
        log.info(
            "session %r %s (song %r, next take %d)",
            info.name,
            "resumed after an unclean stop" if info.resumed else "started",
            info.song,
            self.ledger.takes.next_take.get(info.song, 1),
        )

    def add_device(self, device: Device[Any], role: str | None, studio_map: StudioMap | None = None) -> Slot:
        slot = Slot(device, role, Outbox(device.outbox_interval(), self.clock))
        slot.direct = type(device).send_nowait is not Device.send_nowait
        self.slots[device.name] = slot
        if role:
            self.roles[role] = device.name
        if role == "daw":
            self.store.daw = device.name  # its status becomes daw/status
        if device.feedback == "state":
            self.feedback.add_state_device(device.name)
        elif device.feedback == "mapped" and studio_map is not None:
            self.feedback.add_mapped_device(device.name, studio_map, self.track_number)
        if studio_map is not None:
            slot.mapper = Mapper(studio_map)
        return slot

    def remove_device(self, name: str) -> None:
        slot = self.slots.pop(name, None)
        self.feedback.remove_device(name)
        if slot and slot.role and self.roles.get(slot.role) == name:
            del self.roles[slot.role]
        self.confirms.fail(name, f"device '{name}' was removed")
        self._apply_event("core", DeviceStatusChanged(name, DeviceStatus.STOPPED, "removed"))

    # ------------------------------------------------------------------ inbox

    def submit(self, source: str, item: Inbound | _Connected | _Call) -> None:
        """Take something a device reported (called on the event loop, never blocks).

        The item is processed right away, in the caller's task, unless the hub is already
        processing (an item submitted while processing waits in the inbox and is taken by the
        same drain): one consumer, one FIFO order, and no extra loop iteration per message."""
        self._inbox.append((source, item))
        if not self._draining:
            self._drain_inbox()

    def submit_call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the hub's order (after what is being processed)."""
        self.submit("core", _Call(fn))

    def _drain_inbox(self) -> None:
        self._draining = True
        try:
            while self._inbox:
                source, item = self._inbox.popleft()
                try:
                    self.process(source, item)
                except Exception:
                    self.failed += 1
                    log.exception("hub failed to process %r from %s", item, source)
        finally:
            self._draining = False

    def device_up(self, name: str) -> None:
        self._inbox.append((name, DeviceStatusChanged(name, DeviceStatus.OK)))
        self.submit(name, _Connected())

    def device_down(self, name: str, status: DeviceStatus, detail: str = "") -> None:
        self.submit(name, DeviceStatusChanged(name, status, detail))

    async def run(self) -> None:
        """Keeps the hub's place in the task tree; the work happens in ``submit``."""
        await asyncio.Event().wait()

    def drain(self) -> None:
        """Process anything still queued (shutdown)."""
        if not self._draining:
            self._drain_inbox()

    def process(self, source: str, item: Inbound | _Connected | _Call) -> None:
        self.processed += 1
        if isinstance(item, Event):  # the most frequent first: facts, then a surface's inputs
            self._apply_event(source, item)
        elif isinstance(item, ControlInput):
            slot = self.slots.get(source)
            if slot is None or slot.mapper is None:
                return
            for command in slot.mapper.resolve(item, self.store.get, self.track_number):
                self.execute(source, command)
        elif isinstance(item, Request):
            self.execute(source, item.command, item.done)
        elif isinstance(item, Command):
            self.execute(source, item)
        elif isinstance(item, _Connected):
            self._resync(source)
        elif isinstance(item, _Call):
            item.fn()

    # ------------------------------------------------------------------ state

    def track_number(self, ref: TrackRef) -> int | None:
        if isinstance(ref, int):
            return ref if ref >= 1 else None
        text = ref.strip()
        if text.isdigit():
            return int(text) or None
        return self.store.track_by_name(text)

    def position_now(self) -> float:
        """Playhead in seconds: the last reported position, moved on while rolling."""
        seconds = self._position_base
        if self.store.get(S.PLAYING) is True:
            seconds += max(0.0, self.clock() - self._position_at)
        return round(seconds, 6)

    def _moment(self) -> Moment:
        """What the ledger is told of the studio now."""
        get = self.store.get
        armed = tuple(t for t in self.store.tracks() if get(S.track_key(t, "armed")) is True)
        return Moment(
            self.clock(),
            self.position_now(),
            get(S.PLAYING) is True,
            get(S.RECORDING) is True,
            armed,
            self.roles.get("daw", ""),
        )

    def _apply_event(self, source: str, event: Event) -> list[Appended]:
        side = type(event) in _LEDGER_EVENTS  # not TrackChanged, the most frequent fact
        was = (self.store.get(S.PLAYING), self.store.get(S.RECORDING)) if side else (None, None)
        if isinstance(event, PositionChanged):
            self._position_base, self._position_at = float(event.seconds), self.clock()
        elif isinstance(event, TransportChanged) and event.playing is not None and event.playing != was[0]:
            # the playhead starts (or stops) moving now, from where it was
            self._position_base, self._position_at = self.position_now(), self.clock()
        changes = self.store.apply(event)
        if changes:
            self._distribute(changes)
        effects = self._side_effects(source, event, changes, *was) if side else []
        futures = self.driver.run(effects) if effects else []
        self.confirms.check(event)
        return futures

    def _side_effects(
        self, source: str, event: Event, changes: list[S.Change], was_playing: Value, was_recording: Value
    ) -> list[Effect]:
        """What the ledger, the device table and talkback make of a fact (once it is in the state)."""
        ledger = self.ledger
        if isinstance(event, DeviceStatusChanged):
            self._device_status(event)
            if changes:
                return ledger.device_status(event.device, event.status, event.detail)
        elif isinstance(event, TransportChanged) and changes:
            playing, recording = self.store.get(S.PLAYING), self.store.get(S.RECORDING)
            if playing != was_playing or recording != was_recording:
                on_air = playing is True and recording is True
                started = on_air and not (was_playing is True and was_recording is True)
                quiet = _quiet_done(source, "auto take")
                return ledger.transport(
                    source, playing, recording, event.assumed, started, quiet, self._moment()
                )
        elif isinstance(event, PositionChanged):
            if ledger.takes.running is not None:
                return ledger.position(float(event.seconds), self.store.get(S.PLAYING) is True)
        elif isinstance(event, TalkbackChanged) and any(
            c.key == S.talkback_key(event.channel) for c in changes
        ):
            return self.talkback.changed(source, event)
        elif isinstance(event, MarkerAdded):
            return ledger.daw_marker(source, event)
        elif isinstance(event, AudioCaptured):
            return ledger.cues.audio(source, event)
        return []

    def _device_status(self, event: DeviceStatusChanged) -> None:
        self.details[event.device] = event.detail
        slot = self.slots.get(event.device)
        if slot is None:
            return
        slot.status = event.status
        if event.status != DeviceStatus.OK:
            unsent = slot.outbox.clear()
            if slot.device.wants_log and event.device not in self._log_resume:
                seqs = [m.seq for m in unsent if isinstance(m, LogEntry)]
                self._log_resume[event.device] = min(seqs) if seqs else self.log.next_seq()
            self.confirms.fail(event.device, f"device '{event.device}' is {event.status}")

    def _distribute(self, changes: list[S.Change]) -> None:
        per_device = self.feedback.on_changes(changes, self.store.get, self.track_number)
        for name, messages in per_device.items():
            slot = self.slots.get(name)
            if slot is None or slot.status != DeviceStatus.OK:
                continue
            now = self.clock()
            for message in messages:
                slot.deliver(message, now)

    def _resync(self, name: str) -> None:
        slot = self.slots.get(name)
        if slot is None:
            return
        slot.outbox.clear()
        for message in self.feedback.resync(name, self.store.items(), self.track_number):
            slot.outbox.put(message)
        resume = self._log_resume.pop(name, None)
        if slot.device.wants_log and resume is not None:
            # log records that became durable while the device was down (or never got sent)
            for entry in self._recent_log:
                if entry.seq >= resume:
                    slot.outbox.put(entry)

    def _on_durable(self, record: Record) -> None:
        entry = LogEntry(record.seq, record.to_json())
        self._recent_log.append(entry)
        for slot in self.slots.values():
            if slot.device.wants_log and slot.status == DeviceStatus.OK:
                slot.deliver(entry, self.clock())

    def _on_log_status(self, status: LogStatus) -> None:
        """The session log can write again / cannot: ``log/status``, ``log/reason``, ``log/unwritten``."""
        self.submit("core", LogStatusChanged(status.status, status.reason, status.unwritten))

    # ------------------------------------------------------------------ commands

    def execute(self, source: str, command: Command, done: Done | None = None) -> None:
        """Carry out ``command``; ``done`` is called exactly once with None or a reason."""
        if done is None:
            done = _quiet_done(source, type(command).__name__)
        try:
            route = commands.route_of(command)
            if route == "session":
                self.driver.run(self.ledger.command(source, command, done, self._moment()))
            elif route == "talkback" and isinstance(command, SetTalkback):
                self.talkback.execute(source, command, done)
            else:
                target = self._target("daw", command)
                if target is None:
                    name = self.roles.get("daw")
                    if name is None:
                        raise CommandError("no device has the role daw")
                    raise CommandError(f"daw '{name}' cannot {describe(command)}")
                self._send(target, command, done)
        except CommandError as exc:
            done(str(exc))

    def _target(self, role: str, command: Command) -> str | None:
        name = self.roles.get(role)
        if name is None:
            return None
        slot = self.slots.get(name)
        if slot is None or type(command) not in slot.device.handles:
            return None
        return name

    def _send(self, target: str, command: Command, done: Done) -> None:
        slot = self.slots[target]
        if slot.status != DeviceStatus.OK:
            raise CommandError(f"{slot.role or 'device'} '{target}' is {slot.status}")
        command = self._resolve_track(command)
        if slot.device.reports_all_tracks and isinstance(
            command, SetTrackArm | SetTrackMute | SetTrackSolo | SetTrackFader
        ):
            assert isinstance(command.track, int)
            if not self.store.has_track(command.track) and self.store.tracks():
                known = self.store.tracks()
                raise CommandError(f"no track {command.track} in {target} (it has {ranges(known)})")
        check = confirmation(command, self.store.get)
        # A device may report the fact while we deliver (Device.report_now, e.g. the internal
        # transport): it waits in the inbox until the confirmation below is registered.
        outer = self._draining
        self._draining = True
        try:
            slot.deliver(command, self.clock())
        finally:
            self._draining = outer
        if check is None or check(None):
            done(None)
        else:
            self.confirms.add(target, check, done, type(command).__name__)
        if not outer and self._inbox:
            self._drain_inbox()

    def _resolve_track(self, command: Command) -> Command:
        if isinstance(command, SetTrackArm | SetTrackMute | SetTrackSolo | SetTrackFader):
            number = self.track_number(command.track)
            if number is None:
                if isinstance(command.track, str):
                    raise CommandError(f"no track named {command.track!r}")
                raise CommandError(f"track numbers start at 1, got {command.track}")
            if isinstance(command.track, str) or command.track != number:
                return replace(command, track=number)
        return command

    # ------------------------------------------------------------------ introspection

    def state(self) -> dict[str, Value]:
        return self.store.snapshot()


def _quiet_done(source: str, what: str) -> Done:
    def done(error: str | None) -> None:
        if error:
            log.warning("%s from %s failed: %s", what, source, error)

    return done
