"""The report's streaming statistics: histogram, summary, figures, trend, plot series.

Every figure of `kvmtop report` is gathered one value at a time, in constant memory
per figure, and can be folded into another of the same figure over a later stretch
(the report's index merges minutes and hours: `kvmtop.report.index`).

The p95 comes from a logarithmic histogram (DDSketch, Masson et al., VLDB 2019): bin
i counts the values in (γ^(i-1), γ^i] with γ = (1 + α) / (1 − α), and a quantile is
read as its bin's midpoint 2γ^i / (γ + 1), within a relative error α (1 %) of an
exact order statistic. Its size depends on the spread of the values, not on their
number: at most ~1,400 bins span 10⁻³…10⁹, and a metric in practice fills a few
dozen.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PLOT_POINTS = 600
"""Buckets per plotted series, whatever the length of the range."""
RELATIVE_ERROR = 0.01
"""α of `LogHistogram`: quantiles within ±1 % of the exact value."""
ZERO = 1e-9
"""Values at or below this count in the histogram's zero bin."""
MIN_TREND_S = 300.0
"""Memory growth needs at least this span of data (the leak detector's minimum)."""
STATE_DIGITS = 7
"""Significant digits of the figures in `Stats.state()`: a relative error of 5e-7 at most,
far below what a report shows, for a fifth less index (kvmtop.report.index)."""


def rounded(v: float) -> float:
    """A figure as the JSON report gives it: to three decimals."""
    return round(v, 3)


