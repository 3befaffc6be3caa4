"""The fleet screen's tables: one row per host (`FleetTable`), and one host's guests
(`FleetGuests`), both from kvmtop's metrics in Prometheus (`kvmtop.model.fleet`).

Layer: views. Reads `HostRow` / `GuestRow` only; the app (kvmtop.fleet_app) queries
Prometheus. Every cell is drawn through `visible` (`LineTable`): host and guest
names are data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from kvmtop.model.columns import FLEET_HEADERS, fleet_texts
from kvmtop.model.fleet import GuestRow, HostRow
from kvmtop.model.formatting import fmt_pct, fmt_si
from kvmtop.views.line_table import Cell, LineTable, TableColumn

Row = TypeVar("Row")

NUMERIC = frozenset({"age", "guests", "ratio", "exits", "findings"})
"""Host columns drawn right-aligned (their width holds the one-cell gap)."""

HOST_COLUMNS = tuple(
    TableColumn(
        key, label if i == 0 or key in NUMERIC else f" {label}", width, right=key in NUMERIC
    )
    for i, (key, label, width) in enumerate(
        zip(
            (
                "host",
                "instance",
                "age",
                "guests",
                "ratio",
                "steal",
                "exits",
                "iops",
                "net",
                "findings",
                "incident",
            ),
            FLEET_HEADERS,
            (24, 22, 6, 7, 9, 26, 9, 22, 22, 10, 60),
            strict=True,
        )
    )
)
"""FLEET_HEADERS; a one-cell gap before each but the first."""


class RowsTable(LineTable, Generic[Row]):
    """A LineTable over a list of rows: each keyed by `key_of`, drawn by `cells_of`."""

    def __init__(
        self,
        columns: Sequence[TableColumn],
        key_of: Callable[[Row], str],
        cells_of: Callable[[Row], Sequence[Cell]],
        **kwargs: Any,
    ) -> None:
        """An empty table."""
        super().__init__(columns, **kwargs)
        self.rows: dict[str, Row] = {}
        self._key_of = key_of
        self._cells_of = cells_of

    def show(self, rows: Sequence[Row]) -> None:
        """Show these rows in this order."""
        self.rows = {self._key_of(r): r for r in rows}
        self.set_rows(list(self.rows))

    def row_cells(self, key: str) -> Sequence[Cell]:
        """The cells of the row `key`."""
        return self._cells_of(self.rows[key])


def host_cells(row: HostRow) -> list[Cell]:
    """A host's cells (`fleet_texts`, a one-cell gap before each but the first)."""
    return [
        Cell(text, level, right=True) if col.right else Cell(text if i == 0 else f" {text}", level)
        for i, (col, (text, level)) in enumerate(zip(HOST_COLUMNS, fleet_texts(row), strict=True))
    ]


class FleetTable(RowsTable[HostRow]):
    """One row per host, keyed by its instance (host:port)."""

    def __init__(self, **kwargs: Any) -> None:
        """An empty table."""
        super().__init__(HOST_COLUMNS, lambda r: r.instance, host_cells, **kwargs)


GUEST_COLUMNS = (
    TableColumn("guest", "Guest", 28),
    TableColumn("state", " State", 10),
    TableColumn("cpu", "CPU%", 7, right=True),
    TableColumn("steal", "Steal%", 7, right=True),
    TableColumn("exits", "Exits/s", 8, right=True),
    TableColumn("findings", "Crit/Warn", 10, right=True),
)


def guest_cells(g: GuestRow) -> list[Cell]:
    """A guest's cells under GUEST_COLUMNS."""
    return [
        Cell(g.name),
        Cell(f" {g.state}", None if g.state == "running" else "dim"),
        Cell(fmt_pct(g.cpu_pct), right=True),
        Cell(fmt_pct(g.steal_pct), right=True),
        Cell(fmt_si(g.exits_per_s), right=True),
        Cell(
            f"{g.criticals}/{g.warnings}",
            "critical" if g.criticals else "warning" if g.warnings else None,
            right=True,
        ),
    ]


class FleetGuests(RowsTable[GuestRow]):
    """One host's guests, keyed by UUID."""

    def __init__(self, **kwargs: Any) -> None:
        """An empty table."""
        super().__init__(GUEST_COLUMNS, lambda g: g.uuid, guest_cells, **kwargs)
