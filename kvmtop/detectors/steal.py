"""`steal`: vCPUs runnable but not running (docs/detectors.md#steal), with attribution.

Input: per-vCPU steal % = Δ`vcpu.N.delay` (or schedstat run_delay) / Δt, what KVM
reports to the guest as steal (docs/sources.md#steal). vCPUs whose CPU + steal is under
the idle guard are ignored (an idle vCPU accrues nothing and its tiny figures are noise).

Attribution [I] (docs/detectors.md#steal), first match wins:
- own CPU quota: the VM cgroup's `cpu.stat` nr_throttled rising
  (`GuestSample.cpu_nr_periods` / `cpu_nr_throttled`);
- pinning collision: a stealing vCPU pinned to CPUs that a stealing vCPU of another
  guest is pinned to as well (`VcpuSample.affinity`); the collision takes in every
  stealing guest linked to it through shared pinned CPUs, and its cause key
  ("pinning:cpu=<CPUs>") and `cause_guests` name them all;
- lock-holder preemption: PAUSE exits per vCPU above the limit (tracepoint counts
  `kvm_exit:PAUSE_INSTRUCTION` on VMX, `kvm_exit:pause` on SVM, in `exit_reasons`);
- host over-commit: host PSI cpu some high, or several guests stealing at once (the
  cause `overcommit`'s vCPU:pCPU finding shares);
- otherwise "CPU contention".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from kvmtop.detectors.base import (
    OVERCOMMIT_CAUSE,
    GuestView,
    Observation,
    PerGuest,
    Tick,
    cause_key,
    good_verdict,
    known,
    verdict,
)
from kvmtop.detectors.settings import StealSettings
from kvmtop.model.rates.counters import counter_delta, rate

ID = "steal"
PAUSE_REASONS = ("kvm_exit:PAUSE_INSTRUCTION", "kvm_exit:pause")
OTHERS_SHOWN = 3
"""Other stealing guests named in an over-commit message."""


class _Level(NamedTuple):
    """One guest's steal this tick over its busy vCPUs (a tuple: built per guest per
    tick, and cheaper than a frozen dataclass)."""

    mean: float
    max: float
    worst_vcpu: int
    busy: int
    cpus: frozenset[int]


_UNPINNED: frozenset[int] = frozenset()
"""The pinned CPUs of a guest whose busy vCPUs are all unpinned."""

_IDLE = _Level(0.0, 0.0, -1, 0, _UNPINNED)
"""The level of a guest whose vCPUs all have steal figures under the idle guard."""


class _Cause(NamedTuple):
    """A stealing guest's cause: its key (empty: the guest's own), the text for the
    message, and the guests it involves (a pinning collision's)."""

    key: str
    text: str
    guests: tuple[str, ...] = ()


class _Collision(NamedTuple):
    """A pinning collision: the host CPUs its guests' stealing vCPUs are pinned to, and
    the guests' names, both sorted."""

    cpus: str
    guests: tuple[str, ...]


def _level(g: GuestView, s: StealSettings, ncpu: int) -> _Level | None:
    """Mean and max steal over busy vCPUs; None when no vCPU has a steal figure.

    `cpus` collects the host CPUs of the stealing vCPUs that are pinned, i.e. whose
    affinity is narrower than the host's `ncpu` CPUs: an unpinned vCPU may run on
    every CPU, so sharing CPUs with another unpinned guest is no pinning collision
    (the lab's unpinned TCG guests were all blamed on "CPU 0,1" before).
    """
    any_known = False
    busy = 0
    total = 0.0
    worst = (-1.0, -1)  # (steal, index) of the worst busy vCPU; ties: the higher index
    cpus: set[int] | None = None
    guard = s.idle_guard_pct
    # The rates' vCPUs are the sample's, one to one and in order (GuestRates.vcpu).
    for v, sample in zip(g.rates.vcpu, g.sample.vcpus, strict=False):
        steal = v.steal_pct
        if steal is None:
            continue
        any_known = True
        if (v.cpu_pct or 0.0) + steal < guard:
            continue
        busy += 1
        total += steal
        if (steal, v.index) > worst:
            worst = (steal, v.index)
        affinity = sample.affinity
        if affinity is not None and (ncpu <= 0 or len(set(affinity)) < ncpu):
            if cpus is None:
                cpus = set()
            cpus.update(affinity)
    if not any_known:
        return None
    if not busy:
        return _IDLE
    return _Level(total / busy, worst[0], worst[1], busy, frozenset(cpus) if cpus else _UNPINNED)


def _throttled_pct(g: GuestView) -> float | None:
    """Share of the VM cgroup's CFS periods that were throttled in the interval."""
    if g.prev is None:
        return None
    periods = counter_delta(g.prev.cpu_nr_periods, g.sample.cpu_nr_periods)
    throttled = counter_delta(g.prev.cpu_nr_throttled, g.sample.cpu_nr_throttled)
    if not periods or throttled is None:
        return None
    return 100.0 * throttled / periods


def _pause_per_vcpu(g: GuestView, dt_s: float | None) -> float | None:
    """PAUSE exits per second per vCPU from the tracepoint counts, when traced."""
    if g.prev is None or not dt_s or not g.sample.exit_reasons:
        return None  # (untraced, the usual case: no count, no rate)
    total: float | None = None
    for key in PAUSE_REASONS:
        r = rate(g.prev.exit_reasons.get(key), g.sample.exit_reasons.get(key), dt_s)
        if r is not None:
            total = (total or 0.0) + r
    if total is None:
        return None
    return total / max(len(g.sample.vcpus), 1)


def _collisions(
    levels: dict[str, tuple[GuestView, _Level]], stealing: set[str]
) -> dict[str, _Collision]:
    """Stealing guest uuid → its pinning collision, for every stealing guest whose
    pinned CPUs another stealing guest is pinned to as well.

    Guests linked through shared CPUs (a on CPU 1, b on 1-2, c on 2) are one
    collision: the CPUs are grouped with a union-find, O(pinned CPUs).
    """
    parent: dict[int, int] = {}

    def root(cpu: int) -> int:
        while parent.setdefault(cpu, cpu) != cpu:
            parent[cpu] = parent[parent[cpu]]
            cpu = parent[cpu]
        return cpu

    pinned = [(u, levels[u][1].cpus) for u in stealing if levels[u][1].cpus]
    for _, cpus in pinned:
        first, *rest = cpus
        top = root(first)
        for cpu in rest:
            parent[root(cpu)] = top
    groups: dict[int, list[str]] = {}
    for u, cpus in pinned:
        groups.setdefault(root(next(iter(cpus))), []).append(u)
    result: dict[str, _Collision] = {}
    for uuids in groups.values():
        if len(uuids) < 2:
            continue
        shared = sorted({c for u in uuids for c in levels[u][1].cpus})
        collision = _Collision(
            ",".join(str(c) for c in shared), tuple(sorted(levels[u][0].name for u in uuids))
        )
        result.update(dict.fromkeys(uuids, collision))
    return result


class _Round:
    """What the verdicts of one tick share: every guest's level, the stealing ones,
    the first of them by name, the over-commit text most of them get, and the
    pinning collisions (found on first use)."""

    __slots__ = (
        "_collisions",
        "_overcommit",
        "_top_uuids",
        "levels",
        "psi",
        "stealing",
        "top",
        "tracked",
    )

    def __init__(
        self, tick: Tick, levels: dict[str, tuple[GuestView, _Level]], stealing: set[str]
    ) -> None:
        self.levels = levels
        self.stealing = stealing
        # Sorted once per tick, not once per stealing guest: on a contended host with
        # hundreds of guests every guest steals, and per-guest sorting is O(n² log n).
        self.top = sorted((levels[u][0].name, u) for u in stealing)[: OTHERS_SHOWN + 1]
        self._top_uuids = {u for _, u in self.top}
        self.psi = tick.host.psi_cpu_some_pct
        self.tracked = tick.tracked_keys(ID)
        self._overcommit: _Cause | None = None
        self._collisions: dict[str, _Collision] | None = None

    def collision(self, uuid: str) -> _Collision | None:
        """The pinning collision a stealing guest is part of, if any."""
        if self._collisions is None:
            self._collisions = _collisions(self.levels, self.stealing)
        return self._collisions.get(uuid)

    def others(self, uuid: str) -> list[str]:
        """The first stealing guests' names other than `uuid`'s (it is stealing)."""
        return [name for name, u in self.top if u != uuid][:OTHERS_SHOWN]

    def overcommit(self, uuid: str) -> _Cause:
        """The host over-commit cause of a stealing guest."""
        if uuid in self._top_uuids:
            return _Cause(OVERCOMMIT_CAUSE, self._overcommit_text(self.others(uuid)))
        # Every guest outside the first names sees the same ones: on a contended
        # host with hundreds of stealing guests the cause is built once per tick.
        if self._overcommit is None:
            self._overcommit = _Cause(OVERCOMMIT_CAUSE, self._overcommit_text(self.others(uuid)))
        return self._overcommit

    def _overcommit_text(self, others: list[str]) -> str:
        """The over-commit cause naming `others` and the host PSI."""
        parts = []
        if others:
            parts.append(f"{len(self.stealing) - 1} other guest(s) stealing: {', '.join(others)}")
        if self.psi is not None:
            parts.append(f"host PSI cpu {self.psi:.0f}%")
        return "host CPU over-commit (" + "; ".join(parts) + ")"


class Steal(PerGuest[float]):
    """High steal detector (see the module docstring); per guest, its sustained-steal
    clock: since when its steal has been high."""

    id = ID

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """One verdict per running guest with steal figures."""
        levels: dict[str, tuple[GuestView, _Level]] = {}
        ncpu = tick.sample.host.ncpu if tick.sample.host is not None else 0
        for g in tick.guests:
            if g.settings.enabled(ID):
                level = _level(g, g.settings.steal, ncpu)
                if level is not None:
                    levels[g.uuid] = (g, level)
        stealing = {
            uuid
            for uuid, (g, lv) in levels.items()
            if lv.mean >= g.settings.steal.warn_mean_pct or lv.max >= g.settings.steal.warn_max_pct
        }
        rnd = _Round(tick, levels, stealing)
        for uuid, (g, lv) in levels.items():
            obs = self._verdict(tick, rnd, uuid, g, lv)
            if obs is not None:
                yield obs

    def _verdict(
        self, tick: Tick, rnd: _Round, uuid: str, g: GuestView, lv: _Level
    ) -> Observation | None:
        """The verdict on one guest; None for a good one that changes nothing."""
        s = g.settings.steal
        wall_s = tick.wall_s
        high = lv.max >= s.crit_max_pct
        if high:
            since = self._guests.setdefault(uuid, wall_s)
        else:
            self._guests.pop(uuid, None)
            since = wall_s
        if uuid not in rnd.stealing:
            if uuid not in rnd.tracked:
                return None
            return good_verdict(g, s, uuid)
        sustained = wall_s - since
        critical = lv.mean >= s.crit_mean_pct or (high and sustained >= s.crit_sustain_s)
        throttled = _throttled_pct(g)
        pause = _pause_per_vcpu(g, tick.dt_s)
        cause = self._cause(rnd, uuid, lv, s, throttled, pause)
        evidence = known(
            {
                "steal_mean_pct": lv.mean,
                "steal_max_pct": lv.max,
                "worst_vcpu": float(lv.worst_vcpu) if lv.worst_vcpu >= 0 else None,
                "busy_vcpus": float(lv.busy),
                "cpu_pct": g.rates.cpu_pct,
                "high_for_s": sustained if high else None,
                "guests_stealing": float(len(rnd.stealing)),
                "throttled_pct": throttled,
                "pause_exits_per_vcpu_s": pause,
            }
        )
        message = (
            f"steal max {lv.max:.0f}% (vCPU {lv.worst_vcpu}), mean {lv.mean:.0f}%: {cause.text}"
        )
        return verdict(
            g,
            s,
            uuid,
            bad=True,
            severity="critical" if critical else "warning",
            message=message,
            evidence=evidence,
            baseline=dict(tick.baseline),
            cause=cause.key,
            cause_guests=cause.guests,
        )

    @staticmethod
    def _cause(
        rnd: _Round,
        uuid: str,
        lv: _Level,
        s: StealSettings,
        throttled: float | None,
        pause: float | None,
    ) -> _Cause:
        """The most specific explanation the evidence supports, with its cause key."""
        if throttled is not None and throttled >= s.throttled_pct:
            return _Cause(
                "", f"its own CPU quota ({throttled:.0f}% of periods throttled; <cputune>)"
            )
        collision = rnd.collision(uuid) if lv.cpus else None
        if collision is not None:
            own = rnd.levels[uuid][0].name
            others = ", ".join(n for n in collision.guests if n != own)
            return _Cause(
                cause_key("pinning", f"cpu={collision.cpus}"),
                f"pinning collision on CPU {collision.cpus} with {others}",
                collision.guests,
            )
        if pause is not None and pause >= s.pause_exits_per_vcpu:
            return _Cause("", f"lock-holder preemption ({pause:.0f} PAUSE exits/s per vCPU)")
        psi = rnd.psi
        if (psi is not None and psi >= s.host_psi_cpu_pct) or len(rnd.stealing) >= s.many_guests:
            return rnd.overcommit(uuid)
        return _Cause("", "CPU contention on the host")
