"""Every detector threshold, with its default and where the default comes from.

Layer: detectors (pure data). `kvmtop.config` fills these from the `[detectors.*]`
tables of the config file; detectors read them and nothing else.

Source tags (docs/detectors.md#source-tags): [S] a primary or vendor source,
[H] a heuristic default (configurable because it is not a standard), [lab] lowered or
raised because the lab measurements of this project require it. Each detector's
section in docs/detectors.md is headed by its id (docs/detectors.md#steal).

Hysteresis (docs/detectors.md#hysteresis) [H]: a condition raises a finding after `raise_after`
consecutive bad observations and clears it after `clear_after` good ones (K = 3 at a
2 s tick, about 6 s). Every detector has its own pair so a slow detector (the leak
test runs every 30 s) can count evaluations instead of ticks.
"""

from __future__ import annotations

import fnmatch
import typing
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from msgspec import Meta

DetectorId = Literal[
    "memory_leak",
    "qemu_memory_growth",
    "vswitch_saturation",
    "vnic_drops",
    "steal",
    "exit_storm",
    "disk_latency",
    "host_pressure",
    "overcommit",
]
DETECTOR_IDS: tuple[DetectorId, ...] = typing.get_args(DetectorId)
"""Stable detector ids, used in JSON, recordings and reports."""

# The types of the settings are the config file's schema (`kvmtop.config` converts the
# `[detectors.*]` tables with msgspec, which enforces the Meta limits).
Number = Annotated[float, Meta(ge=0, le=1e308)]
"""A threshold: a finite number >= 0 (TOML can write inf and nan; 1e308 is below the
largest float)."""
Count = Annotated[int, Meta(ge=0)]
"""A count, >= 0."""
Ticks = Annotated[int, Meta(ge=1)]
"""`raise_after` / `clear_after`: observations in a row, at least one."""
Points = Annotated[int, Meta(ge=3)]
"""`min_points` of a trend test: Mann–Kendall needs 3."""


@dataclass(frozen=True, slots=True)
class StealSettings:
    """High steal per guest (docs/detectors.md#steal).

    Warn at mean ≥ 5 % or max ≥ 10 % [S: VMware CPU Ready "should remain under 5 %"
    (IBM support on VMware KB 2002181); per-vCPU bands 1-5 % good, ≥ 10 % bad].
    Critical at mean ≥ 20 % or max ≥ 10 % sustained 5 min [S, secondary: Scout
    "steal > 10 % for 20 minutes"; shortened to 5 min, H].
    """

    raise_after: Ticks = 3
    clear_after: Ticks = 3
    warn_mean_pct: Number = 5.0
    warn_max_pct: Number = 10.0
    crit_mean_pct: Number = 20.0
    crit_max_pct: Number = 10.0
    crit_sustain_s: Number = 300.0
    # Ignore vCPUs whose CPU + steal is below 2 % of the interval: idle noise [H].
    idle_guard_pct: Number = 2.0
    # Attribution [I]: host PSI cpu some share (from the total= counter) above
    # this, or at least `many_guests` guests stealing, means host over-commit.
    host_psi_cpu_pct: Number = 20.0
    many_guests: Count = 2
    # PAUSE exits per vCPU per second read as spinning on a preempted lock holder
    # (needs per-reason tracing) [H: no published threshold].
    pause_exits_per_vcpu: Number = 1000.0
    # Share of the guest's CFS periods throttled that blames its own quota [H].
    throttled_pct: Number = 5.0


@dataclass(frozen=True, slots=True)
class ExitStormSettings:
    """VM exits per vCPU far above an absolute floor and the guest's own median
    (docs/detectors.md#exit_storm).

    [H]: no industry threshold. At about 1.3-2.5 k cycles per exit round trip
    [S: LKML 2020-12 SVM VMRUN counts], 100 k exits/s is 4-8 % of a 3 GHz core in
    transitions alone. Critical above 200 k/s per vCPU whatever the median.
    """

    raise_after: Ticks = 3
    clear_after: Ticks = 3
    floor_per_vcpu: Number = 50_000.0
    k: Number = 10.0
    crit_per_vcpu: Number = 200_000.0
    median_window_s: Number = 900.0
    # The relative rule needs some history; until then only the floors apply [H].
    min_baseline_s: Number = 60.0


