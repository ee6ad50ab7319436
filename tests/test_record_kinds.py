"""Record kinds: every RecordKind is written, by the code paths that write it and in the shape
``bridge.log.kinds.SHAPES`` documents; every kind a reader or an export format branches on is a
RecordKind; every ``data`` key the take sheet reads is one a writer emits."""

from __future__ import annotations

import ast
import asyncio
import sqlite3
from pathlib import Path

import pytest
from peers.fake_device import FakeDevice
from peers.recorder import Answers

from bridge.errors import SessionLogUnavailable
from bridge.hub import DAW_COMMANDS, Hub
from bridge.log.kinds import SHAPES, RecordKind, shape_errors
from bridge.log.reader import read_records
from bridge.log.records import Record
from bridge.log.writer import SessionLog
from bridge.supervisor import run_device
from bridge.vocab import (
    AddNote,
    AddSong,
    AudioCaptured,
    CircleTake,
    FalseStart,
    MarkerAdded,
    MarkTake,
    NewSession,
    RenameTake,
    Request,
    SetSong,
    TalkbackChanged,
    TransportChanged,
)

BRIDGE = Path(__file__).resolve().parent.parent / "bridge"
VALUES = {kind.value for kind in RecordKind}
#: modules that fold records: every kind they compare with must be a RecordKind
READERS = ("log/takesheet.py", "log/formats", "hub.py", "devices/web.py", "devices/mqtt.py", "cli.py")
#: what those modules call a record
RECORD_NAMES = frozenset({"rec", "record", "r"})


def _sources(*parts: str) -> list[Path]:
    out: list[Path] = []
    for part in parts:
        path = BRIDGE / part
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def _kind_of(node: ast.AST) -> str | None:
    """The kind an expression names: ``"note"`` or ``RecordKind.NOTE``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "RecordKind":
        return RecordKind[node.attr].value
    return None


def _is_record_kind(node: ast.AST) -> bool:
    """``rec.kind`` / ``record.kind`` / ``r.kind``, or the take sheet's local ``kind``."""
    if isinstance(node, ast.Name):
        return node.id == "kind"
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "kind"
        and isinstance(node.value, ast.Name)
        and node.value.id in RECORD_NAMES
    )


def check_shape(record: Record) -> list[str]:
    columns = {
        "song": record.song,
        "take": record.take,
        "daw_seconds": record.daw_seconds,
        "text": record.text,
        "amends": record.amends,
    }
    return shape_errors(record.kind, columns, record.data)


def test_every_kind_has_a_documented_shape() -> None:
    assert set(SHAPES) == set(RecordKind)


def test_every_kind_is_written_by_some_code_path() -> None:
    """Statically: the first argument of every ``append``/``_append`` call in bridge/, of every
    ``Append`` effect the take ledger returns (and of its ``_barrier`` helper that makes one), and
    the kinds the log writes itself (session_start, session_end, log_fault)."""
    written: set[str] = set()
    for path in _sources("."):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            method = isinstance(func, ast.Attribute) and func.attr in ("append", "_append", "_barrier")
            effect = isinstance(func, ast.Name) and func.id == "Append"
            if method or effect:
                kind = _kind_of(node.args[0])
                if kind in VALUES:
                    written.add(kind)
    for path in _sources("log/writer.py", "log/_writer_thread.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            kind = _kind_of(node) if isinstance(node, ast.Attribute) else None
            if kind is not None:
                written.add(kind)
    assert written == VALUES, f"no writer for {sorted(VALUES - written)}"


def test_every_kind_a_reader_branches_on_is_a_record_kind() -> None:
    """Each string compared with a ``kind`` (``==``, ``in``, a kinds set) is a RecordKind value."""
    seen: set[str] = set()
    for path in _sources(*READERS):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if not any(_is_record_kind(side) for side in sides):
                    continue
                for side in sides:
                    items = side.elts if isinstance(side, ast.Tuple | ast.Set | ast.List) else [side]
                    for item in items:
                        kind = _kind_of(item)
                        if kind is not None:
                            assert kind in VALUES, f"{path.name}:{node.lineno}: {kind!r} is not a RecordKind"
                            seen.add(kind)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.endswith("_KINDS") for t in node.targets
            ):
                for item in ast.walk(node.value):
                    kind = _kind_of(item) if isinstance(item, ast.Constant | ast.Attribute) else None
                    if kind is not None:
                        assert kind in VALUES, f"{path.name}:{node.lineno}: {kind!r} is not a RecordKind"
                        seen.add(kind)
    assert {"take_marker", "take_flag", "take_rename", "talkback_end"} <= seen  # the scan found them


