"""The take ledger alone: pure, no event loop, no log, no timed wait. A small driver stands in for
the hub: it gives each appended record its seq and holds it until the test says it is
durable (``flush``) or failed (``fail``); applied events are folded into ``state``."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest

from bridge.ledger import AUTO_TAKE_MERGE, MAX_HELD, Ledger
from bridge.ledger_load import (
    Answer,
    Append,
    Apply,
    Effect,
    Moment,
    Send,
    StartSession,
    close_open_cues,
    load_takes,
)
from bridge.log.kinds import RecordKind
from bridge.log.records import Record, SessionInfo
from bridge.vocab import (
    AddMarker,
    AddNote,
    AddSong,
    AudioCaptured,
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

TS = "2026-01-01T10:00:00.000Z"


def info(
    session: int = 1, *, song: str = "", last: dict[str, int] | None = None, resumed: bool = False
) -> SessionInfo:
    last = dict(last or {})
    return SessionInfo(session, f"s{session}", resumed, song, {s: n + 1 for s, n in last.items()}, last, 0)


class Driver:
    def __init__(self, **kwargs: Any) -> None:
        self.ledger = Ledger(**kwargs)
        self.seq = 1
        self.session = 1
        self.pending: list[tuple[Append, Record]] = []
        self.records: list[Record] = []
        self.state: dict[str, Any] = {}
        self.events: list[SessionChanged] = []
        self.sent: list[Command] = []
        self.sessions: list[StartSession] = []
        self.daw_up = True
        self.at = Moment(clock=1000.0)
        self.run(self.ledger.load(info()))

    def moment(self, **changes: Any) -> None:
        now = {f.name: getattr(self.at, f.name) for f in fields(Moment)}
        self.at = Moment(**(now | changes))

    def run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Append):
                f = effect.fields
                rec = Record(
                    self.seq,
                    self.session,
                    TS,
                    effect.kind.value,
                    f.get("song"),
                    f.get("take"),
                    f.get("daw_seconds"),
                    f.get("source", ""),
                    f.get("text", ""),
                    f.get("amends"),
                    dict(f.get("data") or {}),
                )
                self.seq += 1
                self.pending.append((effect, rec))
            elif isinstance(effect, Apply):
                assert isinstance(effect.event, SessionChanged)
                self.events.append(effect.event)
                self.state |= {k: v for k, v in vars_of(effect.event).items() if v is not None}
            elif isinstance(effect, Send):
                if self.daw_up:
                    if effect.sent is not None:
                        effect.sent()
                    self.sent.append(effect.command)
            elif isinstance(effect, Answer):
                effect.done(effect.error)
            elif isinstance(effect, StartSession):
                self.sessions.append(effect)

    def flush(self) -> None:
        while self.pending:
            append, rec = self.pending.pop(0)
            self.records.append(rec)
            self.run(self.ledger.durable(append, rec, self.at))

    def fail(self, reason: str = "session log write failed: disk full", count: int = 1_000_000) -> None:
        while self.pending and count > 0:
            count -= 1
            append, _rec = self.pending.pop(0)
            self.run(self.ledger.failed(append, reason, self.at))

    def submit(self, command: Command, source: str = "tablet") -> list[str | None]:
        answers: list[str | None] = []
        self.run(self.ledger.command(source, command, answers.append, self.at))
        return answers

    def ask(self, command: Command, source: str = "tablet") -> str | None:
        answers = self.submit(command, source)
        self.flush()
        assert len(answers) == 1, answers
        return answers[0]

    def kinds(self, kind: RecordKind) -> list[Record]:
        return [r for r in self.records if r.kind == kind]

    def take(self) -> tuple[Any, ...]:
        return tuple(self.state.get(k) for k in ("song", "take", "next_take", "selected"))

    def selected(self) -> tuple[Any, ...]:
        keys = ("selected", "selected_circled", "selected_false_start", "selected_label")
        return tuple(self.state.get(k) for k in keys)


def vars_of(event: SessionChanged) -> dict[str, Any]:
    return {f.name: getattr(event, f.name) for f in fields(event)}


@pytest.fixture
def d() -> Driver:
    return Driver(auto_take="off")


# ------------------------------------------------------------------ songs


def test_song_set_add_next_previous_and_their_errors() -> None:
    d = Driver(songs=[" Blue ", "Gold", ""])
    assert json.loads(d.state["songs"]) == ["Blue", "Gold"] and d.state["song"] == ""
    assert d.ask(StepSong(1)) is None  # no song yet: next is the first
    assert d.state["song"] == "Blue"
    assert d.ask(StepSong(1)) is None
    assert d.ask(StepSong(1)) == "'Gold' is the last song of the list"
    assert d.ask(SetSong(" Red ")) is None  # a song set by name joins the list
    assert d.ask(AddSong("Green")) is None
    assert d.ask(AddSong("Green")) is None  # already there: no record
    assert json.loads(d.state["songs"]) == ["Blue", "Gold", "Red", "Green"] and d.state["song"] == "Red"
    assert [r.song for r in d.kinds(RecordKind.SONG_ADD)] == ["Green"]
    assert d.ask(StepSong(-1)) is None and d.state["song"] == "Gold"
    assert d.ask(StepSong(-1)) is None
    assert d.ask(StepSong(-1)) == "'Blue' is the first song of the list"
    assert d.ask(SetSong("  ")) == "a song needs a name"
    assert d.ask(AddSong("")) == "a song needs a name"
    assert [r.song for r in d.kinds(RecordKind.SONG)] == ["Blue", "Gold", "Red", "Gold", "Blue"]


def test_empty_song_list_and_step_from_a_song_off_the_list(d: Driver) -> None:
    assert d.ask(StepSong(1)) == "no song list (add songs with song.add or [bridge] songs)"
    assert d.ask(AddSong("A")) is None and d.ask(AddSong("B")) is None
    assert d.ask(StepSong(-1)) is None and d.state["song"] == "B"  # previous from none: the last


def test_take_numbers_are_per_song(d: Driver) -> None:
    assert d.ask(SetSong("Gold")) is None
    assert d.ask(MarkTake()) is None
    assert d.ask(SetSong("Red")) is None
    assert d.take() == ("Red", 0, 1, 0)
    assert d.ask(SetSong("Gold")) is None
    assert d.take() == ("Gold", 1, 2, 1)


# ------------------------------------------------------------------ marks and the DAW marker


def test_mark_numbers_labels_and_ties_the_daw_marker(d: Driver) -> None:
    d.moment(position=12.0, playing=True, recording=True, armed=(1, 3), daw="ardour")
    assert d.ask(SetSong("Blue")) is None
    assert d.ask(MarkTake("intro")) is None
    assert d.ask(MarkTake()) is None
    assert d.take() == ("Blue", 2, 3, 2) and d.state["take_label"] == ""
    first, second = d.kinds(RecordKind.TAKE_MARKER)
    assert (first.take, first.text, first.daw_seconds, first.source) == (1, "intro", 12.0, "tablet")
    assert first.data == {"recording": True, "playing": True, "armed": [1, 3], "daw": "ardour", "auto": False}
    assert d.sent == [AddMarker("Blue T1 intro", tag=first.seq), AddMarker("Blue T2", tag=second.seq)]
    assert list(d.ledger.marker_tags) == [first.seq, second.seq]
    # a DAW that does not echo the tag: the oldest marker sent is the one it reports
    d.run(d.ledger.daw_marker("ardour", MarkerAdded("Blue T1 intro", 11.5, "m1")))
    d.run(d.ledger.daw_marker("ardour", MarkerAdded("Blue T2", 14.0, "m2", second.seq)))
    d.flush()
    markers = d.kinds(RecordKind.DAW_MARKER)
    assert [(m.amends, m.daw_seconds, m.data) for m in markers] == [
        (first.seq, 11.5, {"marker_id": "m1", "device": "ardour"}),
        (second.seq, 14.0, {"marker_id": "m2", "device": "ardour"}),
    ]
    assert not d.ledger.marker_tags
    assert d.ledger.takes.info[("Blue", 2)].start == 14.0  # the running take: the DAW's own position


def test_no_daw_marker_tag_without_a_daw(d: Driver) -> None:
    d.daw_up = False
    assert d.ask(MarkTake()) is None
    assert d.sent == [] and not d.ledger.marker_tags
    assert d.take() == ("", 1, 2, 1)
    assert d.ledger.takes.info[("", 1)].seq == d.kinds(RecordKind.TAKE_MARKER)[0].seq


def test_the_running_takes_elapsed_time_follows_the_position_while_rolling(d: Driver) -> None:
    assert d.ledger.position(5.0, playing=True) == []  # no take yet
    d.moment(position=10.0)
    assert d.ask(MarkTake()) is None
    assert d.state["elapsed"] == 0.0
    assert d.ledger.position(12.0, playing=False) == []  # stopped: it does not move
    d.run(d.ledger.position(13.25, playing=True))
    assert d.state["elapsed"] == 3.25
    d.run(d.ledger.position(9.0, playing=True))  # located before the take's start
    assert d.state["elapsed"] == 0.0


# ------------------------------------------------------------------ automatic takes


def test_recording_starts_a_take_and_a_mark_right_after_is_that_take() -> None:
    d = Driver()
    assert d.ask(SetSong("Blue")) is None
    quiet: list[str | None] = []

    def roll(started: bool, recording: bool = True) -> None:
        d.moment(playing=True, recording=recording)
        d.run(d.ledger.transport("daw", True, recording, False, started, quiet.append, d.at))
        d.flush()

    roll(started=True)
    assert d.take() == ("Blue", 1, 2, 1)
    assert d.sent == [AddMarker("Blue T1", tag=d.kinds(RecordKind.TAKE_MARKER)[0].seq)]
    d.moment(clock=d.at.clock + AUTO_TAKE_MERGE / 2)
    assert d.ask(MarkTake("verse")) is None  # sent as recording started: the same take, renamed
    assert (d.state["take"], d.state["next_take"], d.state["take_label"], d.state["selected_label"]) == (
        1,
        2,
        "verse",
        "verse",
    )
    d.moment(clock=d.at.clock + 60)
    assert d.ask(MarkTake("chorus")) is None  # inside a long pass: a new take
    assert d.take()[1:3] == (2, 3)
    roll(started=False, recording=False)  # punch out: a transport record, no take
    d.moment(clock=d.at.clock + 10)
    roll(started=True)  # punch in: another take
    assert d.take()[1:3] == (3, 4)
    d.moment(clock=d.at.clock + 30, playing=False, recording=False)
    assert d.ask(MarkTake("pickup")) is None  # an explicit mark before rolling ...
    d.moment(clock=d.at.clock + AUTO_TAKE_MERGE / 2)
    roll(started=True)  # ... is the take that starts
    assert (d.state["take"], d.state["next_take"], d.state["take_label"]) == (4, 5, "pickup")
    markers = [(r.take, r.text, r.data["auto"]) for r in d.kinds(RecordKind.TAKE_MARKER)]
    assert markers == [(1, "", True), (2, "chorus", False), (3, "", True), (4, "pickup", False)]
    assert [r.text for r in d.kinds(RecordKind.TAKE_RENAME)] == ["verse"]
    transport = d.kinds(RecordKind.TRANSPORT)
    assert len(transport) == 4 and transport[0].data == {"playing": True, "recording": True, "assumed": False}
    assert quiet == [None, None, None]  # the automatic takes (the last one: the mark before)


def test_a_mark_after_a_false_start_stopped_is_a_new_take() -> None:
    d = Driver()
    d.moment(playing=True, recording=True)
    d.run(d.ledger.transport("daw", True, True, False, True, lambda _e: None, d.at))
    d.flush()
    d.moment(clock=d.at.clock + AUTO_TAKE_MERGE / 4, playing=False, recording=False)
    assert d.ask(FalseStart()) is None
    d.moment(clock=d.at.clock + AUTO_TAKE_MERGE / 4)
    assert d.ask(MarkTake("next one")) is None
    assert (d.state["take"], d.state["next_take"], d.state["take_label"]) == (2, 3, "next one")


def test_auto_take_off(d: Driver) -> None:
    d.run(d.ledger.transport("daw", True, True, False, True, lambda _e: None, d.at))
    d.flush()
    assert [r.kind for r in d.records] == ["transport"] and d.take()[1:3] == (0, 1)


# ------------------------------------------------------------------ selection, flags, rename, notes


def test_select_step_circle_false_start_rename_and_notes(d: Driver) -> None:
    assert d.ask(SelectTake(step=1)) == "no take yet in this session (no song set)"
    assert d.ask(CircleTake()) == "no take yet in this session (no song set)"
    assert d.ask(AddNote("  ")) == "a note needs text"
    assert d.ask(AddNote("before anything")) is None  # a session note
    assert d.ask(SetSong("Blue")) is None
    for label in ("intro", "", "full"):
        assert d.ask(MarkTake(label)) is None
    assert d.selected() == (3, False, False, "full")
    assert d.ask(SelectTake(1)) is None and d.selected() == (1, False, False, "intro")
    assert d.ask(SelectTake(step=-1)) == "take 1 is the first take of song 'Blue'"
    assert d.ask(CircleTake()) is None and d.selected() == (1, True, False, "intro")
    assert d.ask(CircleTake(on=False)) is None and d.selected() == (1, False, False, "intro")
    assert d.ask(CircleTake()) is None
    assert d.ask(SelectTake(step=1)) is None
    assert d.ask(FalseStart()) is None and d.selected() == (2, False, True, "")
    assert d.ask(FalseStart(2, on=False)) is None and d.selected() == (2, False, False, "")
    assert d.ask(RenameTake(" false intro ")) is None and d.selected() == (2, False, False, "false intro")
    assert d.state["take_label"] == "full"  # the last take's label is not the renamed one
    assert d.ask(RenameTake("full!", take=3)) is None and d.state["take_label"] == "full!"
    assert d.ask(AddNote("bass buzz")) is None  # on the selected take (2)
    assert d.ask(AddNote("great feel", take=3)) is None
    assert d.ask(SelectTake(step=1)) is None
    assert d.ask(SelectTake(step=1)) == "take 3 is the last take of song 'Blue'"
    assert d.ask(SelectTake(9)) == "no take 9 in song 'Blue'"
    assert d.ask(RenameTake("x", take=7)) == "no take 7 in song 'Blue'"
    assert d.ask(FalseStart(0)) == "no take 0 in song 'Blue'"
    seq = {r.take: r.seq for r in d.kinds(RecordKind.TAKE_MARKER)}
    flags = [(r.take, r.amends, r.data) for r in d.kinds(RecordKind.TAKE_FLAG)]
    assert flags == [
        (1, seq[1], {"circled": True}),
        (1, seq[1], {"circled": False}),
        (1, seq[1], {"circled": True}),
        (2, seq[2], {"false_start": True}),
        (2, seq[2], {"false_start": False}),
    ]
    renames = [(r.take, r.amends, r.text) for r in d.kinds(RecordKind.TAKE_RENAME)]
    assert renames == [(2, seq[2], "false intro"), (3, seq[3], "full!")]
    notes = [(r.song, r.take, r.amends, r.text) for r in d.kinds(RecordKind.NOTE)]
    assert notes == [
        ("", None, None, "before anything"),
        ("Blue", 2, seq[2], "bass buzz"),
        ("Blue", 3, seq[3], "great feel"),
    ]


def test_a_flag_on_another_songs_take_changes_no_selection(d: Driver) -> None:
    assert d.ask(SetSong("A")) is None and d.ask(MarkTake("a1")) is None
    assert d.ask(SetSong("B")) is None
    assert d.ask(MarkTake("b1")) is None
    before = len(d.events)
    d.ledger.song = "A"  # (as if) a rename lands for a song no longer current
    rename = d.submit(RenameTake("a1!", take=1))
    d.ledger.song = "B"
    d.flush()
    assert rename == [None] and len(d.events) == before
    assert d.ledger.takes.info[("A", 1)].label == "a1!"


# ------------------------------------------------------------------ durable first


def test_nothing_changes_before_the_record_is_durable_and_a_failure_changes_nothing(d: Driver) -> None:
    assert d.ask(SetSong("Blue")) is None
    assert d.ask(MarkTake()) is None
    events, state = len(d.events), dict(d.state)
    answers = d.submit(MarkTake("two"))
    assert answers == [] and d.ledger.takes.next_take == {"Blue": 2}
    assert len(d.events) == events and d.state == state and len(d.sent) == 1  # no number, no marker
    d.fail()
    assert answers == ["session log write failed: disk full"]
    assert d.state == state and d.ledger.takes.next_take == {"Blue": 2} and len(d.sent) == 1
    for command in (CircleTake(), RenameTake("x"), FalseStart(), SetSong("Gold"), AddSong("Red")):
        answers = d.submit(command)
        assert answers == [] and d.state == state
        d.fail("session log closed before the record was written")
        assert answers == ["session log closed before the record was written"]
    assert d.state == state and d.ledger.takes.info[("Blue", 1)].circled is False
    assert d.ledger.takes.songs == ["Blue"]
    assert d.ask(MarkTake("after")) is None  # the next mark gets the number the failed one had
    assert d.take() == ("Blue", 2, 3, 2) and d.sent[-1].label == "Blue T2 after"  # type: ignore[attr-defined]


def test_session_commands_wait_behind_a_mark_in_order_and_are_refused_past_max_held(d: Driver) -> None:
    assert d.ask(SetSong("Blue")) is None
    mark = d.submit(MarkTake())
    waiting = [d.submit(c) for c in (CircleTake(), SelectTake(step=0), RenameTake("one"))]
    assert all(a == [] for a in waiting) and len(d.pending) == 1  # only the mark is in flight
    d.flush()
    assert mark == [None] and waiting == [[None], [None], [None]]
    circle = d.kinds(RecordKind.TAKE_FLAG)[0]
    assert circle.take == 1 and circle.amends == d.kinds(RecordKind.TAKE_MARKER)[0].seq
    assert d.selected() == (1, True, False, "one")
    # a failed mark releases the commands behind it: they act on the take before
    failed = d.submit(MarkTake())
    behind = d.submit(CircleTake(on=False))
    d.fail(count=1)
    assert failed == ["session log write failed: disk full"] and behind == []
    d.flush()
    assert behind == [None] and d.selected() == (1, False, False, "one")
    d.submit(MarkTake())
    held = [d.submit(AddNote("n")) for _ in range(MAX_HELD)]
    assert d.submit(AddNote("one too many")) == [
        f"the session log is busy ({MAX_HELD} session commands waiting)"
    ]
    d.flush()
    assert all(a == [None] for a in held)


def test_an_unsupported_command_is_an_error(d: Driver) -> None:
    assert d.ask(Command()) == "unsupported session command Command"


# ------------------------------------------------------------------ a new session


def test_a_new_session_keeps_earlier_takes_and_holds_commands_until_it_starts(d: Driver) -> None:
    assert d.ask(SetSong("Blue")) is None
    assert d.ask(MarkTake("morning 1")) is None and d.ask(MarkTake("morning 2")) is None
    asked = d.submit(NewSession("Afternoon"))
    assert [s.name for s in d.sessions] == ["Afternoon"] and asked == []
    circle = d.submit(CircleTake(2))  # waits for the new session
    assert circle == []
    d.run(d.ledger.session_started(info(2, last={"Blue": 2}), d.sessions[0].done, d.at))
    assert asked == [None] and d.state["session"] == "s2" and d.state["song"] == ""
    assert circle == ["no take 2 in this session (no song set)"]
    assert d.ask(SetSong("Blue")) is None
    assert d.take() == ("Blue", 2, 3, 2) and d.selected() == (2, False, False, "morning 2")
    assert d.ask(CircleTake(2)) is None and d.ask(RenameTake("morning 2 best", take=2)) is None
    assert d.selected() == (2, True, False, "morning 2 best")
    assert d.ask(SelectTake(1)) is None and d.selected() == (1, False, False, "morning 1")
    assert d.ledger.takes.info[("Blue", 1)].session == 1
    failed = d.submit(NewSession(""))
    assert d.sessions[-1].name is None
    d.run(d.ledger.session_failed("disk full", d.sessions[-1].done, d.at))
    assert failed == ["could not start a new session: disk full"]
    assert d.ask(MarkTake()) is None and d.state["take"] == 3


# ------------------------------------------------------------------ talkback cues


def test_talkback_cues_start_end_and_audio_per_channel(d: Driver) -> None:
    assert d.ask(MarkTake()) is None

    def talk(channel: str, on: bool, **how: Any) -> list[Effect]:
        how = {"who": "tablet", "mixer": "desk", "assumed": False} | how
        effects = d.ledger.cues.talkback(
            channel, on, song=d.ledger.song, take=1, at=d.at, next_seq=d.seq, **how
        )
        d.run(effects)
        return effects

    assert talk("A", False) == []  # off with no cue open: nothing to log
    talk("A", True)
    d.moment(clock=d.at.clock + 3.0)
    talk("B", True, who="console", assumed=True)
    d.moment(clock=d.at.clock + 1.5)
    talk("B", False, who="console")
    d.run(d.ledger.cues.audio("mic", AudioCaptured("/t/b.wav", 1.4999, "B")))
    talk("A", False, who="auto_release", auto_released=4.0)
    d.run(d.ledger.cues.audio("mic", AudioCaptured("/t/a.wav", 4.5)))
    d.flush()
    recs = [r for r in d.records if r.kind.startswith("talkback")]
    assert [(r.kind, r.source, r.data["channel"]) for r in recs] == [
        ("talkback_start", "tablet", "A"),
        ("talkback_start", "console", "B"),
        ("talkback_end", "console", "B"),
        ("talkback_audio", "mic", "B"),
        ("talkback_end", "auto_release", "A"),
        ("talkback_audio", "mic", "A"),
    ]
    start_a, start_b, end_b, audio_b, end_a, audio_a = recs
    assert start_a.data == {"channel": "A", "mixer": "desk", "confirmed": True, "assumed": False}
    assert start_b.data["confirmed"] is False and start_a.take == 1
    assert (end_b.amends, end_b.data["duration"]) == (start_b.seq, 1.5)
    assert (end_a.amends, end_a.data["duration"], end_a.data["auto_released"]) == (start_a.seq, 4.5, True)
    assert end_a.text == "auto-released: talkback A was on for more than max_on = 4 s"
    assert (audio_b.amends, audio_b.text, audio_b.data) == (
        start_b.seq,
        "/t/b.wav",
        {"seconds": 1.5, "channel": "B"},
    )
    assert audio_a.amends == start_a.seq
    assert not d.ledger.cues.cue_open("A")


def test_device_status_records(d: Driver) -> None:
    d.run(d.ledger.device_status("desk", DeviceStatus.DISCONNECTED, "no answer"))
    d.flush()
    (rec,) = d.records
    assert (rec.kind, rec.source, rec.text, rec.data) == (
        "device_status",
        "desk",
        "disconnected",
        {"detail": "no answer"},
    )


# ------------------------------------------------------------------ restart: open cues, loading


def rec(seq: int, kind: RecordKind, session: int = 1, ts: str = TS, **f: Any) -> Record:
    return Record(
        seq,
        session,
        ts,
        kind.value,
        f.get("song"),
        f.get("take"),
        f.get("daw_seconds"),
        f.get("source", ""),
        f.get("text", ""),
        f.get("amends"),
        f.get("data", {}),
    )


def test_cues_open_at_a_crash_are_closed_as_of_the_last_record() -> None:
    records = [
        rec(1, RecordKind.SESSION_START),
        rec(
            2,
            RecordKind.TALKBACK_START,
            ts="2026-01-01T10:00:01.000Z",
            song="Blue",
            take=2,
            data={"channel": "B"},
        ),
        rec(3, RecordKind.TALKBACK_START, ts="2026-01-01T10:00:02.000Z", data={"channel": "A"}),
        rec(4, RecordKind.TALKBACK_END, amends=3, data={"channel": "A"}),
        rec(5, RecordKind.NOTE, ts="2026-01-01T10:00:04.250Z"),
    ]
    (end,) = close_open_cues(records)
    assert end.kind is RecordKind.TALKBACK_END and not end.follows
    f = end.fields
    assert (f["song"], f["take"], f["source"], f["amends"]) == ("Blue", 2, "restart", 2)
    assert f["ts"].isoformat() == "2026-01-01T10:00:04.250000+00:00"
    assert f["data"] == {"channel": "B", "closed_at_restart": True, "duration": 3.25}
    assert "talkback B was on" in f["text"]
    assert close_open_cues(records[:1]) == [] and close_open_cues([]) == []


def test_load_from_records_amends_by_seq_and_keeps_the_sessions_songs() -> None:
    records = [
        rec(2, RecordKind.SONG, song="Old", session=1),  # an earlier session's song
        rec(3, RecordKind.TAKE_MARKER, song="Blue", take=1, text="one", daw_seconds=4.0),
        rec(4, RecordKind.TAKE_MARKER, song="Blue", take=2, text="two"),
        rec(5, RecordKind.TAKE_FLAG, song="Blue", take=1, amends=3, data={"circled": True}),
        rec(6, RecordKind.TAKE_RENAME, song="Blue", take=2, amends=4, text="two!"),
        rec(7, RecordKind.TAKE_FLAG, song="Blue", take=2, amends=4, data={"false_start": True, "x": 1}),
        rec(
            8, RecordKind.TAKE_FLAG, song="Blue", take=1, amends=99, data={"false_start": True}
        ),  # no such take
        rec(9, RecordKind.SONG, song="Red", session=2),
        rec(10, RecordKind.SONG_ADD, song="Green", session=2),
        rec(
            11, RecordKind.TAKE_FLAG, song="Blue", take=1, session=2, data={"false_start": True}
        ),  # older bridge
        rec(12, RecordKind.TAKE_MARKER, song="Red", take=1, session=2),
        rec(
            13, RecordKind.TAKE_RENAME, song="Red", take=1, session=2, text="red one"
        ),  # older bridge, same session
    ]
    takes = load_takes(info(2, song="Blue", last={"Blue": 2, "Red": 1}), records, songs=["Blue", "Gold"])
    assert takes.songs == ["Blue", "Gold", "Red", "Green"]
    one, two, red = takes.info[("Blue", 1)], takes.info[("Blue", 2)], takes.info[("Red", 1)]
    assert (one.seq, one.label, one.circled, one.false_start, one.start, one.session) == (
        3,
        "one",
        True,
        False,
        4.0,
        1,
    )
    assert (two.label, two.circled, two.false_start) == ("two!", False, True)
    assert red.label == "red one"
    assert takes.selected == 2 and takes.next_take == {"Blue": 3, "Red": 2}
    ledger = Ledger(songs=["Blue", "Gold"])
    (apply,) = ledger.load(info(2, song="Blue", last={"Blue": 2, "Red": 1}), records)
    assert isinstance(apply, Apply) and isinstance(apply.event, SessionChanged)
    event = apply.event
    assert (event.song, event.take, event.next_take, event.take_label, event.selected_false_start) == (
        "Blue",
        2,
        3,
        "two!",
        True,
    )
    assert json.loads(event.songs or "") == ["Blue", "Gold", "Red", "Green"]
