"""The sources view: each collector's health, and why every blank cell is blank.

The table cuts a long reason at its column; the lines under it give the reason and
the details of the source under the cursor in full.

Layer: views. Reads `Snapshot.sources`, `GuestRates.na` and `HostRates.na` only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from kvmtop.model.fields import GUEST_COLUMNS, Field, cell_text
from kvmtop.model.formatting import DASH
from kvmtop.model.sample import SourceStatus
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.units import NS_PER_MS
from kvmtop.views.guest_table import Cell, KeyedTable, TableColumn
from kvmtop.views.host_strip import NA_LABELS, ModeBadge, labelled

NO_REASON = "unknown this interval (no reason recorded)"
"""Shown for a blank cell of a running guest that carries no `na` entry for the column."""

MAX_NAMES = 6
"""Guest names listed per reason before "+N more"."""

SOURCE_COLUMNS = (
    TableColumn("name", "Source", 12),
    TableColumn("ok", "OK", 6),
    TableColumn("ms", "ms", 7, right=True),
    TableColumn("reason", "Reason", 46),
    TableColumn("detail", "Details"),
)
BLANK_COLUMNS = (
    TableColumn("column", "Column", 9),
    TableColumn("reason", "Why blank", 60),
    TableColumn("guests", "Guests"),
)
HOST_COLUMNS = (
    TableColumn("figure", "Host figure", 16),
    TableColumn("reason", "Why unavailable"),
)


def blank_reasons(snapshot: Snapshot) -> list[tuple[Field, str, list[str]]]:
    """For each guest column: the reasons its cells are blank, with the guests affected."""
    out: list[tuple[Field, str, list[str]]] = []
    for col in GUEST_COLUMNS:
        by_reason: dict[str, list[str]] = defaultdict(list)
        for g in snapshot.guests:
            if cell_text(col, g) == DASH:
                fallback = NO_REASON if g.state == "running" else f"guest {g.state}"
                reason = g.na.get(col.na_key, fallback) if col.na_key else fallback
                by_reason[reason].append(g.name)
        out.extend((col, reason, sorted(names)) for reason, names in sorted(by_reason.items()))
    return out


def details(status: SourceStatus) -> str:
    """A source's details as "key=value, ..." (a dash without any)."""
    return ", ".join(f"{k}={v}" for k, v in status.detail.items()) or DASH


def about(status: SourceStatus) -> Content:
    """The lines under the sources table: the whole reason and details of a source."""
    return Content("\n").join(
        [
            labelled("reason", status.reason or "none: it delivered all it reads"),
            labelled("details", details(status)),
        ]
    )


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    more = len(names) - MAX_NAMES
    return f"{shown} (+{more} more)" if more > 0 else shown


class SourcesScreen(Screen[None]):
    """Collector health and the explanation of every blank column (key `s`)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,s", "app.pop_screen", "Back"),
    ]

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        """Create the screen, showing `snapshot` once mounted (if given)."""
        super().__init__()
        self._initial = snapshot
        self._sources: dict[str, SourceStatus] = {}

    def on_mount(self) -> None:
        """Show the snapshot the screen was opened with; the cursor keys move through
        the sources."""
        self.query_one("#sources-table", KeyedTable).focus()
        if self._initial is not None:
            self.show(self._initial)

    def compose(self) -> ComposeResult:
        """Three tables under their headings."""
        with VerticalScroll():
            yield ModeBadge(id="mode")
            yield Static("Sources", classes="heading")
            yield KeyedTable(SOURCE_COLUMNS, id="sources-table")
            yield Static(id="source-about")
            yield Static("Blank columns explained", classes="heading")
            yield KeyedTable(BLANK_COLUMNS, id="blanks-table", show_cursor=False)
            yield Static("Host figures unavailable", classes="heading")
            yield KeyedTable(HOST_COLUMNS, id="host-na-table", show_cursor=False)
        yield Footer()

    def show(self, snapshot: Snapshot) -> None:
        """Show a snapshot's sources and blank-cell reasons."""
        self.query_one(ModeBadge).show(snapshot)
        self._sources = {s.name: s for s in snapshot.sources}
        self.query_one("#sources-table", KeyedTable).sync(
            (
                s.name,
                (
                    Cell(s.name),
                    Cell("ok", "ok") if s.ok else Cell("FAILED", "critical"),
                    Cell(f"{s.duration_ns / NS_PER_MS:.1f}", right=True),
                    Cell(s.reason or DASH, None if s.ok else "critical"),
                    Cell(details(s)),
                ),
            )
            for s in snapshot.sources
        )
        self._describe()
        blanks = [
            (f"{col.key}|{reason}", (Cell(col.header), Cell(reason), Cell(_names(names))))
            for col, reason, names in blank_reasons(snapshot)
        ]
        self.query_one("#blanks-table", KeyedTable).sync(
            blanks or [("", (Cell(DASH), Cell("no blank cells"), Cell(DASH)))]
        )
        host = [
            (key, (Cell(NA_LABELS.get(key, key)), Cell(reason)))
            for key, reason in sorted(snapshot.host.na.items())
        ]
        self.query_one("#host-na-table", KeyedTable).sync(
            host or [("", (Cell(DASH), Cell("every host figure is available")))]
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Describe the source the cursor moved to."""
        event.stop()
        self._describe()

    def _describe(self) -> None:
        key = self.query_one("#sources-table", KeyedTable).cursor_key
        status = self._sources.get(key) if key is not None else None
        self.query_one("#source-about", Static).update(about(status) if status else "")
