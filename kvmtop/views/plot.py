"""A two-series braille line plot: a guest figure and its host baseline on one chart.

Layer: views. Draws the values it is given; knows nothing of snapshots.

Each character cell holds a 2 × 4 grid of braille dots (Unicode block U+2800, dot
bits as in the Unicode braille pattern table: dots 1-3 and 7 down the left column,
4-6 and 8 down the right), so a plot W cells wide shows 2·W samples, newest at the
right edge (fewer samples are stretched over the width). Both series share one y
axis from 0 to the larger maximum; a cell holding dots of both series takes the
guest's colour. Unknown values (None) leave a gap, never a dot at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

Series = Sequence[float | None]

_BRAILLE = 0x2800
# Dot bit of (row, column) within a cell: rows 0-3 from the top, columns 0-1.
_DOT = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
AXIS_WIDTH = 8
"""Characters of the y-axis labels left of the plot."""


def dot_rows(values: Series, top: float, width: int, height: int) -> list[int | None]:
    """The dot row (0 = top) of each dot column (2 per cell), None for no value.

    The last `2 * width` values are drawn, one per dot column; fewer values are
    stretched over the whole width (each covers the same number of columns), so the
    x axis always spans the values given.

    Args:
        values: the series, oldest first.
        top: the value drawn at the top row (> 0).
        width: plot width in cells; height: plot height in cells.
    """
    cols = 2 * width
    rows = 4 * height
    shown = list(values[-cols:])
    if not shown:
        return [None] * cols
    out: list[int | None] = []
    for x in range(cols):
        v = shown[x * len(shown) // cols]
        if v is None:
            out.append(None)
        else:
            frac = min(1.0, max(0.0, v / top))
            out.append(round((1.0 - frac) * (rows - 1)))
    return out


def _draw(grid: list[list[int]], owner: list[list[int]], ys: list[int | None], who: int) -> None:
    """Set the dots of one series, joining consecutive points with vertical runs."""
    prev: int | None = None
    for x, y in enumerate(ys):
        if y is None:
            prev = None
            continue
        lo, hi = (y, y) if prev is None else (min(prev, y), max(prev, y))
        for row in range(lo, hi + 1):
            grid[row // 4][x // 2] |= _DOT[row % 4][x % 2]
            owner[row // 4][x // 2] |= who
        prev = y


def render_plot(
    guest: Series,
    host: Series,
    width: int,
    height: int,
    fmt: Callable[[float], str],
    styles: tuple[Style, Style],
) -> Text:
    """The plot as Rich text: y-axis labels, then the braille cells.

    Args:
        guest, host: the two series, oldest first (None: unknown).
        width, height: plot size in cells, without the axis labels.
        fmt: formats the axis maximum.
        styles: (guest style, host style).
    """
    known = [v for v in (*guest, *host) if v is not None]
    top = max(known, default=0.0)
    top = top if top > 0 else 1.0
    grid = [[0] * width for _ in range(height)]
    owner = [[0] * width for _ in range(height)]
    _draw(grid, owner, dot_rows(host, top, width, height), 2)
    _draw(grid, owner, dot_rows(guest, top, width, height), 1)
    text = Text(no_wrap=True, end="")
    for r in range(height):
        label = fmt(top) if r == 0 else ("0" if r == height - 1 else "")
        text.append(label.rjust(AXIS_WIDTH - 1)[: AXIS_WIDTH - 1] + "│")
        for c in range(width):
            bits = grid[r][c]
            char = chr(_BRAILLE + bits) if bits else " "
            text.append(char, styles[0] if owner[r][c] & 1 else styles[1])
        if r < height - 1:
            text.append("\n")
    return text


class DuoPlot(Widget):
    """A guest series and its host baseline on one braille chart (`plot(...)`)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"duo-plot--guest", "duo-plot--host"}
    DEFAULT_CSS = """
    DuoPlot { height: 6; }
    DuoPlot > .duo-plot--guest { color: $accent; }
    DuoPlot > .duo-plot--host { color: $primary; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        """Create an empty plot."""
        super().__init__(id=id, classes=classes)
        self._guest: Series = ()
        self._host: Series = ()
        self._fmt: Callable[[float], str] = str

    def plot(self, guest: Series, host: Series, fmt: Callable[[float], str]) -> None:
        """Draw these two series (oldest first); `fmt` formats the axis maximum."""
        self._guest, self._host, self._fmt = guest, host, fmt
        self.refresh()

    def render(self) -> Text:
        """The chart at the widget's current size."""
        width = max(1, self.size.width - AXIS_WIDTH)
        styles = (
            self.get_component_rich_style("duo-plot--guest", partial=True),
            self.get_component_rich_style("duo-plot--host", partial=True),
        )
        return render_plot(
            self._guest, self._host, width, max(1, self.size.height), self._fmt, styles
        )
