"""Counter arithmetic every rate is made of: deltas, per-second, the interval guard.

Layer: model (pure). No I/O. The rules are in `kvmtop.model.rates`
(docs/sources.md#counters-and-rates).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kvmtop.model.units import NS_PER_MS, NS_PER_S

INTERVAL_MIN_RATIO = 0.5
"""Guest rates over an interval shorter than this share of the nominal one are unknown.

A guest's counters are not stamped when libvirt reads them: the bulk stats call reads
one domain after another and the sample is stamped when it returns, so a domain's
true read time is off by up to the call's length (50-110 ms for the lab's 12 guests
at load 9; over 1 s seen under heavy load). Ticks on a fixed grid keep that error a
small share of the interval; an interval under half the nominal one comes from a
tick that ran late followed by one on time, or from a burst of catch-up ticks (issue
#16: 0.1 s intervals after a stall gave 941 Mbit/s for a guest sending 16), where
the same error is a large share of Δt."""

INTERVAL_MAX_RATIO = 10.0
"""Guest rates over an interval longer than this multiple of the nominal one are
unknown.

Skipped ticks are ordinary on a slow or loaded host: kvmtop skips the slots its own
tick overran, so a tick that costs more than the interval gives intervals of 2x, 3x
or 4x, and a rate over them is the true average (measured in the nested lab's L1
host, whose CPUs are emulated: ticks of a 1 s interval came every 3-4 s). A stuck
guest no longer stretches an interval (its bulk call is abandoned at the deadline,
kvmtop/collectors/libvirt/collector.py). An interval over 10x is a gap (kvmtop or the host
stopped, samples missing from a recording): a rate over it would be an average that
hides what happened in it while detectors and plots take it for one interval."""


def counter_delta(prev: int | None, cur: int | None) -> int | None:
    """Δ of a cumulative counter; None when either side is unknown or it went back."""
    if prev is None or cur is None or cur < prev:
        return None
    return cur - prev


def per_second(delta: float | None, dt_s: float) -> float | None:
    """delta / dt, or None when the delta is unknown or the interval is not positive."""
    if delta is None or dt_s <= 0:
        return None
    return delta / dt_s


def rate(prev: int | None, cur: int | None, dt_s: float) -> float | None:
    """Per-second rate of a cumulative counter (None on reset or missing value).

    `per_second(counter_delta(prev, cur), dt_s)`, inlined: it runs for every counter
    of every guest on every tick.
    """
    if prev is None or cur is None or cur < prev or dt_s <= 0:
        return None
    return (cur - prev) / dt_s


def interval_gap(dt_s: float, prev_interval_s: float, cur_interval_s: float) -> str | None:
    """Why guest rates over `dt_s` would not be one tick's rates, or None when they are.

    The nominal interval is the sampler's (`Sample.interval_s`) on either side: after
    the interval was changed, anything between half the shorter and three times the
    longer one is accepted (`INTERVAL_MIN_RATIO`, `INTERVAL_MAX_RATIO`).
    """
    low = INTERVAL_MIN_RATIO * min(prev_interval_s, cur_interval_s)
    high = INTERVAL_MAX_RATIO * max(prev_interval_s, cur_interval_s)
    if low <= dt_s <= high:
        return None
    nominal = cur_interval_s
    if dt_s < low:
        return (
            f"interval {dt_s:.2f} s is under {INTERVAL_MIN_RATIO:g}x the nominal "
            f"{nominal:g} s (a late tick or a burst after a stall): rates over it "
            "would be spikes"
        )
    return (
        f"interval {dt_s:.1f} s is over {INTERVAL_MAX_RATIO:g}x the nominal {nominal:g} s "
        "(a gap: kvmtop or the host stopped, or samples are missing): a rate over it "
        "would average the gap away"
    )


def latency_ms(
    prev_time_ns: int | None,
    cur_time_ns: int | None,
    prev_reqs: int | None,
    cur_reqs: int | None,
    min_ops: int,
) -> float | None:
    """Mean ms per request over the interval, only with at least `min_ops` requests."""
    if prev_reqs is None or cur_reqs is None or prev_time_ns is None or cur_time_ns is None:
        return None
    dreqs = cur_reqs - prev_reqs
    dtime = cur_time_ns - prev_time_ns
    if dtime < 0 or dreqs < max(min_ops, 1):
        return None
    return dtime / dreqs / NS_PER_MS


def known_sum(values: Iterable[float | None]) -> float | None:
    """Sum of known values; None when none is known.

    One pass without building a list (it runs several times per guest per tick: a
    disk's IOPS, the per-guest totals); the same sums, left to right.
    """
    total: float | None = None
    for v in values:
        if v is not None:
            total = v if total is None else total + v
    return total


def column_sums(rows: list[tuple[float | None, ...]], width: int) -> Sequence[float | None]:
    """`known_sum` of each of the `width` columns of `rows` (all None without rows)."""
    if len(rows) == 1:
        # Most guests have one disk and one vNIC: `known_sum` of one value is that value.
        return rows[0]
    if not rows:
        return (None,) * width
    return [known_sum(column) for column in zip(*rows, strict=True)]


def known_max(values: Iterable[float | None]) -> float | None:
    """Largest known value; None when none is known."""
    return max((v for v in values if v is not None), default=None)


def ms_of_ns(ns: int | None) -> float | None:
    """Nanoseconds as milliseconds (None stays None)."""
    return None if ns is None else ns / NS_PER_MS


def pct_of_wall(prev: int | None, cur: int | None, dt_s: float) -> float | None:
    """Percent of wall time of an ns counter over the interval."""
    r = rate(prev, cur, dt_s)
    return None if r is None else 100.0 * r / NS_PER_S


def to_bits(v: float | None) -> float | None:
    """Bytes (per second) as bits (None stays None)."""
    return None if v is None else v * 8
