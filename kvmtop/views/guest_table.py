"""The guest table, and the keyed DataTable kvmtop's smaller tables are built on.

Layer: views. Reads `Snapshot` values only; formats through the field catalogue
(`kvmtop.model.fields`).

`GuestTable` is a `LineTable` (kvmtop.views.line_table): a new snapshot re-orders the
guests' keys and only the rows on screen are formatted and drawn (only the lines that
changed), so a frame costs about the same at 500 guests as at 50 (bench/bench_ui.py
measures it).

`KeyedTable.sync(rows)` makes a DataTable show exactly the given rows in the given
order while touching as little as possible (Textual 8, widgets/_data_table.py):
rows are keyed (a guest's UUID), a cell is rewritten only when its text or severity
changed (`update_cell(..., update_width=False)`), rows are added and removed as
they come and go, the table is re-sorted only when the order changed, and it is
never cleared per tick. Any cell update invalidates DataTable's render caches, so
skipping unchanged cells is what keeps a quiet tick cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.widgets import DataTable

from kvmtop.model.fields import GUEST_COLUMNS
from kvmtop.model.finding import severity_rank
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import visible
from kvmtop.views.line_table import LEVELS as LEVELS
from kvmtop.views.line_table import Cell as Cell
from kvmtop.views.line_table import LineTable
from kvmtop.views.line_table import TableColumn as TableColumn

NAME_MIN_WIDTH = 12
"""The fewest cells the guest name column keeps when the view is narrow (its full
name is on the detail screen)."""


class _KeyedText(Text):
    """A cell renderable that remembers its row key.

    `DataTable.sort` hands its key function the cells only, so the row key travels
    with the cell to let `KeyedTable` apply an order it computed itself.
    """

    __slots__ = ("row_key",)

    def __init__(self, text: str, row_key: str, style: Style, right: bool) -> None:
        super().__init__(text, style=style, justify="right" if right else "left", end="")
        self.row_key = row_key


class KeyedTable(DataTable[Text]):
    """A row-cursor DataTable synced in place from keyed rows of `Cell`s."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {f"keyed-table--{level}" for level in LEVELS}

    def __init__(self, columns: Sequence[TableColumn], **kwargs: Any) -> None:
        """Create the table.

        Args:
            columns: the columns, in display order.
            **kwargs: passed to `DataTable` (id, classes, cell_padding, ...).
        """
        kwargs.setdefault("cursor_type", "row")
        super().__init__(**kwargs)
        self.table_columns: tuple[TableColumn, ...] = tuple(columns)
        self._shadow: dict[str, tuple[Cell, ...]] = {}
        self._order: list[str] = []
        self._styles: dict[str, Style] = {}

    def on_mount(self) -> None:
        """Add the columns; follow theme changes."""
        self.app.theme_changed_signal.subscribe(self, self._restyle)
        for col in self.table_columns:
            self.add_column(self._label(col), width=col.width, key=col.key)

    def _label(self, col: TableColumn) -> Text:
        """The header label of a column."""
        return Text(col.label, justify="right" if col.right else "left")

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def _style(self, level: str | None) -> Style:
        """The Rich style of a severity class, from the current theme (unknown: plain)."""
        if level not in LEVELS:
            return Style.null()
        if level not in self._styles:
            self._styles[level] = self.get_component_rich_style(
                f"keyed-table--{level}", partial=True
            )
        return self._styles[level]

    def _make_cell(self, key: str, cell: Cell) -> _KeyedText:
        """The renderable of a cell: its text made visible (a name's control and bidi
        characters escaped, once, here), styled by its level."""
        return _KeyedText(visible(cell.text), key, self._style(cell.level), cell.right)

    def _restyle(self, _theme: object = None) -> None:
        """Re-render the styled cells when a theme change moved the severity colours."""
        old = self._styles
        self._styles = {}
        if all(self._style(level) == style for level, style in old.items()):
            return
        with self.app.batch_update():
            for key, cells in self._shadow.items():
                for col, cell in zip(self.table_columns, cells, strict=True):
                    if cell.level is not None:
                        self.update_cell(key, col.key, self._make_cell(key, cell))

    def sync(
        self, rows: Iterable[tuple[str, Sequence[Cell]]], *, force_order: bool = False
    ) -> None:
        """Show exactly these rows, in this order, updating only what changed.

        The cursor stays on its row (by key) while rows come, go and move.

        Args:
            rows: (row key, cells in column order) pairs, in display order.
            force_order: re-apply the order even if unchanged (repaints the headers).
        """
        wanted = {key: tuple(cells) for key, cells in rows}
        cursor = self.cursor_key
        with self.app.batch_update():
            for key in [k for k in self._shadow if k not in wanted]:
                self.remove_row(key)
                del self._shadow[key]
            present = [k for k in self._order if k in wanted]
            for key, cells in wanted.items():
                old = self._shadow.get(key)
                if old is None:
                    self.add_row(*(self._make_cell(key, c) for c in cells), key=key)
                    present.append(key)
                elif old != cells:
                    for col, before, after in zip(self.table_columns, old, cells, strict=True):
                        if before != after:
                            self.update_cell(key, col.key, self._make_cell(key, after))
                self._shadow[key] = cells
            self._order = present
            self.apply_order(list(wanted), force=force_order)
            if cursor in wanted:
                row = self._order.index(cursor)
                if row != self.cursor_row:
                    self.move_cursor(row=row)

    def apply_order(self, order: list[str], *, force: bool = False) -> None:
        """Sort the rows into `order` when it differs from the current one.

        `force` sorts anyway, which also repaints the headers.
        """
        if (order != self._order or force) and self.table_columns and order:
            rank = {key: i for i, key in enumerate(order)}
            self.sort(self.table_columns[0].key, key=lambda cell: rank[cell.row_key])
        self._order = order