class LogHistogram:
    """Counts of values in logarithmic bins; quantiles within `RELATIVE_ERROR`."""

    __slots__ = ("bins", "count", "zeros")
    GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
    INV_LOG_GAMMA = 1 / math.log(GAMMA)

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.zeros = 0
        self.count = 0

    def add(self, v: float) -> None:
        """Count one value (zero or negative values go to the zero bin)."""
        self.count += 1
        if v <= ZERO:
            self.zeros += 1
        else:
            i = math.ceil(math.log(v) * self.INV_LOG_GAMMA)
            self.bins[i] = self.bins.get(i, 0) + 1

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 ≤ q ≤ 1), None when nothing was counted."""
        if not self.count:
            return None
        rank = q * (self.count - 1)
        if rank < self.zeros:
            return 0.0
        seen = self.zeros
        for i in sorted(self.bins):
            seen += self.bins[i]
            if seen > rank:
                return 2 * self.GAMMA**i / (self.GAMMA + 1)
        return 2 * self.GAMMA ** max(self.bins) / (self.GAMMA + 1)


@dataclass(frozen=True, slots=True)
class Summary:
    """min / mean / p95 / max of one figure over the range, and how many values."""

    n: int
    min: float
    avg: float
    p95: float
    max: float

    def as_json(self) -> dict[str, float]:
        """The JSON object: the four figures (rounded) and the count."""
        return {
            "n": self.n,
            "min": rounded(self.min),
            "avg": rounded(self.avg),
            "p95": rounded(self.p95),
            "max": rounded(self.max),
        }


class Stats:
    """Streaming statistics of one figure: count, sum, min, max, integral, histogram."""

    __slots__ = ("hist", "integral", "max", "min", "n", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.integral = 0.0
        self.hist = LogHistogram()

    def add(self, v: float, dt_s: float | None) -> None:
        """One value, held for `dt_s` seconds (for the integral; None: not counted)."""
        self.n += 1
        self.total += v
        if v < self.min:
            self.min = v
        if v > self.max:
            self.max = v
        if dt_s is not None:
            self.integral += v * dt_s
        self.hist.add(v)

    def state(self) -> list[Any]:
        """A compact JSON-able form (`merge_state` reads it back): the figures to
        `STATE_DIGITS` significant digits, then the histogram's bins as flat pairs of
        (index minus the previous index, count), small numbers that compress well."""
        bins: list[int] = []
        previous = 0
        for i, c in sorted(self.hist.bins.items()):
            bins += (i - previous, c)
            previous = i
        return [
            self.n,
            *(
                float(f"{v:.{STATE_DIGITS}g}")
                for v in (self.total, self.min, self.max, self.integral)
            ),
            self.hist.zeros,
            bins,
        ]

    def merge_state(self, state: list[Any]) -> None:
        """Fold in the figures a `state()` describes (the same figure over another
        stretch of time; the histogram's bins add up exactly)."""
        n, total, lo, hi, integral, zeros, bins = state
        self.n += n
        self.total += total
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.integral += integral
        hist = self.hist
        hist.count += n
        hist.zeros += zeros
        counts = hist.bins
        index = 0
        for step, count in zip(bins[::2], bins[1::2], strict=True):
            index += step
            counts[index] = counts.get(index, 0) + count

    def summary(self) -> Summary | None:
        """The figures, None when no value was known."""
        if not self.n:
            return None
        p95 = min(max(self.hist.quantile(0.95) or 0.0, self.min), self.max)
        return Summary(self.n, self.min, self.total / self.n, p95, self.max)


class Trend:
    """Least-squares slope of (t, v), streaming: five sums, no points kept."""

    __slots__ = ("first_s", "last_s", "n", "st", "stt", "stv", "sv")

    def __init__(self) -> None:
        self.n = 0
        self.first_s = self.last_s = 0.0
        self.st = self.sv = self.stt = self.stv = 0.0

    def add(self, t: float, v: float) -> None:
        """One point (t in seconds)."""
        if not self.n:
            self.first_s = t
        self.last_s = t
        x = t - self.first_s  # small numbers keep the sums exact enough
        self.n += 1
        self.st += x
        self.sv += v
        self.stt += x * x
        self.stv += x * v

    def merge(self, other: Trend) -> None:
        """Fold the points of a later stretch in (its sums shifted to our origin)."""
        if not other.n:
            return
        if not self.n:
            self.first_s = other.first_s
        d = other.first_s - self.first_s
        self.stt += other.stt + 2 * d * other.st + other.n * d * d
        self.stv += other.stv + d * other.sv
        self.st += other.st + other.n * d
        self.sv += other.sv
        self.n += other.n
        self.last_s = other.last_s

    def state(self) -> list[float]:
        """A JSON-able form (`from_state` reads it back)."""
        return [self.n, self.first_s, self.last_s, self.st, self.sv, self.stt, self.stv]

    @classmethod
    def from_state(cls, state: list[float]) -> Trend:
        """The `Trend` a `state()` describes."""
        trend = cls()
        n, trend.first_s, trend.last_s, trend.st, trend.sv, trend.stt, trend.stv = state
        trend.n = int(n)
        return trend

    def slope(self) -> float | None:
        """Units of v per second; None over less than `MIN_TREND_S` of data."""
        if self.n < 3 or self.last_s - self.first_s < MIN_TREND_S:
            return None
        den = self.n * self.stt - self.st * self.st
        return (self.n * self.stv - self.st * self.sv) / den if den > 0 else None


class Series:
    """A plotted figure over [start_s, end_s]: `PLOT_POINTS` bucket maxima (NaN: none)."""

    __slots__ = ("end_s", "start_s", "values", "width_s")

    def __init__(self, start_s: float, end_s: float) -> None:
        self.start_s, self.end_s = start_s, end_s
        self.width_s = max(end_s - start_s, 1e-9) / PLOT_POINTS
        self.values = array("d", [math.nan]) * PLOT_POINTS

    def add(self, t: float, v: float) -> None:
        """Fold one value into its bucket (times outside the range go to the edge)."""
        i = int((t - self.start_s) / self.width_s)
        i = 0 if i < 0 else PLOT_POINTS - 1 if i >= PLOT_POINTS else i
        cur = self.values[i]
        if not cur >= v:  # also when the bucket is empty (NaN compares false)
            self.values[i] = v

    def points(self) -> Iterator[tuple[float, float]]:
        """(bucket middle time, value) of every filled bucket."""
        for i, v in enumerate(self.values):
            if not math.isnan(v):
                yield self.start_s + (i + 0.5) * self.width_s, v
