"""`kvmtop fleet` on a terminal: the hosts whose kvmtop Prometheus scrapes, refreshed
every `every_s`, the worst first; Enter lists a host's guests.

Layer: app (beside `kvmtop.app`). Queries run on a worker thread with the client's
timeout, never on the UI's: a slow or unreachable Prometheus leaves the last rows on
screen and says so in the status line. Keys: s sort, / filter, Enter guests, c the
command that opens the host live, r refresh now, t theme, q quit.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from kvmtop.collectors.base import CollectorError
from kvmtop.collectors.prometheus import PrometheusClient
from kvmtop.model.fleet import SORTS, GuestRow, HostRow, ordered
from kvmtop.model.text import visible
from kvmtop.views.fleet import FleetGuests, FleetTable
from kvmtop.views.line_table import LineTable
from kvmtop.views.themes import ThemedApp


def open_command(row: HostRow) -> str:
    """The command that opens this host live (over SSH) in kvmtop."""
    host = (row.hostname or row.instance.rsplit(":", 1)[0]).strip("[]")
    return f"kvmtop -c qemu+ssh://root@{host}/system"


class GuestsScreen(Screen[None]):
    """One host's guests, from Prometheus (Escape goes back)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back"),
    ]

    def __init__(self, row: HostRow, guests: list[GuestRow]) -> None:
        """The host's row and its guests."""
        super().__init__()
        self.row = row
        self.guests = guests

    def compose(self) -> ComposeResult:
        """The host's name, its guests, the footer."""
        name = self.row.hostname or self.row.instance
        yield Static(
            visible(f"{name} ({self.row.instance}): {len(self.guests)} guests"),
            id="fleet-title",
            markup=False,
        )
        yield FleetGuests(id="fleet-guests")
        yield Footer()

    def on_mount(self) -> None:
        """Fill and focus the table."""
        table = self.query_one(FleetGuests)
        table.show(self.guests)
        table.focus()


class RowsReady(Message):
    """(From the worker.) A refresh's rows, or why it failed (the old rows stay)."""

    def __init__(self, rows: list[HostRow] | None, error: str | None) -> None:
        super().__init__()
        self.rows = rows
        self.error = error


class GuestsReady(Message):
    """(From a worker.) One host's guests, or why they could not be read."""

    def __init__(self, row: HostRow, guests: list[GuestRow] | None, error: str | None) -> None:
        super().__init__()
        self.row = row
        self.guests = guests
        self.error = error


class FleetApp(ThemedApp):
    """The fleet table over a Prometheus client."""

    CSS_PATH = "views/kvmtop.tcss"
    TITLE = "kvmtop fleet"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("s", "next_sort", "Sort"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("c", "command", "Open command"),
        Binding("r", "refresh", "Refresh"),
        Binding("t", "next_theme", "Theme"),
    ]

    def __init__(
        self,
        client: PrometheusClient,
        *,
        job: str = "kvmtop",
        every_s: float = 15.0,
        sort: str = "incidents",
        theme_name: str | None = None,
    ) -> None:
        """Create the app (`every_s`: seconds between refreshes)."""
        super().__init__(theme_name=theme_name)
        self.client = client
        self.job = job
        self.every_s = every_s
        self.sort = sort
        self.needle = ""
        self.rows: list[HostRow] = []
        self.fetched_s: float | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    def compose(self) -> ComposeResult:
        """Status line, host table, filter input, footer."""
        yield Static("", id="fleet-status", markup=False)
        yield FleetTable(id="fleet")
        yield Input(
            placeholder="filter hosts: name or instance substring (Esc clears)", id="filter"
        )
        yield Footer()

    def on_mount(self) -> None:
        """Start refreshing; focus the table."""
        self.notify_theme_problems()
        self.query_one("#filter", Input).display = False
        self.query_one(FleetTable).focus()
        self._poll()

    def on_unmount(self) -> None:
        """Let the worker finish."""
        self._stop.set()
        self._wake.set()

    @work(thread=True, exclusive=True, group="fleet")
    def _poll(self) -> None:
        """(Worker thread.) One refresh every `every_s` (or at once on `r`)."""
        while not self._stop.is_set():
            try:
                self.post_message(RowsReady(self.client.fleet(self.job), None))
            except CollectorError as exc:
                self.post_message(RowsReady(None, str(exc)))
            self._wake.wait(self.every_s)
            self._wake.clear()

    def on_rows_ready(self, message: RowsReady) -> None:
        """New rows, or the error that kept the old ones."""
        if message.rows is not None:
            self.rows = message.rows
            self.fetched_s = time.time()
        self.error = message.error
        self._redraw()

    def _redraw(self) -> None:
        shown = ordered(self.rows, self.sort, self.needle)
        self.query_one(FleetTable).show(shown)
        down = sum(1 for r in self.rows if not r.up)
        status = (
            f"{len(self.rows)} hosts ({down} not answering) from {self.client.url}, "
            f"sorted by {self.sort}"
        )
        if self.needle:
            status += f", {len(shown)} matching {self.needle!r}"
        if self.fetched_s is not None:
            status += time.strftime(", at %H:%M:%S", time.localtime(self.fetched_s))
        if self.error is not None:
            status += f". Last refresh failed: {self.error}"
        self.query_one("#fleet-status", Static).update(visible(status))

    def action_next_sort(self) -> None:
        """Cycle the row order."""
        keys = list(SORTS)
        self.sort = keys[(keys.index(self.sort) + 1) % len(keys)]
        self._redraw()

    def action_refresh(self) -> None:
        """Refresh now."""
        self._wake.set()

    def action_filter(self) -> None:
        """Show the filter input."""
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.needle = event.value
        self._redraw()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one(FleetTable).focus()

    def action_clear_filter(self) -> None:
        """Clear and hide the filter."""
        box = self.query_one("#filter", Input)
        box.value = ""
        box.display = False
        self.needle = ""
        self._redraw()
        self.query_one(FleetTable).focus()

    def _cursor_row(self) -> HostRow | None:
        table = self.query_one(FleetTable)
        key = table.cursor_key
        return None if key is None else table.rows.get(key)

    def action_command(self) -> None:
        """Say the command that opens the host under the cursor live."""
        row = self._cursor_row()
        if row is not None:
            self.notify(
                visible(open_command(row)), title="Open this host", timeout=15, markup=False
            )

    @on(LineTable.RowSelected, "#fleet")
    def _open_host(self, event: LineTable.RowSelected) -> None:
        row = self.query_one(FleetTable).rows.get(event.key)
        if row is not None:
            self._fetch_guests(row)

    @work(thread=True, group="guests")
    def _fetch_guests(self, row: HostRow) -> None:
        """(Worker thread.) The host's guests, then their screen."""
        try:
            self.post_message(GuestsReady(row, self.client.guests(self.job, row.instance), None))
        except CollectorError as exc:
            self.post_message(GuestsReady(row, None, str(exc)))

    def on_guests_ready(self, message: GuestsReady) -> None:
        """The guests' screen, or why it cannot open."""
        if message.guests is None:
            self.notify(visible(message.error or "no answer"), severity="error", markup=False)
        else:
            self.push_screen(GuestsScreen(message.row, message.guests))
