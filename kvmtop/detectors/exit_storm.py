"""`exit_storm`: VM exits per vCPU far above a floor and the guest's own median
(docs/detectors.md#exit_storm).

Rule [H]: exits/s per vCPU > max(floor, k × the guest's rolling median over 15 min)
for K samples; critical above an absolute ceiling whatever the median. The relative
part needs `min_baseline_s` of history, until then only the floor applies.

Rate per vCPU: the busiest vCPU from the KVM binary stats libvirt exports
(`vcpu.N.exits.sum`); else the VM-wide total / vCPUs; else debugfs `exits` (readable
only without kernel lockdown, docs/sources.md#kvm-debugfs-and-lockdown). Only KVM guests have exits.

Classification by the dominant exit reason (tracepoints, when traced) or category
(KVM stats), with the advice of docs/detectors.md#exit_storm.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvmtop.detectors.base import (
    GuestView,
    Observation,
    PerGuest,
    Tick,
    fmt_rate,
    good_verdict,
    known,
    verdict,
)
from kvmtop.detectors.stats import RollingMedian
from kvmtop.model.rates.counters import rate

ID = "exit_storm"

# Exit reason (kvm_exit tracepoint, VMX and SVM names) or KVM stat category → what it
# usually means (docs/detectors.md#exit_storm, docs/sources.md#vm-exits).
ADVICE: dict[str, str] = {
    "mmio_exits": "emulated device (MMIO) storm",
    "EPT_MISCONFIG": "emulated device (MMIO) storm",
    "npf": "nested page faults (MMIO or memory pressure)",
    "EPT_VIOLATION": "EPT violations (guest page faults or host memory pressure)",
    "io_exits": "port I/O storm (legacy emulated device)",
    "IO_INSTRUCTION": "port I/O storm (legacy emulated device)",
    "io": "port I/O storm (legacy emulated device)",
    "halt_exits": "idle HLT ping-pong (tune halt_poll_ns)",
    "HLT": "idle HLT ping-pong (tune halt_poll_ns)",
    "hlt": "idle HLT ping-pong (tune halt_poll_ns)",
    "MSR_WRITE": "timer storm (MSR writes: TSC-deadline/APICv not virtualized?)",
    "msr": "MSR access storm (timer?)",
    "EXTERNAL_INTERRUPT": "host interrupts on the guest's CPUs (check IRQ affinity)",
    "interrupt": "host interrupts on the guest's CPUs (check IRQ affinity)",
    "irq_exits": "host interrupts on the guest's CPUs (check IRQ affinity)",
    "PAUSE_INSTRUCTION": "spin-lock contention (check steal)",
    "pause": "spin-lock contention (check steal)",
    "insn_emulation": "instruction emulation",
    "signal_exits": "signals to the vCPU threads",
}


def exits_per_vcpu(g: GuestView, dt_s: float | None) -> float | None:
    """Exits per second of the busiest vCPU (or the per-vCPU mean as a fallback)."""
    per_vcpu = [v.exits_per_s for v in g.rates.vcpu if v.exits_per_s is not None]
    if per_vcpu:
        return max(per_vcpu)
    n = g.rates.vcpus or len(g.sample.vcpus) or 1
    if g.rates.exits_per_s is not None:
        return g.rates.exits_per_s / n
    if g.prev is not None and dt_s:
        total = rate(g.prev.debugfs.get("exits"), g.sample.debugfs.get("exits"), dt_s)
        return None if total is None else total / n
    return None


def dominant(g: GuestView, dt_s: float | None) -> tuple[str, float] | None:
    """(name, share of exits) of the top reason (tracepoints) or category (KVM stats)."""
    reasons: dict[str, float] = {}
    if g.prev is not None and dt_s:
        for key, value in g.sample.exit_reasons.items():
            if not key.startswith("kvm_exit:"):
                continue
            r = rate(g.prev.exit_reasons.get(key), value, dt_s)
            if r:
                reasons[key.split(":", 1)[1]] = r
    if not reasons:
        reasons = {k: v for k, v in g.rates.exit_categories.items() if v > 0}
    if not reasons:
        return None
    top = max(reasons, key=lambda k: reasons[k])
    total = g.rates.exits_per_s or sum(reasons.values())
    return top, min(1.0, reasons[top] / total) if total else 0.0


class ExitStorm(PerGuest[RollingMedian]):
    """Exit storm detector (see the module docstring); per guest, its baseline."""

    id = ID

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """One verdict per KVM guest with an exit rate this tick."""
        tracked = tick.tracked_keys(ID)
        for g in tick.guests:
            if g.sample.accel != "kvm" or not g.settings.enabled(ID):
                continue
            value = exits_per_vcpu(g, tick.dt_s)
            if value is None:
                continue
            s = g.settings.exit_storm
            rm = self._guests.get(g.uuid)
            if rm is None:
                rm = self._guests[g.uuid] = RollingMedian(s.median_window_s)
            med = rm.median() if rm.covered_s >= s.min_baseline_s else None
            threshold = max(s.floor_per_vcpu, s.k * med) if med is not None else s.floor_per_vcpu
            rm.add(tick.wall_s, value)
            if value <= threshold and value <= s.crit_per_vcpu:
                if g.uuid in tracked:
                    yield good_verdict(g, s, g.uuid)
                continue
            top = dominant(g, tick.dt_s)
            relative = f" ({value / med:.0f}× its median {fmt_rate(med)})" if med else ""
            message = f"{fmt_rate(value)} exits/s per vCPU{relative}"
            if top is not None:
                name, share = top
                message += f", {100 * share:.0f}% {name}: {ADVICE.get(name, 'dominant exit')}"
            yield verdict(
                g,
                s,
                g.uuid,
                bad=True,
                severity="critical" if value > s.crit_per_vcpu else "warning",
                message=message,
                evidence=known(
                    {
                        "exits_per_vcpu_s": value,
                        "median_per_vcpu_s": med,
                        "threshold_per_vcpu_s": threshold,
                        "dominant_share_pct": 100 * top[1] if top else None,
                        "steal_max_pct": g.rates.steal_max_pct,
                    }
                ),
                baseline=dict(tick.baseline),
            )
