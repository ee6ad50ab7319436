"""The take ledger: songs, take numbers, labels, flags, notes, talkback cues, as a pure class.

The ledger takes session commands (song, take marks, selection, circles, false starts,
renames, notes, a new session) and the events that matter to it (transport, position,
talkback, the DAW's markers, captured audio, device status) and returns *effects*
(``bridge.ledger_load``): records to append, events to apply, commands to send, answers.
It reads no clock and no state (the hub passes a ``Moment``), does no I/O and needs no
event loop; the hub carries the effects out and reports each record back as durable
(``durable``) or failed (``failed``).

The take ledger is pure: a take number exists only once its record is durable. Take
numbers, flags, labels, the selection and the song list change only when the record saying
so is durable: what surfaces show is what the log holds. A mark, a song change or a new
session decides what later session commands mean (which take is "the selected take", which
song), so while one is in flight the session commands after it wait, in order (at most
``MAX_HELD``); a mark that fails leaves the counters alone and the next one gets the same
number. The DAW marker of a take is dropped once its record is durable, never for a take
the log lacks.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.errors import CommandError
from bridge.ledger_cues import Cues
from bridge.ledger_load import (
    Answer,
    Append,
    Apply,
    Done,
    Effect,
    Moment,
    OnDurable,
    Send,
    StartSession,
    TakeInfo,
    Takes,
    load_takes,
)
from bridge.log.kinds import RecordKind
from bridge.vocab import (
    AddMarker,
    AddNote,
    AddSong,
    CircleTake,
    Command,
    DeviceStatus,
    FalseStart,
    MarkerAdded,
    MarkTake,
    NewSession,
    RenameTake,
    SelectTake,
    SessionChanged,
    SetSong,
    StepSong,
)

if TYPE_CHECKING:
    from bridge.log.records import Record, SessionInfo

log = logging.getLogger(__name__)

#: An explicit take mark and the start of recording within this many seconds of each other are
#: one take (the mark's label goes to the automatic take).
AUTO_TAKE_MERGE = 2.0
#: session commands that may wait behind a mark or song change in flight (more are refused)
MAX_HELD = 1024


@dataclass(frozen=True, slots=True)
class AutoTake(MarkTake):
    """The take that starts by itself when recording starts (``auto_take``)."""


def _warn_marker(take: int) -> Done:
    def done(error: str | None) -> None:
        if error:
            log.warning("take %d: the DAW marker was not confirmed: %s", take, error)

    return done


class Ledger:
    def __init__(self, *, auto_take: str = "record", songs: Sequence[str] = ()) -> None:
        #: "record": a new take starts when recording starts; "off": only explicit marks
        self.auto_take = auto_take
        #: the song list every session starts with (``[bridge] songs``)
        self.songs = [s.strip() for s in songs if s.strip()]
        self.takes = Takes()
        #: the current song (the ledger's SessionChanged events are the only ones that set it)
        self.song = ""
        self.session_id: int | None = None
        #: a session command whose record decides what later ones mean is in flight
        self._busy: str | None = None
        self._held: deque[tuple[str, Command, Done]] = deque()
        #: (song, take, clock) of the last automatic take / (song, clock) of the last explicit mark
        self._auto_mark: tuple[str, int, float] | None = None
        self._explicit_mark: tuple[str, float] | None = None
        #: seqs of the take markers sent to the DAW whose MarkerAdded has not come back
        self.marker_tags: deque[int] = deque(maxlen=64)
        self.cues = Cues()

    # ------------------------------------------------------------------ loading

    def load(
        self,
        info: SessionInfo,
        records: Sequence[Record] = (),
        earlier: dict[tuple[str, int], TakeInfo] | None = None,
    ) -> list[Effect]:
        """Start from a (re)opened session (see ``load_takes``): the SessionChanged to apply."""
        takes = self.takes = load_takes(info, records, self.songs, earlier)
        self.session_id = info.session_id
        self._auto_mark = self._explicit_mark = None
        song = self.song = info.song
        last = takes.info.get((song, takes.selected), TakeInfo())
        return [
            Apply(
                SessionChanged(
                    session=info.name,
                    song=song,
                    take=takes.selected,
                    next_take=takes.next_take.get(song, 1),
                    take_label=last.label,
                    elapsed=0.0,
                    songs=self._songs_json(),
                    **self._selection(song, takes.selected),
                )
            )
        ]

    # ------------------------------------------------------------------ durability

    def durable(self, append: Append, record: Record, at: Moment) -> list[Effect]:
        """``append``'s record is durable: the ledger changes, answers, and runs the held
        session commands."""
        return self._settle(append, record, None, at)

    def failed(self, append: Append, reason: str, at: Moment) -> list[Effect]:
        """``append``'s record was not written: nothing changes; the command gets ``reason``."""
        return self._settle(append, None, reason, at)

    def _settle(self, append: Append, record: Record | None, error: str | None, at: Moment) -> list[Effect]:
        out: list[Effect] = []
        if error is None and record is not None and append.on_durable is not None:
            try:
                out.extend(append.on_durable(record, at))
            except Exception as exc:  # a bug must not leave the commands behind it unanswered
                log.exception("ledger failed to apply record %d", record.seq)
                error = f"internal error: {exc}"
        if append.done is not None:
            out.append(Answer(append.done, error))
        if append.barrier:
            out.extend(self._release(at))
        return out

    def session_started(self, info: SessionInfo, done: Done, at: Moment) -> list[Effect]:
        """The log started a new session: earlier sessions' takes are kept."""
        out = [*self.load(info, earlier=self.takes.info), Answer(done, None)]
        return out + self._release(at)

    def session_failed(self, reason: str, done: Done, at: Moment) -> list[Effect]:
        return [Answer(done, f"could not start a new session: {reason}"), *self._release(at)]

    def _release(self, at: Moment) -> list[Effect]:
        self._busy = None
        out: list[Effect] = []
        while self._held and self._busy is None:
            source, command, done = self._held.popleft()
            out.extend(self._safely(source, command, done, at))
        return out

    def _safely(self, source: str, command: Command, done: Done, at: Moment) -> list[Effect]:
        try:
            return self.command(source, command, done, at)
        except Exception as exc:  # a bug must not leave the commands behind it unanswered
            log.exception("ledger failed to carry out %r from %s", command, source)
            return [Answer(done, f"internal error: {exc}")]

    # ------------------------------------------------------------------ session commands

    def command(self, source: str, command: Command, done: Done, at: Moment) -> list[Effect]:
        """Carry out a session command; ``done`` is answered (by an ``Answer`` effect) once."""
        try:
            return self._command(source, command, done, at)
        except CommandError as exc:
            return [Answer(done, str(exc))]

    def _command(self, source: str, command: Command, done: Done, at: Moment) -> list[Effect]:
        if self._busy is not None:
            if len(self._held) >= MAX_HELD:
                raise CommandError(f"the session log is busy ({len(self._held)} session commands waiting)")
            self._held.append((source, command, done))
            return []
        takes = self.takes
        match command:
            case SetSong(name=name):
                return self._set_song(source, name, done, at)
            case AddSong(name=name):
                name = name.strip()
                if not name:
                    raise CommandError("a song needs a name")
                if name in takes.songs:
                    return [Answer(done, None)]
                return [
                    self._barrier(
                        RecordKind.SONG_ADD, self._added(name), done, song=name, text=name, source=source
                    )
                ]
            case StepSong(step=step):
                if not takes.songs:
                    raise CommandError("no song list (add songs with song.add or [bridge] songs)")
                if self.song in takes.songs:
                    index = takes.songs.index(self.song) + step
                    if not 0 <= index < len(takes.songs):
                        end = "last" if step > 0 else "first"
                        raise CommandError(f"{self.song!r} is the {end} song of the list")
                else:
                    index = 0 if step > 0 else len(takes.songs) - 1
                return self._set_song(source, takes.songs[index], done, at)
            case AutoTake():
                return self._mark(source, "", done, at, auto=True)
            case MarkTake(label=label):
                return self._mark(source, label, done, at, auto=False)
            case SelectTake(take=take, step=step):
                song = self.song
                if take is None:
                    chosen = takes.selected or takes.last_take.get(song, 0)
                    if chosen == 0:
                        raise CommandError(f"no take yet in {_where(song)}")
                    take = chosen + step
                    if take < 1:
                        raise CommandError(f"take {chosen} is the first take of {_where(song)}")
                    if take >= takes.next_take.get(song, 1):
                        raise CommandError(f"take {chosen} is the last take of {_where(song)}")
                _, number = self._which_take(take)
                return [self._select(number), Answer(done, None)]
            case CircleTake(take=take, on=on):
                return [self._flag_take(source, take, {"circled": on}, done)]
            case FalseStart(take=take, on=on):
                return [self._flag_take(source, take, {"false_start": on}, done)]
            case RenameTake(label=label, take=take):
                song, number = self._which_take(take)
                return [self._rename(source, song, number, label.strip(), done)]
            case AddNote(text=text, take=take):
                if not text.strip():
                    raise CommandError("a note needs text")
                song = self.song
                note_take: int | None = None
                if take is not None or takes.last_take.get(song):
                    song, note_take = self._which_take(take)
                info = takes.info.get((song, note_take)) if note_take else None
                fields = {
                    "song": song,
                    "take": note_take,
                    "text": text,
                    "source": source,
                    "daw_seconds": at.position,
                    "amends": info.seq if info else None,
                }
                return [Append(RecordKind.NOTE, fields, done=done)]
            case NewSession(name=name):
                self._busy = "session"
                return [StartSession(name or None, done)]
            case _:
                raise CommandError(f"unsupported session command {type(command).__name__}")

    def _barrier(self, kind: RecordKind, then: OnDurable, done: Done, **fields: Any) -> Append:
        self._busy = str(kind)
        return Append(kind, fields, on_durable=then, done=done, barrier=True)

    def _added(self, name: str) -> OnDurable:
        def added(_record: Record, _at: Moment) -> list[Effect]:
            if name in self.takes.songs:
                return []
            self.takes.songs.append(name)
            return [Apply(SessionChanged(songs=self._songs_json()))]

        return added

    def _set_song(self, source: str, name: str, done: Done, at: Moment) -> list[Effect]:
        name = name.strip()
        if not name:
            raise CommandError("a song needs a name")
        takes = self.takes

        def switched(_record: Record, _at: Moment) -> list[Effect]:
            songs = None
            if name not in takes.songs:
                takes.songs.append(name)
                songs = self._songs_json()
            last = takes.last_take.get(name, 0)
            self.song = name
            label = takes.info.get((name, last), TakeInfo()).label
            more = {"take": last, "next_take": takes.next_take.get(name, 1), "take_label": label}
            return [self._select(last, song=name, songs=songs, **more)]

        fields = {"song": name, "source": source, "daw_seconds": at.position}
        return [self._barrier(RecordKind.SONG, switched, done, **fields)]

    def _mark(self, source: str, label: str, done: Done, at: Moment, auto: bool) -> list[Effect]:
        takes = self.takes
        song = self.song
        now = at.clock
        last = takes.last_take.get(song, 0)
        if auto and self._explicit_mark is not None:
            mark_song, when = self._explicit_mark
            if mark_song == song and now - when <= AUTO_TAKE_MERGE and last:
                return [Answer(done, None)]  # the take marked just before recording started is this take
        if not auto and self._auto_mark is not None:
            auto_song, auto_take, when = self._auto_mark
            # not once recording stopped (a false start)
            if at.recording and auto_song == song and auto_take == last and now - when <= AUTO_TAKE_MERGE:
                self._auto_mark = None  # the mark sent as recording started is the automatic take
                if label:
                    return [self._rename(source, song, last, label, done)]
                return [Answer(done, None)]
        number = takes.next_take.get(song, 1)
        position = at.position

        def marked(record: Record, _at: Moment) -> list[Effect]:
            seq = record.seq
            takes.next_take[song] = max(takes.next_take.get(song, 1), number + 1)
            takes.last_take[song] = max(takes.last_take.get(song, 0), number)
            takes.info[(song, number)] = TakeInfo(seq, label, start=position, session=self.session_id)
            takes.running = (song, number)
            if auto:
                self._auto_mark, self._explicit_mark = (song, number, now), None
            else:
                self._explicit_mark, self._auto_mark = (song, now), None
            out: list[Effect] = []
            if song == self.song:
                more = {"take": number, "next_take": number + 1, "take_label": label, "elapsed": 0.0}
                out.append(self._select(number, **more))
            name = f"{song} T{number}" if song else f"T{number}"
            if label:
                name = f"{name} {label}"
            marker = AddMarker(name, tag=seq)
            out.append(Send("daw", marker, _warn_marker(number), lambda: self.marker_tags.append(seq)))
            return out

        data = {
            "recording": at.recording,
            "playing": at.playing,
            "armed": list(at.armed),
            "daw": at.daw,
            "auto": auto,
        }
        fields = {"song": song, "take": number, "daw_seconds": position, "source": source, "text": label}
        return [self._barrier(RecordKind.TAKE_MARKER, marked, done, data=data, **fields)]

    def _rename(self, source: str, song: str, number: int, label: str, done: Done) -> Append:
        info = self.takes.info.get((song, number))

        def renamed(_record: Record, _at: Moment) -> list[Effect]:
            takes = self.takes
            takes.info.setdefault((song, number), TakeInfo()).label = label
            if song != self.song:
                return []
            out: list[Effect] = []
            if number == takes.last_take.get(song):
                out.append(Apply(SessionChanged(take_label=label)))
            if number == takes.selected:
                out.append(Apply(SessionChanged(selected_label=label)))
            return out

        fields = {
            "song": song,
            "take": number,
            "text": label,
            "source": source,
            "amends": info.seq if info else None,
        }
        return Append(RecordKind.TAKE_RENAME, fields, on_durable=renamed, done=done)

    def _flag_take(self, source: str, take: int | None, flags: dict[str, bool], done: Done) -> Append:
        song, number = self._which_take(take)
        info = self.takes.info.get((song, number))

        def flagged(_record: Record, _at: Moment) -> list[Effect]:
            takes = self.takes
            entry = takes.info.setdefault((song, number), TakeInfo())
            for flag, on in flags.items():
                setattr(entry, flag, on)
            if song == self.song and number == takes.selected:
                return [self._select(number)]
            return []

        fields = {"song": song, "take": number, "source": source, "amends": info.seq if info else None}
        return Append(RecordKind.TAKE_FLAG, {**fields, "data": flags}, on_durable=flagged, done=done)

    # ------------------------------------------------------------------ helpers

    def _which_take(self, take: int | None) -> tuple[str, int]:
        song = self.song
        takes = self.takes
        number = take if take is not None else (takes.selected or takes.last_take.get(song, 0))
        if number < 1 or number >= takes.next_take.get(song, 1):
            if take is None:
                raise CommandError(f"no take yet in {_where(song)}")
            raise CommandError(f"no take {number} in {_where(song)}")
        return song, number

    def _selection(self, song: str, number: int) -> dict[str, Any]:
        info = self.takes.info.get((song, number), TakeInfo())
        return {
            "selected": number,
            "selected_circled": info.circled,
            "selected_false_start": info.false_start,
            "selected_label": info.label,
        }

    def _select(self, number: int, **more: Any) -> Apply:
        self.takes.selected = number
        return Apply(SessionChanged(**more, **self._selection(self.song, number)))

    def _songs_json(self) -> str:
        return json.dumps(self.takes.songs, ensure_ascii=False)

    # ------------------------------------------------------------------ events

    def transport(
        self,
        source: str,
        playing: object,
        recording: object,
        assumed: bool,
        started: bool,
        auto_done: Done,
        at: Moment,
    ) -> list[Effect]:
        """The transport changed (``playing``/``recording`` as the state holds them);
        ``started``: it went on air (playing and recording) just now."""
        data = {"playing": playing, "recording": recording, "assumed": assumed}
        out: list[Effect] = [
            Append(RecordKind.TRANSPORT, {"source": source, "daw_seconds": at.position, "data": data})
        ]
        if started and self.auto_take == "record":
            out.extend(self._safely(source, AutoTake(), auto_done, at))
        return out

    def position(self, seconds: float, playing: bool) -> list[Effect]:
        """The DAW's position: the running take's elapsed time while rolling."""
        running = self.takes.running
        if running is None or not playing:
            return []
        info = self.takes.info.get(running)
        if info is None or info.start is None:
            return []
        return [Apply(SessionChanged(elapsed=round(max(0.0, seconds - info.start), 3)))]

    def daw_marker(self, source: str, event: MarkerAdded) -> list[Effect]:
        """The DAW reported a marker: tied to the take whose AddMarker it answers."""
        tag = event.tag
        if tag is None and self.marker_tags:
            tag = self.marker_tags.popleft()
        elif tag is not None and tag in self.marker_tags:
            self.marker_tags.remove(tag)
        running = self.takes.running
        if running is not None and event.seconds is not None:
            info = self.takes.info.get(running)
            if info is not None and info.seq == tag:
                info.start = event.seconds  # the DAW's own position of the take's start
        fields = {
            "amends": tag,
            "daw_seconds": event.seconds,
            "source": source,
            "text": event.label,
            "data": {"marker_id": event.marker_id, "device": source},
        }
        return [Append(RecordKind.DAW_MARKER, fields)]

    def device_status(self, device: str, status: DeviceStatus, detail: str) -> list[Effect]:
        fields = {"source": device, "text": str(status), "data": {"detail": detail}}
        return [Append(RecordKind.DEVICE_STATUS, fields)]


def _where(song: str) -> str:
    return f"song {song!r}" if song else "this session (no song set)"
