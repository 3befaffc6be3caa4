"""The Textual app: the composition root of kvmtop's TUI.

Layer: app. Imports the feed protocol and the views; never collectors directly.

Collection runs on a thread of its own (`kvmtop.app.feed_thread`): the UI thread
never waits for libvirt, nor for a recording's file. Pausing freezes what is shown
while collection goes on; over a recording (a `Navigable` feed) it holds playback,
and the keys move through it.

The app does not close the feed: whoever built it closes it after `run()` returns
(by then the worker thread has finished).

Names come from outside (a guest can be named with an escape sequence): the views
show them through `kvmtop.model.text.visible`, and so do the app's own messages and
palette entries that carry one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Input

from kvmtop.app.feed_thread import FeedApp, FrameReady, Request
from kvmtop.feed.protocols import Feed, Navigable
from kvmtop.feed.spans import adjacent_span
from kvmtop.feed.times import TIME_FORMATS, parse_time
from kvmtop.model.fields import GUEST_COLUMNS, column
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import visible
from kvmtop.views.guest_detail import GuestDetailScreen
from kvmtop.views.guest_table import GuestTable, Threshold
from kvmtop.views.help import HelpScreen
from kvmtop.views.host_strip import HostStrip, clock
from kvmtop.views.incidents import IncidentsPanel, IncidentTable
from kvmtop.views.sources import SourcesScreen
from kvmtop.views.timeline import Marker, TimeInput, Timeline, TimelineState

INTERVAL_STEPS: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
"""Sampling intervals `+` and `-` step through (seconds)."""

SPEED_STEPS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""Playback speeds `+` and `-` step through in replay."""

NOTICE_LINES = 3
"""Notices of a damaged recording shown in one notification (the rest are counted,
and listed on standard error when kvmtop exits)."""

DEFAULT_THRESHOLDS: Mapping[str, Threshold] = {
    # docs/detectors.md#steal: steal mean ≥ 5 % warns, ≥ 20 % is critical;
    # a single vCPU ≥ 10 % is bad (VMware CPU Ready guidance).
    "steal_pct": Threshold(warn=5.0, crit=20.0),
    "steal_max_pct": Threshold(warn=10.0, crit=20.0),
    # docs/detectors.md#disk_latency: 20 ms is the esxtop DAVG floor for spinning or
    # network storage [H: 50 ms crit].
    "disk_read_ms": Threshold(warn=20.0, crit=50.0),
    "disk_write_ms": Threshold(warn=20.0, crit=50.0),
    # docs/detectors.md#vnic_drops: a guest dropping packets at all is worth a look [H].
    "net_drops_per_s": Threshold(warn=1.0, crit=100.0),
}
"""Guest-table colouring by column key (the config file overrides these)."""

SORT_KEYS = {"P": "cpu_pct", "S": "steal_pct", "M": "mem_used", "N": "name"}
"""top/virt-top style one-key sorts: key → column key."""

MAIN_SCREEN_ACTIONS = frozenset({"filter", "clear_filter", "sort", "goto", "incidents"})
"""Actions that only make sense on the main screen (hidden elsewhere)."""

REPLAY_ACTIONS = frozenset({"speed", "step", "seek_by", "goto", "incident"})
"""Actions that need a recording (hidden live)."""

LIVE_ACTIONS = frozenset({"interval"})
"""Actions that need a live feed (hidden in replay)."""


def step_through(steps: tuple[float, ...], now: float, step: int) -> float:
    """The first of `steps` above `now` (step > 0) or the last below it, within the ends."""
    if step > 0:
        return next((s for s in steps if s > now), steps[-1])
    return next((s for s in reversed(steps) if s < now), steps[0])


