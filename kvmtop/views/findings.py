"""The findings panel: what the detectors concluded, with evidence and since-time.

Layer: views. Reads `Snapshot.findings` only.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Static

from kvmtop.model.finding import Finding
from kvmtop.model.snapshot import Snapshot
from kvmtop.render import fmt_si
from kvmtop.views.guest_table import Cell, KeyedTable, TableColumn, severity_rank
from kvmtop.views.host_strip import clock

COLUMNS = (
    TableColumn("severity", "Severity", 8),
    TableColumn("subject", "Subject", 16),
    TableColumn("message", "Message", 50),
    TableColumn("since", "Since", 17),
    TableColumn("evidence", "Evidence"),
)


def duration(seconds: float) -> str:
    """A short duration: 45s, 3m05s, 2h10m."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def evidence_text(f: Finding) -> str:
    """Evidence numbers, then the host baseline they were judged against."""
    text = ", ".join(f"{k}={fmt_si(v)}" for k, v in f.evidence.items())
    if f.baseline:
        text += " │ host: " + ", ".join(f"{k}={fmt_si(v)}" for k, v in f.baseline.items())
    return text


def finding_cells(f: Finding, now_s: float) -> tuple[Cell, ...]:
    """One finding's row."""
    return (
        Cell(f.severity, f.severity),
        Cell(f.subject_name or f.subject),
        Cell(f.message),
        Cell(f"{clock(f.since_s)} ({duration(now_s - f.since_s)})"),
        Cell(evidence_text(f)),
    )


class FindingsPanel(Widget):
    """Active findings, worst first; "no findings" when there are none."""

    def __init__(self, **kwargs: Any) -> None:
        """Create the panel (kwargs go to `Widget`)."""
        super().__init__(**kwargs)
        self.table = KeyedTable(COLUMNS, id="findings-table", show_cursor=False)

    def compose(self) -> ComposeResult:
        """The empty-state line and the table."""
        yield Static("no findings", id="no-findings")
        yield self.table

    def show(self, snapshot: Snapshot) -> None:
        """Show a snapshot's findings."""
        findings = sorted(snapshot.findings, key=lambda f: (-severity_rank(f), f.since_s))
        self.set_class(bool(findings), "-has-findings")
        title = f"findings {len(findings)}" if findings else "findings"
        if title != self.border_title:  # setting it repaints the panel, even unchanged
            self.border_title = title
        self.table.sync(
            (f"{f.detector}|{f.subject}", finding_cells(f, snapshot.wall_s)) for f in findings
        )
