"""What the HTML report plots: per plotted guest metric its top guests, the host
baseline, and per incident the figure of its kind; each drawn by `kvmtop.report.svg`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvmtop.feed.spans import FindingSpan
from kvmtop.model.fields import PCT_MIN_TOP
from kvmtop.model.formatting import fmt_pct
from kvmtop.model.incident import Incident
from kvmtop.model.text import visible
from kvmtop.report.accumulate import Report
from kvmtop.report.content import offenders, p95_of, stamp
from kvmtop.report.metrics import (
    GUEST_METRICS,
    HOST_DETECTORS,
    HOST_METRICS,
    HOST_PLOTTED,
    TOP,
    GuestMetric,
)
from kvmtop.report.stats import PLOT_POINTS, Series
from kvmtop.report.svg import H, Line, Shade, W, svg_plot

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
SMALL = (560, 150)
"""Size of an incident's plot (px)."""
PLOT_GUESTS_MAX = 8
"""Plotted guests per metric: the top ones plus those with a related finding."""

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
HOST_SUBJECT_METRICS = {
    "host:cpu": "psi_cpu_some_pct",
    "host:memory": "psi_mem_some_pct",
    "host:io": "psi_io_some_pct",
}
"""A host finding alone (`host_pressure`, by subject) → the host figure its plot shows."""

Lines = list[tuple[str, str, Series]]
"""A plot's lines: (label, colour, series)."""


@dataclass(frozen=True, slots=True)
class Plot:
    """A figure of the page: its caption, its SVG markup (`svg_plot`, which escapes
    the names in it) and its legend, (label as shown, colour) per line."""

    caption: str
    svg: str
    legend: list[tuple[str, str]]


def _plot(
    key: str,
    caption: str,
    lines: Lines,
    spans: Sequence[FindingSpan],
    report: Report,
    fmt: Callable[[float | None], str],
    min_top: float,
    size: tuple[int, int] = (W, H),
) -> Plot:
    start, end = report.host.series_range
    # A line breaks where samples are missing: more than 3 sampling steps without
    # one, or more than 2 buckets when buckets are wider than a step.
    step = report.step_s or report.index_s or report.meta.interval_s or 2.0
    gap_s = max(3 * step, 2.5 * (end - start) / PLOT_POINTS)
    svg = svg_plot(
        key,
        [Line(label, c, list(s.points()), s.width_s) for label, c, s in lines],
        [_shade(s) for s in spans],
        (start, end),
        fmt,
        gap_s,
        min_top,
        size,
    )
    return Plot(caption, svg, [(visible(label), c) for label, c, _ in lines])


def _shade(s: FindingSpan) -> Shade:
    f = s.peak
    tip = (
        f"{f.severity} {f.detector} {f.subject_name}: {stamp(s.since_s)} → "
        f"{'ongoing' if s.ongoing else stamp(s.until_s)}: {f.message}"
    )
    return Shade(s.since_s, s.until_s, f.severity, f.detector, tip)


def figure_plots(report: Report) -> list[Plot]:
    """The plots of the figures: one per plotted guest metric (its top guests and
    those with a related finding) and one of the host."""
    plots = []
    for m in GUEST_METRICS:
        if not m.plot:
            continue
        related = [
            s
            for s in report.findings
            if s.peak.detector in m.detectors and s.peak.severity != "info"
        ]
        chosen = (
            [g for g, _ in offenders(report, m)]
            if m.offender
            else sorted(report.guests, key=lambda g: -p95_of(g.summary(m.key)))[:TOP]
        )
        with_findings = {s.peak.guest for s in related}
        chosen += [g for g in report.guests if g.name in with_findings and g not in chosen]
        chosen = [g for g in chosen[:PLOT_GUESTS_MAX] if g.stats[m.key].n]
        names = {g.name for g in chosen}
        lines = [(g.name, PALETTE[i % len(PALETTE)], g.series[m.key]) for i, g in enumerate(chosen)]
        spans = [s for s in related if s.peak.guest is None or s.peak.guest in names]
        plots.append(_plot(m.key, f"{m.label}: {m.help}", lines, spans, report, m.fmt, m.min_top))
    host = report.host
    keys = [k for k in HOST_PLOTTED if k in host.series]
    keys += sorted(k for k in host.series if k.startswith("uplink:"))[:3]
    labels = {m.key: m.label for m in HOST_METRICS}
    lines = [
        (
            labels.get(k, f"{k.partition(':')[2]} utilization %"),
            PALETTE[i % len(PALETTE)],
            host.series[k],
        )
        for i, k in enumerate(keys)
    ]
    spans = [
        s
        for s in report.findings
        if s.peak.detector in HOST_DETECTORS and s.peak.severity != "info"
    ]
    plots.append(_plot("host", "Host baseline (%)", lines, spans, report, fmt_pct, PCT_MIN_TOP))
    return plots


def _incident_lines(report: Report, i: Incident) -> tuple[str, Lines, GuestMetric | None]:
    """What an incident's plot shows: a caption, the lines, and the guest figure they
    are of (None: host figures in %). A finding alone shows the figure its detector
    judges (`GuestMetric.detectors`) for its guests, or for the host
    `HOST_SUBJECT_METRICS`."""
    host = report.host
    switch = i.cause.partition(":")[2] if i.kind == "switch" else None
    uplinks = sorted(
        u for u, master in host.masters.items() if master == switch and f"uplink:{u}" in host.series
    )
    if uplinks:
        return (
            f"Utilization of the uplinks of {switch} (%)",
            [
                (u, PALETTE[n % len(PALETTE)], host.series[f"uplink:{u}"])
                for n, u in enumerate(uplinks)
            ],
            None,
        )
    key = INCIDENT_METRICS.get(i.kind)
    first = i.members[0]
    if key is None and first.guest is None:
        key = HOST_SUBJECT_METRICS.get(first.subject)
        if key is None or key not in host.series:
            return "", [], None
        label = next(m.label for m in HOST_METRICS if m.key == key)
        return label, [(label, PALETTE[0], host.series[key])], None
    m = next(
        (
            m
            for m in GUEST_METRICS
            if m.plot and (m.key == key if key is not None else first.detector in m.detectors)
        ),
        None,
    )
    if m is None:
        return "", [], None
    chosen = [g for g in report.guests if g.name in i.guests] or [
        g for g in report.guests if switch in g.bridges
    ]
    lines = [
        (g.name, PALETTE[n % len(PALETTE)], g.series[m.key])
        for n, g in enumerate(g for g in chosen if g.stats[m.key].n)
    ]
    return f"{m.label}: {m.help}", lines[:PLOT_GUESTS_MAX], m


def incident_plot(report: Report, i: Incident) -> Plot | None:
    """The small plot of an incident over the range: the figure that matters for its
    kind (`INCIDENT_METRICS`), its members' finding spans shaded; None for an info
    incident (a fact, as in the other plots) or one without such a figure."""
    if i.severity == "info":
        return None
    caption, lines, m = _incident_lines(report, i)
    if not lines:
        return None
    members = {(x.detector, x.subject) for x in i.members}
    spans = [
        s
        for s in report.findings
        if (s.detector, s.subject) in members
        and s.severity != "info"
        and s.since_s <= i.last_bad_s
        and s.until_s >= i.since_s
    ]
    fmt, min_top = (m.fmt, m.min_top) if m is not None else (fmt_pct, PCT_MIN_TOP)
    # The caption may name a switch: data, as the legend's names.
    return _plot(f"incident-{i.id}", visible(caption), lines, spans, report, fmt, min_top, SMALL)
