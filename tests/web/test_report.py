"""The session report (issue 11, item 4): ``log export --format html`` from a session the real daemon
recorded; its timeline positions match the take sheet; it opens (and prints) in Chromium; the console
offers it as a download; the CSV/JSON exports carry each talkback cue's WAV."""

from __future__ import annotations

import csv
import io
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from peers.daemon import OscClient, cli

from bridge.log.formats.csv import CSV_COLUMNS, to_csv
from bridge.log.formats.html import MIN_BAR, PLOT_WIDTH, X0
from bridge.log.formats.json import to_json
from bridge.log.records import Record
from bridge.log.takesheet import build_take_sheet
from web.conftest import console_daemon, get_text

SVG = "{http://www.w3.org/2000/svg}"


def _record_session(osc: OscClient) -> None:
    ok = lambda address, *args: osc.command(address, *args) == ("/ok", [address])  # noqa: E731
    assert ok("/song", "Blue Monday")
    assert ok("/transport/play")
    assert ok("/take/mark", "intro")  # take 1
    time.sleep(0.6)
    assert ok("/take/mark")  # take 2
    time.sleep(0.4)
    assert ok("/talkback", 1)
    time.sleep(0.3)
    assert ok("/talkback", 0)
    assert ok("/take/mark", "keeper?")  # take 3
    time.sleep(0.5)
    assert ok("/transport/stop")
    assert ok("/take/circle", 2)
    assert ok("/take/falsestart", 1)
    assert ok("/note", 'the one <with> the "fill" & more')
    assert ok("/song", "Night Drive")
    assert ok("/transport/locate", 30.0)
    assert ok("/transport/play")
    assert ok("/take/mark")
    time.sleep(0.4)
    assert ok("/transport/stop")


def _svg(html_text: str) -> ET.Element:
    start, end = html_text.index("<svg"), html_text.index("</svg>") + len("</svg>")
    return ET.fromstring(html_text[start:end])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report")
    with console_daemon(tmp, '[bridge]\nroom = "Studio A"\n') as d:
        _record_session(OscClient(d.osc_port))
        base = f"http://127.0.0.1:{d.web_port}"
        download = get_text(base + "/export/html")
    data = d.data_dir
    out = tmp / "report.html"
    res = cli(
        "log", "export", "--data-dir", str(data), "--format", "html", "-o", str(out), "-c", str(d.config_path)
    )
    assert res.returncode == 0, res.stderr
    res_json = cli("log", "export", "--data-dir", str(data), "--format", "json")
    assert res_json.returncode == 0, res_json.stderr
    return {"html": out.read_text(), "json": json.loads(res_json.stdout), "download": download, "path": out}


def test_report_contents(recorded: dict[str, Any]) -> None:
    text = recorded["html"]
    assert "<script" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "Studio A" in text and "Blue Monday" in text and "Night Drive" in text
    assert "the one &lt;with&gt; the &quot;fill&quot; &amp; more" in text
    assert text.count('class="circled"') == 1 and text.count('class="false"') == 1
    assert "Talkback cues" in text

    # the console's download (taken while the session ran) is the same report: same room, same
    # timeline and tables (only the "ended" time is new once the daemon stopped)
    def body(t: str) -> str:
        return t[t.index("<h2>Timeline</h2>") : t.index("<footer>")]

    assert "Studio A" in recorded["download"] and "ended" not in recorded["download"].split("<h2>")[0]
    assert body(recorded["download"]) == body(text)


