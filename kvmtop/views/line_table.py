"""A keyed, row-cursor table drawn with Textual's Line API: only the rows on screen
are formatted and rendered.

Layer: views. `LineTable` knows nothing of guests: a subclass gives it the row keys in
display order (`set_rows`) and the cells of one row on demand (`row_cells`), so a new
snapshot of 500 guests costs one ordering of keys plus the ~50 rows a terminal shows.
A line is a few Rich `Segment`s (neighbouring cells of one style share one), no
per-cell renderables. New rows repaint only the lines of the view whose row, cells
or cursor changed, and the line drawn for a row is kept while its cells, the cursor,
the styles and the view stay the same (scrolling back over a row reuses it). The
header is the first line and stays put while the rows scroll.
The cursor follows its row's key when rows move, come and go, and is kept in view.

The severity classes (`.keyed-table--<level>` in kvmtop.tcss) are the ones the
DataTable-based `KeyedTable` uses, so both kinds of table colour a level alike.

A cell's text is drawn through `kvmtop.model.text.visible` (and so is every cell of a
`KeyedTable`): names come from outside, and a guest whose name holds ESC [2J must show
it as "\\x1b[2J", not clear the screen. Cells hold the text as it is; it is escaped
once, when drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from kvmtop.model.finding import SEVERITIES
from kvmtop.model.text import visible

LEVELS: tuple[str, ...] = ("ok", *SEVERITIES, "dim")
"""Classes a cell can carry (styled by `.keyed-table--<level>` in kvmtop.tcss): the
finding severities, plus "ok" and "dim" (stopped guests)."""


ELLIPSIS = "…"
"""Ends a text cropped to its column."""


class Cell(NamedTuple):
    """What one table cell shows: its text, severity class and alignment."""

    text: str
    level: str | None = None
    right: bool = False


class TableColumn(NamedTuple):
    """A keyed column: key, header label and width (None fits the label); a column with
    a `min_width` gives way, down to that, when the view is narrower than the table."""

    key: str
    label: str
    width: int | None = None
    right: bool = False
    min_width: int | None = None


def fit(text: str, width: int, right: bool) -> str:
    """Text laid out in exactly `width` cells: padded on the left (right-aligned) or
    the right; left-aligned text too long ends in an ellipsis, right-aligned is cropped."""
    if text.isascii():  # one cell per character: plain string work
        if right or len(text) <= width:
            return (text.rjust(width) if right else text.ljust(width))[:width]
        return text[: width - 1] + ELLIPSIS if width else ""
    if right and cell_len(text) < width:
        text = " " * (width - cell_len(text)) + text
    elif not right and cell_len(text) > width > 0:
        return set_cell_size(text, width - 1) + ELLIPSIS
    return set_cell_size(text, width)


class LineSource(NamedTuple):
    """What a line of the view is drawn from: the header's cells (key None), or a
    row's key, cells and whether the cursor is on it."""

    key: str | None
    cells: Sequence[Cell]
    cursor: bool = False