@dataclass(frozen=True, slots=True)
class DiskLatencySettings:
    """Per guest disk latency vs its floor, k × its own median, and the host device
    (docs/detectors.md#disk_latency).

    Floors [S]: 20 ms for spinning or network storage (esxtop DAVG/GAVG > 20 ms), 2 ms
    when the host device is non-rotational (Broadcom: flash DAVG "rarely above 1-2
    ms"). `k` = 3 [H]. At least 20 requests in the judged span [H, anchored on the
    Broadcom KB averaging example]. Verdict "above the device" when guest − host > 2 ms
    [S: esxtop KAVG ≤ 2 ms rule of thumb]; the host device counts as slow above its own
    floor or at ≥ 90 % utilization [S: atop dskcritperc 90].
    """

    raise_after: Ticks = 3
    clear_after: Ticks = 3
    min_reqs: Count = 20
    # [lab] A throttled disk completes few requests (2 IOPS measured at 500 ms each),
    # so requests are accumulated over up to this many seconds to reach `min_reqs`
    # instead of dropping the interval: slow disks are exactly the ones that starve.
    accumulate_s: Number = 20.0
    k: Number = 3.0
    floor_rotational_ms: Number = 20.0
    floor_ssd_ms: Number = 2.0
    median_window_s: Number = 900.0
    min_baseline_s: Number = 60.0
    # Above this latency the disk is bad whatever its own median [H]: 5 × the
    # spinning-disk floor; keeps a disk that was already slow at start-up visible.
    crit_ms: Number = 100.0
    host_gap_ms: Number = 2.0
    host_util_pct: Number = 90.0


@dataclass(frozen=True, slots=True)
class VswitchSettings:
    """Saturation of a Linux bridge or OVS bridge and its uplinks
    (docs/detectors.md#vswitch_saturation).

    Utilization ≥ 90 % of the uplink capacity, full duplex = max(rx, tx) [S: atop
    netcritperc 90 and its network-busy formula]. Drops, softnet drops and OVS `lost`
    above 0/s for K samples [S-semantics, H-threshold]. Several guests behind one
    switch dropping RX at once point at the switch, not at one guest [I].
    """

    raise_after: Ticks = 3
    clear_after: Ticks = 3
    util_pct: Number = 90.0
    # Uplink capacity in Mbit/s by interface name. Needed for veth/tap uplinks that no
    # tbf/htb root qdisc shapes (their reported speed is made up: drivers/net/tun.c,
    # veth); wins over /sys/class/net/<if>/speed and over the shaping qdisc's rate.
    uplink_capacity_mbps: dict[str, Number] = field(default_factory=dict)
    # Interface kinds that are uplinks when enslaved to a switch (plus every
    # interface named in `uplink_capacity_mbps`, and every port but a guest's tap
    # whose root qdisc is a shaping tbf/htb).
    uplink_kinds: tuple[str, ...] = ("physical", "bond")
    drops_per_s: Number = 0.0
    softnet_drops_per_s: Number = 0.0
    ovs_lost_per_s: Number = 0.0
    guests_dropping: Count = 2
    # A guest counts as dropping above this share of its RX packets [H]
    # (docs/detectors.md#vnic_drops).
    guest_drop_ratio_pct: Number = 0.1


@dataclass(frozen=True, slots=True)
class VnicDropsSettings:
    """One guest not draining its RX ring: tap tx_dropped (docs/detectors.md#vnic_drops).

    Drops > 0 for K samples and a drop ratio above 0.1 % of RX packets [H]. Critical
    above 1 % [H: an order of magnitude more]. TX drops sustained: "host dropping
    guest TX" [I].
    """

    raise_after: Ticks = 3
    clear_after: Ticks = 3
    ratio_pct: Number = 0.1
    crit_ratio_pct: Number = 1.0
    tx_drops_per_s: Number = 0.0


