"""The report's metric catalogue: which figures of a guest and of the host it gathers,
how each is read from a snapshot, formatted, ranked, plotted and judged.

Per guest, `GUEST_METRICS` (most from the TUI's guest columns, `kvmtop.model.columns`); of
the host, `HOST_METRICS`, and per block device and uplink, `DEVICE_FIGURES` and
`UPLINK_FIGURES`: the baseline a guest figure is judged against (`GuestMetric.baseline`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kvmtop.model.columns import column
from kvmtop.model.formatting import fmt_bytes, fmt_mbps, fmt_ms, fmt_pct, fmt_si
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.rates.host import HostDiskRates, HostNetRates
from kvmtop.model.snapshot import Snapshot

TOP = 5
"""Guests listed per top-offender table and plotted per metric."""
PCT_MIN_TOP = 1.0
"""Plots in percent reach at least 1 %: 0.001 % of steal is a flat line, not a scale."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GuestMetric:
    """A per-guest figure of the report.

    Attributes:
        key: GUEST_COLUMNS key (or "disk_ms"), also the JSON key.
        label: column header.
        help: what it means.
        value: getter on the guest's rates (None: unknown).
        fmt: formatter shared with the TUI.
        baseline: the host figure it is judged against: a `HOST_METRICS` key,
            `DEVICE_MS` / `DEVICE_IOPS` (the devices backing the guest's disks) or
            `UPLINK` (the uplinks of the guest's bridges).
        detectors: findings about this figure (shaded on its plot).
        offender: title of its top-offender table, None for none.
        rank: what ranks the offenders: "max", "total" (time integral) or "slope".
        plot: drawn in the HTML report.
        min_top: the y axis reaches at least this (so near-zero noise stays flat).
    """

    key: str
    label: str
    help: str
    value: Callable[[GuestRates], float | None]
    fmt: Callable[[float | None], str]
    baseline: str
    detectors: tuple[str, ...] = ()
    offender: str | None = None
    rank: str = "max"
    plot: bool = False
    min_top: float = 0.0


@dataclass(frozen=True, slots=True)
class Figure(Generic[T]):
    """A host baseline figure of a `T` (the snapshot, a block device, an uplink)."""

    key: str
    label: str
    value: Callable[[T], float | None]
    fmt: Callable[[float | None], str]


DEVICE_MS = "device_ms"
DEVICE_IOPS = "device_iops"
UPLINK = "uplink_mbps"


def _numeric(key: str) -> Callable[[GuestRates], float | None]:
    """The numeric value of a guest-table column (its text values read as unknown)."""
    getter = column(key).value

    def value(g: GuestRates) -> float | None:
        v = getter(g)
        return None if isinstance(v, str) else v

    return value


def _worse(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


_read_ms, _write_ms = _numeric("disk_read_ms"), _numeric("disk_write_ms")


def _disk_ms(g: GuestRates) -> float | None:
    return _worse(_read_ms(g), _write_ms(g))


def _from_column(key: str, baseline: str, **kw: Any) -> GuestMetric:
    col = column(key)
    return GuestMetric(key, col.header, col.help, _numeric(key), col.fmt, baseline, **kw)


GUEST_METRICS: tuple[GuestMetric, ...] = (
    _from_column("cpu_pct", "cpu_busy_pct", detectors=("host_pressure", "overcommit"),
                 plot=True, min_top=PCT_MIN_TOP),
    _from_column("steal_pct", "psi_cpu_some_pct"),
    _from_column("steal_max_pct", "psi_cpu_some_pct", detectors=("steal",),
                 offender="Steal (worst vCPU, %)", plot=True, min_top=PCT_MIN_TOP),
    _from_column("exits_per_s", "exits_per_s", detectors=("exit_storm",),
                 offender="VM exits/s", plot=True),
    _from_column("disk_iops", DEVICE_IOPS),
    GuestMetric("disk_ms", "Disk ms", "the worse of mean read and write latency per request",
                _disk_ms, fmt_ms, DEVICE_MS, detectors=("disk_latency",),
                offender="Disk latency (ms)", plot=True),
    _from_column("net_mbps", UPLINK),
    _from_column("net_drops_per_s", "softnet_drops_per_s",
                 detectors=("vnic_drops", "vswitch_saturation"),
                 offender="vNIC drops (packets)", rank="total", plot=True, min_top=1.0),
    _from_column("mem_used", "psi_mem_some_pct",
                 detectors=("memory_leak", "qemu_memory_growth"),
                 offender="Memory growth (MiB/h)", rank="slope", plot=True),
)

HOST_METRICS: tuple[Figure[Snapshot], ...] = (
    Figure("cpu_busy_pct", "host CPU busy % (of all CPUs)", lambda s: s.host.cpu_busy_pct,
           fmt_pct),
    Figure("run_delay_pct", "host run-queue delay %", lambda s: s.host.run_delay_pct, fmt_pct),
    Figure("psi_cpu_some_pct", "PSI cpu some %", lambda s: s.host.psi_cpu_some_pct, fmt_pct),
    Figure("psi_mem_some_pct", "PSI memory some %", lambda s: s.host.psi_mem_some_pct,
           fmt_pct),
    Figure("psi_mem_full_pct", "PSI memory full %", lambda s: s.host.psi_mem_full_pct,
           fmt_pct),
    Figure("psi_io_some_pct", "PSI io some %", lambda s: s.host.psi_io_some_pct, fmt_pct),
    Figure("psi_io_full_pct", "PSI io full %", lambda s: s.host.psi_io_full_pct, fmt_pct),
    Figure("softnet_drops_per_s", "softnet drops/s", lambda s: s.host.softnet_drops_per_s,
           fmt_si),
    Figure("exits_per_s", "VM exits/s, all guests", lambda s: s.summary.exits_per_s, fmt_si),
    Figure("mem_used_bytes", "host memory used", lambda s: s.host.mem_used_bytes, fmt_bytes),
)
HOST_PLOTTED = ("cpu_busy_pct", "psi_cpu_some_pct", "psi_mem_some_pct", "psi_io_some_pct")
"""Host figures drawn on the host plot (all in %), with the uplinks' utilization."""
HOST_DETECTORS = ("host_pressure", "overcommit", "vswitch_saturation")
"""Findings shaded on the host plot (those about the host rather than one guest)."""

DEVICE_FIGURES: tuple[Figure[HostDiskRates], ...] = (
    Figure("ms", "latency ms (worse of read/write)", lambda d: _worse(d.read_ms, d.write_ms),
           fmt_ms),
    Figure("iops", "IOPS", lambda d: _sum(d.read_iops, d.write_iops), fmt_si),
    Figure("util_pct", "utilization %", lambda d: d.util_pct, fmt_pct),
)
UPLINK_FIGURES: tuple[Figure[HostNetRates], ...] = (
    Figure("mbps", "Mb/s (busier direction)", lambda n: _worse(n.rx_bps, n.tx_bps), fmt_mbps),
    Figure("util_pct", "utilization %", lambda n: n.util_pct, fmt_pct),
)


def _sum(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None

