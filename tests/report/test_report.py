"""`kvmtop report`: findings timeline, top offenders, per-guest stats vs host baseline,
in text, Markdown, JSON and HTML, over the scripted recording of conftest.py."""

from __future__ import annotations

import io
import json
import math
import random
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from kvmtop.commands.main import main
from kvmtop.config import Settings
from kvmtop.model.as_json import finding_json
from kvmtop.report.accumulate import build_report
from kvmtop.report.content import stamp
from kvmtop.report.metrics import GUEST_METRICS
from kvmtop.report.reading import Progress
from kvmtop.report.stats import PLOT_POINTS, RELATIVE_ERROR, LogHistogram, Series, Stats
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from kvmtop.wiring import build_pipeline
from tests.detectors.builders import GuestSpec, World, balloon
from tests.report.conftest import DROPS_FROM, DT, MINUTES, STEAL, run_command

PLOTTED = [m.key for m in GUEST_METRICS if m.plot]
OFFENDER_KEYS = {m.key for m in GUEST_METRICS if m.offender}
"""The report's top-offender tables: one per catalogue field the report ranks."""


def run_report(recording: Path, tmp_path: Path, fmt: str, *extra: str) -> str:
    return run_command("report", recording, tmp_path, fmt, *extra)


@pytest.fixture(scope="module")
def doc(recording: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    text = run_report(recording, tmp_path_factory.mktemp("json"), "json")
    parsed: dict[str, Any] = json.loads(text)
    return parsed


# ------------------------------------------------------------------ JSON


def problems(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The warning/critical findings by detector (each fires once in the recording)."""
    found = [f for f in doc["findings"] if f["severity"] != "info"]
    by = {f["detector"]: f for f in found}
    assert len(by) == len(found), found
    return by


def test_json_findings_timeline(doc: dict[str, Any], start_s: float) -> None:
    found = problems(doc)
    assert set(found) == {"steal", "memory_leak", "vnic_drops"}
    steal = found["steal"]
    assert steal["subject_name"] == "stealer" and steal["severity"] == "critical"
    # Raised on its first bad sample; cleared after three good ones (hysteresis).
    assert steal["start"] == start_s - DT + STEAL[0]  # the first sample is DT in
    assert start_s - DT + STEAL[1] <= steal["end"] <= start_s + STEAL[1] + 3 * DT
    assert steal["ongoing"] is False
    assert steal["evidence"]["steal_max_pct"] == pytest.approx(25.0, rel=0.01)
    leak = found["memory_leak"]
    assert leak["guest"] == "leaky" and leak["ongoing"] is True
    assert leak["evidence"]["slope_mib_per_min"] == pytest.approx(5.0, rel=0.05)
    drops = found["vnic_drops"]
    assert drops["guest"] == "dropper" and drops["ongoing"] is True
    assert drops["start"] >= start_s + DROPS_FROM - 2
    assert [f["start"] for f in doc["findings"]] == sorted(f["start"] for f in doc["findings"])


def test_json_top_offenders(doc: dict[str, Any]) -> None:
    top = doc["offenders"]
    assert set(top) == OFFENDER_KEYS
    assert top["swap_in_bytes_per_s"] == []  # no guest swapped: an empty table, no zeros
    assert top["steal_max_pct"][0] == {**top["steal_max_pct"][0], "guest": "stealer", "by": "max"}
    assert top["steal_max_pct"][0]["value"] == pytest.approx(25.0, rel=0.01)
    assert [o["guest"] for o in top["net_drops_per_s"]] == ["dropper"]
    # 20 drops/s from minute 8 to the end (4 min): about 4,800 packets.
    assert top["net_drops_per_s"][0]["value"] == pytest.approx(
        20 * (MINUTES * 60 - DROPS_FROM), rel=0.05
    )
    assert [o["guest"] for o in top["mem_used"]] == ["leaky"]
    assert top["mem_used"][0]["value"] == pytest.approx(300.0, rel=0.05)  # 5 MiB/min


def test_json_per_guest_stats_and_baseline(doc: dict[str, Any]) -> None:
    guests = {g["name"]: g for g in doc["guests"]}
    assert set(guests) == {"leaky", "stealer", "dropper", "quiet"}
    steal = guests["stealer"]["metrics"]["steal_max_pct"]
    assert steal["min"] == pytest.approx(0.5, rel=0.01)
    assert steal["max"] == pytest.approx(25.0, rel=0.01)
    # 4 of 12 minutes at 25 %, the rest at 0.5 %.
    assert steal["avg"] == pytest.approx((4 * 25 + 8 * 0.5) / 12, rel=0.05)
    assert steal["p95"] == pytest.approx(25.0, rel=RELATIVE_ERROR)
    quiet = guests["quiet"]["metrics"]["disk_ms"]
    assert quiet["p95"] == pytest.approx(2.0, rel=RELATIVE_ERROR)
    assert guests["quiet"]["memory_growth_mib_per_h"] == pytest.approx(0.0, abs=0.01)
    base = guests["quiet"]["baseline"]
    assert base["disk_ms"] == [{"of": "sda", "figures": base["disk_ms"][0]["figures"]}]
    assert base["disk_ms"][0]["figures"]["avg"] == pytest.approx(0.4, rel=0.01)
    assert base["net_mbps"][0]["of"] == "eno1"
    assert base["net_mbps"][0]["figures"]["avg"] == pytest.approx(200e6, rel=0.01)
    assert base["steal_pct"][0]["figures"]["avg"] == pytest.approx(3.0, rel=0.01)
    host = doc["host"]
    assert host["metrics"]["psi_cpu_some_pct"]["p95"] == pytest.approx(3.0, rel=0.02)
    assert host["metrics"]["cpu_busy_pct"] is None  # the builders give no /proc/stat
    assert host["disks"]["sda"]["util_pct"]["avg"] == pytest.approx(20.0, rel=0.01)
    assert host["uplinks"]["eno1"]["util_pct"]["max"] == pytest.approx(20.0, rel=0.01)


def test_json_metadata_and_range(doc: dict[str, Any], start_s: float) -> None:
    assert doc["meta"]["hostname"] == "lab"
    assert doc["meta"]["interval_s"] == 2.0
    assert doc["range"]["samples"] == MINUTES * 30
    assert doc["range"]["from"] == start_s
    assert doc["range"]["step_s"] is None and doc["notices"] == []


def test_range_leaves_earlier_findings_out(recording: Path, tmp_path: Path) -> None:
    doc = json.loads(run_report(recording, tmp_path, "json", "--from", "+7m"))
    assert doc["range"]["samples"] == (MINUTES - 7) * 30
    assert "steal" not in {f["detector"] for f in doc["findings"]}
    assert "vnic_drops" in {f["detector"] for f in doc["findings"]}


def test_step_reads_one_sample_per_step(recording: Path, tmp_path: Path) -> None:
    doc = json.loads(run_report(recording, tmp_path, "json", "--step", "60"))
    assert doc["range"]["samples"] == MINUTES
    assert doc["range"]["step_s"] == 60.0
    # Rates are means over the minute, so the drops still add up (to the last
    # sample read: 11 minutes after the first).
    dropper = next(g for g in doc["guests"] if g["name"] == "dropper")
    assert dropper["net_drops_total"] == pytest.approx(20 * (11 * 60 - DROPS_FROM), rel=0.05)


def test_empty_range_is_said(
    recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = run_report(recording, tmp_path, "text", "--from", "+1d")
    assert "No samples in the range." in text
    assert "no samples in the range" in capsys.readouterr().err


def test_bad_step_is_refused(recording: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(recording), "--step", "0"]) == 2
    assert "--step must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["missing/report.txt", "a-directory", "link.txt"])
@pytest.mark.parametrize("exact", [False, True], ids=["index", "exact"])
def test_a_bad_output_is_refused_before_the_report_is_built(
    recording: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    out: str,
    exact: bool,
) -> None:
    """-o is checked (its temporary file created) before the samples are read: on a
    big recording a bad -o is said at once, not after minutes of work."""
    from kvmtop.commands import report as command

    built: list[str] = []

    def spy(name: str, real: Any) -> Any:
        def called(*args: Any, **kw: Any) -> Any:
            built.append(name)
            return real(*args, **kw)

        return called

    monkeypatch.setattr(command, "build_report", spy("build_report", command.build_report))
    monkeypatch.setattr(command, "indexed_report", spy("indexed_report", command.indexed_report))
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "link.txt").symlink_to(tmp_path / "target.txt")
    target = tmp_path / out
    extra = ["--exact"] if exact else []
    assert main(["report", str(recording), "-o", str(target), *extra]) == 1
    assert capsys.readouterr().err.startswith(f"kvmtop: cannot write {target}: ")
    assert built == []
    assert not (tmp_path / "target.txt").exists()


# ------------------------------------------------------------------ text and Markdown


def section(text: str, title: str) -> str:
    """The lines of a text-report section (up to the next `== ... ==`)."""
    part = text.split(f"== {title} ==\n", 1)[1]
    return part.split("\n== ", 1)[0]


def test_text_report(recording: Path, tmp_path: Path, start_s: float) -> None:
    text = run_report(recording, tmp_path, "text")
    recording_part = section(text, "Recording")
    assert "samples      360; 4 guests" in recording_part
    assert f"{stamp(start_s)} → " in recording_part
    timeline = section(text, "Findings timeline").splitlines()
    steal = next(line for line in timeline if " steal " in line)
    assert steal.startswith(stamp(start_s - DT + STEAL[0]))
    assert "critical" in steal and "stealer" in steal and "steal_max_pct 25" in steal
    leak = next(line for line in timeline if " memory_leak " in line)
    assert "ongoing" in leak and "leaky" in leak
    offenders = section(text, "Top offenders")
    table = offenders.split("-- Steal (worst vCPU, %) --\n", 1)[1].splitlines()
    assert table[0].split() == ["Guest", "peak", "avg", "p95", "max"]
    assert table[2].split()[:2] == ["stealer", "25.0"]
    growth = offenders.split("-- Memory growth (MiB/h) --\n", 1)[1].splitlines()
    name, rate = growth[2].split()[:2]
    assert name == "leaky" and float(rate) == pytest.approx(300.0, rel=0.01)
    per_guest = section(text, "Per guest")
    assert "host baseline avg / p95" in per_guest
    assert "sda 0.40 / 0.40" in per_guest  # disk latency next to its backing device
    assert "eno1 200.0 / 200.0" in per_guest  # net next to the bridge's uplink
    assert "PSI cpu some % 3.0 / 3.0" in per_guest  # steal next to host PSI
    host = section(text, "Host baseline")
    assert "PSI cpu some %" in host and "sda" in host and "eno1" in host


def test_markdown_report(recording: Path, tmp_path: Path, start_s: float) -> None:
    md = run_report(recording, tmp_path, "md")
    lines = md.splitlines()
    assert lines[0].startswith("# kvmtop report")
    for title in ("Recording", "Findings timeline", "Top offenders", "Host baseline", "Per guest"):
        assert f"## {title}" in lines
    header = lines.index(
        "| Start (UTC) | End | Lasted | Severity | Detector | Subject | Peak evidence | Message |"
    )
    assert lines[header + 1] == "|:---|:---|:---|:---|:---|:---|:---|:---|"
    rows = [r for r in lines[header + 2 :] if r.startswith("| ")]
    steal = next(r for r in rows if "| steal |" in r)
    assert steal.startswith(f"| {stamp(start_s - DT + STEAL[0])} |")
    assert "|:---|---:|---:|---:|---:|" in lines  # offender tables: numbers align right
    assert "- **samples**: 360; 4 guests" in lines


def test_format_follows_the_output_suffix(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    assert main(["report", str(recording), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith("# kvmtop report")


# ------------------------------------------------------------------ HTML


class Page(HTMLParser):
    """The parts of the HTML report the test checks."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: dict[str, dict[str, Any]] = {}
        self.svg: str | None = None
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.tables: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "table":
            self.tables.append(a.get("class") or "")
        if tag == "svg":
            self.svg = a["data-metric"]
            assert self.svg is not None
            self.svgs[self.svg] = {"lines": 0, "spans": []}
        elif self.svg is not None and tag == "polyline":
            points = (a["points"] or "").split()
            assert 1 < len(points) <= PLOT_POINTS + 1
            self.svgs[self.svg]["lines"] += 1
        elif self.svg is not None and tag == "rect" and a.get("class") == "finding-span":
            self.svgs[self.svg]["spans"].append(
                (a["data-detector"], a["data-severity"], float(a["x"] or 0), float(a["width"] or 0))
            )

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.svg = None


def test_html_structure(recording: Path, tmp_path: Path) -> None:
    text = run_report(recording, tmp_path, "html")
    page = Page()
    page.feed(text)
    incidents = {k for k in page.svgs if k.startswith("incident-")}  # test_incidents.py
    assert set(page.svgs) - incidents == {*PLOTTED, "host"}  # per key metric, and the host
    for key in PLOTTED:
        assert page.svgs[key]["lines"] >= 1, key
    # Finding spans shaded on the plot of their metric, nowhere else.
    steal = page.svgs["steal_max_pct"]["spans"]
    assert [(d, s) for d, s, _, _ in steal] == [("steal", "critical")]
    width = steal[0][3]
    assert 0.2 < width / (960 - 72 - 16) < 0.5  # 4 min of 12
    assert [d for d, *_ in page.svgs["mem_used"]["spans"]] == ["memory_leak"]
    assert [d for d, *_ in page.svgs["net_drops_per_s"]["spans"]] == ["vnic_drops"]
    assert page.svgs["cpu_pct"]["spans"] == []
    # Self-contained: no scripts, no stylesheet or image links, nothing to fetch.
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert page.urls == []
    assert "findings" in page.tables and page.tables.count("offenders") == len(OFFENDER_KEYS)


# ------------------------------------------------------------------ statistics


@pytest.mark.parametrize("seed", range(5))
def test_p95_within_the_histogram_error(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(2.0, 1.5) for _ in range(5000)] + [0.0] * 200
    stats = Stats()
    for v in values:
        stats.add(v, 2.0)
    summary = stats.summary()
    assert summary is not None
    exact = sorted(values)[round(0.95 * (len(values) - 1))]
    assert summary.p95 == pytest.approx(exact, rel=2 * RELATIVE_ERROR)
    assert (summary.min, summary.max) == (min(values), max(values))
    assert summary.avg == pytest.approx(sum(values) / len(values))
    assert stats.integral == pytest.approx(2.0 * sum(values))
    assert len(stats.hist.bins) < 1000  # bounded by the spread, not the count


def test_histogram_of_nothing_and_of_zeros() -> None:
    h = LogHistogram()
    assert h.quantile(0.95) is None
    for _ in range(10):
        h.add(0.0)
    assert h.quantile(0.95) == 0.0


def test_plot_series_stays_bounded_and_keeps_spikes() -> None:
    series = Series(0.0, 86400.0)
    for i in range(43200):
        series.add(i * 2.0, 1.0)
    series.add(1234.0, 99.0)
    points = list(series.points())
    assert len(points) == PLOT_POINTS
    assert max(v for _, v in points) == 99.0
    assert all(not math.isnan(v) for _, v in points)


def test_build_report_keeps_bounded_aggregates(recording: Path) -> None:
    """Every frame of every guest is counted; what is kept per guest has a fixed size."""
    with StoreReader(recording) as reader:
        report = build_report(reader, build_pipeline(Settings()))
    assert report.samples == MINUTES * 30
    assert all(g.frames == report.samples for g in report.guests)
    assert all(len(s.values) == PLOT_POINTS for g in report.guests for s in g.series.values())


def test_a_two_sample_window_gives_the_same_findings(recording: Path) -> None:
    """The CLI reports through a window of 2 (the detectors keep their own history)."""
    spans = []
    for size in (2, Settings().window_size):
        with StoreReader(recording) as reader:
            report = build_report(reader, build_pipeline(replace(Settings(), window_size=size)))
        spans.append(
            [(finding_json(s.peak), s.since_s, s.until_s, s.ongoing) for s in report.findings]
        )
    assert spans[0] == spans[1] and len(spans[0]) >= 3


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_only() -> None:
    clock = iter([0.0, 10.0, 10.1, 20.0]).__next__
    term = Terminal()
    progress = Progress("kvmtop report", 1000.0, 2000.0, stream=term, clock=clock)
    progress.update(1250.0)  # 10 s for a quarter: 30 s left
    progress.update(1300.0)  # within half a second of the last line: not redrawn
    progress.update(1500.0)
    progress.done()
    lines = term.getvalue().split("\r")
    assert lines[1].startswith("kvmtop report:  25%, about 30 s left")
    assert lines[2].startswith("kvmtop report:  50%, about 20 s left")
    assert lines[-1] == "\x1b[K"
    quiet = io.StringIO()
    Progress("kvmtop report", 1000.0, 2000.0, stream=quiet).update(1500.0)
    assert quiet.getvalue() == ""


def test_info_findings_are_grouped(tmp_path: Path) -> None:
    """Facts shared by many guests (no balloon stats period) take one row, not one each."""
    w = World(
        [
            GuestSpec(f"00000000-0000-0000-0000-00000000010{i}", f"g{i}", balloon=balloon(30.0))
            for i in range(3)
        ]
    )
    writer = StoreWriter(tmp_path / "info.kvmtop")
    for _ in range(10):
        writer.append(w.sample(DT))
    writer.close()
    text = run_report(tmp_path / "info.kvmtop", tmp_path, "text")
    timeline = section(text, "Findings timeline")
    assert "No warning or critical findings in the range." in timeline
    notes = timeline.split("-- Notes (info findings, grouped) --\n", 1)[1].splitlines()
    assert notes[0].split()[:3] == ["First", "seen", "(UTC)"]
    # Two facts (from memory_leak and overcommit), one row each for the three guests.
    assert len(notes) == 4
    assert all("g0, g1, g2" in row for row in notes[2:])
    assert any("balloon stats period unset" in row for row in notes[2:])
