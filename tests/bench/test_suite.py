"""The benchmark runner's pure parts: budgets, ratios, the table, the regression rule."""

from __future__ import annotations

import re
from pathlib import Path

from bench.bench_collect import rounds_of
from bench.suite import Row, budget_table, failed, normalised, regression, rows_of, table

ROOT = Path(__file__).resolve().parents[2]


def test_budget_met_missed_and_unmeasured() -> None:
    met = Row("pipeline", "a", 12.0, "ms", budget=20.0)
    missed = Row("pipeline", "b", 25.0, "ms", budget=20.0)
    unmeasured = Row("store", "c", None, "ms", budget=50.0, note="no recording")
    free = Row("ui", "d", 3.0, "ms")
    assert (met.met, missed.met, unmeasured.met, free.met) == (True, False, False, None)
    assert failed([met, missed, unmeasured, free]) == [missed, unmeasured]


def test_ratio_against_the_peer() -> None:
    row = Row("collection", "kvmtop", 60.0, "ms", 1.2 * 80.0, "virsh", 80.0)
    assert row.ratio == 0.75
    assert row.met is True
    assert Row("x", "no peer", 1.0, "ms").ratio is None
    assert Row("x", "zero peer", 1.0, "ms", peer="p", peer_value=0.0).ratio is None
    assert row.as_json()["ratio"] == 0.75 and row.as_json()["met"] is True


def test_table_states_each_verdict() -> None:
    text = table(
        [
            Row("store", "seek", 62.0, "ms", 50.0, "raw read", 31.0, "p95"),
            Row("store", "bytes", 140.0, "B", 150.0),
            Row("ui", "unknown", None, "ms"),
        ]
    )
    lines = text.splitlines()
    assert "MISSED" in lines[2] and "2.00×" in lines[2] and "raw read = 31" in lines[2]
    assert lines[3].strip() == "p95"
    assert " met " in lines[4]
    assert "–" in lines[5]


def test_regression_only_past_the_factor() -> None:
    baseline = normalised(50.0, 40.0)
    assert regression(normalised(140.0, 40.0), baseline) is None  # 2.8×: noise
    problem = regression(normalised(160.0, 40.0), baseline)
    assert problem is not None and "3.2×" in problem
    # A machine twice as slow doubles both figures: no regression.
    assert regression(normalised(100.0, 80.0), baseline) is None


def test_budget_table_says_missed_with_both_figures() -> None:
    text = budget_table(
        [
            Row("store", "seek", 62.0, "ms", 50.0, "raw read", 31.0),
            Row("store", "bytes", 140.0, "B", 150.0),
            Row("ui", "no budget", 3.0, "ms"),
        ]
    )
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, the two rows with a budget
    assert "| **MISSED** (62 > 50) | raw read: 31 ms (2.00×) |" in lines[2]
    assert lines[3] == "| store | bytes | 140 B | ≤ 150 B | met | – |"


def test_readme_budget_table_is_the_committed_results() -> None:
    """The README's measured figures are those of the results file it names, as
    `python -m bench --budgets FILE` prints them: never typed in by hand."""
    readme = (ROOT / "README.md").read_text()
    named = re.findall(r"`python -m bench --budgets (bench/results/[\w.-]+\.json)`", readme)
    assert len(named) == 1, named
    assert budget_table(rows_of(ROOT / named[0])) in readme


def test_collection_rounds_cover_the_ticks() -> None:
    assert rounds_of(40, 4) == [10, 10, 10, 10]
    assert rounds_of(10, 4) == [3, 3, 2, 2]
    assert rounds_of(3, 4) == [1, 1, 1]
