"""The report's metric catalogue: which figures of a guest and of the host it gathers,
how each is read from a snapshot, formatted, ranked, plotted and judged.

Per guest, `GUEST_METRICS` (the judged fields of `kvmtop.model.fields.FIELDS`); of
the host, `HOST_METRICS`, and per block device and uplink, `DEVICE_FIGURES` and
`UPLINK_FIGURES`: the baseline a guest figure is judged against (`GuestMetric.baseline`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kvmtop.model.fields import FIELDS, Field, Judged, Value
from kvmtop.model.formatting import fmt_bytes, fmt_mbps, fmt_ms, fmt_pct, fmt_si
from kvmtop.model.rates.counters import known_max, known_sum
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.rates.host import HostDiskRates, HostNetRates
from kvmtop.model.snapshot import Snapshot

TOP = 5
"""Guests listed per top-offender table and plotted per metric."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestMetric(Judged):
    """A per-guest figure of the report: a catalogue field the report judges
    (`kvmtop.model.fields.Field` with a `report`), as the report's stages read it: the
    field's `Judged` (baseline, detectors, offender, rank, plot, min_top) and

    Attributes:
        key: the field's key, also the JSON key.
        label: column header.
        help: what it means.
        value: getter on the guest's rates (None: unknown).
        fmt: formatter shared with the TUI.
    """

    key: str
    label: str
    help: str
    value: Callable[[GuestRates], float | None]
    fmt: Callable[[float | None], str]


@dataclass(frozen=True, slots=True)
class Figure(Generic[T]):
    """A host baseline figure of a `T` (the snapshot, a block device, an uplink)."""

    key: str
    label: str
    value: Callable[[T], float | None]
    fmt: Callable[[float | None], str]


def _numeric(getter: Callable[[GuestRates], Value]) -> Callable[[GuestRates], float | None]:
    """A field's getter with its text values read as unknown."""

    def value(g: GuestRates) -> float | None:
        v = getter(g)
        return None if isinstance(v, str) else v

    return value


def _metric(f: Field, judged: Judged) -> GuestMetric:
    """The report's metric of a judged field."""
    return GuestMetric(
        key=f.key,
        label=f.header,
        help=f.help,
        value=_numeric(f.value),
        fmt=f.fmt,
        baseline=judged.baseline,
        detectors=judged.detectors,
        offender=judged.offender,
        rank=judged.rank,
        plot=judged.plot,
        min_top=judged.min_top,
    )


GUEST_METRICS: tuple[GuestMetric, ...] = tuple(
    _metric(f, f.report) for f in FIELDS if f.report is not None
)
"""The guest figures the report gathers, in catalogue order."""

HOST_METRICS: tuple[Figure[Snapshot], ...] = (
    Figure("cpu_busy_pct", "host CPU busy % (of all CPUs)", lambda s: s.host.cpu_busy_pct, fmt_pct),
    Figure("run_delay_pct", "host run-queue delay %", lambda s: s.host.run_delay_pct, fmt_pct),
    Figure("psi_cpu_some_pct", "PSI cpu some %", lambda s: s.host.psi_cpu_some_pct, fmt_pct),
    Figure("psi_mem_some_pct", "PSI memory some %", lambda s: s.host.psi_mem_some_pct, fmt_pct),
    Figure("psi_mem_full_pct", "PSI memory full %", lambda s: s.host.psi_mem_full_pct, fmt_pct),
    Figure("psi_io_some_pct", "PSI io some %", lambda s: s.host.psi_io_some_pct, fmt_pct),
    Figure("psi_io_full_pct", "PSI io full %", lambda s: s.host.psi_io_full_pct, fmt_pct),
    Figure("softnet_drops_per_s", "softnet drops/s", lambda s: s.host.softnet_drops_per_s, fmt_si),
    Figure("exits_per_s", "VM exits/s, all guests", lambda s: s.summary.exits_per_s, fmt_si),
    Figure("mem_used_bytes", "host memory used", lambda s: s.host.mem_used_bytes, fmt_bytes),
)
HOST_PLOTTED = ("cpu_busy_pct", "psi_cpu_some_pct", "psi_mem_some_pct", "psi_io_some_pct")
"""Host figures drawn on the host plot (all in %), with the uplinks' utilization."""
HOST_DETECTORS = ("host_pressure", "overcommit", "vswitch_saturation")
"""Findings shaded on the host plot (those about the host rather than one guest)."""

DEVICE_FIGURES: tuple[Figure[HostDiskRates], ...] = (
    Figure(
        "ms",
        "latency ms (worse of read/write)",
        lambda d: known_max((d.read_ms, d.write_ms)),
        fmt_ms,
    ),
    Figure("iops", "IOPS", lambda d: known_sum((d.read_iops, d.write_iops)), fmt_si),
    Figure("util_pct", "utilization %", lambda d: d.util_pct, fmt_pct),
)
UPLINK_FIGURES: tuple[Figure[HostNetRates], ...] = (
    Figure("mbps", "Mb/s (busier direction)", lambda n: known_max((n.rx_bps, n.tx_bps)), fmt_mbps),
    Figure("util_pct", "utilization %", lambda n: n.util_pct, fmt_pct),
)
