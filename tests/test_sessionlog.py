"""Session log tests against real SQLite files in tmp_path (no mocks)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.errors import SessionLogDamaged, SessionLogError, SessionLogUnavailable
from bridge.log.kinds import RecordKind
from bridge.log.reader import list_sessions, open_readonly, read_records
from bridge.log.records import LogStatus, Record
from bridge.log.recovery import recover
from bridge.log.schema import SCHEMA_VERSION
from bridge.log.writer import SessionLog

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WRITER = Path(__file__).with_name("sessionlog_writer.py")


def raw_rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT seq, session, kind, song, take, text, amends, data FROM records ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


async def test_new_log_append_and_close(tmp_path: Path) -> None:
    path = tmp_path / "session.db"
    slog = SessionLog(path)
    async with asyncio.timeout(30):
        info = await slog.open("Tuesday tracking")
        assert (info.session_id, info.name, info.resumed, info.song) == (1, "Tuesday tracking", False, "")
        assert info.last_seq == 1 and info.next_take == {} and info.last_take == {}
        assert slog.next_seq() == 2

        fut = slog.append(
            RecordKind.TAKE_MARKER, song="Blue", take=1, daw_seconds=12.5, source="tablet", text="intro"
        )
        assert slog.next_seq() == 3
        rec = await fut
        assert isinstance(rec, Record)
        assert (rec.seq, rec.session, rec.kind, rec.song, rec.take, rec.daw_seconds) == (
            2,
            1,
            "take_marker",
            "Blue",
            1,
            12.5,
        )
        assert (rec.source, rec.text, rec.amends, rec.data) == ("tablet", "intro", None, {})
        assert TS_RE.match(rec.ts)
        assert rec.to_json()["seq"] == 2 and rec.to_json()["data"] == {}

        when = datetime(2026, 11, 22, 14, 3, 7, 123456, tzinfo=UTC)
        rec2 = await slog.append(RecordKind.NOTE, text="nice", data={"flags": ["a"]}, ts=when)
        assert rec2.ts == "2026-11-22T14:03:07.123Z" and rec2.data == {"flags": ["a"]}
        # An aware non-UTC datetime is converted.
        rec3 = await slog.append(
            RecordKind.NOTE, ts=when.astimezone(UTC).replace(tzinfo=None) + timedelta(hours=0)
        )
        assert rec3.ts == "2026-11-22T14:03:07.123Z"

        await slog.close()
        await slog.close()  # idempotent
    rows = raw_rows(path)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert [r[2] for r in rows] == ["session_start", "take_marker", "note", "note", "session_end"]
    assert rows[1][7] == "{}" and rows[2][7] == '{"flags":["a"]}'
    with pytest.raises(SessionLogError):
        slog.append(RecordKind.NOTE)
    # The clean close checkpointed: the WAL is gone or empty.
    wal = Path(str(path) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # noqa: ASYNC240


async def test_schema_version_indexes_and_append_only(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    slog = SessionLog(path)
    async with asyncio.timeout(30):
        await slog.open()
        await slog.append(RecordKind.NOTE, text="x")
        await slog.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"records_session_kind", "records_kind_song_take", "records_amends"} <= indexes
        for sql in (
            "UPDATE records SET text = 'changed'",
            "DELETE FROM records",
            "UPDATE sessions SET name = 'x'",
            "DELETE FROM sessions",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
        assert conn.execute("SELECT text FROM records WHERE kind = 'note'").fetchone()[0] == "x"
    finally:
        conn.close()


async def test_amends_before_durable_and_on_durable_order(tmp_path: Path) -> None:
    slog = SessionLog(tmp_path / "s.db")
    seen: list[tuple[int, str, bool]] = []
    loop_thread = threading.get_ident()

    async with asyncio.timeout(30):
        await slog.open()

        def durable(rec: Record) -> None:
            # Called on the loop, and the record is already committed: a separate reader sees it.
            on_disk = any(r.seq == rec.seq for r in read_records(slog.path))
            seen.append((rec.seq, rec.kind, on_disk and threading.get_ident() == loop_thread))

        slog.on_durable(durable)
        marker_seq = slog.next_seq()
        marker = slog.append(RecordKind.TAKE_MARKER, song="Blue", take=1, daw_seconds=3.0)
        flag = slog.append(RecordKind.TAKE_FLAG, amends=marker_seq, data={"circled": True})
        rename = slog.append(RecordKind.TAKE_RENAME, amends=marker_seq, text="keeper")
        m, f, r = await asyncio.gather(marker, flag, rename)
        assert m.seq == marker_seq and f.amends == marker_seq and r.amends == marker_seq
        assert [m.seq, f.seq, r.seq] == [marker_seq, marker_seq + 1, marker_seq + 2]
        await slog.close()
    assert seen[:3] == [
        (marker_seq, "take_marker", True),
        (marker_seq + 1, "take_flag", True),
        (marker_seq + 2, "take_rename", True),
    ]
    assert seen[-1][1] == "session_end"


async def test_burst_is_gap_free_and_group_committed(tmp_path: Path) -> None:
    slog = SessionLog(tmp_path / "s.db")
    async with asyncio.timeout(60):
        info = await slog.open()
        futures = [slog.append(RecordKind.NOTE, text=str(i), data={"i": i}) for i in range(2000)]
        records = await asyncio.gather(*futures)
        await slog.close()
    assert [r.seq for r in records] == list(range(info.last_seq + 1, info.last_seq + 2001))
    rows = raw_rows(slog.path)
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert [r[5] for r in rows[1:2001]] == [str(i) for i in range(2000)]


async def test_reopen_starts_new_session_and_continues_take_numbers(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with asyncio.timeout(30):
        slog = SessionLog(path)
        await slog.open("day 1")
        await slog.append(RecordKind.SONG, song="Blue")
        for take in (1, 2, 3):
            await slog.append(RecordKind.TAKE_MARKER, song="Blue", take=take)
        await slog.append(RecordKind.TAKE_MARKER, song="Red", take=7)
        await slog.close()

        slog = SessionLog(path)
        info = await slog.open("day 2")
        assert (info.session_id, info.name, info.resumed, info.song) == (2, "day 2", False, "")
        assert info.last_take == {"Blue": 3, "Red": 7} and info.next_take == {"Blue": 4, "Red": 8}
        assert info.last_seq == 8  # 1 start + 5 + 1 end + new start
        rec = await slog.append(RecordKind.NOTE, text="hello")
        assert rec.seq == 9 and rec.session == 2

        # new_session(): ends this one, starts the next, later records belong to it.
        info3 = await slog.new_session("overdubs")
        assert (info3.session_id, info3.name, info3.resumed) == (3, "overdubs", False)
        assert info3.last_seq == 11 and slog.next_seq() == 12
        rec = await slog.append(RecordKind.TAKE_MARKER, song="Blue", take=info3.next_take["Blue"])
        assert rec.session == 3 and rec.take == 4
        await slog.close()

    sessions = list_sessions(path)
    assert [(s.id, s.name, s.takes, s.songs) for s in sessions] == [
        (1, "day 1", 4, ("Blue", "Red")),
        (2, "day 2", 0, ()),
        (3, "overdubs", 1, ("Blue",)),
    ]
    assert all(s.ended is not None and TS_RE.match(s.ended) for s in sessions)
    assert all(TS_RE.match(s.started) for s in sessions)
    kinds = [r.kind for r in read_records(path, 2)]
    assert kinds == ["session_start", "note", "session_end"]
    assert [r.kind for r in read_records(path)] == ["session_start", "take_marker", "session_end"]


async def test_open_new_session_flag_and_default_name(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with asyncio.timeout(30):
        slog = SessionLog(path)
        info = await slog.open()
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d$", info.name)
        await slog.close()
        slog = SessionLog(path)
        info = await slog.open(new_session=True)
        assert info.session_id == 2 and not info.resumed
        await slog.close()


async def test_readers_while_daemon_writes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    slog = SessionLog(path)
    async with asyncio.timeout(30):
        await slog.open("live")
        await asyncio.gather(*(slog.append(RecordKind.TAKE_MARKER, song="Blue", take=i) for i in range(1, 6)))
        # The CLI reads while the daemon is still writing (in a thread, as the CLI would be another process).
        records = await asyncio.to_thread(read_records, path)
        sessions = await asyncio.to_thread(list_sessions, path)
        pending = [slog.append(RecordKind.NOTE, text=str(i)) for i in range(100)]
        records_during = await asyncio.to_thread(read_records, path)
        await asyncio.gather(*pending)
        await slog.close()
    assert [r.kind for r in records] == ["session_start"] + ["take_marker"] * 5
    assert sessions[0].ended is None and sessions[0].takes == 5 and sessions[0].songs == ("Blue",)
    assert len(records_during) >= 6
    conn = open_readonly(path)
    try:
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("INSERT INTO sessions (name, started) VALUES ('x', 'y')")
    finally:
        conn.close()


async def test_write_failure_refuses_then_recovers_without_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    slog = SessionLog(path)
    statuses: list[LogStatus] = []
    back = asyncio.Event()

    def seen(status: LogStatus) -> None:
        statuses.append(status)
        if status.status == "ok":
            back.set()

    slog.on_status(seen)
    async with asyncio.timeout(30):
        await slog.open()
        ok = await slog.append(RecordKind.NOTE, text="before")
        # A real SQLite failure inside the writer's transaction: a trigger installed by another connection.
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.kind = 'device_status' "
            "BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END"
        )
        other.commit()
        other.close()
        bad = slog.append(RecordKind.DEVICE_STATUS, text="poison")
        after = slog.append(RecordKind.NOTE, text="after")  # same batch or queued behind it: refused too
        with pytest.raises(SessionLogUnavailable, match="simulated disk failure"):
            await bad
        with pytest.raises(SessionLogUnavailable, match="not written"):
            await after
        await back.wait()  # the probe write succeeded and the log_fault note is durable
        later = await slog.append(RecordKind.NOTE, text="later")
        await slog.close()

    assert statuses[0].status == "failing" and "simulated disk failure" in statuses[0].reason
    assert statuses[-1] == LogStatus("ok", "", 2, None)
    rows = raw_rows(path)
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))  # contiguous: no gap, no duplicate
    assert [r[2] for r in rows] == ["session_start", "note", "log_fault", "note", "session_end"]
    assert rows[1][0] == ok.seq and rows[3][0] == later.seq and rows[3][5] == "later"
    fault = json.loads(str(rows[2][7]))
    assert fault["refused"] == 2 and fault["by_kind"] == {"device_status": 1, "note": 1}
    assert fault["reason"] == "simulated disk failure"


async def test_append_validation_and_not_open(tmp_path: Path) -> None:
    slog = SessionLog(tmp_path / "s.db")
    with pytest.raises(SessionLogError, match="not open"):
        slog.append(RecordKind.NOTE)
    await slog.close()  # closing a never-opened log is a no-op
    async with asyncio.timeout(30):
        await slog.open()
        with pytest.raises(TypeError):
            slog.append(RecordKind.NOTE, text=123)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"kind must be a RecordKind member .*not 'note'; use RecordKind"):
            slog.append("note")  # type: ignore[arg-type]
        rec = await slog.append(
            RecordKind.NOTE, data={"when": datetime(2026, 1, 1, tzinfo=UTC)}
        )  # not JSON: str()
        assert rec.data == {"when": "2026-01-01 00:00:00+00:00"}
        circular: dict[str, object] = {}
        circular["self"] = circular
        rec = await slog.append(RecordKind.NOTE, data=circular)  # stored as a note, never breaks the log
        assert "unencodable" in rec.data
        assert (await slog.append(RecordKind.NOTE, text="still fine")).text == "still fine"
        await slog.close()


def _make_big_log(path: Path, n: int) -> None:
    async def fill() -> None:
        slog = SessionLog(path)
        await slog.open("big")
        await asyncio.gather(
            *(slog.append(RecordKind.NOTE, song="Blue", text=f"note {i} " + "x" * 200) for i in range(n))
        )
        await slog.close()

    asyncio.run(asyncio.wait_for(fill(), 60))


def test_not_sqlite_is_damaged_with_way_out(tmp_path: Path) -> None:
    path = tmp_path / "session.db"
    path.write_bytes(b"this is not a database at all\n" * 200)

    async def go() -> None:
        with pytest.raises(SessionLogDamaged) as err:
            await SessionLog(path).open()
        msg = str(err.value)
        assert str(path) in msg and f"studio-bridge log recover --data-dir {tmp_path}" in msg

    asyncio.run(asyncio.wait_for(go(), 30))
    with pytest.raises(SessionLogDamaged):
        read_records(path)
    assert path.read_bytes().startswith(b"this is not")  # untouched


def test_recover_a_file_that_is_not_sqlite_at_all(tmp_path: Path) -> None:
    path = tmp_path / "session.db"
    junk = b"\x00garbage" * 1000
    path.write_bytes(junk)
    backup = recover(path)
    assert backup.read_bytes() == junk and backup.parent == tmp_path
    assert list_sessions(path) == []  # a fresh, valid, empty log

    async def reopen() -> None:
        slog = SessionLog(path)
        info = await slog.open("after")
        assert (info.session_id, info.last_seq, info.resumed) == (1, 1, False)
        await slog.close()

    asyncio.run(asyncio.wait_for(reopen(), 30))


def test_foreign_or_newer_sqlite_file_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE photos (id)")
    conn.commit()
    conn.close()
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()

    async def go() -> None:
        with pytest.raises(SessionLogError, match="not a studio-bridge session log"):
            await SessionLog(foreign).open()
        with pytest.raises(SessionLogError, match="Upgrade studio-bridge"):
            await SessionLog(newer).open()

    asyncio.run(asyncio.wait_for(go(), 30))


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_damaged_file_and_recover(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "session.db"
    _make_big_log(path, 3000)
    original = {r[0]: r for r in raw_rows(path)}
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 40 * page
    if damage == "truncate":
        data = data[: len(data) * 2 // 3 + 123]
    else:
        for p in (len(data) // page // 2, len(data) // page // 2 + 1):  # two leaf pages in the middle
            data[p * page + 8 : p * page + 1200] = os.urandom(1192)
    path.write_bytes(bytes(data))

    async def opens() -> None:
        with pytest.raises(SessionLogDamaged, match="log recover"):
            await SessionLog(path).open()

    asyncio.run(asyncio.wait_for(opens(), 30))

    backup = recover(path)
    assert backup.name.startswith("session.db.damaged-") and backup.read_bytes() == bytes(data)
    rows = raw_rows(path)
    assert rows, "nothing recovered"
    seqs = [r[0] for r in rows]
    assert len(set(seqs)) == len(seqs) == len(rows)
    for row in rows:  # every recovered record is exactly the original one
        assert original[row[0]] == row
    assert len(rows) >= len(original) // 2
    assert len(rows) < len(original) or damage == "garble"
    assert list_sessions(path)[0].name == "big"

    async def reopens() -> None:
        slog = SessionLog(path)
        info = await slog.open()
        rec = await slog.append(RecordKind.NOTE, text="after recovery")
        assert rec.seq == info.last_seq + 1 == max(seqs) + 1 + (0 if info.resumed else 1)
        await slog.close()

    asyncio.run(asyncio.wait_for(reopens(), 30))


@pytest.mark.peers
async def test_kill_9_mid_burst_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "session.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    async def run_and_kill(min_lines: int) -> tuple[list[str], list[str]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(WRITER), str(path), "Blue", stdout=asyncio.subprocess.PIPE, env=env
        )
        assert proc.stdout is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(60):
                header = (await proc.stdout.readline()).decode().split()
                assert header and header[0] == "open", header
                while len(lines) < min_lines:
                    line = await proc.stdout.readline()
                    assert line, "writer exited early"
                    lines.append(line.decode().rstrip("\n"))
        finally:
            proc.send_signal(signal.SIGKILL)
            rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        lines += [ln for ln in rest.decode().split("\n") if ln]  # acknowledged before the kill landed
        assert proc.returncode == -signal.SIGKILL
        return header, lines

    header1, acked1 = await run_and_kill(650)  # mid-burst: bursts are 200 records
    assert header1[1:4] == ["1", "0", "1"]  # session 1, new, last_seq 1

    header2, acked2 = await run_and_kill(300)  # the second run resumes the crashed session
    assert header2[1] == "1" and header2[2] == "1"  # same session, resumed

    rows = {r[0]: r for r in raw_rows(path)}
    seqs = sorted(rows)
    assert seqs == list(range(1, len(seqs) + 1))  # no gaps, no duplicates
    # The reopened writer continued after every record acknowledged before the kill.
    assert int(header2[3]) >= max(int(ln.split()[0]) for ln in acked1)
    for line in acked1 + acked2:
        seq_s, kind, take, text = line.split(" ", 3)
        row = rows[int(seq_s)]
        assert (row[2], row[5]) == (kind, text)
        assert row[4] == (None if take == "-" else int(take))
        if kind == "note":
            assert text == f"note at {seq_s}"
    # Take numbering continued across the crash: unique and consecutive for the song.
    takes = [r[4] for r in rows.values() if r[2] == "take_marker"]
    assert takes == list(range(1, len(takes) + 1))
    last_acked_take = max(int(ln.split()[2]) for ln in acked1 if ln.split()[1] == "take_marker")
    assert int(header2[4]) > last_acked_take  # the resumed session continued take numbering

    slog = SessionLog(path)
    async with asyncio.timeout(30):
        info = await slog.open()  # opens cleanly (quick_check passes)
        assert info.resumed and info.session_id == 1 and info.last_seq == len(seqs)
        assert info.next_take["Blue"] == len(takes) + 1
        await slog.close()


async def test_records_after_new_session_call_belong_to_it(tmp_path: Path) -> None:
    slog = SessionLog(tmp_path / "s.db")
    durable: list[tuple[int, str, int]] = []
    async with asyncio.timeout(30):
        await slog.open("one")
        slog.on_durable(lambda r: durable.append((r.seq, r.kind, r.session)))
        before = slog.append(RecordKind.NOTE, text="before")
        switching = asyncio.ensure_future(slog.new_session("two"))
        await asyncio.sleep(0)  # new_session has queued its records; this append comes after them
        after = slog.append(RecordKind.NOTE, text="after")
        info = await switching
        assert (await before).session == 1 and (await after).session == info.session_id == 2
        await slog.close()
    assert [k for _, k, _ in durable] == ["note", "session_end", "session_start", "note", "session_end"]
    assert [s for _, _, s in durable] == [1, 1, 2, 2, 2]
    assert [q for q, _, _ in durable] == list(range(2, 7))


def test_record_json_round_trip() -> None:
    rec = Record(
        5,
        2,
        "2026-11-22T14:03:07.123Z",
        RecordKind.TAKE_FLAG,
        "Blue",
        3,
        1.5,
        "osc",
        "",
        4,
        {"circled": True},
    )
    as_json = rec.to_json()
    assert type(as_json["kind"]) is str and as_json["kind"] == "take_flag"
    back = Record.from_json(json.loads(json.dumps(as_json)))
    assert back == rec and back is not None and type(back.kind) is RecordKind
    assert Record.from_json({**as_json, "kind": "from_the_future"}) is None
    assert Record.from_json({**as_json, "seq": "5"}) is None
    assert Record.from_json({"kind": "note"}) is None
