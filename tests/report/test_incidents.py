"""The report's incident summary (issue #17): the incidents of the range in rank order,
each with its sentence, severity, times, crossings, members, evidence, advice and (HTML)
its plot, before the time-ordered findings, in text, Markdown, JSON and HTML; the same
from the recording's index as from every sample; each ranked and shown at its worst.

Over the scripted recording of conftest.py: "leaky" leaks the whole time, "stealer"
steals from minute 2 to 6, "dropper" drops RX packets from minute 8 on.
"""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from kvmtop.commands.main import main
from kvmtop.model.incident import Incident, Member
from kvmtop.report.incidents import IncidentAcc, ranked
from kvmtop.store.writer import StoreWriter
from tests.detectors.builders import (
    GuestSpec,
    HostSpec,
    NetDevSpec,
    NicSpec,
    VcpuSpec,
    World,
    balloon,
)
from tests.hostile import assert_no_raw
from tests.report.conftest import DT, STEAL, run_command

KEYS = {
    "id",
    "cause",
    "kind",
    "title",
    "severity",
    "since",
    "last_bad",
    "active",
    "crossings",
    "rank",
    "eta_s",
    "guests",
    "members",
    "evidence",
    "advice",
    "until",
    "duration_s",
}
"""The keys of a JSON report's incident: batch JSON's (README.md, "Batch JSON"), with
`until` and `duration_s`."""
RANKED = [
    ("leak", "memory_leak", "leaky"),
    ("single", "steal", "stealer"),
    ("single", "vnic_drops", "dropper"),
]
"""The recording's incidents in rank order, by kind and first member. The leak comes
first (its time to exhaustion); then two critical incidents of one guest each, by
guests × duration: the steal, cleared at minute 6 after 4 min, before the drops,
ongoing at the end after a little less: a report ranks each incident at its worst,
whether or not it is still going at the end."""


def report(recording: Path, tmp_path: Path, fmt: str, *extra: str) -> str:
    return run_command("report", recording, tmp_path, fmt, *extra)


