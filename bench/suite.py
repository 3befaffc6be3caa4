"""The benchmark suite's pure parts: result rows, budgets, the table, the regression check.

No measuring here (bench/__main__.py does that): a `Row` holds one measured figure,
the budget it must stay within (figure ≤ budget), and the figure of its peer measured
in the same run, so the table can say met or missed and the ratio to the peer.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REGRESSION_FACTOR = 3.0
"""The CI check fails when the normalised pipeline cost exceeds the baseline by this."""


@dataclass(frozen=True)
class Row:
    """One measured figure.

    Attributes:
        section: collection, pipeline, ui, tracing, fleet or store.
        name: what was measured.
        value: the figure; None when it could not be measured (see `note`).
        unit: its unit.
        budget: the most it may be; None when no budget applies.
        peer: what it is compared with (measured in the same run).
        peer_value: the peer's figure.
        note: how it was measured, or why it was not.
    """

    section: str
    name: str
    value: float | None
    unit: str
    budget: float | None = None
    peer: str | None = None
    peer_value: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """value / peer_value, when both are known and the peer is not zero."""
        if self.value is None or not self.peer_value:
            return None
        return self.value / self.peer_value

    @property
    def met(self) -> bool | None:
        """Whether the budget holds: None without a budget; a figure that could not be
        measured misses it (an unmeasured budget is not a met one)."""
        if self.budget is None:
            return None
        return self.value is not None and self.value <= self.budget

    def as_json(self) -> dict[str, Any]:
        """The row with its derived ratio and verdict."""
        return asdict(self) | {"ratio": self.ratio, "met": self.met}


def failed(rows: Sequence[Row]) -> list[Row]:
    """The rows whose budget was missed."""
    return [r for r in rows if r.met is False]


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width text table, one line each, grouped by section."""
    head = (
        f"{'section':10} {'measure':46} {'figure':>9} {'unit':9} {'budget':>8} "
        f"{'verdict':7} {'ratio':>6}  peer"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        verdict = {None: "", True: "met", False: "MISSED"}[r.met]
        peer = "" if r.peer is None else f"{r.peer} = {_num(r.peer_value)}"
        ratio = "–" if r.ratio is None else f"{r.ratio:.2f}×"
        lines.append(
            f"{r.section:10} {r.name:46} {_num(r.value):>9} {r.unit:9} "
            f"{_num(r.budget):>8} {verdict:7} {ratio:>6}  {peer}"
        )
        if r.note:
            lines.append(f"{'':10}   {r.note}")
    return "\n".join(lines)


def budget_table(rows: Sequence[Row]) -> str:
    """The rows that have a budget as a Markdown table (the README shows it): figure,
    budget, verdict, and the peer measured in the same run."""
    lines = [
        "| section | figure | measured | budget | verdict | peer, same run |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.met is None:
            continue
        peer = "–" if r.peer is None else f"{r.peer}: {_num(r.peer_value)} {r.unit}"
        if r.ratio is not None:
            peer += f" ({r.ratio:.2f}×)"
        verdict = "met" if r.met else f"**MISSED** ({_num(r.value)} > {_num(r.budget)})"
        lines.append(
            f"| {r.section} | {r.name} | {_num(r.value)} {r.unit} | ≤ {_num(r.budget)} {r.unit} "
            f"| {verdict} | {peer} |"
        )
    return "\n".join(lines)


def rows_of(path: Path) -> list[Row]:
    """The rows of a results file written by `python -m bench`."""
    fields = {f.name for f in dataclasses.fields(Row)}
    data = json.loads(path.read_text())
    return [Row(**{k: v for k, v in r.items() if k in fields}) for r in data["rows"]]


def normalised(pipeline_ms: float, calibration_ms: float) -> float:
    """Pipeline CPU per tick in units of the calibration loop measured in the same run."""
    return pipeline_ms / calibration_ms


def regression(current: float, baseline: float, factor: float = REGRESSION_FACTOR) -> str | None:
    """Why `current` (normalised) is a regression against `baseline`, or None."""
    if current > factor * baseline:
        return (
            f"pipeline {current / baseline:.1f}× the committed baseline "
            f"({current:.2f} vs {baseline:.2f} calibration units; limit {factor:g}×)"
        )
    return None
