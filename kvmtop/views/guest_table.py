"""The guest table, and the keyed table every kvmtop table is built on.

Layer: views. Reads `Snapshot` values only; formats through `kvmtop.render`.

`KeyedTable.sync(rows)` makes a DataTable show exactly the given rows in the given
order while touching as little as possible (../shared/reference/metrics.md §7.3):
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
from typing import Any, ClassVar, NamedTuple

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from kvmtop.model.finding import SEVERITIES, Finding
from kvmtop.model.rates import GuestRates
from kvmtop.model.snapshot import Snapshot
from kvmtop.render import GUEST_COLUMNS, Column, cell_text

LEVELS: tuple[str, ...] = ("ok", *SEVERITIES, "dim")
"""Classes a cell can carry (styled by `.keyed-table--<level>` in kvmtop.tcss): the
finding severities, plus "ok" and "dim" (stopped guests)."""


class Cell(NamedTuple):
    """What one table cell shows: its text, severity class and alignment."""

    text: str
    level: str | None = None
    right: bool = False


class TableColumn(NamedTuple):
    """A keyed column: key, header label and width (None fits the content)."""

    key: str
    label: str
    width: int | None = None
    right: bool = False


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
        return _KeyedText(cell.text, key, self._style(cell.level), cell.right)

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


def severity_rank(f: Finding) -> int:
    """Order of a finding's severity: info < warning < critical (unknown first)."""
    return SEVERITIES.index(f.severity) if f.severity in SEVERITIES else -1


def compile_filter(text: str) -> re.Pattern[str] | None:
    """A case-insensitive name filter: a regex, or the literal text if it is not one."""
    if not text:
        return None
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error:
        return re.compile(re.escape(text), re.IGNORECASE)


class GuestTable(KeyedTable):
    """One row per guest, keyed by UUID, sorted and filtered; Enter opens the detail.

    Numbers sort descending by default and text ascending; unknown values sort last
    whichever the direction. Choosing the sorted column again reverses it.
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
            **kwargs: passed to `DataTable`.

        Raises:
            KeyError: `sort_key` is not a column of `render.GUEST_COLUMNS`.
        """
        # Cells are laid out here, not by Rich: every column but the first starts with
        # a one-cell gap (Rich strips trailing spaces of right-justified text).
        columns = [
            TableColumn(c.key, c.header, max(c.width, len(c.header)) + (1 if i else 0))
            for i, c in enumerate(GUEST_COLUMNS)
        ]
        kwargs.setdefault("cell_padding", 0)
        super().__init__(columns, **kwargs)
        self.thresholds = dict(thresholds)
        self.sort_key = sort_key
        self.reverse = False
        """Whether the user reversed the sorted column's natural order."""
        self.filter_text = ""
        self.snapshot: Snapshot | None = None
        self._filter: re.Pattern[str] | None = None
        self._text_columns: set[str] = set()
        self._by_key = {c.key: c for c in GUEST_COLUMNS}
        if sort_key not in self._by_key:
            raise KeyError(f"unknown sort column {sort_key!r}; one of {', '.join(self._by_key)}")

    def _label(self, col: TableColumn) -> Text:
        """Header: right-aligned over numbers, with ▼/▲ beside the sorted column's label."""
        mark = ("▼" if self.descending else "▲") if col.key == self.sort_key else ""
        if col.key in self._text_columns:
            return Text(self._fit(col, col.label + mark, right=False))
        return Text((mark + col.label).rjust(col.width or 0))

    def _fit(self, col: TableColumn, text: str, *, right: bool) -> str:
        """A cell's text laid out in its column: flush right, or left after the gap."""
        if right:
            return text.rjust(col.width or 0)
        return text if col is self.table_columns[0] else f" {text}"

    def _set_labels(self) -> None:
        """Rewrite the headers (they repaint when the order is next applied)."""
        for col in self.table_columns:
            self.columns[ColumnKey(col.key)].label = self._label(col)

    def _relabel(self) -> None:
        """Rewrite the headers and re-apply the order, which repaints them."""
        self._set_labels()
        if self.snapshot is not None:
            self.show(self.snapshot, force_order=True)

    @property
    def descending(self) -> bool:
        """The sort direction: numbers descend and text ascends, unless reversed."""
        return (self.sort_key not in self._text_columns) != self.reverse

    def sort_by(self, key: str) -> None:
        """Sort by a column; choosing the sorted column again reverses the order."""
        if key == self.sort_key:
            self.reverse = not self.reverse
        else:
            self.sort_key, self.reverse = key, False
        self._relabel()

    def set_filter(self, text: str) -> None:
        """Show only guests whose name matches (regex, or substring if not a regex)."""
        self.filter_text = text
        self._filter = compile_filter(text)
        if self.snapshot is not None:
            self.show(self.snapshot)

    def action_sort_step(self, step: int) -> None:
        """Sort by the column left (-1) or right (+1) of the sorted one."""
        keys = list(self._by_key)
        self.sort_by(keys[(keys.index(self.sort_key) + step) % len(keys)])

    def action_reverse_sort(self) -> None:
        """Reverse the sort order."""
        self.sort_by(self.sort_key)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A header click sorts by that column (again: reverse)."""
        event.stop()
        if event.column_key.value is not None:
            self.sort_by(event.column_key.value)

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

    def _cells(self, g: GuestRates, flagged: Mapping[str, str]) -> tuple[Cell, ...]:
        """The cells of one guest's row."""
        running = g.state == "running"
        cells = []
        for col, layout in zip(GUEST_COLUMNS, self.table_columns, strict=True):
            value = col.value(g)
            is_text = isinstance(value, str)
            if is_text:
                self._text_columns.add(col.key)
            text = self._fit(layout, cell_text(col, g), right=not is_text)
            cells.append(Cell(text, self._level(col, value, g, running, flagged)))
        return tuple(cells)

    def _level(
        self,
        col: Column,
        value: float | str | None,
        g: GuestRates,
        running: bool,
        flagged: Mapping[str, str],
    ) -> str | None:
        """Severity class of a cell: stopped guests dim, findings on the name, thresholds."""
        if not running:
            return "dim"
        if col is GUEST_COLUMNS[0]:  # the identity column carries the guest's findings
            return flagged.get(g.uuid)
        limits = self.thresholds.get(col.key)
        return limits.level(value) if limits is not None else None

    def show(self, snapshot: Snapshot, *, force_order: bool = False) -> None:
        """Display a snapshot's guests (filtered, sorted), touching only changed cells."""
        self.snapshot = snapshot
        flagged: dict[str, str] = {}
        for f in sorted(snapshot.findings, key=severity_rank):
            flagged[f.subject] = f.severity
        guests = [g for g in snapshot.guests if self._filter is None or self._filter.search(g.name)]
        known_text = len(self._text_columns)
        cells = {g.uuid: self._cells(g, flagged) for g in guests}
        if len(self._text_columns) != known_text:  # text columns sort the other way
            self._set_labels()
            force_order = True
        self.sync(((g.uuid, cells[g.uuid]) for g in self._ordered(guests)),
                  force_order=force_order)
        total = len(snapshot.guests)
        self.border_title = (
            f"guests {self.row_count}/{total} matching {self.filter_text!r}"
            if self._filter else f"guests {total}"
        )
