"""The Textual app: the composition root of kvmtop's TUI.

Layer: app. Imports the feed protocol and the views; never collectors directly.

Collection runs in a thread worker that calls `feed.next()` once per interval and
posts one `FrameReady` per frame; a frame still queued is replaced by a newer one, so
a slow terminal shows the latest frame rather than a backlog. The UI thread never
waits for libvirt. Pausing freezes what is shown while collection goes on.

The app does not close the feed: whoever built it closes it after `run()` returns
(by then the worker thread has finished).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Static

from kvmtop.feed import Feed
from kvmtop.model.snapshot import Snapshot
from kvmtop.render import GUEST_COLUMNS, column
from kvmtop.views.findings import FindingsPanel
from kvmtop.views.guest_detail import GuestDetailScreen
from kvmtop.views.guest_table import GuestTable, Threshold
from kvmtop.views.host_strip import HostStrip
from kvmtop.views.sources import SourcesScreen
from kvmtop.views.themes import load_themes, variable_defaults

INTERVAL_STEPS: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
"""Sampling intervals `+` and `-` step through (seconds)."""

DEFAULT_THRESHOLDS: Mapping[str, Threshold] = {
    # ../shared/reference/metrics.md §5.1: steal mean ≥ 5 % warns, ≥ 20 % is critical;
    # a single vCPU ≥ 10 % is bad (VMware CPU Ready guidance).
    "steal_pct": Threshold(warn=5.0, crit=20.0),
    "steal_max_pct": Threshold(warn=10.0, crit=20.0),
    # §5.3: 20 ms is the esxtop DAVG floor for spinning or network storage [H: 50 ms crit].
    "disk_read_ms": Threshold(warn=20.0, crit=50.0),
    "disk_write_ms": Threshold(warn=20.0, crit=50.0),
    # §5.5: a guest dropping packets at all is worth a look [H].
    "net_drops_per_s": Threshold(warn=1.0, crit=100.0),
}
"""Guest-table colouring by column key (the config file overrides these)."""

SORT_KEYS = {"P": "cpu_pct", "S": "steal_pct", "M": "mem_used", "N": "name"}
"""top/virt-top style one-key sorts: key → column key."""

MAIN_SCREEN_ACTIONS = frozenset({"filter", "clear_filter", "sort"})
"""Actions that only make sense on the main screen (hidden elsewhere)."""


class FrameReady(Message):
    """A new snapshot from the feed; a newer one replaces it while it waits in the queue."""

    def __init__(self, snapshot: Snapshot) -> None:
        """Wrap a snapshot."""
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        """Only the latest frame matters."""
        return isinstance(message, FrameReady)


class FeedEnded(Message):
    """The feed has no more snapshots (the end of a recording)."""


class HelpScreen(ModalScreen[None]):
    """Every key and every guest-table column with what it means."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close"),
    ]

    def __init__(self, keys: Iterable[tuple[str, str]]) -> None:
        """Create the screen.

        Args:
            keys: (key, what it does) pairs.
        """
        super().__init__()
        self.keys = list(keys)

    def compose(self) -> ComposeResult:
        """Keys, then columns."""
        width = max(len(k) for k, _ in self.keys)
        lines = [Content.assemble(("Keys", "bold $primary"))]
        lines += [Content.assemble((f"  {k:<{width}}  ", "bold"), d) for k, d in self.keys]
        lines += [Content(""), Content.assemble(("Guest table columns", "bold $primary"))]
        lines += [
            Content.assemble((f"  {c.header:<{width}}  ", "bold"), c.help) for c in GUEST_COLUMNS
        ]
        lines += [Content(""), Content.assemble(
            ("A blank cell (–) means unknown, never zero; the sources view (s) says why.",
             "$kvm-dim"))]
        with VerticalScroll(id="help"):
            yield Static(Content("\n").join(lines))