class KvmtopApp(FeedApp):
    """kvmtop's TUI over any feed (live sampler or recording)."""

    CSS_PATH = "../views/kvmtop.tcss"
    TITLE = "kvmtop"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("space,p", "toggle_pause", "Pause"),
        Binding("plus,equals_sign", "interval(1)", "Slower", key_display="+"),
        Binding("minus", "interval(-1)", "Faster", key_display="-"),
        Binding("plus,equals_sign", "speed(1)", "Play faster", key_display="+"),
        Binding("minus", "speed(-1)", "Play slower", key_display="-"),
        Binding("comma", "step(-1)", "Step back (pauses)", show=False),
        Binding("full_stop", "step(1)", "Step forward (pauses)", show=False),
        Binding("left_square_bracket", "seek_by(-60)", "Back 1 min", show=False),
        Binding("right_square_bracket", "seek_by(60)", "Forward 1 min", show=False),
        Binding("left_curly_bracket", "seek_by(-600)", "Back 10 min", show=False),
        Binding("right_curly_bracket", "seek_by(600)", "Forward 10 min", show=False),
        Binding("g", "goto", "Go to"),
        Binding("f", "incident(1)", "Next incident"),
        Binding("F", "incident(-1)", "Previous incident", show=False),
        Binding("i", "incidents", "Keys to the incidents (again: back to the guests)", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("s", "sources", "Sources"),
        Binding("t", "next_theme", "Theme"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        *(
            Binding(k, f"sort('{key}')", f"Sort by {column(key).header}", show=False)
            for k, key in SORT_KEYS.items()
        ),
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
        super().__init__(feed, theme_name=theme_name, user_theme_dir=user_theme_dir)
        self.initial_sort = initial_sort
        self.thresholds = thresholds
        self.title_suffix = title_suffix
        if title_suffix:
            self.title = f"kvmtop: {title_suffix}"
        self.latest: Snapshot | None = None
        """The newest snapshot received."""
        self.displayed: Snapshot | None = None
        """The snapshot on screen (older than `latest` while paused)."""
        self._selecting: tuple[Snapshot, str] | None = None
        """A frame `f` or `F` went to, and the cause of the incident to put the
        incidents' cursor on when it is shown (set by the collection thread)."""
        self._notices_shown: set[str] = set()
        """The recording's notices notified so far (a run of skipped samples that grew
        since has another text, and is notified again, whole)."""

    def compose(self) -> ComposeResult:
        """Host strip, timeline (replay), guest table, filter and go-to inputs,
        incidents, footer."""
        yield HostStrip(title=self.title_suffix, id="host")
        timeline = Timeline(id="timeline")
        timeline.display = self.nav is not None
        yield timeline
        yield GuestTable(thresholds=self.thresholds, sort_key=self.initial_sort, id="guests")
        yield Input(placeholder="filter guests: name substring or regex (Esc clears)", id="filter")
        yield TimeInput(
            placeholder="go to: HH:MM[:SS], +10m from the start, or ISO 8601 "
            "(Enter goes, Esc cancels)",
            id="goto",
        )
        yield IncidentsPanel(id="incidents")
        yield Footer()

    def on_mount(self) -> None:
        """Report theme problems once, start collecting, focus the table; a followed
        recording opens at its newest sample, as `tail -f` does."""
        self.notify_theme_problems()
        self.query_one(GuestTable).focus()
        if self.nav is not None and self.nav.follow:
            self._navigate(lambda nav: nav.seek(math.inf))
        self.collect()

    # ------------------------------------------------------------------ frames

    def on_frame_ready(self, message: FrameReady) -> None:
        """Keep the newest frame; show it unless paused."""
        if self._stop.is_set():  # posted by the feed thread as the app was closing
            return
        self.latest = message.snapshot
        if not self.paused or self.nav is not None:  # over a recording, frames come paused
            self.display_snapshot(message.snapshot)
        selecting = self._selecting
        if selecting is not None and selecting[0] is message.snapshot:
            self._selecting = None
            self.query_one(IncidentTable).select(selecting[1])
        self._show_notices()

    def on_feed_ended(self) -> None:
        """Say that the recording is over (the last frame stays on screen)."""
        if self._stop.is_set():
            return
        self.query_one(HostStrip).note = "end of recording: no more frames (q quits)"
        self._show_notices()

    def _show_notices(self) -> None:
        """Notify what the recording's reader has noticed since the last call
        (damaged samples skipped, or a run of them that grew): the first lines, and
        how many more."""
        if self.nav is None:
            return
        new = [line for line in self.nav.notices if line not in self._notices_shown]
        if not new:
            return
        self._notices_shown.update(new)
        more = len(new) - NOTICE_LINES
        text = "\n".join(visible(line) for line in new[:NOTICE_LINES])
        if more > 0:
            text += f"\n... and {more} more (listed when kvmtop exits)"
        self.notify(text, title="Damaged recording", severity="warning", timeout=15, markup=False)

    def display_snapshot(self, snapshot: Snapshot) -> None:
        """Show a snapshot on every view (marked paused while paused)."""
        self.displayed = snapshot
        shown = self._marked(snapshot)
        with self.batch_update():
            self.query_one(HostStrip).show(shown)
            self.query_one(GuestTable).show(shown)
            self.query_one(IncidentsPanel).show(shown)
            self._show_timeline()
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
        if not self._for_this_feed(action):
            return False
        if action in MAIN_SCREEN_ACTIONS:
            return len(self.screen_stack) == 1
        return True

    def _for_this_feed(self, action: str) -> bool:
        """Replay keys need a recording; the sampling interval needs a live feed."""
        if action in REPLAY_ACTIONS:
            return self.nav is not None
        return action not in LIVE_ACTIONS or self.nav is None

    def action_toggle_pause(self) -> None:
        """Freeze the display (collection goes on; a recording holds), or show the
        latest frame again (a recording plays on)."""
        self.paused = not self.paused
        self._wake.set()
        current = self.displayed if self.paused else self.latest
        if current is not None:
            self.display_snapshot(current)

    def action_interval(self, step: int) -> None:
        """Step the sampling interval up (+1) or down (-1) through INTERVAL_STEPS."""
        new = step_through(INTERVAL_STEPS, self.feed.interval_s, step)
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

    @on(GuestTable.RowSelected, "#guests")
    def _guest_selected(self, event: GuestTable.RowSelected) -> None:
        self.open_guest(event.key)

    def on_incident_table_guest_chosen(self, message: IncidentTable.GuestChosen) -> None:
        """Enter on a finding of a guest in the incidents: open that guest."""
        self.open_guest(message.uuid)

    def action_incidents(self) -> None:
        """Move the keys to the incidents, or back to the guest table."""
        incidents = self.query_one(IncidentTable)
        if self.focused is incidents or not incidents.row_count:
            self.query_one(GuestTable).focus()
        else:
            incidents.focus()

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

    def key_help(self) -> list[tuple[str, str]]:
        """(key, description) for every key, for the help screen."""
        keys = [
            (
                ", ".join(self.get_key_display(Binding(k, b.action)) for k in b.key.split(",")),
                b.description,
            )
            for b in (*self.BINDINGS, *GuestTable.BINDINGS)
            if isinstance(b, Binding) and self._for_this_feed(b.action.partition("(")[0])
        ]
        if self.nav is not None:
            keys += [("click the timeline", "go to that time"), ("g accepts", TIME_FORMATS)]
        keys += [
            ("↑ ↓ PgUp PgDn", "move the cursor"),
            ("Enter", "open the guest detail (Esc goes back)"),
            ("Enter on an incident", "list its findings under it, or fold them"),
            ("Enter on a finding", "open its guest's detail"),
            ("Tab", "move between the guest table and the incidents"),
            ("click a header", "sort by that column (again: reverse)"),
            (self.get_key_display(Binding(self.COMMAND_PALETTE_BINDING, "")), "command palette"),
        ]
        return keys

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """kvmtop's commands for the palette, after Textual's own."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Pause / resume", "Freeze the display", self.action_toggle_pause)
        yield SystemCommand("Help", "Keys and columns", self.action_help)
        yield SystemCommand(
            "Sources view", "Collector health, why cells are blank", self.action_sources
        )
        yield SystemCommand("Filter guests", "By name (substring or regex)", self.action_filter)
        if self.nav is None:
            yield SystemCommand(
                "Slower sampling", "Next longer interval", partial(self.action_interval, 1)
            )
            yield SystemCommand(
                "Faster sampling", "Next shorter interval", partial(self.action_interval, -1)
            )
        else:
            yield SystemCommand("Go to a time", "In the recording", self.action_goto)
            yield SystemCommand(
                "Next incident",
                "Where the next incident was first shown",
                partial(self.action_incident, 1),
            )
            yield SystemCommand(
                "Previous incident",
                "Where the previous incident was first shown",
                partial(self.action_incident, -1),
            )
        for col in GUEST_COLUMNS:
            yield SystemCommand(
                f"Sort by {col.header}", col.help or col.header, partial(self.action_sort, col.key)
            )
        for name in self.kvmtop_themes:
            yield SystemCommand(
                f"Theme {name}", "Switch theme", partial(setattr, self, "theme", name)
            )
        if self.displayed is not None:
            # The palette reads titles and help as markup: names visible, then escaped.
            for g in self.displayed.guests:
                yield SystemCommand(
                    f"Guest {escape(visible(g.name))}",
                    f"Open the detail of {escape(visible(g.uuid))}",
                    partial(self.open_guest, g.uuid),
                    discover=False,
                )

    # ------------------------------------------------------------------ replay navigation

    def _navigate(self, request: Request) -> None:
        """Queue a move through the recording for the collection thread."""
        self.query_one(HostStrip).note = ""
        self._requests.put(request)
        self._wake.set()
        if self.nav is not None:
            self.nav.interrupt()

    def _show_timeline(self) -> None:
        """Redraw the timeline from the feed's extent, finding spans and speed."""
        nav = self.nav
        if nav is None or nav.extent is None:
            return
        start, end = nav.extent
        progress = None
        if self._scanning and not nav.follow:
            done = 0.0 if nav.scanned_s is None else nav.scanned_s - start
            progress = int(100 * done / (end - start)) if end > start else 0
        self.query_one(Timeline).show(
            TimelineState(
                start,
                end,
                None if self.displayed is None else self.displayed.wall_s,
                nav.speed,
                self.paused,
                tuple(Marker(s.since_s, s.until_s, s.severity) for s in nav.spans),
                progress,
            )
        )

    def on_timeline_changed(self) -> None:
        """The scan found more: redraw the timeline (and say what it found damaged)."""
        if self._stop.is_set():
            return
        self._show_timeline()
        self._show_notices()

    def on_timeline_seek(self, message: Timeline.Seek) -> None:
        """A click on the timeline: go there."""
        self._navigate(lambda nav: nav.seek(message.time_s))

    def action_speed(self, step: int) -> None:
        """Play faster (+1) or slower (-1) through SPEED_STEPS."""
        if self.nav is None:
            return
        self.nav.speed = step_through(SPEED_STEPS, self.nav.speed, step)
        self._wake.set()
        self._show_timeline()
        self.notify(f"playing at ×{self.nav.speed:g}", timeout=3)

    def action_step(self, n: int) -> None:
        """Pause, then show the sample `n` samples away."""
        if not self.paused:
            self.action_toggle_pause()
        self._navigate(partial(self._step, n))

    def _step(self, n: int, nav: Navigable) -> Snapshot | None:
        """(Collection thread.) Step, or say that there is nothing there."""
        frame = nav.step(n)
        if frame is None:
            self.notify(f"at the {'start' if n < 0 else 'end'} of the recording", timeout=3)
        return frame

    def action_seek_by(self, seconds: float) -> None:
        """Go `seconds` from the frame shown (the recording's first or last sample at
        most)."""
        self._navigate(partial(self._seek_by, seconds))

    @staticmethod
    def _seek_by(seconds: float, nav: Navigable) -> Snapshot | None:
        """(Collection thread.) Seek relative to the latest frame (queued moves add up)."""
        here = nav.position_s
        if here is None:
            here = nav.extent[0] if nav.extent is not None else 0.0
        return nav.seek(here + seconds)

    def action_goto(self) -> None:
        """Open the box for a time to go to."""
        self.query_one(TimeInput).open()

    @on(Input.Submitted, "#goto")
    def _goto_submitted(self, event: Input.Submitted) -> None:
        start, end = self.nav.extent if self.nav and self.nav.extent else (None, None)
        try:
            target = parse_time(event.value, start, end)
        except ValueError as exc:
            self.notify(str(exc), title="Go to", severity="error", timeout=8, markup=False)
            return
        self.query_one(TimeInput).close()
        self.query_one(GuestTable).focus()
        if start is not None and end is not None and not start <= target <= end:
            self.notify(
                f"{clock(target)} is outside the recording ({clock(start)} to "
                f"{clock(end)}): showing the nearest sample",
                severity="warning",
                timeout=5,
            )
        self._navigate(lambda nav: nav.seek(target))

    @on(TimeInput.Closed)
    def _goto_closed(self) -> None:
        self.query_one(GuestTable).focus()

    def action_incident(self, direction: int) -> None:
        """Go to where the next (1) or previous (-1) incident was first shown."""
        self._navigate(partial(self._to_incident, direction))

    def _to_incident(self, direction: int, nav: Navigable) -> Snapshot | None:
        """(Collection thread.) Seek to the first frame showing an incident (the feed
        resumes its detectors from the scan there), its lead-up from its start (the
        first bad observation of its findings) in the plots; say what it is, and have
        its row selected when the frame is shown."""
        here = nav.position_s
        span = adjacent_span(nav.incidents, -math.inf if here is None else here, direction)
        if span is None:
            scanned = nav.scanned_s
            more = (
                f" (scanned up to {clock(scanned)} so far)"
                if (self._scanning and scanned is not None)
                else ""
            )
            self.notify(f"no {'later' if direction > 0 else 'earlier'} incident{more}", timeout=4)
            return None
        i = span.incident
        self.notify(
            visible(
                f"{i.severity} incident: {i.title} ({clock(i.since_s)} to {clock(i.last_bad_s)})"
            ),
            timeout=6,
            markup=False,
        )
        frame = nav.seek(span.raised_s, lead_s=span.raised_s - i.since_s)
        self._selecting = None if frame is None else (frame, i.cause)
        return frame
