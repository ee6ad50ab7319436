"""Helper process for the kill -9 test: appends records in bursts forever.

Usage: python sessionlog_writer.py DB_PATH SONG

Prints ``open <session_id> <resumed> <last_seq> <next_take>`` once, then one line
``<seq> <kind> <take> <text>`` per record, only after that record's future has resolved
(i.e. after its commit), flushing stdout each time. It never exits by itself.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bridge.log.kinds import RecordKind
from bridge.log.records import Record
from bridge.log.writer import SessionLog


async def main(path: Path, song: str) -> None:
    slog = SessionLog(path)
    info = await slog.open()
    take = info.next_take.get(song, 1)
    print(f"open {info.session_id} {int(info.resumed)} {info.last_seq} {take}", flush=True)

    def acked(fut: asyncio.Future[Record]) -> None:
        rec = fut.result()
        sys.stdout.write(f"{rec.seq} {rec.kind} {rec.take if rec.take is not None else '-'} {rec.text}\n")
        sys.stdout.flush()

    while True:
        futures = []
        for i in range(200):
            if i % 4 == 0:
                fut = slog.append(
                    RecordKind.TAKE_MARKER, song=song, take=take, daw_seconds=take * 1.5, text=f"take {take}"
                )
                take += 1
            else:
                fut = slog.append(
                    RecordKind.NOTE, song=song, text=f"note at {slog.next_seq()}", data={"i": i}
                )
            fut.add_done_callback(acked)
            futures.append(fut)
        await asyncio.gather(*futures)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
