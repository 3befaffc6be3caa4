"""The report's accumulation: snapshots of a range folded into its aggregates.

The recording's raw samples go through the shared `Pipeline` with the detector
engine (the rates, window, detectors and snapshots of the TUI and of replay), one
snapshot at a time, into streaming accumulators; no list of snapshots is kept, so
memory does not grow with the length of the range (the CLI also gives the pipeline
a two-sample window: the detectors keep their own history). What is kept:

- incidents: every incident of the range (`IncidentAcc`: the last version of each,
  `kvmtop.feed.spans.IncidentLog`, with the figures of its worst tick), ranked at its worst
  (`ranked`);
- findings: one `kvmtop.feed.spans.FindingSpan` per raised finding (the replay timeline's
  `FindingTracker`), with the evidence of its worst tick;
- per guest and per host figure: count, sum, exact min and max, the time integral
  (drops/s → packets), and a `LogHistogram` for the p95;
- memory growth per guest: a streaming least-squares slope of guest used memory;
- plot series: `PLOT_POINTS` buckets over the range per plotted figure, each bucket
  the maximum of the values that fell in it, so a short spike survives decimation.

The renderers read only the `Report` this gathers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from kvmtop.detectors.settings import VswitchSettings
from kvmtop.feed.pipeline import Pipeline
from kvmtop.feed.spans import FindingSpan, FindingTracker
from kvmtop.model.incident import Incident
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.units import MIB
from kvmtop.report.incidents import IncidentAcc, ranked
from kvmtop.report.metrics import (
    DEVICE_FIGURES,
    GUEST_METRICS,
    HOST_METRICS,
    HOST_PLOTTED,
    UPLINK_FIGURES,
    Figure,
    GuestMetric,
)
from kvmtop.report.reading import Progress, extent, frames
from kvmtop.report.stats import Series, Stats, Summary, Trend

if TYPE_CHECKING:
    from kvmtop.store.meta import RecordingMeta
    from kvmtop.store.reader import StoreReader


T = TypeVar("T")


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
        default_factory=list
    )

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

    def __init__(self, series_range: tuple[float, float], uplink_kinds: tuple[str, ...]) -> None:
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


def _fold(
    into: dict[str, Stats], figures: Sequence[Figure[T]], item: T, dt_s: float | None
) -> None:
    """Add a device's or uplink's figures to its statistics."""
    for f in figures:
        v = f.value(item)
        if v is not None:
            into.setdefault(f.key, Stats()).add(v, dt_s)


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
            index (`kvmtop.report.index`), None when every frame was computed here.
        samples: samples read.
        guests: per guest, in order of first appearance.
        host: the host baseline.
        incidents: the incidents of the range at their worst, in rank order
            (`IncidentAcc`, `ranked`).
        findings: finding spans by start time.
        notices: the reader's notices: one line per run of consecutive samples
            skipped as unreadable, and lines about the file (cut short, read
            without FILE-shm).
        skipped: how many samples were skipped as unreadable (the reader's
            `skipped`; a notice may stand for many of them).
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


class Accumulator:
    """Folds snapshots, one at a time, into the report's aggregates.

    Args:
        series_range: wall times the plot series span (the range's first and last sample).
        uplink_kinds: host interface kinds that are uplinks.
    """

    def __init__(
        self,
        series_range: tuple[float, float],
        uplink_kinds: tuple[str, ...],
        *,
        after_s: float | None = None,
    ) -> None:
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

    def report(
        self,
        reader: StoreReader,
        from_s: float | None,
        to_s: float | None,
        findings: Iterable[FindingSpan],
        step_s: float | None = None,
        index_s: float | None = None,
    ) -> Report:
        """The report of what was folded in: the range `from_s`..`to_s` of `reader`'s
        recording read at `step_s` (or from its index, at `index_s`), with the range's
        finding spans `findings`."""
        return Report(
            path=reader.path,
            meta=reader.meta,
            from_s=from_s,
            to_s=to_s,
            first_s=self.first_s,
            last_s=self.last_s,
            step_s=step_s,
            samples=self.samples,
            guests=list(self.guests.values()),
            host=self.host,
            incidents=ranked(self.incidents.incidents()),
            findings=by_start(findings),
            notices=list(reader.notices),
            skipped=len(reader.skipped),
            index_s=index_s,
        )


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
    acc = Accumulator(
        extent(reader, from_s, to_s) or (0.0, 0.0), uplink_kinds or VswitchSettings().uplink_kinds
    )
    for _sample, snap in frames(
        reader, pipeline, from_s=from_s, to_s=to_s, step_s=step_s, progress=progress
    ):
        acc.add(snap)
    if progress is not None:
        progress.done()
    return acc.report(reader, from_s, to_s, acc.tracker.spans(), step_s)
