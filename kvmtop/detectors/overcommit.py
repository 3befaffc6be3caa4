"""`overcommit`: configuration advice from the host's shape (issue 5,
docs/detectors.md#overcommit).

- vCPU:pCPU: vCPUs of running guests per host CPU above `vcpu_ratio` (1.2 [H]);
  the cause it shares with the guests `steal` blames on host over-commit;
- host memory reserve: RAM left after every running guest's maximum memory below
  `mem_reserve_pct` of RAM (10 % [H], the issue's 8-12 %) — guests can then push
  the host into reclaim;
- balloon stats period unset (`GuestSample.balloon_period_s`): the guest's memory
  stats never refresh, so leak detection cannot work (info);
- transparent huge pages "never" (`HostSample.thp_enabled`): guest RAM on 4 KiB
  pages, more TLB misses and EPT walks (info);
- bfq on a non-rotational device (`BlockDevSample.scheduler`): a CPU-heavy
  scheduler where none/mq-deadline serve flash better (info).
These are facts of configuration: they raise after K samples like every finding, so a
guest starting or stopping does not flap them.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvmtop.detectors.base import OVERCOMMIT_CAUSE, Observation, Tick, known
from kvmtop.detectors.settings import DetectorSettings, OvercommitSettings
from kvmtop.model.units import MIB

ID = "overcommit"


class Overcommit:
    """Over-commit and host configuration advice (see the module docstring)."""

    id = ID

    def __init__(self, settings: DetectorSettings) -> None:
        """Host-wide detector: settings come from the global table."""
        self.settings = settings.overcommit

    def forget(self, uuid: str) -> None:
        """No per-guest state."""

    def _obs(
        self,
        key: str,
        name: str,
        bad: bool,
        message: str,
        evidence: dict[str, float],
        tick: Tick,
        severity: str = "warning",
        guest: tuple[str, str] | None = None,
        cause: str = "",
    ) -> Observation:
        s: OvercommitSettings = self.settings
        return Observation(
            key=key,
            bad=bad,
            subject=guest[0] if guest else key,
            subject_name=name,
            raise_after=s.raise_after,
            clear_after=s.clear_after,
            guest=guest[1] if guest else None,
            guest_uuid=guest[0] if guest else None,
            severity=severity,
            message=message if bad else "",
            evidence=evidence,
            baseline=dict(tick.baseline),
            cause=cause,
        )

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """Host-shape verdicts for this tick."""
        s = self.settings
        host = tick.host
        running = tick.guests
        vcpus = sum(g.rates.vcpus or 0 for g in running)
        if host.ncpu:
            ratio = vcpus / host.ncpu
            yield self._obs(
                "host:vcpus",
                "host vCPUs",
                ratio > s.vcpu_ratio,
                f"vCPU:pCPU {ratio:.3g} ({vcpus} vCPUs of {len(running)} running guests on "
                f"{host.ncpu} host CPUs) > {s.vcpu_ratio:g}: busy guests will steal from "
                "each other",
                known(
                    {"vcpu_pcpu_ratio": ratio, "vcpus": float(vcpus), "host_cpus": float(host.ncpu)}
                ),
                tick,
                cause=OVERCOMMIT_CAUSE,
            )
        sizes = [g.rates.mem_max_bytes or g.sample.max_memory_bytes for g in running]
        total = host.mem_total_bytes
        if total and any(sizes):
            guests_bytes = sum(v for v in sizes if v)
            reserve = 100.0 * (total - guests_bytes) / total
            unknown = sum(1 for v in sizes if not v)
            note = f" ({unknown} guests of unknown size not counted)" if unknown else ""
            yield self._obs(
                "host:memory",
                "host memory",
                reserve < s.mem_reserve_pct,
                f"host memory reserve {reserve:.0f}% after guests' maximum memory "
                f"({guests_bytes / MIB / 1024:.1f} of {total / MIB / 1024:.1f} GiB){note} "
                f"< {s.mem_reserve_pct:g}%: guests can push the host into reclaim",
                known(
                    {
                        "reserve_pct": reserve,
                        "guests_max_mib": guests_bytes / MIB,
                        "host_ram_mib": total / MIB,
                    }
                ),
                tick,
            )
        for g in running:
            period = g.sample.balloon_period_s
            if g.sample.balloon is None or (period and not tick.tracking(ID, f"{g.uuid}:balloon")):
                continue
            yield self._obs(
                f"{g.uuid}:balloon",
                g.name,
                not period,
                "balloon stats period unset: guest memory stats never refresh, leak "
                "detection is blind (<memballoon><stats period='10'/>)",
                {},
                tick,
                severity="info",
                guest=(g.uuid, g.name),
            )
        thp = tick.sample.host.thp_enabled if tick.sample.host is not None else None
        if thp is not None:
            yield self._obs(
                "host:thp",
                "host THP",
                thp == "never",
                "transparent huge pages off: guest RAM on 4 KiB pages (more TLB misses); "
                "use madvise or always",
                {},
                tick,
                severity="info",
            )
        devices = tick.sample.host.blockdevs if tick.sample.host is not None else ()
        for dev in devices:
            sched = dev.scheduler
            if sched is None or dev.is_partition:
                continue
            yield self._obs(
                f"host:sched:{dev.name}",
                f"host {dev.name}",
                sched == "bfq" and dev.rotational is False,
                f"{dev.name} is flash but uses the bfq I/O scheduler: none or mq-deadline "
                "cost less CPU per request",
                {},
                tick,
                severity="info",
            )
