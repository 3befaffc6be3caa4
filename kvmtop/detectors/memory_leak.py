"""`memory_leak`: guest used memory trending up, with time to exhaustion
(docs/detectors.md#memory_leak).

Signal: used = balloon available − usable (guest MemTotal − MemAvailable); fallback
available − unused − disk_caches for guests that do not report usable (page cache is
then subtracted explicitly, so cache growth is not a leak). Host RSS is not used: it
equals guest RAM from boot (tests/lab/README.md#known-limits-of-this-machine) and
never shows a guest leak.

One point per balloon update (`balloon.last-update` advancing; the collector repeats
the last balloon stats on ticks that do not fetch them). The trend test (Hamed–Rao
Mann–Kendall + Theil–Sen CI) runs at most every `eval_every_s` per guest, staggered
by guest, once the series spans `min_duration_s`, or `urgent_duration_s` when its
robust slope would exhaust the guest's memory within `urgent_tte_s`; each evaluation is
one hysteresis observation. A leak's cause, "leak:<guest uuid>", is shared by `qemu_memory_growth`
of the same guest.

The series restarts on: guest reboot (fault counters go back), balloon target change
(`balloon.current` moves > 1 %), guest RAM change (`available` moves), a large drop
of used memory (freed: the old trend is over), stale stats (then the check pauses and
says so). Missing stats are reported as such (info), never guessed; a reply without
the guest's figures, or a tick the guest did not answer (not responding), less than
`stale_after_s` after the last good one only skips a point.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from kvmtop.detectors.base import (
    GuestView,
    Observation,
    PerGuest,
    Tick,
    cause_key,
    fmt_duration,
    known,
    verdict,
)
from kvmtop.detectors.settings import MemoryLeakSettings
from kvmtop.detectors.stats import resistant_slope
from kvmtop.detectors.trend import (
    TrendResult,
    TrendSeries,
    evaluate,
    evaluation_due,
    trend_series,
)
from kvmtop.model.rates.guest import guest_used_bytes
from kvmtop.model.sample import BalloonSample
from kvmtop.model.units import MIB

ID = "memory_leak"


def used_and_left(b: BalloonSample) -> tuple[int, int] | None:
    """(used, usable-left) bytes from the balloon, or None when they cannot be known:
    used as the guest table shows it (`guest_used_bytes`), left the rest of MemTotal."""
    used = guest_used_bytes(b)
    if used is None or b.available_bytes is None:
        return None
    return used, b.available_bytes - used


leak_series = trend_series
"""An empty used-memory series as the check keeps one per guest (`trend_series`)."""


@dataclass(slots=True)
class _Guest:
    """Per-guest leak state."""

    series: TrendSeries
    last_update_s: int | None = None
    current_bytes: int | None = None
    available_bytes: int | None = None
    used_bytes: int | None = None
    faults: tuple[int | None, int | None] = (None, None)
    next_eval_s: float | None = None


class MemoryLeak(PerGuest[_Guest]):
    """Guest memory leak detector (see the module docstring); per guest, its series."""

    id = ID

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """Freshness verdicts every tick; a trend verdict when an evaluation is due."""
        out: list[Observation] = []
        tracked = tick.tracked_keys(ID)
        for g in tick.guests:
            if g.settings.enabled(ID):
                self._guest(tick, g, g.settings.memory_leak, tracked, out)
                if out:
                    # Guest by guest, as a generator per guest did: the engine counts
                    # them before the next guest's `tracked` checks (a live view).
                    yield from out
                    out.clear()

    @staticmethod
    def _obs(
        g: GuestView,
        s: MemoryLeakSettings,
        kind: str,
        bad: bool,
        *,
        severity: str = "warning",
        message: str = "",
        evidence: dict[str, float] | None = None,
        baseline: dict[str, float] | None = None,
        immediate: bool = False,
        cause: str = "",
    ) -> Observation:
        """An observation about this guest; `kind` is "trend" or "data" (freshness)."""
        return verdict(
            g,
            s,
            f"{g.uuid}:{kind}",
            bad=bad,
            severity=severity,
            message=message,
            evidence=evidence or {},
            baseline=baseline or {},
            immediate=immediate,
            hold_s=s.hold_s,
            cause=cause,
        )

    def _data(self, g: GuestView, s: MemoryLeakSettings, problem: str | None) -> Observation:
        """The stats-freshness observation: info while the check cannot run."""
        return self._obs(
            g,
            s,
            "data",
            problem is not None,
            severity="info",
            message=problem or "",
            immediate=True,
        )

    def _trend_off(
        self, g: GuestView, s: MemoryLeakSettings, tracked: Collection[str], out: list[Observation]
    ) -> None:
        """A good trend verdict at once (the series restarts), when it clears something."""
        if f"{g.uuid}:trend" in tracked:
            out.append(self._obs(g, s, "trend", False, immediate=True))

    def _guest(
        self,
        tick: Tick,
        g: GuestView,
        s: MemoryLeakSettings,
        tracked: Collection[str],
        out: list[Observation],
    ) -> None:
        """Append this guest's observations to `out` (a list, not a generator per guest
        per tick: most guests have nothing to say); `tracked` is `tick.tracked_keys(ID)`."""
        state = self._guests.get(g.uuid)
        if state is None:
            state = self._guests[g.uuid] = _Guest(leak_series(s))
        b = g.sample.balloon
        values = used_and_left(b) if b is not None else None
        if b is None or values is None or not b.last_update_s:
            last = state.last_update_s
            gap = b is not None or g.sample.not_responding_since_s is not None
            if gap and last is not None and tick.wall_s - last <= s.stale_after_s:
                # [lab] One balloon reply without the guest's figures between good ones
                # (seen on the loaded lab host), or a tick the guest or libvirtd did not
                # answer (a stopped QEMU, a libvirtd restart): no point this tick, but
                # the series and a raised finding are kept; clearing them restarted the
                # 5-minute minimum span and the steady 5 MiB/min leak went unflagged
                # for 10 min. Only a gap past `stale_after_s` counts as missing stats.
                return
            why = (
                "no balloon stats (no virtio balloon device)"
                if b is None
                else "balloon reports no guest memory stats (stats period unset?)"
            )
            state.series.clear()
            out.append(self._data(g, s, f"{why}: leak check off"))
            self._trend_off(g, s, tracked, out)
            return
        age = tick.wall_s - b.last_update_s
        if age > s.stale_after_s:
            state.series.clear()
            state.last_update_s = None
            stale = f"balloon stats stale for {fmt_duration(age)}: leak check paused"
            out.append(self._data(g, s, stale))
            self._trend_off(g, s, tracked, out)
            return
        if f"{g.uuid}:data" in tracked:
            out.append(self._data(g, s, None))
        if b.last_update_s == state.last_update_s:
            return
        used, left = values
        reset = self._reset_reason(state, b, used, s)
        if reset is not None:
            state.series.clear()
            if reset in ("guest rebooted", "balloon target changed", "guest RAM changed"):
                self._trend_off(g, s, tracked, out)
        state.last_update_s = b.last_update_s
        state.current_bytes = b.current_bytes
        state.available_bytes = b.available_bytes
        state.used_bytes = used
        state.faults = (b.major_fault, b.minor_fault)
        state.series.add(float(b.last_update_s), float(used))

        series = state.series
        if len(series) < s.min_points or series.duration_s < min(
            s.min_duration_s, s.urgent_duration_s
        ):
            return
        if not evaluation_due(state, tick.wall_s, g.uuid, s.eval_every_s):
            return
        floor = max(
            s.min_slope_mib_per_min * MIB / 60.0,
            s.min_slope_pct_per_h / 100.0 * (b.available_bytes or 0) / 3600.0,
        )
        rough = resistant_slope(series.times, series.values)
        if rough is not None and rough < floor / 2:
            # Cheap screen: a robust slope under half the floor cannot pass the test;
            # skip the O(n²) Mann–Kendall/Theil–Sen (most guests, most of the time).
            out.append(self._obs(g, s, "trend", False))
            return
        if series.duration_s < s.min_duration_s and (
            rough is None or rough <= 0 or max(left, 0) / rough > s.urgent_tte_s
        ):
            return  # a shorter series is judged only when memory would run out soon
        result = evaluate(series, s.p_max, s.tau_min, s.confidence)
        out.append(self._verdict(tick, g, s, b, result, left, floor))

    @staticmethod
    def _reset_reason(
        state: _Guest, b: BalloonSample, used: int, s: MemoryLeakSettings
    ) -> str | None:
        """Why the series must restart before adding this point, if it must."""
        if state.last_update_s is None:
            return None
        for before, now in zip(state.faults, (b.major_fault, b.minor_fault), strict=True):
            if before is not None and now is not None and now < before:
                return "guest rebooted"
        if state.current_bytes and b.current_bytes is not None:
            moved = abs(b.current_bytes - state.current_bytes) / state.current_bytes
            if 100.0 * moved > s.target_change_pct:
                return "balloon target changed"
        if b.available_bytes != state.available_bytes:
            return "guest RAM changed"
        if state.used_bytes is not None and b.available_bytes:
            drop = state.used_bytes - used
            if 100.0 * drop / b.available_bytes > s.drop_reset_pct:
                return "memory freed"
        return None

    def _verdict(
        self,
        tick: Tick,
        g: GuestView,
        s: MemoryLeakSettings,
        b: BalloonSample,
        r: TrendResult,
        left: int,
        floor: float,
    ) -> Observation:
        total = b.available_bytes or 0
        bad = r.rising and r.slope > floor
        per_min = 60.0 / MIB
        left = max(left, 0)
        tte_s = left / r.slope if r.slope > 0 else None
        swap_out = g.rates.swap_out_bytes_per_s
        major = g.rates.major_faults_per_s
        evidence = known(
            {
                "slope_mib_per_min": r.slope * per_min,
                "slope_low_mib_per_min": r.low * per_min,
                "slope_high_mib_per_min": r.high * per_min,
                "tau": r.tau,
                "p_value": r.p,
                "points": float(r.points),
                "span_min": r.duration_s / 60.0,
                "used_mib": (total - left) / MIB,
                "usable_mib": left / MIB,
                "guest_ram_mib": total / MIB,
                "tte_min": tte_s / 60.0 if tte_s is not None else None,
                "swap_out_kib_per_s": swap_out / 1024 if swap_out is not None else None,
                "major_faults_per_s": major,
            }
        )
        baseline = dict(tick.baseline)
        if tick.host.mem_available_bytes is not None:
            baseline["host_mem_available_mib"] = round(tick.host.mem_available_bytes / MIB, 1)
        if not bad:
            return self._obs(g, s, "trend", False, evidence=evidence, baseline=baseline)
        severity = "info"
        if tte_s is not None and tte_s < s.tte_crit_h * 3600:
            severity = "critical"
        elif tte_s is not None and tte_s < s.tte_warn_h * 3600:
            severity = "warning"
        message = (
            f"leaking ~{r.slope * per_min:.1f} MiB/min "
            f"({100 * s.confidence:.0f}% CI {r.low * per_min:.1f}–{r.high * per_min:.1f}), "
            f"{left / MIB:.0f} MiB usable left"
        )
        if tte_s is not None:
            message += f" → exhausted in ~{fmt_duration(tte_s)}"
        if (swap_out or 0) > 0 or (major or 0) > 0:
            message += "; guest already swapping or faulting"
        return self._obs(
            g,
            s,
            "trend",
            True,
            severity=severity,
            message=message,
            evidence=evidence,
            baseline=baseline,
            cause=cause_key("leak", g.uuid),
        )
