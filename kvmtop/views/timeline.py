"""The replay timeline: one line under the host strip while a recording plays.

Layer: views. Shows plain values (`TimelineState`) that the app takes from the feed:
the first and last time of the recording, a cursor at the frame shown, the spans
during which findings were active (coloured by severity through theme variables),
the time shown, and the playback speed. A click on the bar asks the app to seek
there (`Timeline.Seek`). `TimeInput` is the box where a time to go to is typed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Input

from kvmtop.model.finding import severity_rank
from kvmtop.views.host_strip import LABEL, clock

SEVERITY_STYLES = {"info": "$kvm-info", "warning": "$kvm-warn", "critical": "$kvm-crit"}
"""Marker style by finding severity."""

CURSOR_STYLE = "bold $accent"
BAR = "─"
MARKER = "━"
CURSOR = "●"


@dataclass(frozen=True, slots=True)
class Marker:
    """A finding span on the bar."""

    start_s: float
    end_s: float
    severity: str


@dataclass(frozen=True, slots=True)
class TimelineState:
    """What the timeline shows.

    Attributes:
        start_s: wall time of the first sample.
        end_s: wall time of the last sample.
        position_s: wall time of the frame shown (None before the first).
        speed: playback speed.
        paused: playback is paused.
        markers: finding spans.
        scanned_pct: how much of the recording has been scanned for findings, while
            the scan goes on; None once it is done.
    """

    start_s: float
    end_s: float
    position_s: float | None
    speed: float
    paused: bool = False
    markers: tuple[Marker, ...] = ()
    scanned_pct: int | None = None


def cell_of(time_s: float, start_s: float, end_s: float, width: int) -> int:
    """The bar cell (0 … width-1) of a time; times outside the range go to the ends."""
    if width <= 1 or end_s <= start_s:
        return 0
    fraction = (time_s - start_s) / (end_s - start_s)
    return min(width - 1, max(0, round(fraction * (width - 1))))


def time_of_cell(cell: int, start_s: float, end_s: float, width: int) -> float:
    """The time a bar cell stands for (the inverse of `cell_of`)."""
    if width <= 1:
        return start_s
    return start_s + (end_s - start_s) * min(max(cell, 0), width - 1) / (width - 1)


def bar(state: TimelineState, width: int) -> Content:
    """The bar itself: `width` cells, markers by worst severity, the cursor on top."""
    worst: dict[int, str] = {}
    for m in state.markers:
        for cell in range(
            cell_of(m.start_s, state.start_s, state.end_s, width),
            cell_of(m.end_s, state.start_s, state.end_s, width) + 1,
        ):
            if cell not in worst or severity_rank(m.severity) > severity_rank(worst[cell]):
                worst[cell] = m.severity
    cursor = (
        None
        if state.position_s is None
        else cell_of(state.position_s, state.start_s, state.end_s, width)
    )
    pieces: list[tuple[str, str]] = []
    for cell in range(width):
        if cell == cursor:
            piece = (CURSOR, CURSOR_STYLE)
        elif cell in worst:
            piece = (MARKER, SEVERITY_STYLES.get(worst[cell], LABEL))
        else:
            piece = (BAR, LABEL)
        if pieces and pieces[-1][1] == piece[1]:
            pieces[-1] = (pieces[-1][0] + piece[0], piece[1])
        else:
            pieces.append(piece)
    return Content.assemble(*pieces)


class Timeline(Widget):
    """Start │ bar with finding markers and a cursor │ end, then time shown and speed."""

    DEFAULT_CSS = """
    Timeline {
        height: 1;
        padding: 0 1;
        background: $panel;
    }
    """

    state: reactive[TimelineState | None] = reactive(None)
    """What to show; None until the recording has samples."""

    _bar_at: tuple[int, int] = (0, 0)
    """(first column, width) of the bar as last drawn, for clicks."""

    class Seek(Message):
        """The user clicked the bar: go to this time."""

        def __init__(self, time_s: float) -> None:
            """Ask for a seek to `time_s`."""
            super().__init__()
            self.time_s = time_s

    def show(self, state: TimelineState) -> None:
        """Show a new state (redrawn only when it changed)."""
        self.state = state

    def _stamp(self, t: float, dated: bool) -> str:
        return (time.strftime("%m-%d ", time.localtime(t)) if dated else "") + clock(t)

    def render(self) -> Content:
        """One line: start, bar, end, then the time shown, playing or paused, speed."""
        s = self.state
        if s is None:
            return Content.styled("timeline: waiting for the recording's first sample", LABEL)
        dated = time.localtime(s.start_s)[:3] != time.localtime(s.end_s)[:3]
        left, right = self._stamp(s.start_s, dated), self._stamp(s.end_s, dated)
        here = "–" if s.position_s is None else self._stamp(s.position_s, dated)
        status = f"{here} {'paused' if s.paused else 'playing'} ×{s.speed:g}"
        scan = "" if s.scanned_pct is None else f"  findings scanned {s.scanned_pct}%"
        width = max(
            0, self.content_size.width - len(left) - len(right) - len(status) - len(scan) - 4
        )
        self._bar_at = (len(left) + 1, width)
        return Content.assemble(
            (left, LABEL),
            " ",
            bar(s, width),
            " ",
            (right, LABEL),
            "  ",
            (status, "bold"),
            (scan, LABEL),
        )

    def on_click(self, event: events.Click) -> None:
        """A click on the bar seeks to the time under the pointer."""
        offset = event.get_content_offset(self)
        first, width = self._bar_at
        if self.state is None or offset is None or not first <= offset.x < first + width:
            return
        self.post_message(
            self.Seek(time_of_cell(offset.x - first, self.state.start_s, self.state.end_s, width))
        )


class TimeInput(Input):
    """The go-to box: a time typed by the user (the app reads it); Esc closes it."""

    DEFAULT_CSS = """
    TimeInput { display: none; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", show=False),
    ]

    class Closed(Message):
        """The box was closed without a time."""

    def open(self) -> None:
        """Show the box, empty, with the focus."""
        self.value = ""
        self.display = True
        self.focus()

    def close(self) -> None:
        """Hide the box."""
        self.display = False

    def action_close(self) -> None:
        """Hide the box and tell the app (which moves the focus back)."""
        self.close()
        self.post_message(self.Closed())
