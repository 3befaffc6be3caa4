"""`kvmtop report`: an incident summary of a recording, as text, Markdown, JSON or HTML.

Layer: headless output (like `batch` and `serve`). Never imports textual.

The recording's raw samples go through the shared `Pipeline` with the detector
engine (the rates, window, detectors and snapshots of the TUI and of replay), one
snapshot at a time, into streaming accumulators; no list of snapshots is kept, so
memory does not grow with the length of the range (the CLI also gives the pipeline
a two-sample window: the detectors keep their own history). What is kept:

- incidents: every incident of the range (`IncidentAcc`: the last version of each,
  `kvmtop.feed.IncidentLog`, with the figures of its worst tick), ranked at its worst
  (`ranked`);
- findings: one `kvmtop.feed.FindingSpan` per raised finding (the replay timeline's
  `FindingTracker`), with the evidence of its worst tick;
- per guest and per host figure: count, sum, exact min and max, the time integral
  (drops/s → packets), and a `LogHistogram` for the p95;
- memory growth per guest: a streaming least-squares slope of guest used memory;
- plot series: `PLOT_POINTS` buckets over the range per plotted figure, each bucket
  the maximum of the values that fell in it, so a short spike survives decimation.

The p95 comes from a logarithmic histogram (DDSketch, Masson et al., VLDB 2019): bin
i counts the values in (γ^(i-1), γ^i] with γ = (1 + α) / (1 − α), and a quantile is
read as its bin's midpoint 2γ^i / (γ + 1), within a relative error α (1 %) of an
exact order statistic. Its size depends on the spread of the values, not on their
number: at most ~1,400 bins span 10⁻³…10⁹, and a metric in practice fills a few
dozen.

With `--step S`, only the first sample at or after every S seconds is pushed:
rates are then means over S (from the raw counters, so exact) and detectors judge
those means, so a burst shorter than S is smoothed; findings equal replay's only
at full resolution (the default).
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import math
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TextIO, TypeVar

from kvmtop.batch import finding_json, incident_json, json_text
from kvmtop.detectors.base import SEVERITY_RANK, fmt_duration
from kvmtop.detectors.incidents import SMALLEST_WORST, MemberKey, rank_key
from kvmtop.detectors.settings import VswitchSettings
from kvmtop.feed import FindingSpan, FindingTracker, IncidentLog, Pipeline
from kvmtop.model.incident import Incident, Member
from kvmtop.model.rates import GuestRates, HostDiskRates, HostNetRates
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import visible
from kvmtop.render import DASH, column, fmt_bytes, fmt_mbps, fmt_ms, fmt_pct, fmt_si

if TYPE_CHECKING:
    from kvmtop.config import Settings
    from kvmtop.outfile import TextOutput
    from kvmtop.store.meta import RecordingMeta
    from kvmtop.store.reader import StoreReader

FORMATS = ("text", "md", "json", "html")
PLOT_POINTS = 600
"""Buckets per plotted series, whatever the length of the range."""
TOP = 5
"""Guests listed per top-offender table and plotted per metric."""
PLOT_GUESTS_MAX = 8
"""Plotted guests per metric: the top ones plus those with a related finding."""
RELATIVE_ERROR = 0.01
"""α of `LogHistogram`: quantiles within ±1 % of the exact value."""
ZERO = 1e-9
"""Values at or below this count in the histogram's zero bin."""
MIN_TREND_S = 300.0
"""Memory growth needs at least this span of data (the leak detector's minimum)."""
MIB = float(1 << 20)
STATE_DIGITS = 7
"""Significant digits of the figures in `Stats.state()`: a relative error of 5e-7 at most,
far below what a report shows, for a fifth less index (kvmtop.rollup)."""
PCT_MIN_TOP = 1.0
"""Plots in percent reach at least 1 %: 0.001 % of steal is a flat line, not a scale."""

T = TypeVar("T")


# --------------------------------------------------------------------------- statistics


