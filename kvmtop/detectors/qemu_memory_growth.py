"""`qemu_memory_growth`: the QEMU process growing beyond guest RAM
(docs/detectors.md#qemu_memory_growth).

over = `balloon.rss` − `balloon.current` (QEMU RSS minus the guest's balloon size).
QEMU RSS grows as guest RAM is first touched and rarely shrinks, so RSS alone is not
a leak signal; `over` far above zero and still rising means QEMU or vhost memory
(device state, caches, a real QEMU leak). Flag when over > max(512 MiB, 10 % of
current) and the same Mann–Kendall + Theil–Sen test as `memory_leak` says it grows.
`balloon.rss` is read from /proc/<pid>/stat by libvirt, so it needs no stats period.
The cause "leak:<guest uuid>" is the one `memory_leak` gives a leak in the guest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kvmtop.detectors.base import (
    GuestView,
    Observation,
    PerGuest,
    Tick,
    cause_key,
    good_verdict,
    known,
    verdict,
)
from kvmtop.detectors.settings import QemuGrowthSettings
from kvmtop.detectors.trend import TrendSeries, evaluate, evaluation_due, trend_series
from kvmtop.model.units import MIB

ID = "qemu_memory_growth"


@dataclass(slots=True)
class _Guest:
    series: TrendSeries
    current_bytes: int
    next_eval_s: float | None = None


class QemuMemoryGrowth(PerGuest[_Guest]):
    """QEMU-side memory growth detector (see the module docstring); per guest, its
    series."""

    id = ID

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """One verdict per guest whose evaluation is due."""
        for g in tick.guests:
            if g.settings.enabled(ID):
                obs = self._guest(tick, g, g.settings.qemu_memory_growth)
                if obs is not None:
                    yield obs

    def _guest(self, tick: Tick, g: GuestView, s: QemuGrowthSettings) -> Observation | None:
        b = g.sample.balloon
        if b is None or b.rss_bytes is None or not b.current_bytes:
            self._guests.pop(g.uuid, None)
            return None
        state = self._guests.get(g.uuid)
        moved = (
            state is not None
            and abs(b.current_bytes - state.current_bytes) > 0.01 * state.current_bytes
        )
        if state is None or moved:
            # A balloon target change moves `over` by itself: start a new series.
            state = _Guest(trend_series(s), b.current_bytes)
            self._guests[g.uuid] = state
        over = b.rss_bytes - b.current_bytes
        state.series.add(tick.wall_s, float(over))
        series = state.series
        if series.duration_s < s.min_duration_s or len(series) < s.min_points:
            return None
        if not evaluation_due(state, tick.wall_s, g.uuid, s.eval_every_s):
            return None
        limit = max(s.min_over_mib * MIB, s.min_over_pct / 100.0 * b.current_bytes)
        if over <= limit:
            # Below the size that matters: no need for the O(n²) test.
            if not tick.tracking(ID, g.uuid):
                return None
            return good_verdict(g, s, g.uuid, hold_s=s.hold_s)
        r = evaluate(series, s.p_max, s.tau_min, s.confidence)
        per_h = 3600.0 / MIB
        bad = r.rising
        evidence = known(
            {
                "over_mib": over / MIB,
                "limit_mib": limit / MIB,
                "rss_mib": b.rss_bytes / MIB,
                "guest_ram_mib": b.current_bytes / MIB,
                "slope_mib_per_h": r.slope * per_h,
                "slope_low_mib_per_h": r.low * per_h,
                "slope_high_mib_per_h": r.high * per_h,
                "tau": r.tau,
                "p_value": r.p,
                "span_min": r.duration_s / 60.0,
            }
        )
        message = (
            f"QEMU RSS {b.rss_bytes / MIB:.0f} MiB is {over / MIB:.0f} MiB above guest RAM "
            f"and growing ~{r.slope * per_h:.0f} MiB/h "
            f"({100 * s.confidence:.0f}% CI {r.low * per_h:.0f}–{r.high * per_h:.0f}): "
            "QEMU/vhost process memory growing beyond guest RAM"
        )
        return verdict(
            g,
            s,
            g.uuid,
            bad=bad,
            hold_s=s.hold_s,
            message=message if bad else "",
            evidence=evidence,
            baseline=dict(tick.baseline),
            cause=cause_key("leak", g.uuid) if bad else "",
        )