class LineTable(ScrollView, can_focus=True):
    """Rows of `Cell`s under a fixed header; a row cursor; Enter or a click on the
    cursor row selects it, a click on a header reports the column.

    Subclasses implement `row_cells` and may override `header_cells`.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "line-table--header",
        "line-table--cursor",
        *(f"keyed-table--{lv}" for lv in LEVELS),
    }

    DEFAULT_CSS = """
    LineTable {
        background: $surface;
        color: $foreground;
        &:focus { background-tint: $foreground 5%; }
        & > .line-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .line-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .line-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", show=False),
        Binding("up", "move(-1)", "Cursor up", show=False),
        Binding("down", "move(1)", "Cursor down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,ctrl+home", "move_to(0)", "First row", show=False),
        Binding("end,ctrl+end", "move_to(-1)", "Last row", show=False),
    ]

    class Selected(Message):
        """Something in the table was chosen: `key` says what."""

        def __init__(self, table: LineTable, key: str) -> None:
            """The table and the key of what was chosen."""
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> LineTable:
            """The table (for `@on(..., selector)`)."""
            return self.table

    class RowSelected(Selected):
        """Enter, or a click on the cursor row: `key` is the row's."""

    class HeaderSelected(Selected):
        """A click on a column header: `key` is the column's."""

    def __init__(self, columns: Sequence[TableColumn], **kwargs: Any) -> None:
        """Create the table.

        Args:
            columns: the columns, in display order (each needs a width).
            **kwargs: passed to `ScrollView` (id, classes, name).
        """
        super().__init__(**kwargs)
        self.table_columns: tuple[TableColumn, ...] = tuple(columns)
        self._wanted = [col.width or cell_len(col.label) for col in self.table_columns]
        """Each column's width when the view has room for all of them."""
        self._widths = list(self._wanted)
        """Each column's width in the current view (`_fit_columns`)."""
        self._table_width = sum(self._widths)
        self._keys: list[str] = []
        self._cursor = 0
        self._styles: dict[str | None, Style] = {}
        self._cursor_styles: dict[str | None, Style] = {}
        self._header_style = Style.null()
        self._fill_style = Style.null()
        self._look: tuple[object, ...] = ()
        """What every line drawn depends on besides its cells: the resolved styles, the
        view's width and its horizontal scroll (set by `render_lines`)."""
        self._view_width = 0
        self._view_x = 0
        self._blank = Strip.blank(0)
        self._lines: dict[str, tuple[Sequence[Cell], bool, Strip]] = {}
        """The line last drawn for each row key, with the cells and the cursor state it
        shows: a row that did not change is not laid out again (valid for `_look`)."""
        self._shown: dict[int, LineSource | None] = {}
        """What each line of the view was last drawn from (None: past the last row)."""

    # ------------------------------------------------------------------ data

    def row_cells(self, key: str) -> Sequence[Cell]:
        """The cells of a row, in column order: the abstract hook every subclass
        overrides (GuestTable); LineTable itself holds no row data."""
        raise NotImplementedError

    def header_cells(self) -> Sequence[Cell]:
        """The header: each column's label, aligned as the column."""
        return [Cell(col.label, None, col.right) for col in self.table_columns]

    @property
    def column_widths(self) -> tuple[int, ...]:
        """Each column's width as drawn in the current view."""
        return tuple(self._widths)

    @property
    def row_keys(self) -> tuple[str, ...]:
        """Row keys in display order."""
        return tuple(self._keys)

    @property
    def row_count(self) -> int:
        """How many rows the table has."""
        return len(self._keys)

    @property
    def cursor_row(self) -> int:
        """The index of the row under the cursor (0 when empty)."""
        return self._cursor

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        return self._keys[self._cursor] if self._keys else None

    def set_rows(self, keys: Sequence[str]) -> None:
        """Show these rows in this order; the cursor stays on its row's key (or its
        place, when that row left) and in view. Repaints the lines that changed."""
        key = self.cursor_key
        count = len(self._keys)
        self._keys = list(keys)
        for gone in self._lines.keys() - set(self._keys):
            del self._lines[gone]
        row = self._cursor
        if key is not None and key in keys:
            row = self._keys.index(key)
        self._cursor = max(0, min(row, len(self._keys) - 1))
        self.virtual_size = Size(self._table_width, len(self._keys) + 1)
        scrolls = self._scroll_to_cursor()
        if len(self._keys) == count and not scrolls and self.screen.is_current:
            self._refresh_changed_lines()
        else:  # laid out again, scrolled, or painted when its screen is back: all of it
            self.refresh()

    def _line_source(self, y: int) -> LineSource | None:
        """What line y of the view is drawn from (None past the last row)."""
        if y == 0:
            return LineSource(None, tuple(self.header_cells()))
        row = self.scroll_offset.y + y - 1
        if row >= len(self._keys):
            return None
        key = self._keys[row]
        return LineSource(key, self.row_cells(key), row == self._cursor)

    def _refresh_changed_lines(self) -> None:
        """Repaint only the lines of the view whose source changed since they were
        drawn (or that never were), each run of them as one region."""
        width, height = self.size.width, self.scrollable_content_region.height
        changed = [
            y
            for y in range(height)
            if y not in self._shown or self._shown[y] != self._line_source(y)
        ]
        start = 0
        for i, y in enumerate(changed):
            if i + 1 == len(changed) or changed[i + 1] != y + 1:
                self.refresh(Region(0, changed[start], width, y - changed[start] + 1))
                start = i + 1

    def move_cursor(self, row: int) -> None:
        """Put the cursor on row `row` (clamped to the rows there are), in view."""
        before = self._cursor
        self._cursor = max(0, min(row, len(self._keys) - 1))
        if self._cursor != before:
            self.refresh_line(before + 1)
            self.refresh_line(self._cursor + 1)
        self._scroll_to_cursor()

    def _page_rows(self) -> int:
        """Rows on screen under the header."""
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_to_cursor(self) -> bool:
        """Scroll the least that shows the cursor row; say whether that scrolls."""
        top, rows = round(self.scroll_offset.y), self._page_rows()
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False)
        elif self._cursor >= top + rows:
            self.scroll_to(y=self._cursor - rows + 1, animate=False)
        else:
            return False
        return True

    # ------------------------------------------------------------------ input

    def action_move(self, step: int) -> None:
        """Move the cursor up (-1) or down (+1)."""
        self.move_cursor(self._cursor + step)

    def action_page(self, direction: int) -> None:
        """Move the cursor a screenful up (-1) or down (+1)."""
        self.move_cursor(self._cursor + direction * self._page_rows())

    def action_move_to(self, row: int) -> None:
        """Move the cursor to a row (negative: from the end)."""
        self.move_cursor(row if row >= 0 else len(self._keys) + row)

    def action_select_cursor(self) -> None:
        """Select the cursor row."""
        if self._keys:
            self.post_message(self.RowSelected(self, self._keys[self._cursor]))

    def _column_at(self, x: int) -> str | None:
        """The key of the column at content x (None past the last column)."""
        x += round(self.scroll_offset.x)
        for col, width in zip(self.table_columns, self._widths, strict=True):
            if x < width:
                return col.key
            x -= width
        return None

    async def _on_click(self, event: events.Click) -> None:
        """A header click reports its column; a row click moves the cursor there, and a
        click on the cursor row selects it."""
        offset = event.get_content_offset(self)
        if offset is None:
            return
        event.stop()
        if offset.y == 0:
            key = self._column_at(offset.x)
            if key is not None:
                self.post_message(self.HeaderSelected(self, key))
            return
        row = round(self.scroll_offset.y) + offset.y - 1
        if row >= len(self._keys):
            return
        if row == self._cursor:
            self.action_select_cursor()
        else:
            self.move_cursor(row)

    # ------------------------------------------------------------------ drawing

    def render_lines(self, crop: Region) -> list[Strip]:
        """Resolve the styles (theme, focus) and the view (width, horizontal scroll)
        once per repaint, forgetting the lines drawn for another; then draw the lines."""
        base = self.rich_style
        cursor = self.get_component_rich_style("line-table--cursor")
        header = self.get_component_rich_style("line-table--header")
        levels = [
            self.get_component_rich_style(f"keyed-table--{level}", partial=True) for level in LEVELS
        ]
        width, x = self.scrollable_content_region.width, self.scroll_offset.x
        look = (base, cursor, header, *levels, width, x)
        if look != self._look:
            self._look, self._view_width, self._view_x = look, width, x
            self._fit_columns(width)
            self._lines.clear()
            self._fill_style = base
            self._header_style = base + header
            self._styles = {None: base}
            self._cursor_styles = {None: base + cursor}
            for level, style in zip(LEVELS, levels, strict=True):
                self._styles[level] = base + style
                self._cursor_styles[level] = base + style + cursor
            self._blank = Strip.blank(width, base)
        return super().render_lines(crop)

    def _fit_columns(self, view_width: int) -> None:
        """Narrow the columns that give way (`min_width`), first to last, as far as the
        view needs and they allow; every other column keeps its width (a table still
        wider than the view scrolls sideways)."""
        widths = list(self._wanted)
        excess = sum(widths) - view_width
        for i, col in enumerate(self.table_columns):
            if excess <= 0:
                break
            if col.min_width is not None:
                cut = min(excess, max(0, widths[i] - col.min_width))
                widths[i] -= cut
                excess -= cut
        if widths != self._widths:
            self._widths, self._table_width = widths, sum(widths)
            self.virtual_size = Size(self._table_width, len(self._keys) + 1)

    def _strip(self, cells: Sequence[Cell], styles: dict[str | None, Style], fill: Style) -> Strip:
        """One line: the cells in their columns, then `fill` to the view's width, in
        view of the horizontal scroll. Neighbouring cells of one style share a segment
        (fewer segments: less work for every later stage of the repaint). Each cell's
        text is made visible before it is fitted to its width."""
        segments: list[Segment] = []
        run: list[str] = []
        run_style = plain = styles[None]
        for (text, level, right), width in zip(cells, self._widths, strict=True):
            style = plain if level is None else styles.get(level, plain)
            if style is not run_style and run:
                segments.append(Segment("".join(run), run_style))
                run = []
            run_style = style
            run.append(fit(visible(text), width, right))
        width = self._view_width
        if width > self._table_width:
            if fill is not run_style:
                segments.append(Segment("".join(run), run_style))
                run, run_style = [], fill
            run.append(" " * (width - self._table_width))
        segments.append(Segment("".join(run), run_style))
        strip = Strip(segments, max(width, self._table_width))
        x = self._view_x
        return strip.crop(x, x + width) if x or width < self._table_width else strip

    def render_line(self, y: int) -> Strip:
        """Line y of the view: the header, then the rows from the scroll position (a
        row drawn before with the same cells and cursor state is reused as it was)."""
        source = self._shown[y] = self._line_source(y)
        if source is None:
            return self._blank
        key, cells, cursor = source
        if key is None:
            header: dict[str | None, Style] = {None: self._header_style}
            return self._strip(cells, header, self._header_style)
        drawn = self._lines.get(key)
        if drawn is not None and drawn[1] == cursor and drawn[0] == cells:
            return drawn[2]
        if cursor:
            strip = self._strip(cells, self._cursor_styles, self._cursor_styles[None])
        else:
            strip = self._strip(cells, self._styles, self._fill_style)
        self._lines[key] = (cells, cursor, strip)
        return strip
