"""Take-sheet folding and export writers."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from peers.recorder import Answers

from bridge.hub import Hub
from bridge.log.formats.audacity import to_audacity_labels
from bridge.log.formats.csv import CSV_COLUMNS, to_csv
from bridge.log.formats.json import to_json
from bridge.log.formats.reaper import to_reaper_csv
from bridge.log.kinds import RecordKind, shape_errors
from bridge.log.reader import read_records
from bridge.log.records import Record, format_ts
from bridge.log.takesheet import build_take_sheet, take_name
from bridge.log.writer import SessionLog
from bridge.vocab import AddNote, CircleTake, FalseStart, MarkTake, RenameTake, Request, SetSong

T0 = datetime(2026, 11, 22, 14, 0, 0, tzinfo=UTC)
K = RecordKind


class Log:
    """Builds Record values the way the writer stores them (seq order, one session), each checked
    against the shape its kind documents (``bridge.log.kinds.SHAPES``): only shapes writers emit."""

    def __init__(self, session: int = 1) -> None:
        self.records: list[Record] = []
        self.session = session

    def add(
        self,
        at: float,
        kind: RecordKind,
        *,
        song: str | None = None,
        take: int | None = None,
        daw: float | None = None,
        source: str = "",
        text: str = "",
        amends: int | None = None,
        **data: object,
    ) -> int:
        assert type(kind) is RecordKind, kind
        columns = {"song": song, "take": take, "daw_seconds": daw, "text": text, "amends": amends}
        errors = shape_errors(kind, columns, data)
        assert not errors, errors
        seq = len(self.records) + 1
        ts = format_ts(T0 + timedelta(seconds=at))
        rec = Record(seq, self.session, ts, kind, song, take, daw, source, text, amends, dict(data))
        self.records.append(rec)
        return seq


def test_flags_renames_notes_and_daw_marker() -> None:
    log = Log()
    log.add(0, K.SESSION_START, text="Tuesday")
    log.add(1, K.SONG, song="Blue")
    t1 = log.add(2, K.TAKE_MARKER, song="Blue", take=1, daw=10.0, source="tablet", text="intro")
    log.add(3, K.TAKE_FLAG, amends=t1, song="Blue", take=1, circled=True)
    t2 = log.add(40, K.TAKE_MARKER, song="Blue", take=2, daw=60.0, text="")
    log.add(41, K.TAKE_FLAG, amends=t1, song="Blue", take=1, circled=False)  # un-circled: the latest wins
    log.add(42, K.TAKE_FLAG, amends=t2, song="Blue", take=2, false_start=True)
    log.add(43, K.TAKE_FLAG, amends=t2, song="Blue", take=2, circled=True)
    log.add(44, K.TAKE_RENAME, amends=t1, song="Blue", take=1, text="intro v1")
    log.add(45, K.TAKE_RENAME, amends=t1, song="Blue", take=1, text="intro keeper")
    log.add(46, K.NOTE, amends=t1, song="Blue", take=1, text="great feel")
    log.add(47, K.NOTE, song="Blue", take=2, text="buzz on the bass")  # tied by song + take
    log.add(48, K.NOTE, text="coffee at 3")  # tied to nothing
    log.add(49, K.DAW_MARKER, amends=t2, daw=60.25, marker_id=7, device="reaper")
    log.add(50, K.TAKE_FLAG, amends=999, circled=True)  # amends something unknown: ignored
    log.add(51, K.SESSION_END)

    sheet = build_take_sheet(reversed(log.records))  # order does not matter: seq does
    assert (sheet.session, sheet.name, sheet.started) == (1, "Tuesday", "2026-11-22T14:00:00.000Z")
    assert sheet.ended == "2026-11-22T14:00:51.000Z"
    a, b = sheet.takes
    assert (a.seq, a.song, a.take, a.label, a.circled, a.false_start) == (
        t1,
        "Blue",
        1,
        "intro keeper",
        False,
        False,
    )
    assert (a.daw_seconds, a.daw_source, a.marker_id, a.source) == (10.0, "bridge", None, "tablet")
    assert a.notes == ("great feel",)
    assert (b.label, b.circled, b.false_start) == ("", True, True)
    assert (b.daw_seconds, b.daw_source, b.marker_id) == (60.25, "daw", "7")
    assert b.notes == ("buzz on the bass",)
    assert [n.text for n in sheet.notes] == ["coffee at 3"]
    assert take_name(a) == "Blue T1"


def test_durations_next_take_stop_record_off_and_open() -> None:
    log = Log()
    log.add(0, K.SESSION_START, text="s")
    log.add(1, K.TRANSPORT, daw=0.0, playing=True, recording=True, assumed=False)
    t1 = log.add(2, K.TAKE_MARKER, song="Blue", take=1, daw=0.0)
    log.add(3, K.TRANSPORT, daw=1.0, playing=True, recording=True)  # no change: not an end
    t2 = log.add(32, K.TAKE_MARKER, song="Blue", take=2, daw=30.0)  # ends T1 after 30 s
    log.add(47.5, K.TRANSPORT, daw=45.5, playing=True, recording=False)  # record-off ends T2
    log.add(50, K.TRANSPORT, daw=45.5, playing=False, recording=False)
    # Marked while stopped: a repeated "stopped" report does not end it; the stop after rolling does.
    t3 = log.add(60, K.TAKE_MARKER, song="Blue", take=3, daw=100.0)
    log.add(61, K.TRANSPORT, daw=100.0, playing=False, recording=False)
    log.add(62, K.TRANSPORT, daw=100.0, playing=True, recording=False)
    log.add(82, K.TRANSPORT, daw=120.0, playing=False, recording=False)
    t4 = log.add(90, K.TAKE_MARKER, song="Red", take=1, daw=200.0)  # still open
    log.add(95, K.TRANSPORT, daw=205.0, playing=True, recording=True)

    takes = {t.seq: t for t in build_take_sheet(log.records).takes}
    assert takes[t1].duration == 30.0 and takes[t1].end == "2026-11-22T14:00:32.000Z"
    assert takes[t2].duration == 15.5
    assert takes[t3].duration == 22.0
    assert takes[t4].duration is None and takes[t4].end is None


def test_record_off_only_counts_after_recording_and_sessions_do_not_mix() -> None:
    log = Log()
    log.add(0, K.SESSION_START, text="s")
    log.add(1, K.TRANSPORT, playing=True, recording=False)
    t1 = log.add(2, K.TAKE_MARKER, song="A", take=1)  # playing, not recording
    log.add(3, K.TRANSPORT, playing=True, recording=False)  # not a record-off: never recorded
    log.add(5, K.TRANSPORT, playing=True, recording=True)
    log.add(9, K.TRANSPORT, playing=True, recording=False)  # now a record-off
    other = Log(session=2)
    other.records = [
        Record(100, 2, format_ts(T0 + timedelta(seconds=4)), K.TAKE_MARKER, "B", 1, None, "", "", None, {})
    ]
    takes = {t.seq: t for t in build_take_sheet(log.records + other.records).takes}
    assert takes[t1].duration == 7.0  # the other session's take did not end it
    assert takes[100].duration is None and takes[100].daw_seconds is None and takes[100].daw_source == ""


def test_talkback_cues() -> None:
    log = Log()
    log.add(0, K.SESSION_START, text="s")
    log.add(1, K.TAKE_MARKER, song="Blue", take=7, daw=33.0)
    c1 = log.add(10, K.TALKBACK_START, daw=41.5, source="x32", song="Blue", take=7)
    log.add(14.2, K.TALKBACK_END, amends=c1, duration=4.25)
    c2 = log.add(20, K.TALKBACK_START, daw=50.0, source="tablet", song="Blue", take=7)
    log.add(22.5, K.TALKBACK_END, amends=c2, channel="A", duration=2.5)
    c3 = log.add(30, K.TALKBACK_START, source="x32")  # still talking
    log.add(31, K.TALKBACK_END, amends=12345)  # ends nothing known

    cues = build_take_sheet(log.records).talkback
    assert [(c.seq, c.duration, c.daw_seconds, c.source, c.song, c.take) for c in cues] == [
        (c1, 4.25, 41.5, "x32", "Blue", 7),
        (c2, 2.5, 50.0, "tablet", "Blue", 7),
        (c3, None, None, "x32", "", None),
    ]
    assert cues[0].end == "2026-11-22T14:00:14.200Z" and cues[2].end is None


def _sample_sheet() -> Log:
    log = Log()
    log.add(0, K.SESSION_START, text="Tuesday")
    t1 = log.add(2, K.TAKE_MARKER, song="Blue, the song", take=1, daw=10.0, text="intro", source="tablet")
    log.add(3, K.NOTE, amends=t1, text='said "again"')
    log.add(4, K.NOTE, amends=t1, text="tempo 92")
    c1 = log.add(6, K.TALKBACK_START, daw=14.0, source="x32", song="Blue, the song", take=1)
    log.add(8, K.TALKBACK_END, amends=c1, duration=2.0)
    log.add(12, K.TAKE_MARKER, song="Blue, the song", take=2, daw=25.5)
    log.add(13, K.NOTE, text="loose note", source="producer")
    log.add(14, K.TAKE_MARKER, take=3)  # no song, no DAW position, still open
    return log


def test_csv_columns_and_values() -> None:
    out = io.StringIO()
    to_csv(build_take_sheet(_sample_sheet().records), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [r["type"] for r in rows] == ["take", "talkback", "take", "note", "take"]
    take1 = rows[0]
    assert take1["song"] == "Blue, the song" and take1["take"] == "1" and take1["label"] == "intro"
    assert (take1["circled"], take1["false_start"]) == ("false", "false")
    assert take1["start_utc"] == "2026-11-22T14:00:02.000Z" and take1["end_utc"] == "2026-11-22T14:00:12.000Z"
    assert (take1["duration_s"], take1["daw_seconds"], take1["daw_source"]) == ("10.000", "10.000", "bridge")
    assert take1["notes"] == 'said "again" | tempo 92' and take1["marker_id"] == ""
    talk = rows[1]
    assert (talk["duration_s"], talk["daw_seconds"], talk["source"], talk["take"]) == (
        "2.000",
        "14.000",
        "x32",
        "1",
    )
    assert rows[3]["notes"] == "loose note" and rows[3]["source"] == "producer"
    assert rows[4]["song"] == "" and rows[4]["daw_seconds"] == "" and rows[4]["duration_s"] == ""


def test_json_export() -> None:
    out = io.StringIO()
    to_json(build_take_sheet(_sample_sheet().records), out)
    doc = json.loads(out.getvalue())
    assert doc["format"] == "studio-bridge.take-sheet" and doc["version"] == 1
    assert doc["session"] == {
        "id": 1,
        "name": "Tuesday",
        "started": "2026-11-22T14:00:00.000Z",
        "ended": None,
    }
    assert [t["take"] for t in doc["takes"]] == [1, 2, 3]
    assert doc["takes"][0]["notes"] == ['said "again"', "tempo 92"]
    assert doc["takes"][0]["duration"] == 10.0 and doc["takes"][2]["duration"] is None
    assert doc["talkback"][0]["duration"] == 2.0 and doc["notes"][0]["text"] == "loose note"


def test_reaper_and_audacity_exports() -> None:
    sheet = build_take_sheet(_sample_sheet().records)
    out = io.StringIO()
    to_reaper_csv(sheet, out)
    assert (
        out.getvalue()
        == '#,Name,Start,End,Length\nM1,"Blue, the song T1",10.000,,\nM2,"Blue, the song T2",25.500,,\n'
    )
    out = io.StringIO()
    to_audacity_labels(sheet, out)
    # Takes with a duration become region labels; T3 has no DAW position, so no label.
    assert (
        out.getvalue() == "10.000000\t20.000000\tBlue, the song T1\n25.500000\t27.500000\tBlue, the song T2\n"
    )


async def test_end_to_end_from_a_real_log(tmp_path: Path) -> None:
    path = tmp_path / "session.db"
    slog = SessionLog(path)
    async with asyncio.timeout(30):
        await slog.open("Friday")
        await slog.append(RecordKind.SONG, song="Gold")
        t1 = slog.next_seq()
        slog.append(RecordKind.TAKE_MARKER, song="Gold", take=1, daw_seconds=5.0, source="nano", text="")
        slog.append(RecordKind.TAKE_FLAG, amends=t1, data={"circled": True})
        slog.append(
            RecordKind.DAW_MARKER, amends=t1, daw_seconds=5.02, data={"marker_id": 3, "device": "reaper"}
        )
        slog.append(RecordKind.NOTE, amends=t1, song="Gold", take=1, text="keeper")
        await slog.append(RecordKind.TRANSPORT, daw_seconds=30.0, data={"playing": False, "recording": False})
        await slog.close()
    sheet = await asyncio.to_thread(lambda: build_take_sheet(read_records(path)))
    (take,) = sheet.takes
    assert (take.song, take.take, take.circled, take.daw_seconds, take.marker_id) == (
        "Gold",
        1,
        True,
        5.02,
        "3",
    )
    assert take.notes == ("keeper",) and take.duration is not None and take.duration >= 0
    assert sheet.name == "Friday" and sheet.ended is not None
    out = io.StringIO()
    to_reaper_csv(sheet, out)
    assert out.getvalue().splitlines()[1] == "M1,Gold T1,5.020,,"


def test_audacity_point_label_for_an_open_take() -> None:
    log = Log()
    log.add(0, K.SESSION_START, text="s")
    log.add(1, K.TAKE_MARKER, song="Blue", take=4, daw=12.5)
    out = io.StringIO()
    to_audacity_labels(build_take_sheet(log.records), out)
    assert out.getvalue() == "12.500000\t12.500000\tBlue T4\n"


async def test_the_shapes_are_the_ones_the_hub_writes(tmp_path: Path) -> None:
    """The hub writes, the real log stores, export folds: marks, a rename, flags set and cleared,
    notes on a take by number and on the selected take, a session note."""
    path = tmp_path / "session.db"
    hub = Hub(SessionLog(path), auto_take="off")
    async with asyncio.timeout(30):
        await hub.start("Friday")
        for command in (
            AddNote("before any take"),
            SetSong("Gold"),
            MarkTake("intro"),
            MarkTake(),
            RenameTake("intro keeper", take=1),
            CircleTake(1),
            FalseStart(),  # the selected take: 2
            FalseStart(2, on=False),
            FalseStart(2),
            CircleTake(2),
            CircleTake(2, on=False),
            AddNote("keeper", take=1),
            AddNote("too fast"),
        ):
            answers = Answers()
            hub.submit("tablet", Request(command, answers))
            assert await answers.next() is None, command
        await hub.log.close()
    records = await asyncio.to_thread(read_records, path)
    kinds = {r.kind for r in records}
    assert {"take_marker", "take_rename", "take_flag", "note"} <= kinds
    sheet = build_take_sheet(records)
    assert [(t.take, t.label, t.circled, t.false_start, t.notes) for t in sheet.takes] == [
        (1, "intro keeper", True, False, ("keeper",)),
        (2, "", False, True, ("too fast",)),
    ]
    assert [n.text for n in sheet.notes] == ["before any take"]


def test_every_registered_format_renders_and_the_cli_offers_exactly_those(tmp_path: Path) -> None:
    from bridge.cli import build_parser, main
    from bridge.log import formats

    known = formats.formats()
    names = [f.name for f in known]
    assert names == ["csv", "json", "reaper", "audacity", "html"]  # by rank: the CLI's order
    records = _sample_sheet().records
    sheet = build_take_sheet(records)
    for fmt in known:
        assert fmt.suffix.startswith(".") and "\n" not in fmt.description and "/" in fmt.media_type
        out = fmt.render(sheet, records=records, room="Studio A")
        assert isinstance(out, str | bytes) and out, fmt.name
        assert formats.get(fmt.name) is fmt
    assert formats.get("csv").render(sheet) == _render(to_csv, sheet)
    assert formats.get("json").render(sheet) == _render(to_json, sheet)
    try:
        formats.get("pdf")
    except KeyError as exc:
        assert "known: csv, json, reaper, audacity, html" in str(exc)
    else:
        raise AssertionError("no KeyError")

    parser = build_parser()
    export = parser.parse_args(["log", "export", "--format", "reaper"])
    assert export.format == "reaper"
    sub = next(a for a in parser._actions if a.dest == "command").choices["log"]  # type: ignore[union-attr]
    action = next(a for a in sub._actions if a.dest == "log_command").choices["export"]  # type: ignore[union-attr]
    fmt_action = next(a for a in action._actions if a.dest == "format")
    assert list(fmt_action.choices) == names
    assert all(f"{f.name}: {f.description}" in fmt_action.help for f in known)

    # The CLI writes what the registry renders.
    asyncio.run(_write_sample_log(tmp_path / "session-log.sqlite3"))
    for fmt in known:
        target = tmp_path / f"out{fmt.suffix}"
        assert (
            main(["log", "export", "--format", fmt.name, "--data-dir", str(tmp_path), "-o", str(target)]) == 0
        )
        records = read_records(tmp_path / "session-log.sqlite3", amending=True)
        assert target.read_text(encoding="utf-8") == fmt.render(build_take_sheet(records), room="studio")


def _render(writer: object, sheet: object) -> str:
    out = io.StringIO()
    writer(sheet, out)  # type: ignore[operator]
    return out.getvalue()


async def _write_sample_log(path: Path) -> None:
    slog = SessionLog(path)
    await slog.open("Sample")
    t1 = slog.next_seq()
    slog.append(RecordKind.TAKE_MARKER, song="Gold", take=1, daw_seconds=5.0, text="intro")
    await slog.append(RecordKind.TAKE_FLAG, amends=t1, song="Gold", take=1, data={"circled": True})
    await slog.close()
