"""``html``: the session report, one self-contained HTML file (``log export --format html``, the
web console's report) for the artist, the label and the producer's files, that prints well to PDF
from a browser.

Contents: room, session, date and songs; per song a take table (circled takes stand out in colour
and in print: bold, a star and a left rule); notes; talkback cues (with a link to the cue's WAV when
a talkback recorder saved one); and a timeline picture (inline SVG) of takes, false starts and
talkback cues along the DAW timeline.

Timeline geometry (``timeline_layout``), derived from the take sheet only: one row per take with a
DAW position (in sheet order, grouped by song), then one row for talkback cues. A take is a bar
from ``X0 + (daw_seconds - t0) * scale`` wide ``max(MIN_BAR, duration * scale)`` (a take still open
or without a duration gets ``MIN_BAR``); a cue is a diamond centred on ``X0 + (daw_seconds - t0) *
scale``. ``t0`` is the earliest position shown, ``scale = PLOT_WIDTH / span`` px per second. The
SVG carries ``data-t0``, ``data-scale`` and ``data-x0``, and each mark its ``data-seq``, so a
reader (or a test) can map every mark back to its take or cue.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from bridge.log.formats import ExportFormat, register
from bridge.log.records import Record
from bridge.log.takesheet import TakeSheet, take_name

X0 = 150.0  # left edge of the plot (row labels before it)
PLOT_WIDTH = 720.0
ROW = 18.0
TOP = 24.0
MIN_BAR = 3.0


@dataclass(frozen=True, slots=True)
class Mark:
    kind: str  # "take" | "cue"
    seq: int
    row: int
    x: float
    width: float
    label: str
    circled: bool = False
    false_start: bool = False


@dataclass(frozen=True, slots=True)
class Timeline:
    t0: float
    scale: float
    rows: int
    marks: tuple[Mark, ...]
    span: float


def timeline_layout(sheet: TakeSheet) -> Timeline:
    takes = [t for t in sheet.takes if t.daw_seconds is not None]
    cues = [c for c in sheet.talkback if c.daw_seconds is not None]
    starts = [t.daw_seconds for t in takes if t.daw_seconds is not None]
    starts += [c.daw_seconds for c in cues if c.daw_seconds is not None]
    ends = [(t.daw_seconds or 0.0) + (t.duration or 0.0) for t in takes]
    ends += [c.daw_seconds for c in cues if c.daw_seconds is not None]
    t0 = min(starts) if starts else 0.0
    span = max(1.0, (max(ends) if ends else 0.0) - t0)
    scale = PLOT_WIDTH / span
    marks: list[Mark] = []
    by_song = sorted(takes, key=lambda t: (_song_order(sheet).get(t.song, 0), t.seq))
    for row, t in enumerate(by_song):
        x = X0 + ((t.daw_seconds or 0.0) - t0) * scale
        width = max(MIN_BAR, (t.duration or 0.0) * scale)
        marks.append(Mark("take", t.seq, row, x, width, take_name(t), t.circled, t.false_start))
    cue_row = len(by_song)
    for c in cues:
        marks.append(Mark("cue", c.seq, cue_row, X0 + ((c.daw_seconds or 0.0) - t0) * scale, 0.0, "talkback"))
    return Timeline(t0, scale, cue_row + (1 if cues else 0), tuple(marks), span)


def _song_order(sheet: TakeSheet) -> dict[str, int]:
    order: dict[str, int] = {}
    for t in sheet.takes:
        order.setdefault(t.song, len(order))
    return order


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(0.0, seconds), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{int(secs):02d}" if hours else f"{minutes}:{int(secs):02d}"


def _position(seconds: float) -> str:
    """A DAW position to a tenth of a second: ``1:05.3``."""
    minutes, secs = divmod(max(0.0, round(seconds, 1)), 60.0)
    return f"{int(minutes)}:{secs:04.1f}"


def _ticks(t0: float, span: float) -> list[float]:
    raw = span / 8
    step = min(
        (s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600) if s >= raw), default=3600
    )
    first = math.ceil(t0 / step) * step
    return [first + i * step for i in range(int((t0 + span - first) // step) + 1)]


def timeline_svg(sheet: TakeSheet) -> str:
    tl = timeline_layout(sheet)
    if not tl.marks:
        return '<p class="dim">No take has a DAW position: no timeline.</p>'
    height = TOP + tl.rows * ROW + 10
    width = X0 + PLOT_WIDTH + 20
    e = html.escape
    out = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="100%" role="img" aria-label="takes and talkback along the DAW timeline" '
        f'data-t0="{tl.t0:.6f}" data-scale="{tl.scale:.6f}" data-x0="{X0:.1f}">',
        '<defs><pattern id="fs" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ddd"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#888" stroke-width="3"/></pattern></defs>',
    ]
    for tick in _ticks(tl.t0, tl.span):
        x = X0 + (tick - tl.t0) * tl.scale
        out.append(
            f'<line x1="{x:.2f}" y1="{TOP - 6}" x2="{x:.2f}" y2="{height - 8:.0f}" stroke="#ccc" '
            f'stroke-dasharray="2 3"/><text x="{x:.2f}" y="{TOP - 10}" class="tick">{_clock(tick)}</text>'
        )
    for m in tl.marks:
        y = TOP + m.row * ROW
        if m.kind == "take":
            fill = "url(#fs)" if m.false_start else ("#f2b600" if m.circled else "#3d6fd1")
            stroke = ' stroke="#7a5a00" stroke-width="1.5"' if m.circled else ""
            out.append(
                f'<text x="{X0 - 8}" y="{y + 12.5}" class="rowlabel{" circ" if m.circled else ""}">'
                f"{'★ ' if m.circled else ''}{e(m.label)}</text>"
                f'<rect class="take" data-seq="{m.seq}" x="{m.x:.3f}" y="{y + 2}" width="{m.width:.3f}" '
                f'height="{ROW - 4}" rx="2" fill="{fill}"{stroke}><title>{e(m.label)}</title></rect>'
            )
        else:
            cx, cy = m.x, y + ROW / 2
            out.append(
                f'<path class="cue" data-seq="{m.seq}" data-x="{cx:.3f}" d="M{cx:.3f} {cy - 6:.2f} '
                f'L{cx + 5:.3f} {cy:.2f} L{cx:.3f} {cy + 6:.2f} L{cx - 5:.3f} {cy:.2f} Z" fill="#e08a00">'
                "<title>talkback</title></path>"
            )
    if any(m.kind == "cue" for m in tl.marks):
        out.append(
            f'<text x="{X0 - 8}" y="{TOP + (tl.rows - 1) * ROW + 12.5}" class="rowlabel">talkback</text>'
        )
    out.append("</svg>")
    return "".join(out)


CSS = """
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
body { font: 11pt/1.4 "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; color: #111; margin: 24px auto;
  max-width: 980px; padding: 0 16px; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
h1 { font-size: 20pt; margin: 0 0 4px; }
h2 { font-size: 14pt; margin: 22px 0 6px; border-bottom: 2px solid #111; }
h3 { font-size: 12pt; margin: 16px 0 6px; }
.meta { color: #444; margin: 0 0 12px; } .dim { color: #666; }
table { width: 100%; border-collapse: collapse; margin: 6px 0 10px; page-break-inside: auto; }
tr { page-break-inside: avoid; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #ccc; vertical-align: top; }
th { font-size: 9pt; text-transform: uppercase; letter-spacing: .04em; color: #555; }
table.takes { table-layout: fixed; }
th.n { text-align: right; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.circled td { background: #fff3c4; font-weight: 700; }
tr.circled td:first-child { border-left: 5px solid #c89400; }
tr.false td { color: #777; } tr.false td.label { text-decoration: line-through; }
.flag { display: inline-block; font-size: 8.5pt; font-weight: 700; padding: 0 6px; border-radius: 8px; }
.flag.c { background: #f2b600; color: #111; } .flag.f { background: #ddd; color: #444; }
.summary { display: flex; gap: 24px; flex-wrap: wrap; margin: 8px 0; }
.summary div b { display: block; font-size: 16pt; }
svg.timeline { border: 1px solid #ccc; background: #fff; page-break-inside: avoid; }
svg .tick { font-size: 10px; fill: #666; text-anchor: middle; }
svg .rowlabel { font-size: 10.5px; fill: #222; text-anchor: end; } svg .rowlabel.circ { font-weight: 700; }
.legend span { margin-right: 14px; }
.sw { display: inline-block; width: 14px; height: 10px; margin-right: 4px; }
footer { margin-top: 28px; color: #777; font-size: 9pt; }
@media print { body { margin: 0; max-width: none; } h2 { page-break-after: avoid; } }
"""


def _time(ts: str | None) -> str:
    if not ts:
        return ""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).strftime("%H:%M:%S")


def _dur(seconds: float | None) -> str:
    return "" if seconds is None else _clock(seconds) if seconds >= 60 else f"{seconds:.1f} s"


def to_html(
    sheet: TakeSheet, file: TextIO, *, room: str = "", records: Iterable[Record] | None = None
) -> None:
    """Write the report. ``records`` is unused but accepted so callers can pass what they read."""
    e = html.escape
    songs = list(_song_order(sheet))
    started = sheet.started or ""
    date = started[:10] if started else ""
    circled = sum(1 for t in sheet.takes if t.circled)
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(room or 'studio')} · {e(sheet.name)} · session report</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(sheet.name or 'Session')}</h1>",
        f'<p class="meta">Room <b>{e(room or "studio")}</b> · {e(date)} · started {e(_time(started))} UTC'
        + (f" · ended {e(_time(sheet.ended))} UTC" if sheet.ended else "")
        + "</p>",
        '<div class="summary">'
        f"<div><b>{len(songs)}</b>songs</div><div><b>{len(sheet.takes)}</b>takes</div>"
        f"<div><b>{circled}</b>circled</div><div><b>{len(sheet.talkback)}</b>talkback cues</div></div>",
        f'<p class="meta">Songs: {e(", ".join(s or "(no song)" for s in songs)) or "none"}</p>',
        "<h2>Timeline</h2>",
        '<p class="legend dim"><span><i class="sw" style="background:#3d6fd1"></i>take</span>'
        '<span><i class="sw" style="background:#f2b600"></i>circled take</span>'
        '<span><i class="sw" style="background:#bbb"></i>false start</span>'
        '<span><i class="sw" style="background:#e08a00"></i>talkback</span> '
        "along the DAW timeline (m:ss)</p>",
        timeline_svg(sheet),
    ]
    for song in songs:
        takes = [t for t in sheet.takes if t.song == song]
        parts.append(f"<h2>{e(song or '(no song)')}</h2>")
        parts.append(
            '<table class="takes"><colgroup><col style="width:7%"><col style="width:20%">'
            '<col style="width:15%"><col style="width:12%"><col style="width:10%"><col style="width:10%">'
            '<col></colgroup><thead><tr><th class="n">Take</th><th>Label</th><th>Flags</th>'
            '<th class="n">Start (UTC)</th><th class="n">Duration</th><th class="n">DAW</th><th>Notes</th>'
            "</tr></thead><tbody>"
        )
        for t in takes:
            cls = " ".join(c for c, on in (("circled", t.circled), ("false", t.false_start)) if on)
            flags = ('<span class="flag c">★ CIRCLED</span> ' if t.circled else "") + (
                '<span class="flag f">FALSE START</span>' if t.false_start else ""
            )
            notes = "<br>".join(e(n) for n in t.notes)
            parts.append(
                f'<tr class="{cls}" data-seq="{t.seq}">'
                f'<td class="n">{t.take if t.take is not None else ""}</td>'
                f'<td class="label">{e(t.label)}</td><td>{flags}</td><td class="n">{e(_time(t.start))}</td>'
                f'<td class="n">{e(_dur(t.duration)) or "open"}</td>'
                f'<td class="n">{"" if t.daw_seconds is None else _position(t.daw_seconds)}</td>'
                f"<td>{notes}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append("<h2>Notes</h2>")
    take_notes = [(t, n) for t in sheet.takes for n in t.notes]
    if not take_notes and not sheet.notes:
        parts.append('<p class="dim">No notes.</p>')
    else:
        parts.append("<table><thead><tr><th>Where</th><th>Note</th></tr></thead><tbody>")
        for t, n in take_notes:
            parts.append(f"<tr><td>{e(take_name(t))}</td><td>{e(n)}</td></tr>")
        for note in sheet.notes:
            where = f"{note.song} (session)" if note.song else "session"
            parts.append(f"<tr><td>{e(where)} {e(_time(note.ts))}</td><td>{e(note.text)}</td></tr>")
        parts.append("</tbody></table>")
    parts.append("<h2>Talkback cues</h2>")
    if not sheet.talkback:
        parts.append('<p class="dim">No talkback.</p>')
    else:
        parts.append(
            '<table><thead><tr><th class="n">Time (UTC)</th><th class="n">Duration</th><th>During</th>'
            '<th class="n">DAW</th><th>Audio</th></tr></thead><tbody>'
        )
        for c in sheet.talkback:
            during = f"{c.song} T{c.take}" if c.take else (c.song or "")
            audio = f'<a href="file://{e(c.audio)}">{e(c.audio.rsplit("/", 1)[-1])}</a>' if c.audio else ""
            parts.append(
                f'<tr data-seq="{c.seq}"><td class="n">{e(_time(c.start))}</td>'
                f'<td class="n">{e(_dur(c.duration))}</td><td>{e(during)}</td>'
                f'<td class="n">{"" if c.daw_seconds is None else _position(c.daw_seconds)}</td>'
                f"<td>{audio}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append(
        f"<footer>studio-bridge session report · session {sheet.session or ''}</footer></body></html>\n"
    )
    file.write("".join(parts))


def render(sheet: TakeSheet, *, records: Sequence[Record] = (), room: str = "") -> str:
    out = io.StringIO()
    to_html(sheet, out, room=room, records=records)
    return out.getvalue()


FORMAT = register(
    ExportFormat(
        "html", ".html", "the session report (one file, prints to PDF)", "text/html", render, rank=50
    )
)
