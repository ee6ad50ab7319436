"""The hub: the single consumer of everything devices report, and the one place that decides.

One task drains one inbox, so the core has no locks and a fixed order:

* **Events** change the studio state (``Store.apply``); the changes become feedback for
  surfaces (``FeedbackEngine``), confirm pending commands, and become session-log
  records (transport, talkback cues, DAW markers, device status).
* **Commands** (from surfaces, the OSC API, MQTT, a mapped ControlInput) are either
  session commands (song, take marks, circles, notes: carried out here and answered once
  the log record is durable) or device commands, routed by role (``daw``, ``mixer``,
  ``talkback``) to one device's outbox and answered when the state confirms them.
  A command for a device that is not connected fails at once; one that is not confirmed
  within ``confirm_timeout`` fails then: nothing is queued to fire late.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bridge import commands
from bridge import state as S
from bridge.devices.base import Device
from bridge.errors import CommandError, SessionLogUnavailable
from bridge.feedback import FeedbackEngine
from bridge.mapping import Mapper, StudioMap
from bridge.outbox import Outbox
from bridge.vocab import (
    AddMarker,
    AddNote,
    AddSong,
    AudioCaptured,
    CircleTake,
    Command,
    ControlInput,
    DeviceStatus,
    DeviceStatusChanged,
    Event,
    FalseStart,
    Inbound,
    Locate,
    LogEntry,
    LogStatusChanged,
    MarkerAdded,
    MarkTake,
    NewSession,
    Outbound,
    Play,
    PositionChanged,
    RenameTake,
    Request,
    SelectTake,
    SessionChanged,
    SetRecord,
    SetSong,
    SetTalkback,
    SetTrackArm,
    SetTrackFader,
    SetTrackMute,
    SetTrackSolo,
    StepSong,
    Stop,
    TalkbackChanged,
    TrackRef,
    TransportChanged,
    Value,
)

if TYPE_CHECKING:
    from bridge.log.api import SessionLogLike
    from bridge.log.records import LogStatus, Record, SessionInfo

log = logging.getLogger(__name__)

Done = Callable[[str | None], None]

#: Which role carries out which commands (SetTalkback: "talkback", then "mixer").
DAW_COMMANDS: frozenset[type[Command]] = frozenset(
    {Play, Stop, SetRecord, Locate, SetTrackArm, SetTrackMute, SetTrackSolo, SetTrackFader, AddMarker}
)

#: how many durable log records a reconnecting wants_log device can catch up on
RECENT_LOG = 4096

_TRACK_FIELD: dict[type[Command], str] = {SetTrackArm: "armed", SetTrackMute: "mute", SetTrackSolo: "solo"}


@dataclass(eq=False)
class Slot:
    device: Device[Any]
    role: str | None
    outbox: Outbox
    mapper: Mapper | None = None
    status: DeviceStatus = DeviceStatus.CONNECTING
    #: the driver implements the synchronous fast path (Device.send_nowait)
    direct: bool = False

    def deliver(self, message: Outbound, now: float) -> None:
        """Send at once when the driver can and nothing is queued; else queue for the writer."""
        box = self.outbox
        if self.direct and box.may_bypass(message, now):
            try:
                if self.device.send_nowait(message):
                    box.bypassed(message, now)
                    return
            except Exception as exc:  # the writer sends it again and reports the failure
                log.debug("%s: direct send failed (%s); queued", self.device.name, exc)
        box.put(message)


@dataclass(eq=False)
class _Pending:
    device: str
    check: Callable[[Event | None], bool]
    done: Done
    deadline: float
    what: str


@dataclass(frozen=True, slots=True)
class _Connected:
    """Internal: a device is up; send it the full feedback picture."""


@dataclass(frozen=True, slots=True)
class _Call:
    """Internal: run ``fn`` in the hub's order (a durable log record's follow-up)."""

    fn: Callable[[], None]


@dataclass(frozen=True, slots=True)
class _AutoTake(MarkTake):
    """Internal: the take that starts by itself when recording starts (``auto_take``)."""


@dataclass
class _TakeInfo:
    seq: int | None = None
    label: str = ""
    circled: bool = False
    false_start: bool = False
    #: DAW position at the take's start (the mark's playhead, then the DAW's own marker)
    start: float | None = None
    #: the session the take was marked in (its take sheet)
    session: int | None = None


@dataclass
class _Takes:
    """Take counters of the open session: only durable records move them."""

    next_take: dict[str, int] = field(default_factory=dict)
    last_take: dict[str, int] = field(default_factory=dict)
    info: dict[tuple[str, int], _TakeInfo] = field(default_factory=dict)
    #: the selected take of the current song (0: none)
    selected: int = 0
    songs: list[str] = field(default_factory=list)
    #: the running take (song, number) whose elapsed time is shown
    running: tuple[str, int] | None = None


#: An explicit take mark and the start of recording within this many seconds of each other are
#: one take (the mark's label goes to the automatic take).
AUTO_TAKE_MERGE = 2.0
#: session commands that may wait behind a mark or song change in flight (more are refused)
MAX_HELD = 1024


class Hub:
    def __init__(
        self,
        session_log: SessionLogLike,
        *,
        roles: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        confirm_timeout: float = 2.0,
        auto_take: str = "record",
        songs: Sequence[str] = (),
    ) -> None:
        self.log = session_log
        #: "record": a new take starts when recording starts; "off": only explicit marks
        self.auto_take = auto_take
        #: the song list every session starts with (``[bridge] songs``)
        self.songs = [s.strip() for s in songs if s.strip()]
        self.roles: dict[str, str] = dict(roles or {})
        self.clock = clock
        self.confirm_timeout = confirm_timeout
        self.store = S.Store(S.DEFAULTS, daw=self.roles.get("daw"))
        self.feedback = FeedbackEngine()
        self.slots: dict[str, Slot] = {}
        #: last status detail per device ("cannot bind udp ...: Address already in use")
        self.details: dict[str, str] = {}
        self._inbox: deque[tuple[str, Inbound | _Connected | _Call]] = deque()
        self._draining = False
        self._pending: list[_Pending] = []
        self._timer: asyncio.TimerHandle | None = None
        self._takes = _Takes()
        #: a session command whose record decides what later ones mean (a mark, a song change)
        #: is in flight: session commands wait behind it, in order
        self._busy: str | None = None
        self._held: deque[tuple[str, Command, Done]] = deque()
        #: (song, take, clock) of the last automatic take / (song, clock) of the last explicit mark
        self._auto_mark: tuple[str, int, float] | None = None
        self._explicit_mark: tuple[str, float] | None = None
        self._marker_tags: deque[int] = deque(maxlen=64)
        #: talkback per channel: open cue's seq and start, last cue's seq (for its WAV)
        self._cue_seq: dict[str, int] = {}
        self._cue_start: dict[str, float] = {}
        self._last_cue_seq: dict[str, int] = {}
        #: what the bridge last asked the mixer per channel: (who, on, until when)
        self._tb_wanted: dict[str, tuple[str, bool, float]] = {}
        #: stuck-talkback timers per channel, and channels being released by them (max_on)
        self._tb_stuck: dict[str, asyncio.TimerHandle] = {}
        self._tb_auto: dict[str, float] = {}
        self._tb_release_failed: set[str] = set()
        self._position_at = clock()
        self._position_base = 0.0
        #: durable log records kept to replay to a wants_log device that was down (MQTT)
        self._recent_log: deque[LogEntry] = deque(maxlen=RECENT_LOG)
        self._session_id: int | None = None
        self._log_resume: dict[str, int] = {}
        self.processed = 0
        self.failed = 0

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
        self._load_session(info, records)
        if session:
            await self._close_open_cues(session)
        return info

    async def _close_open_cues(self, records: Sequence[Record]) -> None:
        """A resumed session (the daemon was killed) may hold a talkback cue that never ended:
        end it, as of the last record before the stop (the latest moment the bridge is known to
        have run; the talkback state starts off, and a mixer's own report wins when it comes)."""
        from datetime import datetime

        ended = {r.amends for r in records if r.kind == "talkback_end"}
        cues = [r for r in records if r.kind == "talkback_start" and r.seq not in ended]
        if not cues:
            return
        last = records[-1]
        end = datetime.fromisoformat(last.ts.replace("Z", "+00:00"))
        futures = []
        for cue in cues:
            channel = str(cue.data.get("channel", "A"))
            start = datetime.fromisoformat(cue.ts.replace("Z", "+00:00"))
            futures.append(
                self._append(
                    "talkback_end",
                    song=cue.song,
                    take=cue.take,
                    source="restart",
                    amends=cue.seq,
                    ts=end,
                    text=f"closed at restart: the bridge stopped while talkback {channel} was on; "
                    "the end is the time of the last record before it stopped",
                    data={
                        "channel": channel,
                        "closed_at_restart": True,
                        "duration": round(max(0.0, (end - start).total_seconds()), 3),
                    },
                )
            )
            log.info(
                "talkback %s: the cue open when the bridge stopped was closed (as of %s)", channel, last.ts
            )
        await asyncio.gather(*futures, return_exceptions=True)

    def _load_session(
        self,
        info: SessionInfo,
        records: Sequence[Record] = (),
        earlier: dict[tuple[str, int], _TakeInfo] | None = None,
    ) -> None:
        """``records``: the take records of the whole log and the resumed session's records;
        ``earlier``: the takes known so far (a new session keeps the earlier sessions' takes)."""
        takes = _Takes(next_take=dict(info.next_take), last_take=dict(info.last_take))
        takes.songs = list(self.songs)
        takes.info = dict(earlier or {})
        self._session_id = info.session_id
        by_seq: dict[int, _TakeInfo] = {}
        for rec in records:
            song = rec.song or ""
            if rec.kind in ("song", "song_add") and song and song not in takes.songs:
                if rec.session == info.session_id:
                    takes.songs.append(song)
            elif rec.kind == "take_marker" and rec.take is not None:
                by_seq[rec.seq] = takes.info[(song, rec.take)] = _TakeInfo(
                    rec.seq, rec.text, start=rec.daw_seconds, session=rec.session
                )
            elif rec.kind in ("take_flag", "take_rename"):
                found = by_seq.get(rec.amends) if rec.amends is not None else None
                if found is None and rec.amends is None and rec.take is not None:
                    found = takes.info.get((song, rec.take))  # an older bridge's: same session only
                    if found is not None and found.session != rec.session:
                        found = None
                if found is None:
                    continue
                if rec.kind == "take_rename":
                    found.label = rec.text
                for flag in ("circled", "false_start"):
                    if isinstance(rec.data.get(flag), bool):
                        setattr(found, flag, rec.data[flag])
        song = info.song
        self._takes = takes
        self._auto_mark = self._explicit_mark = None
        takes.selected = takes.last_take.get(song, 0)
        last = takes.info.get((song, takes.selected), _TakeInfo())
        self._apply_event(
            "core",
            SessionChanged(
                session=info.name,
                song=song,
                take=takes.selected,
                next_take=takes.next_take.get(song, 1),
                take_label=last.label,
                elapsed=0.0,
                songs=json.dumps(takes.songs, ensure_ascii=False),
                **self._selection(song, takes.selected),
            ),
        )
        log.info(
            "session %r %s (song %r, next take %d)",
            info.name,
            "resumed after an unclean stop" if info.resumed else "started",
            song,
            takes.next_take.get(song, 1),
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
        for pending in [p for p in self._pending if p.device == name]:
            self._pending.remove(pending)
            pending.done(f"device '{name}' was removed")
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
        if isinstance(item, Event):
            self._apply_event(source, item)
        elif isinstance(item, Request):
            self.execute(source, item.command, item.done)
        elif isinstance(item, Command):
            self.execute(source, item)
        elif isinstance(item, ControlInput):
            slot = self.slots.get(source)
            if slot is None or slot.mapper is None:
                return
            for command in slot.mapper.resolve(item, self.store.get, self.track_number):
                self.execute(source, command)
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

    def _apply_event(self, source: str, event: Event) -> list[asyncio.Future[Any]]:
        was_playing = self.store.get(S.PLAYING)
        was_recording = self.store.get(S.RECORDING)
        if isinstance(event, PositionChanged):
            self._position_base, self._position_at = float(event.seconds), self.clock()
        elif (
            isinstance(event, TransportChanged) and event.playing is not None and event.playing != was_playing
        ):
            # the playhead starts (or stops) moving now, from where it was
            self._position_base, self._position_at = self.position_now(), self.clock()
        changes = self.store.apply(event)
        futures: list[asyncio.Future[Any]] = []
        if changes:
            self._distribute(changes)
        if isinstance(event, DeviceStatusChanged):
            self.details[event.device] = event.detail
            slot = self.slots.get(event.device)
            if slot is not None:
                slot.status = event.status
                if event.status != DeviceStatus.OK:
                    unsent = slot.outbox.clear()
                    if slot.device.wants_log and event.device not in self._log_resume:
                        seqs = [m.seq for m in unsent if isinstance(m, LogEntry)]
                        self._log_resume[event.device] = min(seqs) if seqs else self.log.next_seq()
                    self._fail_pending(event.device, f"device '{event.device}' is {event.status}")
            if changes:
                futures.append(
                    self._append(
                        "device_status",
                        source=event.device,
                        text=str(event.status),
                        data={"detail": event.detail},
                    )
                )
        elif isinstance(event, TransportChanged) and changes:
            playing, recording = self.store.get(S.PLAYING), self.store.get(S.RECORDING)
            if playing != was_playing or recording != was_recording:
                futures.append(
                    self._append(
                        "transport",
                        source=source,
                        daw_seconds=self.position_now(),
                        data={"playing": playing, "recording": recording, "assumed": event.assumed},
                    )
                )
                on_air = playing is True and recording is True
                if (
                    on_air
                    and not (was_playing is True and was_recording is True)
                    and self.auto_take == "record"
                ):
                    self._session_safely(source, _AutoTake(), self._quiet_done(source, _AutoTake()))
        elif isinstance(event, PositionChanged) and self._takes.running is not None:
            self._update_elapsed(float(event.seconds))
        elif isinstance(event, TalkbackChanged) and any(
            c.key == S.talkback_key(event.channel) for c in changes
        ):
            fut = self._talkback(source, event)
            if fut is not None:
                futures.append(fut)
        elif isinstance(event, MarkerAdded):
            futures.append(self._daw_marker(source, event))
        elif isinstance(event, AudioCaptured):
            futures.append(
                self._append(
                    "talkback_audio",
                    source=source,
                    amends=self._last_cue_seq.get(event.channel),
                    text=event.path,
                    data={"seconds": round(event.seconds, 3), "channel": event.channel},
                )
            )
        self._check_pending(event)
        return futures

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

    # ------------------------------------------------------------------ log helpers

    def _append(self, kind: str, **fields: Any) -> asyncio.Future[Any]:
        try:
            fut: asyncio.Future[Any] = self.log.append(kind, **fields)
        except Exception as exc:  # closed or broken log: the caller still gets an answer
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(exc)
        fut.add_done_callback(self._report_log_failure)
        return fut

    @staticmethod
    def _report_log_failure(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            exc = fut.exception()
            if isinstance(exc, SessionLogUnavailable):  # the log reported the failure once itself
                log.debug("session log record refused: %s", exc)
            else:
                log.error("session log write failed: %s", exc)

    @staticmethod
    def _when_durable(fut: asyncio.Future[Any], done: Done) -> None:
        def finish(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                done("session log closed before the record was written")
            elif f.exception() is not None:
                done(f"session log write failed: {f.exception()}")
            else:
                done(None)

        fut.add_done_callback(finish)

    # ------------------------------------------------------------------ talkback

    def _talkback_mixer(self, name: str) -> Device[Any] | None:
        """The device if ``name`` carries out talkback (role talkback, else mixer)."""
        slot = self.slots.get(name)
        if slot is None or slot.role not in ("talkback", "mixer") or SetTalkback not in slot.device.handles:
            return None
        return slot.device

    def _talkback(self, source: str, event: TalkbackChanged) -> asyncio.Future[Any] | None:
        """A talk channel's state changed: the mixer's confirmed on starts a cue, its confirmed
        off ends it (start, end and duration are the mixer's). ``source`` of the record is who
        pressed: the surface the bridge was asked by, ``console`` for a press the mixer
        reported unprompted (TALK on the desk), ``auto_release`` for a stuck-talkback release."""
        ch, on = event.channel, event.on
        now = self.clock()
        mixer = self._talkback_mixer(source)
        who = source
        if mixer is not None:
            wanted = self._tb_wanted.get(ch)
            who = "console"
            if wanted is not None and wanted[1] == on and now <= wanted[2]:
                who = wanted[0]
                del self._tb_wanted[ch]
        song = self._song()
        take = self._takes.last_take.get(song) or None
        data: dict[str, Any] = {
            "channel": ch,
            "mixer": source if mixer is not None else None,
            "confirmed": mixer is not None and not event.assumed,
            "assumed": event.assumed,
        }
        if on:
            self._cue_start[ch] = now
            self._cue_seq[ch] = self._last_cue_seq[ch] = self.log.next_seq()
            max_on = float(getattr(mixer, "talkback_max_on", 0.0) or 0.0) if mixer is not None else 0.0
            if max_on > 0:
                self._arm_stuck_release(ch, source, max_on, max_on)
            return self._append(
                "talkback_start",
                song=song,
                take=take,
                daw_seconds=self.position_now(),
                source=who,
                data=data,
            )
        self._cancel_stuck_release(ch)
        amends = self._cue_seq.pop(ch, None)
        if amends is None:
            return None  # off with no cue open (the first report after connecting)
        data["duration"] = round(now - self._cue_start.pop(ch, now), 3)
        text = ""
        auto = self._tb_auto.pop(ch, None)
        if auto is not None:
            data.update(auto_released=True, max_on=auto)
            text = f"auto-released: talkback {ch} was on for more than max_on = {auto:g} s"
            who = "auto_release"
        return self._append(
            "talkback_end",
            song=song,
            take=take,
            daw_seconds=self.position_now(),
            source=who,
            amends=amends,
            text=text,
            data=data,
        )

    def _execute_talkback(self, source: str, command: SetTalkback, done: Done) -> None:
        ch = command.channel
        if ch not in S.TALK_CHANNELS:
            raise CommandError(f"no talk channel {ch!r} (channels: {', '.join(S.TALK_CHANNELS)})")
        target = self._target("talkback", command) or self._target("mixer", command)
        if target is None:
            self._self_talkback(source, command, done)
            return
        slot = self.slots[target]
        channels = tuple(getattr(slot.device, "talkback_channels", ("A",)))
        if ch not in channels:
            have = ", ".join(channels)
            raise CommandError(f"{slot.role} '{target}' has no talk channel {ch} (it has {have})")
        if slot.status != DeviceStatus.OK:
            detail = self.details.get(target)
            raise CommandError(f"{slot.role} '{target}' is {slot.status}" + (f": {detail}" if detail else ""))
        wanted = (source, command.on, self.clock() + self.confirm_timeout)
        self._tb_wanted[ch] = wanted

        def finished(error: str | None) -> None:
            if error:
                if self._tb_wanted.get(ch) is wanted:
                    del self._tb_wanted[ch]
                detail = self.details.get(target)
                if slot.status != DeviceStatus.OK and detail and detail not in error:
                    error = f"{error}: {detail}"
            done(error)

        self._send(target, command, finished)

    def _arm_stuck_release(self, ch: str, mixer: str, delay: float, max_on: float) -> None:
        self._cancel_stuck_release(ch)
        loop = asyncio.get_running_loop()
        self._tb_stuck[ch] = loop.call_later(delay, self._release_stuck, ch, mixer, max_on)

    def _cancel_stuck_release(self, ch: str) -> None:
        handle = self._tb_stuck.pop(ch, None)
        if handle is not None:
            handle.cancel()
        self._tb_release_failed.discard(ch)

    def _release_stuck(self, ch: str, mixer: str, max_on: float) -> None:
        """A talk channel stayed on past ``max_on``: release it at the mixer (a stuck talkback
        puts the control room into the artist's headphones). The cue's end record says so."""
        self._tb_stuck.pop(ch, None)
        if self.store.get(S.talkback_key(ch)) is not True:
            return
        if ch not in self._tb_release_failed:
            log.warning("talkback %s on %s for more than max_on = %g s: releasing it", ch, mixer, max_on)
        self._tb_auto[ch] = max_on

        def released(error: str | None) -> None:
            if error is None:
                if ch in self._tb_release_failed:
                    log.info("talkback %s on %s released", ch, mixer)
                self._tb_release_failed.discard(ch)
                return
            self._tb_auto.pop(ch, None)  # a later release by hand is not an auto-release
            if self.store.get(S.talkback_key(ch)) is not True:
                return
            retry = max(1.0, self.confirm_timeout)
            if ch not in self._tb_release_failed:
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
            self._tb_release_failed.add(ch)

        self.submit("auto_release", Request(SetTalkback(False, ch), released))

    def _daw_marker(self, source: str, event: MarkerAdded) -> asyncio.Future[Any]:
        tag = event.tag
        if tag is None and self._marker_tags:
            tag = self._marker_tags.popleft()
        elif tag is not None and tag in self._marker_tags:
            self._marker_tags.remove(tag)
        running = self._takes.running
        if running is not None and event.seconds is not None:
            info = self._takes.info.get(running)
            if info is not None and info.seq == tag:
                info.start = event.seconds  # the DAW's own position of the take's start
        return self._append(
            "daw_marker",
            amends=tag,
            daw_seconds=event.seconds,
            source=source,
            text=event.label,
            data={"marker_id": event.marker_id, "device": source},
        )

    # ------------------------------------------------------------------ commands

    def execute(self, source: str, command: Command, done: Done | None = None) -> None:
        """Carry out ``command``; ``done`` is called exactly once with None or a reason."""
        if done is None:
            done = self._quiet_done(source, command)
        try:
            route = commands.route_of(command)
            if route == "session":
                self._session_command(source, command, done)
            elif route == "talkback" and isinstance(command, SetTalkback):
                self._execute_talkback(source, command, done)
            else:
                target = self._target("daw", command)
                if target is None:
                    name = self.roles.get("daw")
                    if name is None:
                        raise CommandError("no device has the role daw")
                    raise CommandError(f"daw '{name}' cannot {_describe(command)}")
                self._send(target, command, done)
        except CommandError as exc:
            done(str(exc))

    @staticmethod
    def _quiet_done(source: str, command: Command) -> Done:
        def done(error: str | None) -> None:
            if error:
                log.warning("%s from %s failed: %s", type(command).__name__, source, error)

        return done

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
                raise CommandError(f"no track {command.track} in {target} (it has {_ranges(known)})")
        check = self._confirmation(command)
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
            self._pending.append(
                _Pending(target, check, done, self.clock() + self.confirm_timeout, type(command).__name__)
            )
            self._arm_timer()
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

    def _confirmation(self, command: Command) -> Callable[[Event | None], bool] | None:
        get = self.store.get
        match command:
            case Play():
                return lambda _e: get(S.PLAYING) is True
            case Stop():
                return lambda _e: get(S.PLAYING) is False
            case SetRecord(on=on):
                return lambda _e: get(S.RECORDING) is on
            case Locate():
                return lambda e: isinstance(e, PositionChanged)
            case SetTrackArm() | SetTrackMute() | SetTrackSolo():
                assert isinstance(command.track, int)
                key = S.track_key(command.track, _TRACK_FIELD[type(command)])
                on = command.on
                return lambda _e: get(key) is on
            case AddMarker(tag=tag):
                return lambda e: isinstance(e, MarkerAdded) and e.tag in (tag, None)
            case SetTalkback(on=on, channel=channel):
                talk_key = S.talkback_key(channel)
                return lambda _e: get(talk_key) is on
        return None  # continuous commands (faders) are not confirmed one by one

    def _check_pending(self, event: Event) -> None:
        if not self._pending:
            return
        still: list[_Pending] = []
        for pending in self._pending:
            try:
                ok = pending.check(event)
            except Exception:
                log.exception("confirmation check failed")
                ok = False
            if ok:
                pending.done(None)
            else:
                still.append(pending)
        self._pending = still

    def _fail_pending(self, device: str, reason: str) -> None:
        keep = []
        for pending in self._pending:
            if pending.device == device:
                pending.done(reason)
            else:
                keep.append(pending)
        self._pending = keep

    def _arm_timer(self) -> None:
        if self._timer is not None or not self._pending:
            return
        loop = asyncio.get_running_loop()
        soonest = min(p.deadline for p in self._pending)
        delay = max(0.0, soonest - self.clock())
        self._timer = loop.call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self.clock()
        keep = []
        for pending in self._pending:
            if pending.deadline <= now:
                pending.done(
                    f"{pending.device} did not confirm {pending.what} within {self.confirm_timeout:g} s"
                )
            else:
                keep.append(pending)
        self._pending = keep
        self._arm_timer()

    def _self_talkback(self, source: str, command: SetTalkback, done: Done) -> None:
        futures = self._apply_event(source, TalkbackChanged(command.on, command.channel))
        if futures:
            fut = futures[-1]

            def finish(f: asyncio.Future[Any]) -> None:
                # Talkback works while the log cannot write: the press took effect (the OSC answer
                # says "not logged"); only a closed log is an error.
                refused = not f.cancelled() and isinstance(f.exception(), SessionLogUnavailable)
                if not refused:
                    self._when_durable(f, done)
                else:
                    done(None)

            fut.add_done_callback(finish)
        else:
            done(None)

    # ------------------------------------------------------------------ session commands
    #
    # Take numbers, flags, labels, the selection and the song list change only when the record
    # saying so is durable: what surfaces show is what the log holds. A mark or a song change
    # decides what later session commands mean (which take is "the selected take", which
    # song), so while one is in flight the session commands after it wait, in order; a mark
    # that fails leaves the counters alone and the next one gets the same number. The DAW
    # marker of a take is dropped once its record is durable, never for a take the log lacks.

    def _song(self) -> str:
        song = self.store.get(S.SONG)
        return song if isinstance(song, str) else ""

    def _armed_tracks(self) -> list[int]:
        return [t for t in self.store.tracks() if self.store.get(S.track_key(t, "armed")) is True]

    def _where(self, song: str) -> str:
        return f"song {song!r}" if song else "this session (no song set)"

    def _which_take(self, take: int | None) -> tuple[str, int]:
        song = self._song()
        takes = self._takes
        number = take if take is not None else (takes.selected or takes.last_take.get(song, 0))
        if number < 1 or number >= takes.next_take.get(song, 1):
            if take is None:
                raise CommandError(f"no take yet in {self._where(song)}")
            raise CommandError(f"no take {number} in {self._where(song)}")
        return song, number

    def _selection(self, song: str, number: int) -> dict[str, Any]:
        info = self._takes.info.get((song, number), _TakeInfo())
        return {
            "selected": number,
            "selected_circled": info.circled,
            "selected_false_start": info.false_start,
            "selected_label": info.label,
        }

    def _select(self, source: str, number: int, **more: Any) -> None:
        self._takes.selected = number
        self._apply_event(source, SessionChanged(**more, **self._selection(self._song(), number)))

    def _update_elapsed(self, position: float) -> None:
        running = self._takes.running
        if running is None or self.store.get(S.PLAYING) is not True:
            return
        info = self._takes.info.get(running)
        if info is None or info.start is None:
            return
        self._apply_event("core", SessionChanged(elapsed=round(max(0.0, position - info.start), 3)))

    def _songs_json(self) -> str:
        return json.dumps(self._takes.songs, ensure_ascii=False)

    @staticmethod
    def _failure(fut: asyncio.Future[Any]) -> str | None:
        if fut.cancelled():
            return "session log closed before the record was written"
        if fut.exception() is not None:
            return f"session log write failed: {fut.exception()}"
        return None

    def _then(
        self, fut: asyncio.Future[Any], on_durable: Callable[[], None], done: Done, barrier: str | None = None
    ) -> None:
        """Once ``fut`` (a log record) is durable: ``on_durable()`` in the hub's order, then
        ``done``. With ``barrier``, later session commands wait until then."""
        if barrier is not None:
            self._busy = barrier

        def finish(f: asyncio.Future[Any]) -> None:
            def run() -> None:
                error = self._failure(f)
                try:
                    if error is None:
                        on_durable()
                finally:
                    done(error)
                    if barrier is not None:
                        self._release()

            self.submit("core", _Call(run))

        fut.add_done_callback(finish)

    def _release(self) -> None:
        self._busy = None
        while self._held and self._busy is None:
            source, command, done = self._held.popleft()
            self._session_safely(source, command, done)

    def _session_safely(self, source: str, command: Command, done: Done) -> None:
        try:
            self._session_command(source, command, done)
        except CommandError as exc:
            done(str(exc))
        except Exception as exc:  # a bug must not leave the commands behind it unanswered
            log.exception("hub failed to carry out %r from %s", command, source)
            done(f"internal error: {exc}")

    def _session_command(self, source: str, command: Command, done: Done) -> None:
        if self._busy is not None:
            if len(self._held) >= MAX_HELD:
                raise CommandError(f"the session log is busy ({len(self._held)} session commands waiting)")
            self._held.append((source, command, done))
            return
        takes = self._takes
        match command:
            case SetSong(name=name):
                self._set_song(source, name, done)
            case AddSong(name=name):
                name = name.strip()
                if not name:
                    raise CommandError("a song needs a name")
                if name in takes.songs:
                    done(None)
                    return
                fut = self._append("song_add", song=name, text=name, source=source)

                def added() -> None:
                    if name not in takes.songs:
                        takes.songs.append(name)
                        self._apply_event(source, SessionChanged(songs=self._songs_json()))

                self._then(fut, added, done, barrier="song")
            case StepSong(step=step):
                if not takes.songs:
                    raise CommandError("no song list (add songs with song.add or [bridge] songs)")
                current = self._song()
                if current in takes.songs:
                    index = takes.songs.index(current) + step
                    if not 0 <= index < len(takes.songs):
                        end = "last" if step > 0 else "first"
                        raise CommandError(f"{current!r} is the {end} song of the list")
                else:
                    index = 0 if step > 0 else len(takes.songs) - 1
                self._set_song(source, takes.songs[index], done)
            case _AutoTake():
                self._mark(source, "", done, auto=True)
            case MarkTake(label=label):
                self._mark(source, label, done, auto=False)
            case SelectTake(take=take, step=step):
                song = self._song()
                if take is None:
                    chosen = takes.selected or takes.last_take.get(song, 0)
                    if chosen == 0:
                        raise CommandError(f"no take yet in {self._where(song)}")
                    take = chosen + step
                    if take < 1:
                        raise CommandError(f"take {chosen} is the first take of {self._where(song)}")
                    if take >= takes.next_take.get(song, 1):
                        raise CommandError(f"take {chosen} is the last take of {self._where(song)}")
                _, number = self._which_take(take)
                self._select(source, number)
                done(None)
            case CircleTake(take=take, on=on):
                self._flag_take(source, take, {"circled": on}, done)
            case FalseStart(take=take, on=on):
                self._flag_take(source, take, {"false_start": on}, done)
            case RenameTake(label=label, take=take):
                song, number = self._which_take(take)
                self._rename(source, song, number, label.strip(), done)
            case AddNote(text=text, take=take):
                if not text.strip():
                    raise CommandError("a note needs text")
                song = self._song()
                note_take: int | None = None
                if take is not None or takes.last_take.get(song):
                    song, note_take = self._which_take(take)
                info = takes.info.get((song, note_take)) if note_take else None
                fut = self._append(
                    "note",
                    song=song,
                    take=note_take,
                    text=text,
                    source=source,
                    daw_seconds=self.position_now(),
                    amends=info.seq if info else None,
                )
                self._then(fut, lambda: None, done)
            case NewSession(name=name):
                self._busy = "session"
                task = asyncio.get_running_loop().create_task(self.log.new_session(name or None))

                def started(t: asyncio.Task[SessionInfo]) -> None:
                    def run() -> None:
                        try:
                            if t.cancelled() or t.exception() is not None:
                                reason = "cancelled" if t.cancelled() else str(t.exception())
                                done(f"could not start a new session: {reason}")
                                return
                            self._load_session(t.result(), earlier=takes.info)
                            done(None)
                        finally:
                            self._release()

                    self.submit("core", _Call(run))

                task.add_done_callback(started)
            case _:
                raise CommandError(f"unsupported session command {type(command).__name__}")

    def _set_song(self, source: str, name: str, done: Done) -> None:
        name = name.strip()
        if not name:
            raise CommandError("a song needs a name")
        takes = self._takes
        fut = self._append("song", song=name, source=source, daw_seconds=self.position_now())

        def switched() -> None:
            songs = None
            if name not in takes.songs:
                takes.songs.append(name)
                songs = self._songs_json()
            last = takes.last_take.get(name, 0)
            self._select(
                source,
                last,
                song=name,
                take=last,
                next_take=takes.next_take.get(name, 1),
                take_label=takes.info.get((name, last), _TakeInfo()).label,
                songs=songs,
            )

        self._then(fut, switched, done, barrier="song")

    def _mark(self, source: str, label: str, done: Done, auto: bool) -> None:
        takes = self._takes
        song = self._song()
        now = self.clock()
        last = takes.last_take.get(song, 0)
        if auto and self._explicit_mark is not None:
            mark_song, at = self._explicit_mark
            if mark_song == song and now - at <= AUTO_TAKE_MERGE and last:
                done(None)  # the take marked just before recording started is this take
                return
        if not auto and self._auto_mark is not None:
            auto_song, auto_take, at = self._auto_mark
            recording = self.store.get(S.RECORDING) is True  # not once it stopped (a false start)
            if recording and auto_song == song and auto_take == last and now - at <= AUTO_TAKE_MERGE:
                self._auto_mark = None  # the mark sent as recording started is the automatic take
                if label:
                    self._rename(source, song, last, label, done)
                else:
                    done(None)
                return
        number = takes.next_take.get(song, 1)
        seq = self.log.next_seq()
        position = self.position_now()
        fut = self._append(
            "take_marker",
            song=song,
            take=number,
            daw_seconds=position,
            source=source,
            text=label,
            data={
                "recording": self.store.get(S.RECORDING) is True,
                "playing": self.store.get(S.PLAYING) is True,
                "armed": self._armed_tracks(),
                "daw": self.roles.get("daw", ""),
                "auto": auto,
            },
        )

        def marked() -> None:
            takes.next_take[song] = max(takes.next_take.get(song, 1), number + 1)
            takes.last_take[song] = max(takes.last_take.get(song, 0), number)
            takes.info[(song, number)] = _TakeInfo(seq, label, start=position, session=self._session_id)
            takes.running = (song, number)
            if auto:
                self._auto_mark, self._explicit_mark = (song, number, now), None
            else:
                self._explicit_mark, self._auto_mark = (song, now), None
            if song == self._song():
                self._select(source, number, take=number, next_take=number + 1, take_label=label, elapsed=0.0)
            self._drop_daw_marker(song, number, label, seq)

        self._then(fut, marked, done, barrier="mark")

    def _rename(self, source: str, song: str, number: int, label: str, done: Done) -> None:
        info = self._takes.info.get((song, number))
        fut = self._append(
            "take_rename",
            song=song,
            take=number,
            text=label,
            source=source,
            amends=info.seq if info else None,
        )

        def renamed() -> None:
            takes = self._takes
            entry = takes.info.setdefault((song, number), _TakeInfo())
            entry.label = label
            if song != self._song():
                return
            if number == takes.last_take.get(song):
                self._apply_event(source, SessionChanged(take_label=label))
            if number == takes.selected:
                self._apply_event(source, SessionChanged(selected_label=label))

        self._then(fut, renamed, done)

    def _flag_take(self, source: str, take: int | None, flags: dict[str, bool], done: Done) -> None:
        song, number = self._which_take(take)
        info = self._takes.info.get((song, number))
        fut = self._append(
            "take_flag",
            song=song,
            take=number,
            source=source,
            amends=info.seq if info else None,
            data=flags,
        )

        def flagged() -> None:
            takes = self._takes
            entry = takes.info.setdefault((song, number), _TakeInfo())
            for flag, on in flags.items():
                setattr(entry, flag, on)
            if song == self._song() and number == takes.selected:
                self._select(source, number)

        self._then(fut, flagged, done)

    def _drop_daw_marker(self, song: str, take: int, label: str, seq: int) -> None:
        target = self._target("daw", AddMarker(""))
        if target is None or self.slots[target].status != DeviceStatus.OK:
            return
        name = f"{song} T{take}" if song else f"T{take}"
        if label:
            name = f"{name} {label}"
        self._marker_tags.append(seq)

        def done(error: str | None) -> None:
            if error:
                log.warning("take %d: the DAW marker was not confirmed: %s", take, error)

        try:
            self._send(target, AddMarker(name, tag=seq), done)
        except CommandError as exc:
            done(str(exc))

    # ------------------------------------------------------------------ introspection

    def state(self) -> dict[str, Value]:
        return self.store.snapshot()


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> "tracks 1-3, 5"."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        if n is not None:
            start = prev = n
    return "tracks " + ", ".join(parts)


def _describe(command: Command) -> str:
    names = {
        Play: "play",
        Stop: "stop",
        SetRecord: "record",
        Locate: "locate",
        SetTrackArm: "arm tracks",
        SetTrackMute: "mute tracks",
        SetTrackSolo: "solo tracks",
        SetTrackFader: "move faders",
        AddMarker: "add markers",
    }
    return names.get(type(command), type(command).__name__)
