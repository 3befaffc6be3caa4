"""A decimated time series and the leak-style trend test on it (docs/detectors.md#trend-test).

Layer: detectors (pure). Used by `memory_leak` (guest used memory) and
`qemu_memory_growth` (QEMU RSS above guest RAM).

Cost: the test is O(n²) in the number of points (Mann–Kendall S, all pairwise
Theil–Sen slopes, the rank autocorrelations), so the series keeps at most
`max_points`: points closer than the bucket width are averaged into one, and when the
series grows past `max_points` neighbours are merged pairwise and the bucket width
doubles. Early on (the first minutes, when detection speed matters) the resolution is
fine; over a 2 h window it coarsens to about a minute.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Protocol

from kvmtop.detectors.stats import mann_kendall, theil_sen


class TrendSeries:
    """(time, value) points over a sliding window, averaged into buckets.

    Args:
        window_s: points older than this (relative to the newest) are dropped.
        bucket_s: initial bucket width; points within one bucket are averaged.
        max_points: above this many buckets, neighbours merge pairwise.
    """

    __slots__ = ("_n", "_open_s", "_t", "_y", "bucket_s", "max_points", "window_s")

    def __init__(self, window_s: float, bucket_s: float, max_points: int) -> None:
        """Create an empty series."""
        self.window_s = window_s
        self.bucket_s = bucket_s
        self.max_points = max_points
        self._t: list[float] = []
        self._y: list[float] = []
        self._n: list[int] = []
        self._open_s = 0.0

    def add(self, t: float, y: float) -> None:
        """Add one observation at time `t` (not earlier than the last one)."""
        if self._t and t - self._open_s < self.bucket_s:
            # Running mean of the bucket (time and value).
            n = self._n[-1]
            self._t[-1] = (self._t[-1] * n + t) / (n + 1)
            self._y[-1] = (self._y[-1] * n + y) / (n + 1)
            self._n[-1] = n + 1
        else:
            self._t.append(t)
            self._y.append(y)
            self._n.append(1)
            self._open_s = t
        horizon = t - self.window_s
        drop = 0
        while drop < len(self._t) and self._t[drop] < horizon:
            drop += 1
        if drop:
            del self._t[:drop], self._y[:drop], self._n[:drop]
        if len(self._t) > self.max_points:
            self._halve()

    def _halve(self) -> None:
        """Merge neighbours pairwise (weighted by their counts) and double the width."""
        t, y, n = [], [], []
        for i in range(0, len(self._t) - 1, 2):
            a, b = self._n[i], self._n[i + 1]
            t.append((self._t[i] * a + self._t[i + 1] * b) / (a + b))
            y.append((self._y[i] * a + self._y[i + 1] * b) / (a + b))
            n.append(a + b)
        if len(self._t) % 2:
            t.append(self._t[-1])
            y.append(self._y[-1])
            n.append(self._n[-1])
        self._t, self._y, self._n = t, y, n
        self.bucket_s *= 2

    def clear(self) -> None:
        """Forget every point (the bucket width stays)."""
        self._t.clear()
        self._y.clear()
        self._n.clear()

    def __len__(self) -> int:
        return len(self._t)

    @property
    def duration_s(self) -> float:
        """Time between the first and last bucket."""
        return self._t[-1] - self._t[0] if self._t else 0.0

    @property
    def times(self) -> list[float]:
        """Bucket times, oldest first."""
        return list(self._t)

    @property
    def values(self) -> list[float]:
        """Bucket means, oldest first."""
        return list(self._y)


@dataclass(frozen=True, slots=True)
class TrendResult:
    """Outcome of one trend evaluation (slopes per second, in the series' units).

    `rising` is the whole rule of docs/detectors.md#trend-test: MK p below the limit, τ
    above its minimum and the Theil–Sen lower bound above zero. The caller adds its own
    slope floor.
    """

    rising: bool
    slope: float
    low: float
    high: float
    tau: float
    p: float
    points: int
    duration_s: float


def evaluate(series: TrendSeries, p_max: float, tau_min: float, confidence: float) -> TrendResult:
    """Mann–Kendall (Hamed–Rao) plus Theil–Sen with its CI on the series."""
    mk = mann_kendall(series.values)
    ts = theil_sen(series.times, series.values, confidence)
    rising = mk.p < p_max and mk.tau > tau_min and ts.low > 0
    return TrendResult(
        rising=rising,
        slope=ts.slope,
        low=ts.low,
        high=ts.high,
        tau=mk.tau,
        p=mk.p,
        points=len(series),
        duration_s=series.duration_s,
    )


def phase(uuid: str, period_s: float) -> float:
    """A stable offset in [0, period_s) for a guest, to spread evaluations over ticks.

    crc32 rather than `hash()`: the same guest gets the same phase in every run, so
    replay evaluates on the same ticks as live.
    """
    return (zlib.crc32(uuid.encode()) % 1000) / 1000.0 * period_s


class TrendSettings(Protocol):
    """What a trend check's settings say of its series (`MemoryLeakSettings`,
    `QemuGrowthSettings`)."""

    @property
    def window_s(self) -> float:
        """The span of the series."""
        ...

    @property
    def min_duration_s(self) -> float:
        """The shortest span the test judges."""
        ...

    @property
    def min_points(self) -> int:
        """The fewest points the test judges."""
        ...

    @property
    def max_points(self) -> int:
        """Above this many points, neighbours merge."""
        ...


def trend_series(s: TrendSettings) -> TrendSeries:
    """An empty series as a trend check keeps one per guest: points in buckets of
    `min_duration_s` / (2 × `min_points`), so the shortest span judged holds twice
    the points the test needs."""
    return TrendSeries(s.window_s, s.min_duration_s / (2 * s.min_points), s.max_points)


class Scheduled(Protocol):
    """A guest's trend state: when its test runs next (None: not yet scheduled)."""

    next_eval_s: float | None


def evaluation_due(state: Scheduled, now_s: float, uuid: str, every_s: float) -> bool:
    """Whether the guest `uuid`'s trend test runs at `now_s`, once its series is long
    enough to judge: the first time `phase(uuid, every_s)` later (the guests' tests
    spread over ticks), then at most every `every_s`. When it is due, the next one is
    set `every_s` from now."""
    if state.next_eval_s is None:
        state.next_eval_s = now_s + phase(uuid, every_s)
    if now_s < state.next_eval_s:
        return False
    state.next_eval_s = now_s + every_s
    return True
