"""The session log under real faults: a real small filesystem (tmpfs, mounted here as root) that
fills up and is freed again, and a read-only remount. No mocks: SQLite gets ENOSPC / EROFS from
the kernel."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.errors import SessionLogError, SessionLogUnavailable
from bridge.log.kinds import RecordKind
from bridge.log.reader import read_records
from bridge.log.records import LogStatus, Record
from bridge.log.writer import SessionLog

WRITER = Path(__file__).with_name("sessionlog_writer.py")


class SmallFs:
    """A tmpfs of ``size`` mounted on ``path``; ``fill()`` writes a filler file until ENOSPC."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.filler = path / "filler"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)], check=True
        )

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            block = b"\0" * 4096
            while True:
                os.write(fd, block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[SmallFs]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    fs = SmallFs(tmp_path / "small", "640k")
    fs.mount()
    try:
        yield fs
    finally:
        fs.unmount()


def rows(path: Path) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT seq, kind, text FROM records ORDER BY seq").fetchall()
    finally:
        conn.close()


async def test_disk_full_then_freed_recovers_without_restart(small_fs: SmallFs) -> None:
    path = small_fs.path / "session-log.sqlite3"
    slog = SessionLog(path)
    statuses: list[LogStatus] = []
    back = asyncio.Event()

    def seen(status: LogStatus) -> None:
        statuses.append(status)
        if status.status == "ok":
            back.set()

    slog.on_status(seen)
    acked: list[Record] = []
    refused: list[str] = []
    async with asyncio.timeout(60):
        await slog.open()
        for i in range(5):
            acked.append(await slog.append(RecordKind.TAKE_MARKER, song="A", take=i + 1, text=f"before {i}"))
        small_fs.fill()
        # Some marks may still fit (the WAL reuses its space); keep marking until the disk says no.
        n = 0
        while not refused:
            n += 1
            assert n < 2000, "the full disk never refused a write"
            try:
                acked.append(
                    await slog.append(
                        RecordKind.TAKE_MARKER, song="A", text=f"full {n}", data={"pad": "x" * 200}
                    )
                )
            except SessionLogUnavailable as exc:
                refused.append(str(exc))
        # While failing, records are refused at once with the reason, none is half-written.
        for i in range(3):
            with pytest.raises(SessionLogUnavailable, match=r"not written.*database or disk is full"):
                await slog.append(RecordKind.NOTE, text=f"while full {i}")
        assert slog.status.status == "failing" and "disk is full" in slog.status.reason
        small_fs.free()
        await back.wait()  # recovered by itself: no restart, no new record needed to notice
        for i in range(5):
            acked.append(await slog.append(RecordKind.TAKE_MARKER, song="A", text=f"after {i}"))
        await slog.close()
    assert slog.end_written
    assert "not written" in refused[0]
    assert statuses[0].status == "failing" and statuses[-1].status == "ok"
    assert statuses[-1].unwritten == 4  # the refused mark and the three notes

    stored = rows(path)
    seqs = [r[0] for r in stored]
    assert seqs == list(range(1, len(seqs) + 1))  # contiguous
    by_seq = {r[0]: r for r in stored}
    for record in acked:  # every acknowledged record is there, as acknowledged
        assert by_seq[record.seq][1:] == (record.kind, record.text)
    kinds = [r[1] for r in stored]
    assert kinds.count("log_fault") == 1 and kinds[-1] == "session_end"
    assert not any(r[2].startswith("while full") for r in stored)
    # What a reader (export) sees once the daemon is gone.
    texts = [r.text for r in read_records(path) if r.kind == "take_marker"]
    assert texts[-5:] == [f"after {i}" for i in range(5)]


async def test_stop_while_disk_full_reports_session_end_not_written(small_fs: SmallFs) -> None:
    path = small_fs.path / "session-log.sqlite3"
    slog = SessionLog(path)
    async with asyncio.timeout(60):
        await slog.open()
        acked = [await slog.append(RecordKind.NOTE, text="kept")]
        small_fs.fill()
        for n in range(2000):
            try:
                acked.append(await slog.append(RecordKind.NOTE, text=f"n{n}", data={"pad": "x" * 200}))
            except SessionLogUnavailable:
                break
        loop = asyncio.get_running_loop()
        started = loop.time()
        await slog.close(retry=0.3)
        assert loop.time() - started < 2.0  # a stop never hangs on a full disk
    assert not slog.end_written
    assert slog.close_error is not None
    assert re.search(r"session_end was not written \(database or disk is full\)", slog.close_error)
    small_fs.free()
    stored = {r[0]: r for r in rows(path)}
    for record in acked:
        assert stored[record.seq][2] == record.text
    # The next start resumes the session that could not be ended, and can write.
    slog = SessionLog(path)
    async with asyncio.timeout(30):
        info = await slog.open()
        assert info.resumed and info.last_seq == max(stored)
        rec = await slog.append(RecordKind.NOTE, text="next day")
        assert rec.seq == max(stored) + 1
        await slog.close()


def crash_mid_session(path: Path) -> None:
    """An unfinished session, as kill -9 leaves it (the kill -9 test's writer process)."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), "Blue"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("open ")
        for _ in range(20):
            assert proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("fault", ["read-only mount", "disk full"])
async def test_resume_without_a_writable_log_refuses_to_open(small_fs: SmallFs, fault: str) -> None:
    path = small_fs.path / "session-log.sqlite3"
    crash_mid_session(path)
    assert rows(path)[-1][1] != "session_end"
    if fault == "read-only mount":
        small_fs.remount("ro")
        cause = "readonly|read-only"
    else:
        small_fs.fill()
        cause = "disk is full"
    slog = SessionLog(path)
    with pytest.raises(SessionLogError, match=rf"session-log\.sqlite3: .*({cause})") as err:
        await slog.open()
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- fdatasync EIO

EIO_SCRIPT = """
import asyncio, os, sys, time
from pathlib import Path
from bridge.errors import SessionLogError
from bridge.log.kinds import RecordKind
from bridge.log.writer import SessionLog

async def main(path, flag, crash):
    slog = SessionLog(Path(path))
    await slog.open()
    print("acked", (await slog.append(RecordKind.NOTE, text="before")).seq, flush=True)
    Path(flag).touch()  # the disk starts failing syncs
    try:
        await slog.append(RecordKind.NOTE, text="refused")
        print("acked-while-failing", flush=True)
    except SessionLogError as exc:
        print("refused", exc, flush=True)
    if crash:
        os._exit(9)  # die while the disk is bad, as a kill -9 or a power cut would
    Path(flag).unlink()  # the disk is good again
    deadline = time.monotonic() + 10
    while True:  # a new record becomes durable without a restart
        try:
            print("acked", (await slog.append(RecordKind.NOTE, text="after")).seq, flush=True)
            break
        except SessionLogError as exc:
            if time.monotonic() > deadline:
                print("still refused", exc, flush=True)
                break
            await asyncio.sleep(0.1)
    await slog.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "crash"))