def _check_points(min_points: int, max_points: int) -> None:
    """A trend series decimated to `max_points` (pairs merged) keeps `min_points`.

    Raises:
        ValueError: it would not.
    """
    if max_points < 2 * min_points:
        raise ValueError(f"max_points ({max_points}) must be >= 2 × min_points ({min_points})")


@dataclass(frozen=True, slots=True)
class MemoryLeakSettings:
    """Guest used memory trending up: Mann–Kendall + Theil–Sen
    (docs/detectors.md#memory_leak).

    Test [S methods, H parameters]: Hamed–Rao MK p < 0.01 and τ > 0.5; Theil–Sen 95 %
    lower bound > 0 and slope > max(1 MiB/min, 0.5 % of guest RAM per hour). Severity
    by time to exhaustion (usable / slope): warning under 24 h, critical under 2 h,
    info above. Window 2 h [H].

    [lab] `min_duration_s` is 5 min, not 30 min: a 128 MiB guest leaking
    5 MiB/min runs out in about 11 min and must be flagged within 10. The τ, p, CI
    and slope floor still have to hold, so flat or noisy guests stay quiet.
    """

    raise_after: Ticks = 2
    clear_after: Ticks = 3
    window_s: Number = 7200.0
    min_duration_s: Number = 300.0
    # [H] A leak that would exhaust the guest's memory within `urgent_tte_s` (by the
    # series' robust slope) is judged after `urgent_duration_s`: 18 balloon points at
    # a 10 s stats period, enough for the p < 0.01 test, and an operator wants 3 min
    # of notice more than 5 when the guest has 10 left.
    urgent_duration_s: Number = 180.0
    urgent_tte_s: Number = 1800.0
    min_points: Points = 10
    # Cost bound: the series is decimated (neighbours merged) above this many points,
    # and the O(n²) test runs at most once per `eval_every_s` per guest.
    max_points: Count = 96
    eval_every_s: Number = 30.0
    p_max: Number = 0.01
    tau_min: Number = 0.5
    confidence: Number = 0.95
    min_slope_mib_per_min: Number = 1.0
    min_slope_pct_per_h: Number = 0.5
    tte_warn_h: Number = 24.0
    tte_crit_h: Number = 2.0
    # Balloon stats older than this are stale [H: 3 × a 60 s stats period, the longest
    # that suits leak detection]; the leak check pauses and says so.
    stale_after_s: Number = 180.0
    # Reset the series when the balloon target (`balloon.current`) moves > 1 %
    # or used memory drops by more than this share of guest RAM at once (memory was
    # freed: a restarted service or an OOM kill; the old trend is over) [H].
    target_change_pct: Number = 1.0
    drop_reset_pct: Number = 10.0
    # A raised leak finding survives this long without a new evaluation (the series
    # restarts after a reset and needs `min_duration_s` again) [H].
    hold_s: Number = 600.0

    def __post_init__(self) -> None:
        _check_points(self.min_points, self.max_points)


@dataclass(frozen=True, slots=True)
class QemuGrowthSettings:
    """QEMU RSS growing beyond guest RAM: over = rss − balloon.current
    (docs/detectors.md#qemu_memory_growth).

    Flag when over > max(512 MiB, 10 % of current) and the same MK + Theil–Sen test
    says it is growing [H/I]. Window and minimum duration: 2 h, 30 min [H].
    """

    raise_after: Ticks = 2
    clear_after: Ticks = 3
    min_over_mib: Number = 512.0
    min_over_pct: Number = 10.0
    window_s: Number = 7200.0
    min_duration_s: Number = 1800.0
    min_points: Points = 10
    max_points: Count = 96
    eval_every_s: Number = 60.0
    p_max: Number = 0.01
    tau_min: Number = 0.5
    confidence: Number = 0.95
    hold_s: Number = 900.0

    def __post_init__(self) -> None:
        _check_points(self.min_points, self.max_points)


