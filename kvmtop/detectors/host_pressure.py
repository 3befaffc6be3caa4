"""`host_pressure`: host PSI sustained, the context for every other finding
(docs/detectors.md#host_pressure).

The oomd-style three-part condition [S: oomd pattern as quoted in gitaly#7078]: the
kernel's avg60 above the threshold (sustained), avg10 above it too (now), and avg10
not below `recovering_ratio` × avg60 (not recovering). Resources and thresholds [H]:
cpu some 20 %; memory some 10 % (warning) and full 5 % (critical); io full 10 %.
The kernel recomputes the averages every 2 s (Documentation/accounting/psi.rst).
"""

from __future__ import annotations

from collections.abc import Iterable

from kvmtop.detectors.base import Observation, Tick, known
from kvmtop.detectors.settings import DetectorSettings
from kvmtop.model.sample import PressureSample

ID = "host_pressure"
LABELS = {"cpu": "CPU", "memory": "memory", "io": "I/O"}
MEANING = {
    "cpu": "runnable tasks wait for a CPU; every guest's vCPUs compete",
    "memory": "tasks stall on reclaim or swap-in; guests slow down",
    "io": "tasks stall on I/O; guest disks queue",
}


class HostPressure:
    """Host PSI detector (see the module docstring)."""

    id = ID

    def __init__(self, settings: DetectorSettings) -> None:
        """Host-wide detector: settings come from the global table."""
        self.settings = settings.host_pressure

    def forget(self, uuid: str) -> None:
        """No per-guest state."""

    def _holds(self, p: PressureSample, kind: str, threshold: float) -> bool:
        a10: float | None = getattr(p, f"{kind}_avg10")
        a60: float | None = getattr(p, f"{kind}_avg60")
        if a10 is None or a60 is None:
            return False
        return a60 > threshold and a10 > threshold and a10 >= self.settings.recovering_ratio * a60

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """One verdict per PSI resource the host reports."""
        host = tick.sample.host
        if host is None:
            return
        s = self.settings
        checks = {
            "cpu": (("some", s.cpu_some_pct, "warning"),),
            "memory": (
                ("full", s.memory_full_pct, "critical"),
                ("some", s.memory_some_pct, "warning"),
            ),
            "io": (("full", s.io_full_pct, "warning"),),
        }
        for resource, rules in checks.items():
            p = host.pressure.get(resource)
            if p is None:
                continue
            hit = next(((k, t, sev) for k, t, sev in rules if self._holds(p, k, t)), None)
            message = ""
            severity = "warning"
            if hit is not None:
                kind, threshold, severity = hit
                message = (
                    f"host {LABELS[resource]} pressure: {kind} "
                    f"{getattr(p, f'{kind}_avg10'):.1f}% (avg10), "
                    f"{getattr(p, f'{kind}_avg60'):.1f}% (avg60) > {threshold:g}%: "
                    f"{MEANING[resource]}"
                )
            yield Observation(
                key=f"host:{resource}",
                bad=hit is not None,
                subject=f"host:{resource}",
                subject_name=f"host {LABELS[resource]}",
                raise_after=s.raise_after,
                clear_after=s.clear_after,
                severity=severity,
                message=message,
                evidence=known(
                    {
                        "some_avg10_pct": p.some_avg10,
                        "some_avg60_pct": p.some_avg60,
                        "full_avg10_pct": p.full_avg10,
                        "full_avg60_pct": p.full_avg60,
                    }
                ),
                baseline=dict(tick.baseline),
            )