"""


@pytest.fixture
def faulty_sync(tmp_path: Path) -> Path:
    from peers.faulty_sync import build

    so = build(tmp_path)
    if so is None:
        pytest.skip("no C compiler for the fsync fault shim")
    return so


@pytest.mark.parametrize("crash", [False, True])
def test_sync_io_error_refuses_recovers_and_the_refused_record_never_returns(
    tmp_path: Path, faulty_sync: Path, crash: bool
) -> None:
    path = tmp_path / "session-log.sqlite3"
    flag = tmp_path / "disk-is-bad"
    env = {**os.environ, "LD_PRELOAD": str(faulty_sync), "FAULTY_SYNC_FLAG": str(flag)}
    result = subprocess.run(
        [sys.executable, "-c", EIO_SCRIPT, str(path), str(flag), "crash" if crash else "heal"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    out = result.stdout.splitlines()
    assert any(ln.startswith("refused ") and "disk I/O error" in ln for ln in out), result
    assert "acked-while-failing" not in out
    flag.unlink(missing_ok=True)
    stored = rows(path)  # read after the process is gone: a fresh WAL recovery
    texts = [r[2] for r in stored]
    assert "refused" not in texts  # answered "not written", so it is not there, even after a crash
    assert [r[0] for r in stored] == list(range(1, len(stored) + 1))
    if crash:
        assert result.returncode == 9
        assert texts[-1] == "before"
    else:
        assert result.returncode == 0, result.stderr
        assert [r[1] for r in stored][-3:] == ["log_fault", "note", "session_end"]
        assert texts[-2] == "after"
