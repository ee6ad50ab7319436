"""``studio-bridge log show | head``: the reader goes away early; the CLI stops quietly; and
asking for a session that is not in the log is an error, not an empty take sheet.

It printed a BrokenPipeError traceback (``log export | head -2`` of a real session)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.log.kinds import RecordKind
from bridge.log.writer import SessionLog

STARTS_PROCESSES = True  # the CLI itself, in a subprocess (conftest: not in the fast lane)


async def _write_log(data_dir: Path, notes: int) -> None:
    log = SessionLog(data_dir / "session-log.sqlite3")
    await log.open("pipe test")
    for n in range(notes):
        log.append(RecordKind.NOTE, song="Blue", text=f"note {n} " + "x" * 60)
    await log.append(RecordKind.NOTE, song="Blue", text="last")
    await log.close()


@pytest.mark.parametrize("action", [["show"], ["export", "--format", "csv"]])
def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path, action: list[str]) -> None:
    asyncio.run(_write_log(tmp_path, 3000))  # far more than a pipe buffer
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "log", *action, "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 1


@pytest.mark.parametrize("action", [["show"], ["export", "--format", "csv"]])
def test_a_session_that_does_not_exist_is_an_error(
    tmp_path: Path, action: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``log export 7`` of a log with sessions 1-1 printed an empty take sheet and exit 0."""
    from bridge.cli import EXIT_FAIL, main

    asyncio.run(_write_log(tmp_path, 1))
    assert main(["log", *action, "7", "--data-dir", str(tmp_path)]) == EXIT_FAIL
    out, err = capsys.readouterr()
    assert out == ""
    assert "no session 7" in err and "sessions 1-1" in err
    assert main(["log", *action, "1", "--data-dir", str(tmp_path)]) == 0
    assert "last" in capsys.readouterr().out