@dataclass(frozen=True, slots=True)
class Threshold:
    """Colouring limits of one column: a value ≥ `warn` is a warning, ≥ `crit` critical."""

    warn: float
    crit: float

    def level(self, value: float | str | None) -> str | None:
        """The severity class of a value, or None below both limits or unknown."""
        if value is None or isinstance(value, str):
            return None
        if value >= self.crit:
            return "critical"
        return "warning" if value >= self.warn else None


def compile_filter(text: str) -> re.Pattern[str] | None:
    """A case-insensitive name filter: a regex, or the literal text if it is not one."""
    if not text:
        return None
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error:
        return re.compile(re.escape(text), re.IGNORECASE)


_Source = tuple[str | None, bool, tuple[float | str | None, ...]]
"""What a guest's row is formatted from: its worst finding's severity, whether it
runs, its column values."""


class GuestTable(LineTable):
    """One row per guest, keyed by UUID, sorted and filtered; Enter opens the detail.

    Numbers sort descending by default and text ascending; unknown values sort last
    whichever the direction. Choosing the sorted column again reverses it. Only the
    rows on screen are formatted, once per snapshot, and a cell whose value did not
    change since the guest's last row is kept as it was.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("<", "sort_step(-1)", "Sort column left", show=False),
        Binding(">", "sort_step(1)", "Sort column right", show=False),
        Binding("r", "reverse_sort", "Reverse sort", show=False),
    ]

    def __init__(
        self,
        *,
        thresholds: Mapping[str, Threshold],
        sort_key: str = "cpu_pct",
        **kwargs: Any,
    ) -> None:
        """Create the table.

        Args:
            thresholds: colouring limits by column key (columns without one are plain).
            sort_key: the column to sort by first.
            **kwargs: passed to `LineTable` (id, classes, name).

        Raises:
            KeyError: `sort_key` is not a column of `kvmtop.model.fields.GUEST_COLUMNS`.
        """
        # Every column but the first starts with a one-cell gap. The name gives way in a
        # narrow view (at 120 columns the figures would not fit beside 18 cells of it).
        columns = [
            TableColumn(
                c.key,
                c.header,
                max(c.width, len(c.header)) + (1 if i else 0),
                right=not c.text,
                min_width=None if i else NAME_MIN_WIDTH,
            )
            for i, c in enumerate(GUEST_COLUMNS)
        ]
        super().__init__(columns, **kwargs)
        self.thresholds = dict(thresholds)
        self.sort_key = sort_key
        self.reverse = False
        """Whether the user reversed the sorted column's natural order."""
        self.filter_text = ""
        self.snapshot: Snapshot | None = None
        self._filter: re.Pattern[str] | None = None
        self._by_key = {c.key: c for c in GUEST_COLUMNS}
        if sort_key not in self._by_key:
            raise KeyError(f"unknown sort column {sort_key!r}; one of {', '.join(self._by_key)}")
        self._guests: dict[str, GuestRates] = {}
        self._flagged: dict[str, str] = {}
        self._cells: dict[str, tuple[Cell, ...]] = {}
        """Rows of the current snapshot formatted so far, by key."""
        self._formatted: dict[str, tuple[_Source, tuple[Cell, ...]]] = {}
        """Each guest's last formatted row, with what it was formatted from: cells whose
        values did not change are kept (and a row whose cells all did, its drawn line)."""
        self._values = [col.value for col in GUEST_COLUMNS]
        """Per column: the value getter."""
        self._plan = [
            (col.fmt, layout.right, self._gap(layout, ""), self.thresholds.get(col.key))
            for col, layout in zip(GUEST_COLUMNS, self.table_columns, strict=True)
        ]
        """Per column: formatter, alignment, gap, colouring limits."""

    def header_cells(self) -> list[Cell]:
        """Headers aligned as their columns, with ▼/▲ beside the sorted column's label."""
        mark = "▼" if self.descending else "▲"
        return [
            Cell(self._gap(col, col.label + (mark if col.key == self.sort_key else "")))
            if not col.right
            else Cell((mark if col.key == self.sort_key else "") + col.label, right=True)
            for col in self.table_columns
        ]

    def _gap(self, col: TableColumn, text: str) -> str:
        """Text after its column's one-cell gap (the first column has none)."""
        return text if col is self.table_columns[0] else f" {text}"

    @property
    def descending(self) -> bool:
        """The sort direction: numbers descend and text ascends, unless reversed."""
        return (not self._by_key[self.sort_key].text) != self.reverse

    def sort_by(self, key: str) -> None:
        """Sort by a column; choosing the sorted column again reverses the order."""
        if key == self.sort_key:
            self.reverse = not self.reverse
        else:
            self.sort_key, self.reverse = key, False
        self._arrange()

    def set_filter(self, text: str) -> None:
        """Show only guests whose name matches (regex, or substring if not a regex)."""
        self.filter_text = text
        self._filter = compile_filter(text)
        self._arrange()

    def action_sort_step(self, step: int) -> None:
        """Sort by the column left (-1) or right (+1) of the sorted one."""
        keys = list(self._by_key)
        self.sort_by(keys[(keys.index(self.sort_key) + step) % len(keys)])

    def action_reverse_sort(self) -> None:
        """Reverse the sort order."""
        self.sort_by(self.sort_key)

    def on_line_table_header_selected(self, event: LineTable.HeaderSelected) -> None:
        """A header click sorts by that column (again: reverse)."""
        event.stop()
        self.sort_by(event.key)

    def _ordered(self, guests: Iterable[GuestRates]) -> list[GuestRates]:
        """Guests in display order: by the sort column, unknown last, then by name."""
        col = self._by_key[self.sort_key]
        known: list[tuple[float | str, GuestRates]] = []
        unknown: list[GuestRates] = []
        for g in sorted(guests, key=lambda g: (g.name, g.uuid)):
            value = col.value(g)
            if value is None:
                unknown.append(g)
            else:
                known.append((value, g))
        known.sort(key=lambda pair: pair[0], reverse=self.descending)
        return [g for _, g in known] + unknown

    def row_cells(self, key: str) -> tuple[Cell, ...]:
        """The cells of one guest's row, formatted once per snapshot (a cell whose value
        is unchanged since the guest's last row is kept as it was)."""
        cells = self._cells.get(key)
        if cells is None:
            g = self._guests[key]
            source = (
                self._flagged.get(key),
                g.state == "running",
                tuple([value(g) for value in self._values]),
            )
            cells = self._cells[key] = self._format(source, self._formatted.get(key))
            self._formatted[key] = (source, cells)
        return cells

    def _format(
        self, source: _Source, last: tuple[_Source, tuple[Cell, ...]] | None
    ) -> tuple[Cell, ...]:
        """A guest's cells: texts laid out, severity classes (stopped guests dim, the
        worst finding on the name, thresholds on numbers).

        `last` is the guest's previous row and its source: while the guest's finding
        and state are the same, a cell whose value did not change is reused.
        """
        flag, running, values = source
        before: tuple[float | str | None, ...] = ()
        kept: tuple[Cell, ...] = ()
        if last is not None and last[0][:2] == source[:2]:
            before, kept = last[0][2], last[1]
        cells: list[Cell] = []
        for i, ((fmt, right, gap, limits), value) in enumerate(
            zip(self._plan, values, strict=True)
        ):
            if kept and before[i] == value:
                cells.append(kept[i])
                continue
            text = value if isinstance(value, str) else fmt(value)
            if not right:
                text = gap + text
            level: str | None
            if not running:
                level = "dim"
            elif not i:  # the name
                level = flag
            else:
                level = limits.level(value) if limits is not None else None
            cells.append(Cell(text, level, right))
        return tuple(cells)

    def show(self, snapshot: Snapshot) -> None:
        """Display a snapshot's guests (filtered, sorted)."""
        self.snapshot = snapshot
        self._guests = {g.uuid: g for g in snapshot.guests}
        self._flagged = {}
        for f in sorted(snapshot.findings, key=lambda f: severity_rank(f.severity)):
            self._flagged[f.subject] = f.severity
        self._cells = {}
        for gone in self._formatted.keys() - self._guests.keys():
            del self._formatted[gone]
        self._arrange()

    def _arrange(self) -> None:
        """Filter and sort the snapshot's guests into rows; title the table."""
        if self.snapshot is None:
            return
        guests = self.snapshot.guests
        shown = [g for g in guests if self._filter is None or self._filter.search(g.name)]
        self.set_rows([g.uuid for g in self._ordered(shown)])
        # A border title is markup: the filter text is the user's, so escaped ("[b]r"
        # is a regex, not bold).
        title = (
            f"guests {self.row_count}/{len(guests)} matching {escape(repr(self.filter_text))}"
            if self._filter
            else f"guests {len(guests)}"
        )
        if title != self.border_title:  # setting it repaints the whole table
            self.border_title = title