class LogHistogram:
    """Counts of values in logarithmic bins; quantiles within `RELATIVE_ERROR`."""

    __slots__ = ("bins", "count", "zeros")
    GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
    INV_LOG_GAMMA = 1 / math.log(GAMMA)

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.zeros = 0
        self.count = 0

    def add(self, v: float) -> None:
        """Count one value (zero or negative values go to the zero bin)."""
        self.count += 1
        if v <= ZERO:
            self.zeros += 1
        else:
            i = math.ceil(math.log(v) * self.INV_LOG_GAMMA)
            self.bins[i] = self.bins.get(i, 0) + 1

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 ≤ q ≤ 1), None when nothing was counted."""
        if not self.count:
            return None
        rank = q * (self.count - 1)
        if rank < self.zeros:
            return 0.0
        seen = self.zeros
        for i in sorted(self.bins):
            seen += self.bins[i]
            if seen > rank:
                return 2 * self.GAMMA**i / (self.GAMMA + 1)
        return 2 * self.GAMMA ** max(self.bins) / (self.GAMMA + 1)



@dataclass(frozen=True, slots=True)
class Summary:
    """min / mean / p95 / max of one figure over the range, and how many values."""

    n: int
    min: float
    avg: float
    p95: float
    max: float

    def as_json(self) -> dict[str, float]:
        """The JSON object: the four figures (rounded) and the count."""
        return {"n": self.n, "min": _r(self.min), "avg": _r(self.avg), "p95": _r(self.p95),
                "max": _r(self.max)}


class Stats:
    """Streaming statistics of one figure: count, sum, min, max, integral, histogram."""

    __slots__ = ("hist", "integral", "max", "min", "n", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.integral = 0.0
        self.hist = LogHistogram()

    def add(self, v: float, dt_s: float | None) -> None:
        """One value, held for `dt_s` seconds (for the integral; None: not counted)."""
        self.n += 1
        self.total += v
        if v < self.min:
            self.min = v
        if v > self.max:
            self.max = v
        if dt_s is not None:
            self.integral += v * dt_s
        self.hist.add(v)

    def state(self) -> list[Any]:
        """A compact JSON-able form (`merge_state` reads it back): the figures to
        `STATE_DIGITS` significant digits, then the histogram's bins as flat pairs of
        (index minus the previous index, count), small numbers that compress well."""
        bins: list[int] = []
        previous = 0
        for i, c in sorted(self.hist.bins.items()):
            bins += (i - previous, c)
            previous = i
        return [self.n, *(float(f"{v:.{STATE_DIGITS}g}") for v in (
            self.total, self.min, self.max, self.integral)), self.hist.zeros, bins]

    def merge_state(self, state: list[Any]) -> None:
        """Fold in the figures a `state()` describes (the same figure over another
        stretch of time; the histogram's bins add up exactly)."""
        n, total, lo, hi, integral, zeros, bins = state
        self.n += n
        self.total += total
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.integral += integral
        hist = self.hist
        hist.count += n
        hist.zeros += zeros
        counts = hist.bins
        index = 0
        for step, count in zip(bins[::2], bins[1::2], strict=True):
            index += step
            counts[index] = counts.get(index, 0) + count

    def summary(self) -> Summary | None:
        """The figures, None when no value was known."""
        if not self.n:
            return None
        p95 = min(max(self.hist.quantile(0.95) or 0.0, self.min), self.max)
        return Summary(self.n, self.min, self.total / self.n, p95, self.max)


class Trend:
    """Least-squares slope of (t, v), streaming: five sums, no points kept."""

    __slots__ = ("first_s", "last_s", "n", "st", "stt", "stv", "sv")

    def __init__(self) -> None:
        self.n = 0
        self.first_s = self.last_s = 0.0
        self.st = self.sv = self.stt = self.stv = 0.0

    def add(self, t: float, v: float) -> None:
        """One point (t in seconds)."""
        if not self.n:
            self.first_s = t
        self.last_s = t
        x = t - self.first_s  # small numbers keep the sums exact enough
        self.n += 1
        self.st += x
        self.sv += v
        self.stt += x * x
        self.stv += x * v

    def merge(self, other: Trend) -> None:
        """Fold the points of a later stretch in (its sums shifted to our origin)."""
        if not other.n:
            return
        if not self.n:
            self.first_s = other.first_s
        d = other.first_s - self.first_s
        self.stt += other.stt + 2 * d * other.st + other.n * d * d
        self.stv += other.stv + d * other.sv
        self.st += other.st + other.n * d
        self.sv += other.sv
        self.n += other.n
        self.last_s = other.last_s

    def state(self) -> list[float]:
        """A JSON-able form (`from_state` reads it back)."""
        return [self.n, self.first_s, self.last_s, self.st, self.sv, self.stt, self.stv]

    @classmethod
    def from_state(cls, state: list[float]) -> Trend:
        """The `Trend` a `state()` describes."""
        trend = cls()
        n, trend.first_s, trend.last_s, trend.st, trend.sv, trend.stt, trend.stv = state
        trend.n = int(n)
        return trend

    def slope(self) -> float | None:
        """Units of v per second; None over less than `MIN_TREND_S` of data."""
        if self.n < 3 or self.last_s - self.first_s < MIN_TREND_S:
            return None
        den = self.n * self.stt - self.st * self.st
        return (self.n * self.stv - self.st * self.sv) / den if den > 0 else None


class Series:
    """A plotted figure over [start_s, end_s]: `PLOT_POINTS` bucket maxima (NaN: none)."""

    __slots__ = ("end_s", "start_s", "values", "width_s")

    def __init__(self, start_s: float, end_s: float) -> None:
        self.start_s, self.end_s = start_s, end_s
        self.width_s = max(end_s - start_s, 1e-9) / PLOT_POINTS
        self.values = array("d", [math.nan]) * PLOT_POINTS

    def add(self, t: float, v: float) -> None:
        """Fold one value into its bucket (times outside the range go to the edge)."""
        i = int((t - self.start_s) / self.width_s)
        i = 0 if i < 0 else PLOT_POINTS - 1 if i >= PLOT_POINTS else i
        cur = self.values[i]
        if not cur >= v:  # also when the bucket is empty (NaN compares false)
            self.values[i] = v

    def points(self) -> Iterator[tuple[float, float]]:
        """(bucket middle time, value) of every filled bucket."""
        for i, v in enumerate(self.values):
            if not math.isnan(v):
                yield self.start_s + (i + 0.5) * self.width_s, v


# --------------------------------------------------------------------------- metrics


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


def _r(v: float) -> float:
    return round(v, 3)


# --------------------------------------------------------------------------- accumulation


@dataclass(slots=True)
class GuestAcc:
    """Everything the report keeps about one guest (by UUID)."""

    uuid: str
    name: str
    first_s: float
    last_s: float
    series_range: tuple[float, float]
    frames: int = 0
    stats: dict[str, Stats] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    memory: Trend = field(default_factory=Trend)
    devices: set[str] = field(default_factory=set)
    bridges: set[str] = field(default_factory=set)
    _slots: list[tuple[Callable[[GuestRates], float | None], Stats, Series | None]] = field(
        default_factory=list)

    def __post_init__(self) -> None:
        for m in GUEST_METRICS:
            stats = self.stats[m.key] = Stats()
            series = Series(*self.series_range) if m.plot else None
            if series is not None:
                self.series[m.key] = series
            self._slots.append((m.value, stats, series))

    def add(self, g: GuestRates, t: float, dt_s: float | None) -> None:
        """Fold one frame of this guest in (the hot loop of a report: kept lean)."""
        self.name, self.last_s = g.name, t
        self.frames += 1
        for value, stats, series in self._slots:
            v = value(g)
            if v is not None:
                stats.add(v, dt_s)
                if series is not None:
                    series.add(t, v)
        if g.mem_used_bytes is not None:
            self.memory.add(t, g.mem_used_bytes / MIB)
        for d in g.disks:
            if d.host_dev:
                self.devices.add(d.host_dev)
        for n in g.nics:
            if n.bridge:
                self.bridges.add(n.bridge)

    def summary(self, key: str) -> Summary | None:
        """The figures of one metric, None when never known."""
        return self.stats[key].summary()

    def growth_mib_per_h(self) -> float | None:
        """Least-squares growth of guest used memory over the range."""
        slope = self.memory.slope()
        return None if slope is None else slope * 3600

    def rank_value(self, m: GuestMetric) -> float | None:
        """The figure that ranks this guest among the offenders of `m`."""
        if m.rank == "slope":
            return self.growth_mib_per_h()
        stats = self.stats[m.key]
        if not stats.n:
            return None
        return stats.integral if m.rank == "total" else stats.max


class HostAcc:
    """The host baseline over the range: figures, devices, uplinks, plot series."""

    def __init__(self, series_range: tuple[float, float],
                 uplink_kinds: tuple[str, ...]) -> None:
        """Start empty; uplinks are the host interfaces of `uplink_kinds`."""
        self.series_range = series_range
        self.uplink_kinds = uplink_kinds
        self.stats: dict[str, Stats] = {m.key: Stats() for m in HOST_METRICS}
        self.disks: dict[str, dict[str, Stats]] = {}
        self.uplinks: dict[str, dict[str, Stats]] = {}
        self.masters: dict[str, str] = {}
        self.series: dict[str, Series] = {}

    def plot(self, key: str, t: float, v: float) -> None:
        """Fold a value into the plot series `key` (created on first use)."""
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series(*self.series_range)
        series.add(t, v)

    def add(self, snap: Snapshot, dt_s: float | None) -> None:
        """Fold one snapshot's host figures in."""
        t = snap.wall_s
        for m in HOST_METRICS:
            v = m.value(snap)
            if v is not None:
                self.stats[m.key].add(v, dt_s)
                if m.key in HOST_PLOTTED:
                    self.plot(m.key, t, v)
        for d in snap.host.disks:
            _fold(self.disks.setdefault(d.name, {}), DEVICE_FIGURES, d, dt_s)
        for n in snap.host.nets:
            if n.kind not in self.uplink_kinds:
                continue
            _fold(self.uplinks.setdefault(n.name, {}), UPLINK_FIGURES, n, dt_s)
            if n.master:
                self.masters[n.name] = n.master
            if n.util_pct is not None:
                self.plot(f"uplink:{n.name}", t, n.util_pct)


def _fold(into: dict[str, Stats], figures: Sequence[Figure[T]], item: T,
          dt_s: float | None) -> None:
    """Add a device's or uplink's figures to its statistics."""
    for f in figures:
        v = f.value(item)
        if v is not None:
            into.setdefault(f.key, Stats()).add(v, dt_s)


def _worst_key(i: Incident) -> tuple[int, float, int, float]:
    """Orders the versions (ticks) of one incident, the worst first: by `rank_key`'s
    tier, ETA and severity, then by its main evidence figure (the first; the smaller
    the worse for `SMALLEST_WORST` figures, else the larger). Only the figures an
    `IncidentAcc` keeps of the worst tick count, so the order is the same over frames
    and over merged accumulations."""
    _, tier, eta, severity, *_ = rank_key(i)
    first = next(iter(i.evidence.items()), None)
    main = 0.0 if first is None else first[1] if first[0] in SMALLEST_WORST else -abs(first[1])
    return tier, eta, severity, main


class IncidentAcc:
    """The incidents of the range, each at its worst: its last version
    (`kvmtop.feed.IncidentLog`) with the title, severity, evidence and ETA of its worst
    tick (`_worst_key`, the last of equals: a steady figure reads as it was last), and
    each member at the highest severity it reached.

    Frames come in one by one (`add`), or as what another `IncidentAcc` gathered over
    the frames that follow (`merge`, the report's index): either way the same incidents.
    """

    __slots__ = ("_highest", "_log", "_members", "_worst")

    def __init__(self) -> None:
        self._log = IncidentLog()
        self._worst: dict[str, Incident] = {}
        self._members: dict[str, tuple[Member, ...]] = {}
        """Per incident, the members last folded in (the tracker hands out the same
        tuple while they do not change)."""
        self._highest: dict[str, dict[MemberKey, str]] = {}

    def add(self, snap: Snapshot) -> None:
        """Fold in the incidents of the next frame (in recording order, no seek)."""
        self._log.add(snap)
        for i in snap.incidents:
            self._fold(i)

    def merge(self, incidents: Sequence[Incident]) -> None:
        """Fold in another accumulation's `incidents()`, of the frames that follow."""
        self._log.merge(incidents)
        for i in incidents:
            self._fold(i)

    def _fold(self, i: Incident) -> None:
        worst = self._worst.get(i.id)
        # The same evidence object: the same findings as the worst tick (the tracker
        # rebuilds an incident's figures only when they change), so the same figures.
        if worst is None or (i.evidence is not worst.evidence
                             and _worst_key(i) <= _worst_key(worst)):
            self._worst[i.id] = i
        if i.members is not self._members.get(i.id):
            self._members[i.id] = i.members
            highest = self._highest.setdefault(i.id, {})
            for m in i.members:
                key = (m.detector, m.subject, m.guest)
                seen = highest.get(key)
                if seen is None or SEVERITY_RANK.get(m.severity, 0) > SEVERITY_RANK.get(seen, 0):
                    highest[key] = m.severity

    def incidents(self) -> list[Incident]:
        """Every incident, by start, at its worst (see the class): `active` when still
        active at the last frame, `rank` its rank there (0: gone from it)."""
        out = []
        for i in self._log.incidents():
            worst, highest = self._worst[i.id], self._highest[i.id]
            members = tuple(
                m if m.severity == (s := highest[(m.detector, m.subject, m.guest)])
                else dataclasses.replace(m, severity=s) for m in i.members)
            out.append(dataclasses.replace(
                i, title=worst.title, severity=worst.severity, evidence=worst.evidence,
                eta_s=worst.eta_s, members=members, active=i.active and i.rank > 0))
        return out


def ranked(incidents: Iterable[Incident]) -> list[Incident]:
    """The report's order of incidents, ranked from 1: `rank_key` of each at its worst
    (`IncidentAcc`), leaving out its first criterion (active first), so an incident
    that cleared before the end of the range keeps the place its worst tick earns it
    (docs/detectors.md#incidents)."""
    order = sorted(incidents, key=lambda i: rank_key(i)[1:])
    return [dataclasses.replace(i, rank=n) for n, i in enumerate(order, 1)]


@dataclass(slots=True)
class Report:
    """What `build_report` gathered; the renderers read only this.

    Attributes:
        path: the recording file.
        meta: its header.
        from_s / to_s: the requested range (None: from the start / to the end).
        first_s / last_s: wall times of the first and last sample read (None: none).
        step_s: the resolution asked for (None: every sample).
        index_s: the plots' resolution when the figures come from the recording's
            index (`kvmtop.rollup`), None when every frame was computed here.
        samples: samples read.
        guests: per guest, in order of first appearance.
        host: the host baseline.
        incidents: the incidents of the range at their worst, in rank order
            (`IncidentAcc`, `ranked`).
        findings: finding spans by start time.
        notices: the reader's notices: one line per sample skipped as unreadable,
            and lines about the file (cut short, read without FILE-shm).
        skipped: how many samples were skipped as unreadable (the reader's
            `skipped`; the notices hold more than these).
    """

    path: str
    meta: RecordingMeta
    from_s: float | None
    to_s: float | None
    first_s: float | None
    last_s: float | None
    step_s: float | None
    samples: int
    guests: list[GuestAcc]
    host: HostAcc
    incidents: list[Incident]
    findings: list[FindingSpan]
    notices: list[str]
    skipped: int
    index_s: float | None = None


# --------------------------------------------------------------------------- reading


class Progress:
    """One self-updating line on a terminal (`stream` a TTY); silent otherwise.

    Progress is by time: the share of [start_s, end_s] already read, with an estimate
    of the time left from the pace so far.
    """

    def __init__(self, label: str, start_s: float | None, end_s: float | None,
                 stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Show `label` for the range [start_s, end_s] on `stream` (None: the
        sys.stderr of the moment, not of the first import)."""
        stream = sys.stderr if stream is None else stream
        self.label, self.stream, self.clock = label, stream, clock
        self.start_s, self.end_s = start_s or 0.0, end_s or 0.0
        self.enabled = self.end_s > self.start_s and stream.isatty()
        self._began = clock()
        self._shown = 0.0

    def update(self, t: float) -> None:
        """The sample at wall time `t` was read; redraw at most twice a second."""
        now = self.clock()
        if not self.enabled or now - self._shown < 0.5:
            return
        self._shown = now
        share = min(max((t - self.start_s) / (self.end_s - self.start_s), 1e-6), 1.0)
        left = (now - self._began) * (1 - share) / share
        self.stream.write(f"\r{self.label}: {share:4.0%}, about {fmt_duration(left)} left\x1b[K")
        self.stream.flush()

    def done(self) -> None:
        """Erase the line."""
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def extent(reader: StoreReader, from_s: float | None,
           to_s: float | None) -> tuple[float, float] | None:
    """Wall times of the first and last sample in the range, None when it holds none."""
    if from_s is None:
        first = reader.first_time()
    else:
        index = reader.seek(from_s)
        first = None if index is None else reader.time_of(index)
    last = reader.last_time()
    if first is None or last is None:
        return None
    last = last if to_s is None else min(last, to_s)
    return (first, last) if last >= first else None


def frames(
    reader: StoreReader,
    pipeline: Pipeline,
    *,
    from_s: float | None = None,
    to_s: float | None = None,
    step_s: float | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[Sample, Snapshot]]:
    """Each sample of the range (damaged ones skipped) and the snapshot the shared
    pipeline makes of it, in recording order.

    With `step_s`, the first sample at or after every `step_s` seconds only (found by
    the reader's time index, so the others are not even decoded).
    """
    if step_s is None:
        chosen: Iterable[Sample] = reader.iter(from_s, to_s)
    else:
        chosen = _stepped(reader, from_s, to_s, step_s)
    for sample in chosen:
        if progress is not None:
            progress.update(sample.wall_s)
        yield sample, pipeline.push(sample, mode="replay")


def _stepped(reader: StoreReader, from_s: float | None, to_s: float | None,
             step_s: float) -> Iterator[Sample]:
    index = reader.first_index() if from_s is None else reader.seek(from_s)
    while index is not None:
        t = reader.time_of(index)
        if t is None:  # a damaged index page: go on with the next row
            index = reader.next_index(index)
            continue
        if to_s is not None and t > to_s:
            return
        sample = reader.read(index)
        if sample is not None:
            # The step is these samples' sampling interval: rates over it are wanted
            # (means over the step), not lost ticks (`rates.interval_gap`).
            yield dataclasses.replace(sample, interval_s=max(step_s, sample.interval_s))
        index = reader.seek(t + step_s)


class Accumulator:
    """Folds snapshots, one at a time, into the report's aggregates.

    Args:
        series_range: wall times the plot series span (the range's first and last sample).
        uplink_kinds: host interface kinds that are uplinks.
    """

    def __init__(self, series_range: tuple[float, float], uplink_kinds: tuple[str, ...], *,
                 after_s: float | None = None) -> None:
        """`after_s`: wall time of the frame before the first one added, when the
        accumulation continues another one (the first frame's value is held from then)."""
        self.series_range = series_range
        self.host = HostAcc(series_range, uplink_kinds)
        self.guests: dict[str, GuestAcc] = {}
        self.tracker = FindingTracker()
        self.incidents = IncidentAcc()
        self.samples = 0
        self.first_s: float | None = None
        self.last_s: float | None = after_s

    def add(self, snap: Snapshot) -> None:
        """Fold one snapshot in (the report's per-sample cost besides the pipeline)."""
        t = snap.wall_s
        self.samples += 1
        if self.samples == 1:
            self.first_s = t
        dt_s = None if self.last_s is None else t - self.last_s
        self.last_s = t
        self.host.add(snap, dt_s)
        for g in snap.guests:
            acc = self.guests.get(g.uuid)
            if acc is None:
                acc = self.guests[g.uuid] = GuestAcc(g.uuid, g.name, t, t, self.series_range)
            acc.add(g, t, dt_s)
        self.tracker.add(snap)
        self.incidents.add(snap)


def by_start(spans: Iterable[FindingSpan]) -> list[FindingSpan]:
    """The report's order of finding spans: by first-bad time."""
    return sorted(spans, key=lambda s: (s.since_s, s.detector, s.subject_name))


def build_report(
    reader: StoreReader,
    pipeline: Pipeline,
    *,
    from_s: float | None = None,
    to_s: float | None = None,
    step_s: float | None = None,
    uplink_kinds: tuple[str, ...] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Run the range of the recording through `pipeline` and gather the report.

    Args:
        reader: the open recording.
        pipeline: the shared pipeline, with the detector engine.
        from_s / to_s: the range (Unix s; None: the start / the end).
        step_s: push one sample per `step_s` seconds (None: every sample).
        uplink_kinds: host interface kinds that are uplinks (default: the vswitch
            detector's default).
        progress: told the time of each sample read.
    """
    acc = Accumulator(extent(reader, from_s, to_s) or (0.0, 0.0),
                      uplink_kinds or VswitchSettings().uplink_kinds)
    for _sample, snap in frames(reader, pipeline, from_s=from_s, to_s=to_s, step_s=step_s,
                                progress=progress):
        acc.add(snap)
    if progress is not None:
        progress.done()
    return Report(
        path=reader.path, meta=reader.meta, from_s=from_s, to_s=to_s, first_s=acc.first_s,
        last_s=acc.last_s, step_s=step_s, samples=acc.samples, guests=list(acc.guests.values()),
        host=acc.host, incidents=ranked(acc.incidents.incidents()),
        findings=by_start(acc.tracker.spans()), notices=list(reader.notices),
        skipped=len(reader.skipped),
    )


# --------------------------------------------------------------------------- content


def stamp(t: float | None) -> str:
    """A wall time as "YYYY-MM-DD HH:MM:SS" (UTC), or a dash."""
    return DASH if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(v: float) -> str:
    return f"{v:.4g}"


def evidence_text(evidence: Mapping[str, float], limit: int = 4) -> str:
    """The first `limit` evidence figures, "name value, ..."."""
    return ", ".join(f"{k} {_num(v)}" for k, v in list(evidence.items())[:limit])


def offenders(report: Report, m: GuestMetric) -> list[tuple[GuestAcc, float]]:
    """The `TOP` guests with the highest positive rank value of `m`."""
    ranked = [(g, v) for g in report.guests if (v := g.rank_value(m)) is not None and v > 0]
    return sorted(ranked, key=lambda gv: -gv[1])[:TOP]


def _rank_text(m: GuestMetric, v: float) -> str:
    if m.rank == "slope":
        return f"{v:+.1f}"
    return fmt_si(v) if m.rank == "total" else m.fmt(v)


def baselines(report: Report, g: GuestAcc, m: GuestMetric
              ) -> list[tuple[str, Summary | None, Callable[[float | None], str]]]:
    """The host figures guest metric `m` of `g` is judged against: (label, figures, fmt)."""
    host = report.host
    if m.baseline in (DEVICE_MS, DEVICE_IOPS):
        key = "ms" if m.baseline == DEVICE_MS else "iops"
        fmt = next(f.fmt for f in DEVICE_FIGURES if f.key == key)
        return [(dev, _stats(host.disks.get(dev, {}), key), fmt) for dev in sorted(g.devices)]
    if m.baseline == UPLINK:
        fmt = UPLINK_FIGURES[0].fmt
        mine = sorted(u for u, master in host.masters.items() if master in g.bridges)
        return [(u, _stats(host.uplinks[u], "mbps"), fmt) for u in mine or sorted(host.uplinks)]
    hm = next(h for h in HOST_METRICS if h.key == m.baseline)
    return [(hm.label, host.stats[hm.key].summary(), hm.fmt)]


def _stats(figures: dict[str, Stats], key: str) -> Summary | None:
    stats = figures.get(key)
    return None if stats is None else stats.summary()


def _avg_p95(s: Summary | None, fmt: Callable[[float | None], str]) -> str:
    return DASH if s is None else f"{fmt(s.avg)} / {fmt(s.p95)}"


def _four(s: Summary | None, fmt: Callable[[float | None], str]) -> tuple[str, str, str, str]:
    if s is None:
        return DASH, DASH, DASH, DASH
    return fmt(s.min), fmt(s.avg), fmt(s.p95), fmt(s.max)


@dataclass(frozen=True, slots=True)
class Table:
    """A table of text cells; the first `left` columns align left, the rest right."""

    title: str
    headers: tuple[str, ...]
    rows: Sequence[Sequence[str]]
    note: str = ""
    left: int = 1
    kind: str = ""
    """A CSS class for the HTML table ("findings", "stats", ...)."""


@dataclass(frozen=True, slots=True)
class Section:
    """A titled part of the report: facts (label, value), a note, tables, then parts
    of its own (one per incident)."""

    id: str
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""
    tables: list[Table] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)


def sections(report: Report) -> list[Section]:
    """The report's content in reading order, shared by the text, Markdown and HTML,
    every text in it as shown (names escaped once, here: `_visible`): the incidents
    first, then the findings timeline, the recording and the figures."""
    return [_visible(sec) for sec in (_incidents(report), _timeline(report), _recording(report),
                                      _offenders(report), _host(report), _per_guest(report))]


def _visible(sec: Section) -> Section:
    """A section with every text passed through `kvmtop.model.text.visible`: guest,
    device and subject names, finding messages and the recording's metadata come from
    outside, and a name's escape sequence must not reach the reader's terminal (text,
    Markdown) or reorder a page (HTML). Each format adds its own escaping on top."""
    tables = [dataclasses.replace(
        t, title=visible(t.title), headers=tuple(map(visible, t.headers)),
        rows=[[visible(c) for c in r] for r in t.rows], note=visible(t.note))
        for t in sec.tables]
    return dataclasses.replace(
        sec, title=visible(sec.title), facts=[(visible(k), visible(v)) for k, v in sec.facts],
        note=visible(sec.note), tables=tables, subsections=list(map(_visible, sec.subsections)))


def _recording(report: Report) -> Section:
    m = report.meta
    span = (DASH if report.first_s is None or report.last_s is None
            else fmt_duration(report.last_s - report.first_s))
    resolution = (
        f"one sample per {report.step_s:g} s: rates are means over the step"
        if report.step_s is not None else "every sample (as recorded)"
        if report.index_s is None else f"every sample, from the recording's index "
        f"(plots: the peak of every {report.index_s:g} s; --exact recomputes it)")
    facts = [
        ("file", report.path),
        ("host", m.hostname or DASH),
        ("kernel", m.kernel or DASH),
        ("libvirt", " / ".join(v for v in (m.libvirt_version, m.hypervisor, m.uri) if v)
         or DASH),
        ("recorded by", f"kvmtop {m.kvmtop_version}, every "
         f"{'?' if m.interval_s is None else f'{m.interval_s:g}'} s"),
        ("collectors", ", ".join(m.collectors) or DASH),
        ("range (UTC)", f"{stamp(report.first_s)} → {stamp(report.last_s)} ({span})"),
        ("samples", f"{report.samples}; {len(report.guests)} guests"),
        ("resolution", resolution),
    ]
    if report.skipped:
        facts.append(("skipped", f"{report.skipped} damaged samples"))
    note = "" if report.samples else "No samples in the range."
    return Section("recording", "Recording", facts=facts, note=note)


INCIDENT_EVIDENCE = 8
"""Evidence figures an incident shows (its kind has up to 7: `EVIDENCE`)."""


def _incidents(report: Report) -> Section:
    n = len(report.incidents)
    where = (f" on {report.meta.hostname or DASH} from {stamp(report.first_s)} to "
             f"{stamp(report.last_s)} UTC" if report.samples else "")
    note = (f"{n} incident{'' if n == 1 else 's'}{where}: findings grouped by cause, the "
            "most urgent first, each ranked and shown at its worst (a leak's time to "
            "exhaustion, then packets lost or critical, severity, guests involved × "
            "duration); crossings: how often it cleared and came back." if n
            else f"No incidents{where}.")
    return Section("incidents", "Incidents", note=note,
                   subsections=[_incident(i) for i in report.incidents])


def _incident(i: Incident) -> Section:
    until = "ongoing" if i.active else stamp(i.last_bad_s)
    facts = [
        ("when (UTC)", f"{stamp(i.since_s)} → {until} ({fmt_duration(i.duration_s)})"),
        ("crossings", str(i.crossings)),
        ("kind", f"{i.kind} (id {i.id})"),
        ("guests", ", ".join(i.guests) or DASH),
        ("evidence", evidence_text(i.evidence, INCIDENT_EVIDENCE) or DASH),
    ]
    if i.eta_s is not None:
        facts.append(("memory exhausted in", f"~{fmt_duration(i.eta_s)}"))
    facts.append(("advice", i.advice))
    rows = [(m.guest or DASH, m.subject_name, m.detector, m.severity) for m in i.members]
    members = Table("Members", ("Guest", "Subject", "Detector", "Severity"), rows, left=4,
                    kind="members")
    return Section(f"incident-{i.id}", f"#{i.rank} {i.severity}: {i.title}", facts=facts,
                   tables=[members])


def _timeline(report: Report) -> Section:
    rows = []
    notes: dict[tuple[str, str], list[FindingSpan]] = {}
    for s in report.findings:
        f = s.peak
        if f.severity == "info":  # facts rather than incidents: grouped below
            notes.setdefault((f.detector, f.message), []).append(s)
            continue
        end = "ongoing" if s.ongoing else stamp(s.until_s)
        rows.append((stamp(s.since_s), end, fmt_duration(max(s.until_s - s.since_s, 0.0)),
                     f.severity, f.detector, f.subject_name, evidence_text(f.evidence), f.message))
    tables = []
    if rows:
        tables.append(Table("Findings", ("Start (UTC)", "End", "Lasted", "Severity",
                                         "Detector", "Subject", "Peak evidence", "Message"),
                            rows, left=8, kind="findings"))
    if notes:
        tables.append(Table(
            "Notes (info findings, grouped)", ("First seen (UTC)", "Detector", "Subjects",
                                               "Message"),
            [(stamp(min(s.since_s for s in group)), detector, _names(group), message)
             for (detector, message), group in sorted(notes.items(),
                                                      key=lambda kv: kv[1][0].since_s)],
            left=4, kind="notes"))
    note = ("Each finding from its first bad sample to the last sample it was active, "
            "with the evidence at its worst." if rows else "No warning or critical findings "
            "in the range.")
    return Section("findings", "Findings timeline", note=note, tables=tables)


def _names(periods: Sequence[FindingSpan], shown: int = 6) -> str:
    """Subject names, the first `shown` of them, and how many in all."""
    names = sorted({s.peak.subject_name for s in periods})
    more = f" … ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _offenders(report: Report) -> Section:
    tables = []
    for m in GUEST_METRICS:
        if m.offender is None:
            continue
        by = {"max": "peak", "total": "total over the range",
              "slope": "least-squares growth of used memory"}[m.rank]
        rows = []
        for g, v in offenders(report, m):
            s = g.summary(m.key)
            rows.append((g.name, _rank_text(m, v), *_four(s, m.fmt)[1:]))
        tables.append(Table(m.offender, ("Guest", by, "avg", "p95", "max"), rows,
                            note="" if rows else "none", kind="offenders"))
    return Section("offenders", "Top offenders", tables=tables,
                   note=f"Up to {TOP} guests per figure, worst first.")


def _host(report: Report) -> Section:
    host = report.host
    rows = [(m.label, *_four(host.stats[m.key].summary(), m.fmt)) for m in HOST_METRICS]
    tables = [Table("Host", ("Figure", "min", "avg", "p95", "max"), rows, kind="stats")]
    for title, items, figures in (("Block devices", host.disks, DEVICE_FIGURES),
                                  ("Uplinks", host.uplinks, UPLINK_FIGURES)):
        dev_rows = [(name, f.label, *_four(_stats(stats, f.key), f.fmt))
                    for name, stats in sorted(items.items()) for f in figures]
        if dev_rows:
            tables.append(Table(title, ("Device", "Figure", "min", "avg", "p95", "max"),
                                dev_rows, left=2, kind="stats"))
    return Section("host", "Host baseline", tables=tables)


def _per_guest(report: Report) -> Section:
    tables = []
    for m in GUEST_METRICS:
        rows = []
        for g in sorted(report.guests, key=lambda g: -(_p95(g.summary(m.key)))):
            base = "; ".join(f"{label} {_avg_p95(s, fmt)}"
                             for label, s, fmt in baselines(report, g, m)) or DASH
            rows.append((g.name, *_four(g.summary(m.key), m.fmt), base))
        tables.append(Table(f"{m.label}: {m.help}",
                            ("Guest", "min", "avg", "p95", "max", "host baseline avg / p95"),
                            rows, kind="stats"))
    return Section("guests", "Per guest", tables=tables,
                   note="Guests by p95, next to the host figure each is judged against, "
                   "over the same range.")


def _p95(s: Summary | None) -> float:
    return -math.inf if s is None else s.p95


# --------------------------------------------------------------------------- text, md


def _widths(t: Table) -> list[int]:
    return [max(len(h), *(len(r[i]) for r in t.rows)) if t.rows else len(h)
            for i, h in enumerate(t.headers)]


def _cells(t: Table, cells: Sequence[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i < t.left else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()


def render_text(report: Report) -> str:
    """The report as plain text (aligned columns)."""
    out = [f"kvmtop report: {visible(report.path)}"]
    for sec in sections(report):
        out += ["", f"== {sec.title} ==", *_text_body(sec, "")]
    return "\n".join(out) + "\n"


def _text_body(sec: Section, indent: str) -> list[str]:
    """A section's facts, note, tables and parts as text lines; its parts' lines
    indented under their titles."""
    width = max((len(k) for k, _ in sec.facts), default=0)
    out = [f"{indent}{k.ljust(width)}  {v}" for k, v in sec.facts]
    out += [indent + sec.note] if sec.note else []
    for t in sec.tables:
        out += ["", f"{indent}-- {t.title} --"]
        if not t.rows:
            out.append(indent + (t.note or "none"))
            continue
        widths = _widths(t)
        rows = [t.headers, ["-" * w for w in widths], *t.rows]
        out += [indent + _cells(t, r, widths) for r in rows]
    for sub in sec.subsections:
        out += ["", indent + sub.title, *_text_body(sub, indent + "  ")]
    return out


def _md(text: str) -> str:
    """A table cell's, heading's or fact's text (already visible) in Markdown: a pipe
    would end the cell, a "<" open an HTML tag (advice quotes libvirt XML elements)."""
    return text.replace("|", "\\|").replace("<", "\\<")


def render_md(report: Report) -> str:
    """The report as Markdown (GitHub tables)."""
    out = [f"# kvmtop report: `{visible(report.path)}`"]
    for sec in sections(report):
        out += _md_section(sec, 2)
    return "\n".join(out) + "\n"


def _md_section(sec: Section, level: int) -> list[str]:
    """A section as Markdown under a heading of `level`; its tables and parts one
    level below."""
    out = ["", f"{'#' * level} {_md(sec.title)}", ""]
    out += [f"- **{k}**: {_md(v)}" for k, v in sec.facts]
    if sec.note:  # the summary's names the host
        out += ["", _md(sec.note)] if sec.facts else [_md(sec.note)]
    for t in sec.tables:
        out += ["", f"{'#' * (level + 1)} {_md(t.title)}", ""]
        if not t.rows:
            out.append(t.note or "none")
            continue
        out.append("| " + " | ".join(_md(h) for h in t.headers) + " |")
        out.append("|" + "|".join(":---" if i < t.left else "---:"
                                  for i in range(len(t.headers))) + "|")
        out += ["| " + " | ".join(_md(c) for c in r) + " |" for r in t.rows]
    for sub in sec.subsections:
        out += _md_section(sub, level + 1)
    return out


# --------------------------------------------------------------------------- JSON


def report_json(report: Report) -> dict[str, Any]:
    """The report as one JSON object; figures are raw numbers (null: unknown)."""

    def summary(s: Summary | None) -> dict[str, float] | None:
        return None if s is None else s.as_json()

    host = report.host
    return {
        "file": report.path,
        "meta": dataclasses.asdict(report.meta),
        "range": {"from": report.first_s, "to": report.last_s,
                  "requested_from": report.from_s, "requested_to": report.to_s,
                  "samples": report.samples, "skipped": report.skipped,
                  "step_s": report.step_s, "index_s": report.index_s},
        "incidents": [incident_json(i) | {"until": None if i.active else i.last_bad_s,
                                          "duration_s": _r(i.duration_s)}
                      for i in report.incidents],
        "findings": [finding_json(s.peak) | {"start": s.since_s, "end": s.until_s,
                                             "ongoing": s.ongoing}
                     for s in report.findings],
        "offenders": {
            m.key: [{"guest": g.name, "uuid": g.uuid, "by": m.rank, "value": _r(v)}
                    for g, v in offenders(report, m)]
            for m in GUEST_METRICS if m.offender is not None
        },
        "host": {
            "metrics": {m.key: summary(host.stats[m.key].summary()) for m in HOST_METRICS},
            "disks": {name: {k: summary(s.summary()) for k, s in figs.items()}
                      for name, figs in sorted(host.disks.items())},
            "uplinks": {name: {k: summary(s.summary()) for k, s in figs.items()}
                        for name, figs in sorted(host.uplinks.items())},
        },
        "guests": [
            {
                "uuid": g.uuid,
                "name": g.name,
                "first": g.first_s,
                "last": g.last_s,
                "frames": g.frames,
                "metrics": {m.key: summary(g.summary(m.key)) for m in GUEST_METRICS},
                "memory_growth_mib_per_h": (None if (v := g.growth_mib_per_h()) is None
                                            else _r(v)),
                "net_drops_total": _r(g.stats["net_drops_per_s"].integral)
                if g.stats["net_drops_per_s"].n else None,
                "host_devices": sorted(g.devices),
                "bridges": sorted(g.bridges),
                "baseline": {m.key: [{"of": label, "figures": summary(s)}
                                     for label, s, _ in baselines(report, g, m)]
                             for m in GUEST_METRICS},
            }
            for g in report.guests
        ],
        "notices": report.notices,
    }


# --------------------------------------------------------------------------- HTML

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2")
SHADE = {"critical": "#d62728", "warning": "#ff7f0e"}
"""Finding shading by severity (info findings are facts, not incidents: not shaded)."""
W, H, ML, MR, MT, MB = 960, 240, 72, 16, 12, 28
"""SVG plot size and margins (px)."""
SMALL = (560, 150)
"""Size of an incident's plot (px)."""

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px}h2{font-size:17px;border-bottom:1px solid #ccc;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 14px}
th,td{padding:2px 8px;border-bottom:1px solid #e4e4e4;vertical-align:top}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:4px 0}
table.findings td:nth-child(-n+3),table.notes td:first-child{white-space:nowrap}
tr.critical td{background:#fde8e8}tr.warning td{background:#fff4e0}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px}dt{color:#666}dd{margin:0}
figure{margin:10px 0 22px}figcaption{font-weight:600}
svg.plot{display:block;border:1px solid #ddd;background:#fff}
svg.plot text{font:11px sans-serif;fill:#444}
ul.legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:4px 16px}
ul.legend span{display:inline-block;width:12px;height:12px;margin-right:5px;
vertical-align:-1px}
section.incident{border-left:4px solid #bbb;padding:0 0 2px 12px;margin:18px 0}
section.incident.critical{border-left-color:#d62728}
section.incident.warning{border-left-color:#ff7f0e}
table.members td:nth-child(-n+4){white-space:nowrap}
"""


def _x(t: float, start: float, end: float, width: int) -> float:
    return ML + (t - start) / max(end - start, 1e-9) * (width - ML - MR)


def _clock(t: float, long: bool) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M" if long else "%H:%M:%S")


def svg_plot(key: str, lines: Sequence[tuple[str, str, Series]], spans: Sequence[FindingSpan],
             start: float, end: float, fmt: Callable[[float | None], str],
             gap_s: float, min_top: float, size: tuple[int, int] = (W, H)) -> str:
    """One inline SVG time-series plot.

    Args:
        key: the metric (the svg's data-metric attribute).
        lines: (label, colour, series) per line.
        spans: findings shaded behind the lines, coloured by severity.
        start / end: the time range (x axis).
        fmt: formatter of the y axis labels.
        gap_s: a line breaks where no value came for longer than this.
        min_top: the least top of the y axis.
        size: width and height (px).
    """
    values = [v for _, _, s in lines for _, v in s.points()]
    top = max(max(values, default=0.0) * 1.05, min_top) or 1.0
    w, h = size

    def y(v: float) -> float:
        return MT + (1 - v / top) * (h - MT - MB)

    def x(t: float) -> float:
        return _x(t, start, end, w)

    out = [f'<svg class="plot" data-metric="{html.escape(key)}" xmlns="http://www.w3.org/2000/svg"'
           f' viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">']
    for s in spans:
        x0 = x(max(s.since_s, start))
        x1 = max(x(min(s.until_s, end)), x0 + 2)
        f = s.peak
        tip = visible(f"{f.severity} {f.detector} {f.subject_name}: {stamp(s.since_s)} → "
                      f"{'ongoing' if s.ongoing else stamp(s.until_s)}: {f.message}")
        out.append(f'<rect class="finding-span" data-detector="{html.escape(f.detector)}" '
                   f'data-severity="{html.escape(f.severity)}" x="{x0:.1f}" y="{MT}" '
                   f'width="{x1 - x0:.1f}" height="{h - MT - MB}" '
                   f'fill="{SHADE.get(f.severity, "#888")}" fill-opacity="0.15">'
                   f"<title>{html.escape(tip)}</title></rect>")
    out.append(f'<line x1="{ML}" y1="{h - MB}" x2="{w - MR}" y2="{h - MB}" stroke="#999"/>')
    out.append(f'<line x1="{ML}" y1="{MT}" x2="{ML}" y2="{h - MB}" stroke="#999"/>')
    for frac in (0.0, 0.5, 1.0):
        v = top * frac
        out.append(f'<text x="{ML - 6}" y="{y(v) + 4:.1f}" text-anchor="end">'
                   f"{html.escape(fmt(v))}</text>")
        out.append(f'<line x1="{ML}" y1="{y(v):.1f}" x2="{w - MR}" y2="{y(v):.1f}" '
                   'stroke="#eee"/>')
    long = end - start > 12 * 3600  # a day or so: the date matters
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        t = start + frac * (end - start)
        out.append(f'<text x="{x(t):.1f}" y="{h - 8}" text-anchor="{anchor}">'
                   f"{_clock(t, long)}</text>")
    for label, colour, series in lines:
        for run in _runs(series, gap_s):
            if len(run) == 1:
                run.append((run[0][0] + series.width_s / 2, run[0][1]))
            pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
            out.append(f'<polyline class="series" fill="none" stroke="{colour}" '
                       f'stroke-width="1.5" points="{pts}"><title>{html.escape(visible(label))}'
                       "</title></polyline>")
    if not values:
        out.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle">no data</text>')
    out.append("</svg>")
    return "".join(out)


def _runs(series: Series, gap_s: float) -> Iterator[list[tuple[float, float]]]:
    """The filled buckets as lines, broken where no data came for more than `gap_s`
    (a lone point becomes a short dash, so it shows)."""
    run: list[tuple[float, float]] = []
    for t, v in series.points():
        if run and t - run[-1][0] > gap_s:
            yield run
            run = []
        run.append((t, v))
    if run:
        yield run


Lines = list[tuple[str, str, Series]]
"""A plot's lines: (label, colour, series)."""


def _figure(key: str, title: str, lines: Sequence[tuple[str, str, Series]],
            spans: Sequence[FindingSpan], report: Report,
            fmt: Callable[[float | None], str], min_top: float,
            size: tuple[int, int] = (W, H)) -> str:
    start, end = report.host.series_range
    # A line breaks where samples are missing: more than 3 sampling steps without
    # one, or more than 2 buckets when buckets are wider than a step.
    step = report.step_s or report.index_s or report.meta.interval_s or 2.0
    gap_s = max(3 * step, 2.5 * (end - start) / PLOT_POINTS)
    legend = "".join(f'<li><span style="background:{c}"></span>'
                     f"{html.escape(visible(label))}</li>" for label, c, _ in lines)
    return (f'<figure><figcaption>{html.escape(title)}</figcaption>'
            f"{svg_plot(key, lines, spans, start, end, fmt, gap_s, min_top, size)}"
            f'<ul class="legend">{legend}</ul></figure>')


def plots_html(report: Report) -> str:
    """The plots: one per plotted guest metric (its top guests) and one of the host."""
    parts = []
    for m in GUEST_METRICS:
        if not m.plot:
            continue
        related = [s for s in report.findings if s.peak.detector in m.detectors
                   and s.peak.severity != "info"]
        chosen = [g for g, _ in offenders(report, m)] if m.offender else sorted(
            report.guests, key=lambda g: -_p95(g.summary(m.key)))[:TOP]
        with_findings = {s.peak.guest for s in related}
        chosen += [g for g in report.guests if g.name in with_findings and g not in chosen]
        chosen = [g for g in chosen[:PLOT_GUESTS_MAX] if g.stats[m.key].n]
        names = {g.name for g in chosen}
        lines = [(g.name, PALETTE[i % len(PALETTE)], g.series[m.key])
                 for i, g in enumerate(chosen)]
        spans = [s for s in related if s.peak.guest is None or s.peak.guest in names]
        parts.append(_figure(m.key, f"{m.label}: {m.help}", lines, spans, report, m.fmt,
                             m.min_top))
    host = report.host
    keys = [k for k in HOST_PLOTTED if k in host.series]
    keys += sorted(k for k in host.series if k.startswith("uplink:"))[:3]
    labels = {m.key: m.label for m in HOST_METRICS}
    lines = [(labels.get(k, f"{k.partition(':')[2]} utilization %"),
              PALETTE[i % len(PALETTE)], host.series[k]) for i, k in enumerate(keys)]
    spans = [s for s in report.findings if s.peak.detector in HOST_DETECTORS
             and s.peak.severity != "info"]
    parts.append(_figure("host", "Host baseline (%)", lines, spans, report, fmt_pct,
                         PCT_MIN_TOP))
    return "".join(parts)


INCIDENT_METRICS = {
    "leak": "mem_used",
    "pinning": "steal_max_pct",
    "overcommit": "steal_max_pct",
    "disk_device": "disk_ms",
    "disk_above_device": "disk_ms",
    "switch": "net_drops_per_s",
}
"""Incident kind → the guest figure its plot shows for its guests. A switch shows the
utilization of its uplinks instead when the report has them (`HostAcc.masters`), and
the drops of the guests on it when none of its guests is named."""
HOST_SUBJECT_METRICS = {"host:cpu": "psi_cpu_some_pct", "host:memory": "psi_mem_some_pct",
                        "host:io": "psi_io_some_pct"}
"""A host finding alone (`host_pressure`, by subject) → the host figure its plot shows."""


def _incident_lines(report: Report, i: Incident) -> tuple[str, Lines, GuestMetric | None]:
    """What an incident's plot shows: a caption, the lines, and the guest figure they
    are of (None: host figures in %). A finding alone shows the figure its detector
    judges (`GuestMetric.detectors`) for its guests, or for the host
    `HOST_SUBJECT_METRICS`."""
    host = report.host
    switch = i.cause.partition(":")[2] if i.kind == "switch" else None
    uplinks = sorted(u for u, master in host.masters.items()
                     if master == switch and f"uplink:{u}" in host.series)
    if uplinks:
        return (f"Utilization of the uplinks of {switch} (%)",
                [(u, PALETTE[n % len(PALETTE)], host.series[f"uplink:{u}"])
                 for n, u in enumerate(uplinks)], None)
    key = INCIDENT_METRICS.get(i.kind)
    first = i.members[0]
    if key is None and first.guest is None:
        key = HOST_SUBJECT_METRICS.get(first.subject)
        if key is None or key not in host.series:
            return "", [], None
        label = next(m.label for m in HOST_METRICS if m.key == key)
        return label, [(label, PALETTE[0], host.series[key])], None
    m = next((m for m in GUEST_METRICS if m.plot and (
        m.key == key if key is not None else first.detector in m.detectors)), None)
    if m is None:
        return "", [], None
    chosen = [g for g in report.guests if g.name in i.guests] or [
        g for g in report.guests if switch in g.bridges]
    lines = [(g.name, PALETTE[n % len(PALETTE)], g.series[m.key])
             for n, g in enumerate(g for g in chosen if g.stats[m.key].n)]
    return f"{m.label}: {m.help}", lines[:PLOT_GUESTS_MAX], m


def incident_plot_html(report: Report, i: Incident) -> str:
    """The small plot of an incident over the range: the figure that matters for its
    kind (`INCIDENT_METRICS`), its members' finding spans shaded; "" for an info
    incident (a fact, as in the other plots) or one without such a figure."""
    if i.severity == "info":
        return ""
    caption, lines, m = _incident_lines(report, i)
    if not lines:
        return ""
    members = {(x.detector, x.subject) for x in i.members}
    spans = [s for s in report.findings if (s.detector, s.subject) in members
             and s.severity != "info" and s.since_s <= i.last_bad_s and s.until_s >= i.since_s]
    fmt, min_top = (m.fmt, m.min_top) if m is not None else (fmt_pct, PCT_MIN_TOP)
    # The caption may name a switch: data, as the legend's names.
    return _figure(f"incident-{i.id}", visible(caption), lines, spans, report, fmt, min_top,
                   SMALL)


SEVERITY_COLUMN = {"findings": 3, "members": 3}
"""Table kind → the column whose severity colours an HTML row."""


def _table_html(t: Table, severity_col: int | None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = []
    for r in t.rows:
        cls = f' class="{html.escape(r[severity_col])}"' if severity_col is not None else ""
        cells = "".join(f"<td>{html.escape(c)}</td>" if i < t.left else
                        f'<td class="n">{html.escape(c)}</td>' for i, c in enumerate(r))
        body.append(f"<tr{cls}>{cells}</tr>")
    if not t.rows:
        body.append(f'<tr><td colspan="{len(t.headers)}">{html.escape(t.note or "none")}'
                    "</td></tr>")
    return (f'<table class="{t.kind}"><caption>{html.escape(t.title)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _html_body(sec: Section) -> list[str]:
    """A section's facts, note and tables as HTML."""
    out = []
    if sec.facts:
        out.append("<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                    for k, v in sec.facts) + "</dl>")
    if sec.note:
        out.append(f"<p>{html.escape(sec.note)}</p>")
    out += [_table_html(t, SEVERITY_COLUMN.get(t.kind)) for t in sec.tables]
    return out


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG, no scripts,
    nothing fetched, so it opens offline."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>kvmtop report: {html.escape(visible(report.path))}</title>",
           f"<style>{CSS}</style></head><body>",
           f"<h1>kvmtop report: {html.escape(visible(report.path))}</h1>"]
    incidents = {f"incident-{i.id}": i for i in report.incidents}
    for sec in sections(report):
        out.append(f'<section id="{sec.id}"><h2>{html.escape(sec.title)}</h2>')
        out += _html_body(sec)
        for sub in sec.subsections:
            i = incidents[sub.id]
            out.append(f'<section class="incident {html.escape(i.severity)}" '
                       f'id="{html.escape(sub.id)}"><h3>{html.escape(sub.title)}</h3>')
            out += [*_html_body(sub), incident_plot_html(report, i), "</section>"]
        out.append("</section>")
        if sec.id == "offenders":
            out.append('<section id="plots"><h2>Plots</h2><p>The top guests of each figure '
                       "and the guests with a related finding; shaded: warning (orange) and "
                       "critical (red) findings. Each point is the "
                       f"maximum over 1/{PLOT_POINTS} of the range.</p>"
                       f"{plots_html(report)}</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render(report: Report, fmt: str) -> str:
    """The report in `fmt`: one of `FORMATS`."""
    if fmt == "json":
        return json_text(report_json(report), indent=1) + "\n"
    return {"text": render_text, "md": render_md, "html": render_html}[fmt](report)


# --------------------------------------------------------------------------- command


def format_of(output: Path | None) -> str:
    """The format an output file's suffix implies (.md, .json, .html/.htm), else text."""
    suffix = "" if output is None else output.suffix.lower()
    return {".md": "md", ".json": "json", ".html": "html", ".htm": "html"}.get(suffix, "text")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kvmtop report` (FILE, --from/--to and --config come from the CLI)."""
    parser.description = (
        "Summarize a recording: its incidents (findings grouped by cause) most urgent "
        "first, each with its members, evidence and advice, then a findings timeline, the "
        "top offenders per figure "
        "(steal, exits, disk latency, drops, memory growth), and per-guest "
        "min/avg/p95/max next to the host baseline over the same range. The samples go "
        "through the same rates and detectors as the TUI (detector settings from --config)."
    )
    parser.epilog = (
        "A recording made by `kvmtop record` carries an index (per-minute rollups the "
        "recorder computed with the same pipeline): the report merges it, a few seconds "
        "for a day of 50 guests. Without one (a recording from the TUI, --exact, --step, "
        "or a range the index does not cover) every sample is replayed, about 0.6 ms per "
        "guest-sample on the benchmark host: minutes for a day of 50 guests (`kvmtop "
        "reindex FILE` builds the index once). Progress is shown on a terminal."
    )
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="text, md (Markdown), json or html (one self-contained page "
                        "with plots); default: from -o's suffix, else text")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT",
                        help="write the report to OUT (default: standard output)")
    parser.add_argument("--exact", action="store_true",
                        help="recompute every figure from the raw samples instead of the "
                        "index the recorder wrote (see `kvmtop reindex`)")
    parser.add_argument("--step", type=float, metavar="S",
                        help="read one sample per S seconds: rates become means over S and "
                        "findings shorter than S may be missed (default: every sample)")


def run(args: argparse.Namespace, settings: Settings, reader: StoreReader, pipeline: Pipeline,
        from_s: float | None, to_s: float | None, output: TextOutput) -> int:
    """`kvmtop report` over the open recording, range and output the CLI prepared
    (`output` committed here once complete); returns the exit status."""
    if args.step is not None and not args.step > 0:
        print("kvmtop: --step must be > 0", file=sys.stderr)
        return 2
    kinds = settings.detectors.vswitch_saturation.uplink_kinds
    progress = Progress("kvmtop report", *(extent(reader, from_s, to_s) or (None, None)))
    report = None
    if args.step is None and not args.exact:
        from kvmtop.rollup import indexed_report  # kvmtop.rollup builds on this module

        report = indexed_report(reader, from_s=from_s, to_s=to_s, uplink_kinds=kinds,
                                progress=progress)
    if report is None:
        report = build_report(reader, pipeline, from_s=from_s, to_s=to_s, step_s=args.step,
                              progress=progress, uplink_kinds=kinds)
    if not report.samples:
        print(f"kvmtop report: {reader.path}: no samples in the range", file=sys.stderr)
    output.file.write(render(report, args.format or format_of(args.output)))
    output.commit()
    return 0