def test_timeline_positions_match_the_take_sheet(recorded: dict[str, Any]) -> None:
    takes = {t["seq"]: t for t in recorded["json"]["takes"]}
    cues = {c["seq"]: c for c in recorded["json"]["talkback"]}
    assert len(takes) == 4 and len(cues) == 1
    svg = _svg(recorded["html"])
    t0, scale, x0 = (float(svg.attrib[k]) for k in ("data-t0", "data-scale", "data-x0"))
    positions = [float(r["daw_seconds"]) for r in takes.values()] + [
        float(c["daw_seconds"]) for c in cues.values()
    ]
    ends = [float(r["daw_seconds"]) + (r["duration"] or 0) for r in takes.values()]
    assert t0 == pytest.approx(min(positions), abs=1e-5)
    assert scale == pytest.approx(PLOT_WIDTH / (max(ends + positions) - min(positions)), rel=1e-5)
    assert x0 == X0
    bars = {int(r.attrib["data-seq"]): r for r in svg.iter(SVG + "rect") if r.get("class") == "take"}
    assert set(bars) == set(takes)
    for seq, row in takes.items():
        x = float(bars[seq].attrib["x"])
        width = float(bars[seq].attrib["width"])
        assert x == pytest.approx(x0 + (float(row["daw_seconds"]) - t0) * scale, abs=0.01)
        assert width == pytest.approx(max(MIN_BAR, (row["duration"] or 0) * scale), abs=0.01)
        assert (bars[seq].attrib["fill"] == "#f2b600") is row["circled"]
        assert (bars[seq].attrib["fill"] == "url(#fs)") is row["false_start"]
    marks = {int(p.attrib["data-seq"]): p for p in svg.iter(SVG + "path") if p.get("class") == "cue"}
    assert set(marks) == set(cues)
    for seq, row in cues.items():
        assert float(marks[seq].attrib["data-x"]) == pytest.approx(
            x0 + (float(row["daw_seconds"]) - t0) * scale, abs=0.01
        )
    # the take rolling through the cue sits around it on the timeline
    cue_x = float(next(iter(marks.values())).attrib["data-x"])
    take2 = next(r for r in takes.values() if r["take"] == 2 and r["song"] == "Blue Monday")
    bar2 = bars[int(take2["seq"])]
    assert float(bar2.attrib["x"]) <= cue_x <= float(bar2.attrib["x"]) + float(bar2.attrib["width"])


def test_report_in_chromium(recorded: dict[str, Any], browser: Any, shots: Path) -> None:
    page = browser.new_page(viewport={"width": 1000, "height": 1300})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(recorded["path"].as_uri())
    assert page.locator("svg.timeline rect.take").count() == 4
    assert page.locator("tr.circled").count() == 1
    # the circled row stands out: its own background and weight
    style = page.eval_on_selector(
        "tr.circled td", "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).fontWeight]"
    )
    assert style[0] != "rgba(0, 0, 0, 0)" and int(style[1]) >= 700
    page.screenshot(path=str(shots / "report.png"), full_page=True)
    page.emulate_media(media="print")  # what the PDF gets (no PDF rasterizer here)
    page.set_viewport_size({"width": 794, "height": 1123})  # A4 at 96 dpi
    page.screenshot(path=str(shots / "report-print.png"), full_page=True)
    pdf = page.pdf(format="A4", print_background=True)
    (shots / "report.pdf").write_bytes(pdf)
    assert pdf.startswith(b"%PDF") and len(pdf) > 5000
    assert not errors
    assert requests == [recorded["path"].as_uri()]  # self-contained: nothing else loaded
    page.close()


def test_cue_audio_in_csv_and_json() -> None:
    """With a talkback recorder, each cue's WAV is in the CSV and JSON exports (the record the hub
    writes for the recorder's AudioCaptured amends the cue)."""

    def rec(seq: int, kind: str, amends: int | None = None, text: str = "", **data: object) -> Record:
        ts = f"2026-12-02T10:00:{seq:02d}.000Z"
        return Record(seq, 1, ts, kind, "Blue", 1, 1.0 * seq, "osc", text, amends, dict(data))

    records = [
        rec(1, "session_start", text="s"),
        rec(2, "take_marker"),
        rec(3, "talkback_start"),
        rec(4, "talkback_end", amends=3, duration=0.5),
        rec(5, "talkback_audio", amends=3, text="/var/lib/studio-bridge/talkback/cue-3.wav", seconds=0.5),
        rec(6, "talkback_start"),
        rec(7, "talkback_end", amends=6, duration=0.2),
    ]
    sheet = build_take_sheet(records)
    out = io.StringIO()
    to_csv(sheet, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    cue_rows = [r for r in rows if r["type"] == "talkback"]
    assert [r["audio"] for r in cue_rows] == ["/var/lib/studio-bridge/talkback/cue-3.wav", ""]
    out = io.StringIO()
    to_json(sheet, out)
    assert [c["audio"] for c in json.loads(out.getvalue())["talkback"]] == [
        "/var/lib/studio-bridge/talkback/cue-3.wav",
        None,
    ]
