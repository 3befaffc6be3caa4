"""Robust trend statistics and rolling medians, in pure Python.

Layer: detectors (pure). No numpy/scipy: the series are short (tens to about a hundred
points) and the detectors run on every tick.

- Mann–Kendall trend test (Mann 1945; Kendall 1975) with the variance correction for
  autocorrelated data of Hamed & Rao (1998, J. Hydrology 204:182-196), as in R
  `modifiedmk::mmkh` and `pymannkendall.hamed_rao_modification_test`
  (docs/detectors.md#trend-test, step 1).
- Theil–Sen slope with Sen's (1968, JASA 63:1379, eq. 2.6) distribution-free confidence
  interval, the method of `scipy.stats.theilslopes` (docs/detectors.md#trend-test, step 2).
- `RollingMedian`: median of the values seen in the last `span_s` seconds, the "k × own
  rolling median" baseline (docs/detectors.md#rolling-median).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache


def norm_sf(z: float) -> float:
    """Upper tail of the standard normal distribution, P(Z > z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@cache
def norm_ppf(p: float) -> float:
    """Inverse of the standard normal CDF (quantile), by bisection on `math.erfc`.

    Accurate to about 1e-12; cached because the detectors ask for a handful of fixed
    levels (0.975 for a 95 % interval).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {p}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if 1.0 - norm_sf(mid) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2.0


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (mean of the two middle values for even length)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of an empty sequence")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def _tie_term(values: Sequence[float]) -> float:
    """Σ t(t−1)(2t+5) over groups of tied values (the tie correction of Var(S))."""
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return float(sum(t * (t - 1) * (2 * t + 5) for t in counts.values() if t > 1))


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties given the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        mean_rank = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[order[k]] = mean_rank
        i = j + 1
    return ranks


def _autocorrelation(values: Sequence[float]) -> list[float]:
    """Sample autocorrelation r_k = Σ y_t·y_{t+k} / Σ y_t² (y = values − mean), k = 0..n−1."""
    n = len(values)
    mean = sum(values) / n
    y = [v - mean for v in values]
    c0 = sum(v * v for v in y)
    if c0 == 0.0:
        return [1.0] + [0.0] * (n - 1)
    return [sum(y[t] * y[t + k] for t in range(n - k)) / c0 for k in range(n)]


@dataclass(frozen=True, slots=True)
class MannKendall:
    """Result of the Mann–Kendall test with the Hamed–Rao correction.

    Attributes:
        n: number of points.
        s: Mann–Kendall S = Σ_{i<j} sign(x_j − x_i).
        var_s: Var(S) after the tie correction and the Hamed–Rao factor.
        correction: the Hamed–Rao factor n/n*_s applied to Var(S) (1 = none).
        z: normal score with continuity correction.
        p: two-sided p-value.
        tau: Kendall's τ = S / (n(n−1)/2).
    """

    n: int
    s: int
    var_s: float
    correction: float
    z: float
    p: float
    tau: float


def mann_kendall(values: Sequence[float], acf_alpha: float = 0.05) -> MannKendall:
    """Mann–Kendall test on evenly spaced values, Hamed–Rao variance correction.

    Hamed & Rao (1998): detrend with Sen's slope per index, rank the residuals, and
    inflate Var(S) by n/n*_s = 1 + 2/(n(n−1)(n−2)) · Σ_{k=1}^{n−1} (n−k)(n−k−1)(n−k−2) ρ_k,
    summing only the rank autocorrelations ρ_k outside the ±z_{1−α/2}/√n band (α =
    `acf_alpha`, 5 % in the paper). A non-positive factor (possible with strong negative
    autocorrelation in short series) is not used: the plain variance is kept, which is
    the conservative choice.

    Args:
        values: the series, oldest first, roughly evenly spaced.
        acf_alpha: significance level for keeping an autocorrelation lag.

    Raises:
        ValueError: fewer than 3 values (the correction divides by n(n−1)(n−2)).
    """
    n = len(values)
    if n < 3:
        raise ValueError(f"Mann–Kendall needs at least 3 values, got {n}")
    s = 0
    for i in range(n - 1):
        xi = values[i]
        for j in range(i + 1, n):
            d = values[j] - xi
            s += (d > 0) - (d < 0)
    var_s = (n * (n - 1) * (2 * n + 5) - _tie_term(values)) / 18.0

    slope = theil_sen(list(range(n)), values).slope
    ranks = _ranks([v - slope * i for i, v in enumerate(values)])
    acf = _autocorrelation(ranks)
    band = norm_ppf(1.0 - acf_alpha / 2.0) / math.sqrt(n)
    total = 0.0
    for k in range(1, n):
        if abs(acf[k]) > band:
            total += (n - k) * (n - k - 1) * (n - k - 2) * acf[k]
    correction = 1.0 + 2.0 * total / (n * (n - 1) * (n - 2))
    if correction > 0.0:
        var_s *= correction
    else:
        correction = 1.0

    # Continuity correction: |S| − 1 (Kendall 1975).
    z = 0.0 if var_s <= 0.0 or s == 0 else (s - 1 if s > 0 else s + 1) / math.sqrt(var_s)
    return MannKendall(
        n=n,
        s=s,
        var_s=var_s,
        correction=correction,
        z=z,
        p=min(1.0, 2.0 * norm_sf(abs(z))),
        tau=s / (0.5 * n * (n - 1)),
    )


@dataclass(frozen=True, slots=True)
class TheilSen:
    """Theil–Sen slope with its confidence interval (units of y per unit of x).

    `low`/`high` are NaN when the interval cannot be formed (too few pairs).
    """

    slope: float
    intercept: float
    low: float
    high: float


def theil_sen(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> TheilSen:
    """Median of pairwise slopes, with Sen's (1968) confidence interval.

    The interval takes the order statistics of the N pairwise slopes at
    (N ∓ z·σ)/2, where σ² = Var(S) of Kendall's statistic with tie corrections for x
    and y (Sen 1968, eq. 2.6) and z the normal quantile for `confidence`. The
    intercept is median(y) − slope·median(x) (Conover's estimator, scipy's default).

    Raises:
        ValueError: x and y differ in length, or x has fewer than two distinct values.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError("x and y must have the same length")
    slopes: list[float] = []
    for i in range(n - 1):
        xi, yi = x[i], y[i]
        for j in range(i + 1, n):
            dx = x[j] - xi
            if dx > 0:
                slopes.append((y[j] - yi) / dx)
            elif dx < 0:
                slopes.append((yi - y[j]) / -dx)
    if not slopes:
        raise ValueError("Theil–Sen needs at least two distinct x values")
    slopes.sort()
    m = len(slopes)
    mid = m // 2
    slope = slopes[mid] if m % 2 else (slopes[mid - 1] + slopes[mid]) / 2.0
    intercept = median(y) - slope * median(x)

    sigma_sq = (n * (n - 1) * (2 * n + 5) - _tie_term(x) - _tie_term(y)) / 18.0
    z = norm_ppf(0.5 + confidence / 2.0)
    if sigma_sq <= 0.0:
        return TheilSen(slope, intercept, math.nan, math.nan)
    spread = z * math.sqrt(sigma_sq)
    # 1-based ranks of the bounds, rounded to the nearest order statistic and clipped.
    lower = max(round((m - spread) / 2.0), 1)
    upper = min(round((m + spread) / 2.0) + 1, m)
    return TheilSen(slope, intercept, slopes[lower - 1], slopes[upper - 1])


def resistant_slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Slope of Tukey's resistant line (Tukey 1977, *Exploratory Data Analysis*, ch. 10).

    (median y of the right third − median y of the left third) / (the same for x), for
    points sorted by x. O(n log n) and robust to outliers: the detectors use it as a
    cheap screen before the O(n²) Theil–Sen. None with fewer than 3 points or no x
    spread.
    """
    n = len(x)
    if n < 3 or len(y) != n:
        return None
    third = n // 3
    dx = median(x[n - third :]) - median(x[:third])
    if dx <= 0:
        return None
    return (median(y[n - third :]) - median(y[:third])) / dx


class RollingMedian:
    """Median of the values added during the last `span_s` seconds.

    Keeps the window in arrival order (to expire) and in sorted order (to answer):
    `add` is O(n) for the list insert, `median` O(1). With a 15 min span at a 2 s
    tick n is at most 450.
    """

    __slots__ = ("_by_time", "_sorted", "span_s")

    def __init__(self, span_s: float) -> None:
        """Create an empty window spanning `span_s` seconds."""
        self.span_s = span_s
        self._by_time: deque[tuple[float, float]] = deque()
        self._sorted: list[float] = []

    def add(self, t: float, value: float) -> None:
        """Add `value` observed at time `t` and drop values older than `t − span_s`."""
        self._by_time.append((t, value))
        insort(self._sorted, value)
        horizon = t - self.span_s
        while self._by_time and self._by_time[0][0] < horizon:
            _, old = self._by_time.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def __len__(self) -> int:
        return len(self._sorted)

    def __getstate__(self) -> tuple[float, list[float], list[float]]:
        """Span, times and values: a replay checkpoint (kvmtop.feed.checkpoint) rebuilds the
        sorted order rather than storing it twice."""
        return (self.span_s, [t for t, _ in self._by_time], [v for _, v in self._by_time])

    def __setstate__(self, state: tuple[float, list[float], list[float]]) -> None:
        self.span_s, times, values = state
        self._by_time = deque(zip(times, values, strict=True))
        self._sorted = sorted(values)

    @property
    def covered_s(self) -> float:
        """Seconds between the oldest and the newest value held."""
        if not self._by_time:
            return 0.0
        return self._by_time[-1][0] - self._by_time[0][0]

    def median(self) -> float | None:
        """The current median, or None when empty."""
        n = len(self._sorted)
        if n == 0:
            return None
        mid = n // 2
        return self._sorted[mid] if n % 2 else (self._sorted[mid - 1] + self._sorted[mid]) / 2.0
