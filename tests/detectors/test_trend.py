"""The decimated trend series: bucketing, sliding window, pairwise merging."""

from __future__ import annotations

from dataclasses import dataclass

from kvmtop.detectors.settings import MemoryLeakSettings, QemuGrowthSettings
from kvmtop.detectors.trend import (
    TrendSeries,
    evaluate,
    evaluation_due,
    phase,
    trend_series,
)


def test_points_in_one_bucket_are_averaged() -> None:
    s = TrendSeries(window_s=100, bucket_s=10, max_points=10)
    for t, y in [(0, 1.0), (4, 3.0), (10, 5.0)]:
        s.add(t, y)
    assert s.times == [2.0, 10.0] and s.values == [2.0, 5.0]


def test_window_slides_and_merging_bounds_the_size() -> None:
    s = TrendSeries(window_s=1000, bucket_s=1, max_points=8)
    for t in range(100):
        s.add(float(t), float(t))
    assert len(s) <= 8 and s.bucket_s > 1
    # Merging keeps a straight line straight (weighted means of both t and y).
    assert all(abs(t - y) < 1e-9 for t, y in zip(s.times, s.values, strict=True))
    s.add(2000.0, 0.0)
    assert s.times == [2000.0] and s.duration_s == 0.0
    s.clear()
    assert len(s) == 0 and s.duration_s == 0.0


def test_evaluate_and_phase() -> None:
    s = TrendSeries(window_s=10_000, bucket_s=1, max_points=50)
    for t in range(30):
        s.add(float(t * 10), 100.0 + 2.0 * t + (0.5 if t % 2 else -0.5))
    r = evaluate(s, p_max=0.01, tau_min=0.5, confidence=0.95)
    assert r.rising and abs(r.slope - 0.2) < 0.01 and r.points == 30 and r.duration_s == 290
    assert phase("u1", 30.0) == phase("u1", 30.0) and 0 <= phase("u2", 30.0) < 30.0


def test_trend_series_buckets_hold_twice_the_points_of_the_shortest_span() -> None:
    for settings in (MemoryLeakSettings(), QemuGrowthSettings(min_duration_s=600.0)):
        series = trend_series(settings)
        assert len(series) == 0 and series.window_s == settings.window_s
        assert series.max_points == settings.max_points
        assert series.bucket_s == settings.min_duration_s / (2 * settings.min_points)


@dataclass
class _State:
    next_eval_s: float | None = None


def test_evaluations_start_at_the_guests_phase_then_keep_the_period() -> None:
    state = _State()
    first = 1000.0 + phase("u1", 30.0)
    assert not evaluation_due(state, 1000.0, "u1", 30.0) and phase("u1", 30.0) > 0
    assert state.next_eval_s == first
    assert evaluation_due(state, first, "u1", 30.0)
    assert state.next_eval_s == first + 30.0
    assert not evaluation_due(state, first + 29.0, "u1", 30.0)
    assert evaluation_due(state, first + 45.0, "u1", 30.0)  # a late tick: due
    assert state.next_eval_s == first + 45.0 + 30.0  # and the period counts from it