def test_the_take_sheet_reads_only_data_keys_writers_emit() -> None:
    documented = set().union(*(shape.data for shape in SHAPES.values()))
    read: set[str] = set()
    tree = ast.parse((BRIDGE / "log/takesheet.py").read_text())
    for node in ast.walk(tree):
        key: ast.AST | None = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "get"
                and getattr(func.value, "id", "") == "data"
            ):
                key = node.args[0]
            elif isinstance(func, ast.Name) and func.id == "_flag":
                key = node.args[1]
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "data":
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            read.add(key.value)
    assert read, "the scan found no data reads"
    assert read <= documented, f"read but never written: {sorted(read - documented)}"


async def test_a_bare_str_kind_is_refused(tmp_path: Path) -> None:
    slog = SessionLog(tmp_path / "log.sqlite3")
    async with asyncio.timeout(30):
        await slog.open()
        with pytest.raises(TypeError, match="must be a RecordKind member"):
            slog.append("note")  # type: ignore[arg-type]
        await slog.close()


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_the_writers_emit_every_kind_in_its_documented_shape(tmp_path: Path) -> None:
    """Exercise: the hub driven by commands and device events, and the log failing once, write
    every kind; each record has the shape its kind documents."""
    path = tmp_path / "log.sqlite3"
    hub = Hub(SessionLog(path), confirm_timeout=0.3, auto_take="off")
    async with asyncio.timeout(30):
        await hub.start("Kinds")
        run = asyncio.create_task(hub.run())
        daw = FakeDevice("daw", handles=DAW_COMMANDS)
        device = asyncio.create_task(run_device(hub, hub.add_device(daw, "daw")))
        await _settle()
        for command in (
            AddSong("Gold"),
            SetSong("Gold"),
            MarkTake("intro"),
            RenameTake("intro keeper", take=1),
            CircleTake(1),
            FalseStart(1),
            AddNote("keeper", take=1),
            AddNote("session note"),
        ):
            answers = Answers()
            hub.submit("tablet", Request(command, answers))
            assert await answers.next() is None, command
        for event in (
            TransportChanged(playing=True, recording=True),
            MarkerAdded("Gold T1", 4.0, marker_id="7"),
            TalkbackChanged(on=True),
            TalkbackChanged(on=False),
            AudioCaptured("/tmp/cue.wav", 1.5),
            TransportChanged(playing=False, recording=False),
        ):
            daw.report(event)
            await _settle()
        answers = Answers()
        hub.submit("tablet", Request(NewSession("second"), answers))
        assert await answers.next() is None
        # The log fails once (a trigger refuses one insert): the log_fault note follows.
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON records WHEN NEW.text = 'refused' "
            "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
        )
        other.commit()
        other.close()
        with pytest.raises(SessionLogUnavailable):
            await hub.log.append(RecordKind.NOTE, text="refused")
        back = asyncio.Event()
        hub.log.on_status(lambda status: back.set() if status.status == "ok" else None)
        if hub.log.status.status != "ok":
            await back.wait()
        daw.lose()
        await _settle()
        device.cancel()
        run.cancel()
        await hub.log.close()
    records = await asyncio.to_thread(read_records, path, 1) + await asyncio.to_thread(read_records, path, 2)
    assert {r.kind for r in records} == set(RecordKind)
    assert all(type(r.kind) is RecordKind for r in records)
    errors = [error for r in records for error in check_shape(r)]
    assert not errors, errors


def test_an_unknown_kind_in_a_file_is_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.sqlite3"

    async def write() -> None:
        slog = SessionLog(path)
        await slog.open("old")
        await slog.append(RecordKind.NOTE, text="known")
        await slog.close()

    asyncio.run(write())
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO records (seq, session, ts, kind, text) "
        "VALUES (100, 1, '2026-01-01T00:00:00.000Z', 'from_the_future', 'x')"
    )
    conn.commit()
    conn.close()
    records = read_records(path)
    assert [r.kind for r in records] == [RecordKind.SESSION_START, RecordKind.NOTE, RecordKind.SESSION_END]
    assert (
        "1 record(s) of a kind this studio-bridge does not know were skipped (from_the_future 1)"
        in caplog.text
    )