class KvmtopApp(App[None]):
    """kvmtop's TUI over any feed (live sampler or recording)."""

    CSS_PATH = "views/kvmtop.tcss"
    TITLE = "kvmtop"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("space,p", "toggle_pause", "Pause"),
        Binding("plus,equals_sign", "interval(1)", "Slower", key_display="+"),
        Binding("minus", "interval(-1)", "Faster", key_display="-"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("s", "sources", "Sources"),
        Binding("t", "next_theme", "Theme"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        *(Binding(k, f"sort('{key}')", f"Sort by {column(key).header}", show=False)
          for k, key in SORT_KEYS.items()),
    ]

    def __init__(
        self,
        feed: Feed,
        *,
        theme_name: str | None = None,
        user_theme_dir: Path | None = None,
        initial_sort: str = "cpu_pct",
        title_suffix: str = "",
        thresholds: Mapping[str, Threshold] = DEFAULT_THRESHOLDS,
    ) -> None:
        """Create the app.

        Args:
            feed: where snapshots come from; the app calls `next()` from a thread.
            theme_name: the theme to start with (default kvmtop-dark).
            user_theme_dir: user theme directory (default ~/.config/kvmtop/themes).
            initial_sort: guest-table column key to sort by first.
            title_suffix: shown in the host strip and the title (e.g. the recording).
            thresholds: guest-table colouring by column key.
        """
        super().__init__()
        self.feed = feed
        self.initial_sort = initial_sort
        self.thresholds = thresholds
        self.title_suffix = title_suffix
        if title_suffix:
            self.title = f"kvmtop: {title_suffix}"
        themes, self.theme_errors = load_themes(user_theme_dir)
        for theme in themes:
            self.register_theme(theme)
        self.kvmtop_themes = [t.name for t in themes]
        wanted = theme_name or "kvmtop-dark"
        self.theme_warning = None if wanted in self.available_themes else (
            f"theme '{wanted}' not found; available: {', '.join(self.kvmtop_themes)}"
        )
        self.theme = wanted if self.theme_warning is None else (
            self.kvmtop_themes[0] if self.kvmtop_themes else "textual-dark"
        )
        self.paused = False
        self.latest: Snapshot | None = None
        """The newest snapshot received."""
        self.displayed: Snapshot | None = None
        """The snapshot on screen (older than `latest` while paused)."""
        self._stop = threading.Event()
        self._wake = threading.Event()

    def get_theme_variable_defaults(self) -> dict[str, str]:
        """kvmtop's variables derived from the current theme, for themes that lack them."""
        return variable_defaults(self.current_theme)

    def compose(self) -> ComposeResult:
        """Host strip, guest table, filter input, findings, footer."""
        yield HostStrip(title=self.title_suffix, id="host")
        yield GuestTable(thresholds=self.thresholds, sort_key=self.initial_sort, id="guests")
        yield Input(placeholder="filter guests: name substring or regex (Esc clears)",
                    id="filter")
        yield FindingsPanel(id="findings")
        yield Footer()

    def on_mount(self) -> None:
        """Report theme problems once, start collecting, focus the table."""
        if self.theme_errors:
            self.notify("\n".join(self.theme_errors), title="Broken theme files skipped",
                        severity="warning", timeout=15)
        if self.theme_warning:
            self.notify(self.theme_warning, severity="warning", timeout=10)
        self.query_one(GuestTable).focus()
        self.collect()

    def on_unmount(self) -> None:
        """Let the collection thread finish."""
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------ collection

    @work(thread=True, exclusive=True, group="feed")
    def collect(self) -> None:
        """Call the feed once per interval and post each frame (runs in a thread)."""
        while not self._stop.is_set():
            started = time.monotonic()
            snapshot = self.feed.next()
            if snapshot is None:
                self.post_message(FeedEnded())
                return
            self.post_message(FrameReady(snapshot))
            self._sleep_until_next_tick(started)

    def _sleep_until_next_tick(self, started: float) -> None:
        """Wait for the rest of the interval; an interval change or quitting wakes it."""
        while not self._stop.is_set():
            remaining = started + self.feed.interval_s - time.monotonic()
            if remaining <= 0:
                return
            if self._wake.wait(remaining):
                self._wake.clear()

    def on_frame_ready(self, message: FrameReady) -> None:
        """Keep the newest frame; show it unless paused."""
        self.latest = message.snapshot
        if not self.paused:
            self.display_snapshot(message.snapshot)

    def on_feed_ended(self) -> None:
        """Say that the recording is over (the last frame stays on screen)."""
        self.query_one(HostStrip).note = "end of recording: no more frames (q quits)"

    def display_snapshot(self, snapshot: Snapshot) -> None:
        """Show a snapshot on every view (marked paused while paused)."""
        self.displayed = snapshot
        shown = self._marked(snapshot)
        with self.batch_update():
            self.query_one(HostStrip).show(shown)
            self.query_one(GuestTable).show(shown)
            self.query_one(FindingsPanel).show(shown)
            if isinstance(self.screen, GuestDetailScreen | SourcesScreen):
                self.screen.show(shown)

    def _marked(self, snapshot: Snapshot) -> Snapshot:
        """A snapshot as the views see it: mode "paused" while paused."""
        return replace(snapshot, mode="paused") if self.paused else snapshot

    @property
    def shown(self) -> Snapshot | None:
        """The displayed snapshot as the views see it."""
        return None if self.displayed is None else self._marked(self.displayed)

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Table keys (filter, sort) act only while the guest table is on screen."""
        if action in MAIN_SCREEN_ACTIONS:
            return len(self.screen_stack) == 1
        return True

    def action_toggle_pause(self) -> None:
        """Freeze the display (collection goes on), or show the latest frame again."""
        self.paused = not self.paused
        current = self.displayed if self.paused else self.latest
        if current is not None:
            self.display_snapshot(current)

    def action_interval(self, step: int) -> None:
        """Step the sampling interval up (+1) or down (-1) through INTERVAL_STEPS."""
        now = self.feed.interval_s
        if step > 0:
            new = next((s for s in INTERVAL_STEPS if s > now), INTERVAL_STEPS[-1])
        else:
            new = next((s for s in reversed(INTERVAL_STEPS) if s < now), INTERVAL_STEPS[0])
        self.feed.interval_s = new
        self._wake.set()
        self.notify(f"sampling every {new:g} s", timeout=3)

    def action_sort(self, key: str) -> None:
        """Sort the guest table by a column (again: reverse)."""
        self.query_one(GuestTable).sort_by(key)

    def action_filter(self) -> None:
        """Open the name filter."""
        box = self.query_one("#filter", Input)
        box.add_class("-visible")
        box.focus()

    def action_clear_filter(self) -> None:
        """Clear and close the name filter."""
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("-visible")
        self.query_one(GuestTable).set_filter("")
        self.query_one(GuestTable).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_one(GuestTable).set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.remove_class("-visible")
        self.query_one(GuestTable).focus()

    @on(DataTable.RowSelected, "#guests")
    def _guest_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.open_guest(event.row_key.value)

    def open_guest(self, uuid: str) -> None:
        """Open the detail screen of a guest."""
        g = self.displayed.guest(uuid) if self.displayed is not None else None
        self.push_screen(GuestDetailScreen(uuid, g.name if g else uuid, snapshot=self.shown))

    def on_guest_detail_screen_toggled(self) -> None:
        """Trace exits by reason for the guest on the topmost detail screen, or none.

        `focus()` only records the request: the feed attaches and detaches (slow) on
        the collection thread, as part of its next sample.
        """
        details = [s for s in self.screen_stack if isinstance(s, GuestDetailScreen)]
        self.feed.focus(details[-1].uuid if details else None)

    def action_sources(self) -> None:
        """Open the sources view."""
        self.push_screen(SourcesScreen(snapshot=self.shown))

    def action_help(self) -> None:
        """Open the help screen."""
        self.push_screen(HelpScreen(self.key_help()))

    def action_next_theme(self) -> None:
        """Switch to the next kvmtop theme."""
        names = self.kvmtop_themes
        if not names:
            return
        i = names.index(self.theme) + 1 if self.theme in names else 0
        self.theme = names[i % len(names)]
        self.notify(f"theme {self.theme}", timeout=3)

    def key_help(self) -> list[tuple[str, str]]:
        """(key, description) for every key, for the help screen."""
        keys = [
            (", ".join(self.get_key_display(Binding(k, b.action)) for k in b.key.split(",")),
             b.description)
            for b in (*self.BINDINGS, *GuestTable.BINDINGS)
            if isinstance(b, Binding)
        ]
        keys += [
            ("↑ ↓ PgUp PgDn", "move the cursor"),
            ("Enter", "open the guest detail (Esc goes back)"),
            ("click a header", "sort by that column (again: reverse)"),
            (self.get_key_display(Binding(self.COMMAND_PALETTE_BINDING, "")), "command palette"),
        ]
        return keys

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """kvmtop's commands for the palette, after Textual's own."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Pause / resume", "Freeze the display", self.action_toggle_pause)
        yield SystemCommand("Help", "Keys and columns", self.action_help)
        yield SystemCommand("Sources view", "Collector health, why cells are blank",
                            self.action_sources)
        yield SystemCommand("Filter guests", "By name (substring or regex)", self.action_filter)
        yield SystemCommand("Slower sampling", "Next longer interval",
                            partial(self.action_interval, 1))
        yield SystemCommand("Faster sampling", "Next shorter interval",
                            partial(self.action_interval, -1))
        for col in GUEST_COLUMNS:
            yield SystemCommand(f"Sort by {col.header}", col.help or col.header,
                                partial(self.action_sort, col.key))
        for name in self.kvmtop_themes:
            yield SystemCommand(f"Theme {name}", "Switch theme", partial(setattr, self, "theme",
                                                                         name))
        if self.displayed is not None:
            for g in self.displayed.guests:
                yield SystemCommand(f"Guest {g.name}", f"Open the detail of {g.uuid}",
                                    partial(self.open_guest, g.uuid), discover=False)
