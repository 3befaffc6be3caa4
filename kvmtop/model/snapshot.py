"""The snapshot: the one immutable value the views and headless outputs read.

Layer: model (pure). Views receive a `Snapshot` and never see where it came from
(live sampler or recording).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmtop.model.finding import Finding
from kvmtop.model.incident import Incident
from kvmtop.model.rates.frame import Frame
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.rates.host import HostRates
from kvmtop.model.sample import SourceStatus
from kvmtop.model.units import NS_PER_MS

MODES = ("live", "paused", "replay", "follow")


@dataclass(frozen=True, slots=True)
class HostSummary:
    """Host-wide figures that need the guests too (overcommit, total exits)."""

    guests_running: int = 0
    guests_total: int = 0
    vcpus_running: int = 0
    vcpu_pcpu_ratio: float | None = None
    mem_overcommit_ratio: float | None = None
    exits_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a screen shows for one tick.

    Attributes:
        wall_s: wall time of the sample (Unix seconds).
        mode: "live", "paused", "replay" or "follow" (replaying a file still being written).
        interval_s: sampling interval.
        host: host baseline rates.
        summary: host-wide figures derived from the guests.
        guests: per-guest rates, in collection order.
        findings: active findings.
        sources: per-collector health for this tick.
        recording: path being recorded to, if any.
        seq: frame sequence number (increases by one per frame).
        recent: the window's newest frames up to this one, oldest first (the
            detail screen's plots); empty when the producer keeps none.
        incidents: the findings grouped by cause, ranked: the open incidents, active
            or cleared within `incident_gap_s` (docs/detectors.md#incidents); empty
            when the producer groups none.
    """

    wall_s: float
    mode: str
    interval_s: float
    host: HostRates
    summary: HostSummary
    guests: tuple[GuestRates, ...]
    findings: tuple[Finding, ...]
    sources: tuple[SourceStatus, ...]
    recording: str | None = None
    seq: int = 0
    recent: tuple[Frame, ...] = ()
    incidents: tuple[Incident, ...] = ()

    def guest(self, uuid: str) -> GuestRates | None:
        """The guest with this UUID, if present."""
        for g in self.guests:
            if g.uuid == uuid:
                return g
        return None

    @property
    def collect_ms(self) -> float | None:
        """Wall ms the collectors took for this tick: the sum of the sources' durations
        (the sampler runs them one after the other); None without sources."""
        if not self.sources:
            return None
        return sum(s.duration_ns for s in self.sources) / NS_PER_MS


def summarize(frame: Frame) -> HostSummary:
    """Host-wide ratios: vCPUs per host CPU and guest max memory per host RAM."""
    running = [g for g in frame.guests if g.state == "running"]
    vcpus = sum(g.vcpus or 0 for g in running)
    ncpu = frame.host.ncpu
    max_mem = [g.mem_max_bytes for g in running if g.mem_max_bytes is not None]
    exits = [g.exits_per_s for g in frame.guests if g.exits_per_s is not None]
    ram = frame.host.mem_total_bytes
    return HostSummary(
        guests_running=len(running),
        guests_total=len(frame.guests),
        vcpus_running=vcpus,
        vcpu_pcpu_ratio=vcpus / ncpu if ncpu else None,
        mem_overcommit_ratio=sum(max_mem) / ram if ram and max_mem else None,
        exits_per_s=sum(exits) if exits else None,
    )


def build_snapshot(
    frame: Frame,
    findings: tuple[Finding, ...],
    sources: tuple[SourceStatus, ...],
    *,
    mode: str,
    interval_s: float,
    recording: str | None = None,
    seq: int = 0,
    recent: tuple[Frame, ...] = (),
    incidents: tuple[Incident, ...] = (),
) -> Snapshot:
    """Assemble the snapshot views read from a derived frame, its findings and
    incidents."""
    return Snapshot(
        wall_s=frame.wall_s,
        mode=mode,
        interval_s=interval_s,
        host=frame.host,
        summary=summarize(frame),
        guests=frame.guests,
        findings=findings,
        sources=sources,
        recording=recording,
        seq=seq,
        recent=recent,
        incidents=incidents,
    )