@dataclass(frozen=True, slots=True)
class HostPressureSettings:
    """Host PSI sustained (docs/detectors.md#host_pressure), the oomd-style three-part condition.

    Over the threshold in avg60 (sustained), AND in avg10 (now), AND not recovering
    (avg10 ≥ `recovering_ratio` × avg60) [S: oomd pattern as quoted in gitaly#7078].
    Thresholds [H]: cpu some 20 %, memory some 10 % (warning) and full 5 % (critical),
    io full 10 %.
    """

    raise_after: Ticks = 3
    clear_after: Ticks = 3
    cpu_some_pct: Number = 20.0
    memory_some_pct: Number = 10.0
    memory_full_pct: Number = 5.0
    io_full_pct: Number = 10.0
    recovering_ratio: Number = 0.75


@dataclass(frozen=True, slots=True)
class OvercommitSettings:
    """Configuration advice from the host's shape (issue 5; docs/detectors.md#overcommit).

    vCPU:pCPU above 1.2 [H, from the issue]; host memory left after every running
    guest's maximum below 10 % of RAM [H: the middle of the issue's 8-12 %].
    """

    raise_after: Ticks = 3
    clear_after: Ticks = 3
    vcpu_ratio: Number = 1.2
    mem_reserve_pct: Number = 10.0


DETECTOR_SETTINGS_TYPES: dict[str, type] = {
    "memory_leak": MemoryLeakSettings,
    "qemu_memory_growth": QemuGrowthSettings,
    "vswitch_saturation": VswitchSettings,
    "vnic_drops": VnicDropsSettings,
    "steal": StealSettings,
    "exit_storm": ExitStormSettings,
    "disk_latency": DiskLatencySettings,
    "host_pressure": HostPressureSettings,
    "overcommit": OvercommitSettings,
}
"""Detector id → its settings class (the `[detectors.<id>]` table)."""


@dataclass(frozen=True, slots=True)
class GuestOverride:
    """Settings for guests whose name matches a shell glob (`fnmatch`).

    Attributes:
        pattern: the glob, e.g. "db-*".
        disabled: detector ids switched off for these guests.
        values: detector id → {field: value} replacing the global values.
    """

    pattern: str
    disabled: tuple[DetectorId, ...] = ()
    values: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """All detector settings: one table per detector, disabled ids, per-guest overrides,
    and how incidents group findings.

    Overrides apply in file order; a later matching glob wins for the same key.
    `incident_gap_s`: a cause that clears and raises again within this many seconds
    continues its incident instead of opening a new one (docs/detectors.md#incidents)
    [H: long enough for a leak check, 30 s between evaluations, to raise again].
    """

    memory_leak: MemoryLeakSettings = field(default_factory=MemoryLeakSettings)
    qemu_memory_growth: QemuGrowthSettings = field(default_factory=QemuGrowthSettings)
    vswitch_saturation: VswitchSettings = field(default_factory=VswitchSettings)
    vnic_drops: VnicDropsSettings = field(default_factory=VnicDropsSettings)
    steal: StealSettings = field(default_factory=StealSettings)
    exit_storm: ExitStormSettings = field(default_factory=ExitStormSettings)
    disk_latency: DiskLatencySettings = field(default_factory=DiskLatencySettings)
    host_pressure: HostPressureSettings = field(default_factory=HostPressureSettings)
    overcommit: OvercommitSettings = field(default_factory=OvercommitSettings)
    disabled: tuple[DetectorId, ...] = ()
    overrides: tuple[GuestOverride, ...] = ()
    incident_gap_s: Number = 180.0

    def enabled(self, detector: str) -> bool:
        """Whether a detector runs at all (not in the global `disabled` list)."""
        return detector not in self.disabled

    def for_guest(self, name: str) -> DetectorSettings:
        """These settings with every override whose glob matches `name` applied."""
        matching = [o for o in self.overrides if fnmatch.fnmatchcase(name, o.pattern)]
        if not matching:
            return self
        changes: dict[str, Any] = {}
        disabled = list(self.disabled)
        for o in matching:
            disabled.extend(d for d in o.disabled if d not in disabled)
            for det, values in o.values.items():
                base = changes.get(det, getattr(self, det))
                changes[det] = replace(base, **values)
        return replace(self, disabled=tuple(disabled), overrides=(), **changes)