@pytest.fixture(scope="module")
def doc(recording: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(report(recording, tmp_path_factory.mktemp("j"), "json"))
    return parsed


@pytest.fixture(scope="module")
def indexed(recording: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripted recording with the report's index."""
    path = tmp_path_factory.mktemp("indexed") / "incident.kvmtop"
    shutil.copy(recording, path)
    assert main(["reindex", str(path)]) == 0
    return path


# ------------------------------------------------------------------ JSON


def test_json_incidents_in_rank_order(doc: dict[str, Any]) -> None:
    incidents = doc["incidents"]
    assert [
        (i["kind"], i["members"][0]["detector"], i["members"][0]["guest"]) for i in incidents
    ] == RANKED
    assert [i["rank"] for i in incidents] == [1, 2, 3]
    assert all(set(i) == KEYS for i in incidents)
    assert list(doc).index("incidents") < list(doc).index("findings")
    leak, steal, drops = incidents
    assert leak["eta_s"] is not None and leak["title"].startswith("leaky leaking memory")
    assert (leak["active"], leak["until"]) == (True, None)
    assert steal["severity"] == "critical" and steal["active"] is False
    assert steal["until"] == steal["last_bad"]
    assert steal["duration_s"] == pytest.approx(STEAL[1] - STEAL[0], abs=2 * DT)
    assert steal["evidence"]["steal_max_pct"] == pytest.approx(25.0, rel=0.01)
    assert (drops["active"], drops["until"]) == (True, None)
    for i in incidents:
        assert i["advice"] and i["title"] and i["crossings"] == 0
        assert [(m["guest"], m["severity"]) for m in i["members"]] == [(i["guests"][0], "critical")]
    # Every warning or critical finding is a member of one of them.
    found = {(f["detector"], f["subject"]) for f in doc["findings"] if f["severity"] != "info"}
    assert found == {(m["detector"], m["subject"]) for i in incidents for m in i["members"]}


def test_index_and_samples_give_the_same_incidents(
    indexed: Path, tmp_path: Path, doc: dict[str, Any]
) -> None:
    fast = json.loads(report(indexed, tmp_path, "json"))
    assert fast["range"]["index_s"] is not None  # from the index
    assert fast["incidents"] == doc["incidents"]
    summaries = [
        report(path, tmp_path, "text", *extra).split("== Findings timeline ==")[0]
        for path, extra in ((indexed, ()), (indexed, ("--exact",)))
    ]
    assert summaries[0] == summaries[1]


# ------------------------------------------------------------------ text and Markdown


def blocks(summary: str, start: str) -> list[list[str]]:
    """The lines of each incident of a summary: from a line starting with `start` to
    the next one."""
    out: list[list[str]] = []
    for line in summary.splitlines():
        if line.startswith(start):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_text_summary_opens_the_report(
    recording: Path, tmp_path: Path, doc: dict[str, Any]
) -> None:
    text = report(recording, tmp_path, "text")
    assert (
        text.index("== Incidents ==")
        < text.index("== Findings timeline ==")
        < text.index("== Recording ==")
    )
    summary = text.split("== Incidents ==\n", 1)[1].split("\n== ", 1)[0]
    assert summary.startswith("3 incidents on lab from ")
    incidents = blocks(summary, "#")
    assert [b[0] for b in incidents] == [
        f"#{i['rank']} {i['severity']}: {i['title']}" for i in doc["incidents"]
    ]
    for lines, i in zip(incidents, doc["incidents"], strict=True):
        facts = dict(line.strip().split(None, 1) for line in lines[1:6])
        assert facts["crossings"] == "0"
        assert facts["kind"] == f"{i['kind']} (id {i['id']})"
        assert any(line.strip().split(None, 1) == ["advice", i["advice"]] for line in lines)
        member = i["members"][0]
        assert any(
            line.split()
            == [member["guest"], member["subject_name"], member["detector"], "critical"]
            for line in lines
        )
    ongoing = [b[1] for b in incidents]
    assert [line.endswith(")") and "→ ongoing (" in line for line in ongoing] == [True, False, True]


def test_markdown_summary(recording: Path, tmp_path: Path, doc: dict[str, Any]) -> None:
    md = report(recording, tmp_path, "md")
    assert md.index("## Incidents") < md.index("## Findings timeline")
    incidents = blocks(md.split("## Incidents\n", 1)[1].split("\n## ", 1)[0], "### ")
    assert [b[0] for b in incidents] == [
        f"### #{i['rank']} {i['severity']}: {i['title']}" for i in doc["incidents"]
    ]
    for lines, i in zip(incidents, doc["incidents"], strict=True):
        # Advice quotes libvirt elements: "<" escaped, not an HTML tag.
        assert "- **advice**: " + i["advice"].replace("<", "\\<") in lines
        assert "#### Members" in lines
        member = i["members"][0]
        assert (
            f"| {member['guest']} | {member['subject_name']} | {member['detector']} | critical |"
        ) in lines


# ------------------------------------------------------------------ HTML


class Incidents(HTMLParser):
    """The incident sections of the HTML report: title, facts, member rows, plots."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.found: list[dict[str, Any]] = []
        self.tag = ""
        self.row: list[str] | None = None
        self.dt = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tag = tag
        if tag == "section" and "incident" not in (a.get("class") or ""):
            self.sections.append(a.get("id") or "")
        elif tag == "section":
            self.found.append(
                {
                    "id": a["id"],
                    "class": a["class"],
                    "title": "",
                    "facts": {},
                    "members": [],
                    "plots": [],
                    "lines": 0,
                }
            )
        elif tag == "tr" and self.found and self.sections[-1] == "incidents":
            self.row = []
        elif tag == "svg" and self.found and self.sections[-1] == "incidents":
            self.found[-1]["plots"].append(a["data-metric"])
        elif tag == "polyline" and self.found and self.sections[-1] == "incidents":
            self.found[-1]["lines"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self.row:
            self.found[-1]["members"].append(self.row)
        if tag == "tr":
            self.row = None
        self.tag = ""

    def handle_data(self, data: str) -> None:
        if not self.found or self.sections[-1] != "incidents":
            return
        inc = self.found[-1]
        if self.tag == "h3":
            inc["title"] += data
        elif self.tag == "dt":
            self.dt = data
        elif self.tag == "dd":
            inc["facts"][self.dt] = inc["facts"].get(self.dt, "") + data
        elif self.tag == "td" and self.row is not None:
            self.row.append(data)


def test_html_summary_with_a_plot_each(
    recording: Path, tmp_path: Path, doc: dict[str, Any]
) -> None:
    page = Incidents()
    page.feed(report(recording, tmp_path, "html"))
    assert page.sections[:2] == ["incidents", "findings"]
    assert [(i["id"], i["class"], i["title"]) for i in page.found] == [
        (
            f"incident-{i['id']}",
            f"incident {i['severity']}",
            f"#{i['rank']} {i['severity']}: {i['title']}",
        )
        for i in doc["incidents"]
    ]
    for got, i in zip(page.found, doc["incidents"], strict=True):
        assert got["facts"]["advice"] == i["advice"]
        assert got["facts"]["crossings"] == "0"
        member = i["members"][0]
        assert got["members"] == [
            [member["guest"], member["subject_name"], member["detector"], "critical"]
        ]
        # The figure of its kind, for its guest: one line.
        assert (got["plots"], got["lines"]) == ([f"incident-{i['id']}"], 1)


def test_html_incident_plots_show_the_figure_of_their_kind(recording: Path, tmp_path: Path) -> None:
    page = report(recording, tmp_path, "html")
    summary = page.split('<section id="findings">', 1)[0]
    captions = [c.split("</figcaption>", 1)[0] for c in summary.split("<figcaption>")[1:]]
    assert [c.split(":", 1)[0] for c in captions] == ["Mem used", "StMax%", "Drops/s"]
    assert summary.count('class="finding-span"') == 3  # each member's finding, shaded


# ------------------------------------------------------------------ ranking


def incident(
    id_: str,
    severity: str,
    *,
    kind: str = "single",
    active: bool = True,
    eta_s: float | None = None,
    duration_s: float = 60.0,
    evidence: dict[str, float] | None = None,
    member_severity: str | None = None,
    title: str = "",
) -> Incident:
    member = Member(
        "steal", id_, id_, id_, member_severity or severity, 0.0, "m", evidence or {}, active
    )
    return Incident(
        id_,
        f"steal/{id_}",
        kind,
        title or id_,
        severity,
        0.0,
        duration_s,
        active,
        (member,),
        (id_,),
        evidence or {},
        "advice",
        0,
        1,
        eta_s,
    )


def test_a_report_ranks_incidents_at_their_worst_active_or_not() -> None:
    """`rank_key` without its first criterion: an incident cleared before the end
    keeps the place its worst tick earns it, ahead of ongoing lesser ones."""
    got = ranked(
        [
            incident("info-ongoing", "info", duration_s=600.0),
            incident("warning-ongoing", "warning", duration_s=600.0),
            incident("critical-cleared", "critical", active=False),
            incident("leak", "warning", kind="leak", eta_s=3600.0),
        ]
    )
    assert [(i.id, i.rank) for i in got] == [
        ("leak", 1),
        ("critical-cleared", 2),
        ("warning-ongoing", 3),
        ("info-ongoing", 4),
    ]


def test_incidents_are_kept_at_their_worst_and_merge_as_they_fold() -> None:
    """Every version folded one by one, or two accumulations merged (the index): the
    last version's times with the worst tick's figures and each member's highest
    severity."""
    versions = [
        incident("a", "warning", evidence={"steal_max_pct": 30.0}, title="30 %"),
        incident("a", "critical", evidence={"steal_max_pct": 60.0}, title="60 %", duration_s=120.0),
        incident("a", "warning", evidence={"steal_max_pct": 20.0}, title="20 %", duration_s=180.0),
    ]
    whole, first, second, merged = IncidentAcc(), IncidentAcc(), IncidentAcc(), IncidentAcc()
    for n, v in enumerate(versions):
        whole.merge([v])
        (first if n < 2 else second).merge([v])
    merged.merge(first.incidents())
    merged.merge(second.incidents())
    assert whole.incidents() == merged.incidents()
    (got,) = whole.incidents()
    assert (got.title, got.severity, got.evidence) == ("60 %", "critical", {"steal_max_pct": 60.0})
    assert got.last_bad_s == 180.0 and got.active and got.rank == 1
    assert [m.severity for m in got.members] == ["critical"]


# ------------------------------------------------------------------ names are data


NAME = "pipe|<b>x</b> & y"
"""A guest name that Markdown (a pipe ends a cell, "<" opens a tag) and HTML must show
as it is."""
SWITCH, SWITCH_SHOWN = "br|<i>\x1b0", "br|<i>\\x1b0"
"""A bridge name with an escape sequence too."""


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three minutes of a guest named `NAME` with 25 % steal, on the bridge `SWITCH`
    whose uplink runs at 99 %: an incident about each."""
    world = World(
        [
            GuestSpec(
                "00000000-0000-0000-0000-000000000001",
                NAME,
                vcpus=[VcpuSpec(cpu_pct=40.0, steal_pct=25.0)],
                nics=[NicSpec(rx_pps=1000.0, bridge=SWITCH)],
                balloon=balloon(30.0),
                balloon_period_s=10,
            )
        ],
        HostSpec(
            netdevs=[
                NetDevSpec("eno1", "physical", master=SWITCH, speed_mbps=1000, rx_bps=990e6),
                NetDevSpec(SWITCH, "bridge"),
            ]
        ),
    )
    path = tmp_path_factory.mktemp("named") / "named.kvmtop"
    writer = StoreWriter(path)
    for _ in range(90):
        writer.append(world.sample(DT))
    writer.close()
    return path


def test_markdown_and_html_summaries_escape_names(named: Path, tmp_path: Path) -> None:
    md = report(named, tmp_path, "md")
    assert_no_raw(md)
    shown = "pipe\\|\\<b>x\\</b> & y"
    headings = [line for line in md.splitlines() if line.startswith("### #")]
    assert headings[0].startswith(f"### #1 critical: {shown}: steal ")
    assert headings[1] == "### #2 warning: Switch br\\|\\<i>\\x1b0 saturated"
    row = next(line for line in md.splitlines() if line.startswith(f"| {shown} |"))
    # Four cells: the escaped pipe does not end one.
    assert row.replace("\\|", "").count("|") == 5 and row.endswith("| steal | critical |")
    page = report(named, tmp_path, "html")
    assert_no_raw(page)
    assert "<b>" not in page and "<i>" not in page
    parser = Incidents()
    parser.feed(page)
    steal, switch = [i for i in parser.found if "info" not in i["class"]]
    assert steal["title"].startswith(f"#1 critical: {NAME}: steal ")
    assert steal["facts"]["guests"] == NAME
    assert steal["members"] == [[NAME, NAME, "steal", "critical"]]
    assert switch["title"] == f"#2 warning: Switch {SWITCH_SHOWN} saturated"
    assert switch["members"] == [["–", SWITCH_SHOWN, "vswitch_saturation", "warning"]]
    # Its plot: the utilization of the switch's uplink, the switch named in the caption.
    assert (switch["plots"], switch["lines"]) == ([switch["id"]], 1)
    assert "<figcaption>Utilization of the uplinks of br|&lt;i&gt;\\x1b0 (%)" in page
    doc = json.loads(report(named, tmp_path, "json"))
    assert doc["incidents"][0]["guests"] == [NAME]
    assert doc["incidents"][1]["title"] == f"Switch {SWITCH} saturated"
