"""The report's content: what it says, in reading order, as sections of facts, notes
and tables of text cells, shared by the text, Markdown and HTML renderers.

Every text in it is as shown (names passed through `kvmtop.model.text.visible`
once, here); each format adds its own escaping on top.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kvmtop.detectors.base import fmt_duration
from kvmtop.feed.spans import FindingSpan
from kvmtop.model.fields import DEVICE_IOPS, DEVICE_MS, UPLINK
from kvmtop.model.formatting import DASH, fmt_si
from kvmtop.model.incident import Incident
from kvmtop.model.text import visible
from kvmtop.report.accumulate import GuestAcc, Report
from kvmtop.report.metrics import (
    DEVICE_FIGURES,
    GUEST_METRICS,
    HOST_METRICS,
    TOP,
    UPLINK_FIGURES,
    GuestMetric,
)
from kvmtop.report.stats import Stats, Summary


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


def baselines(
    report: Report, g: GuestAcc, m: GuestMetric
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
    return [
        _visible(sec)
        for sec in (
            _incidents(report),
            _timeline(report),
            _recording(report),
            _offenders(report),
            _host(report),
            _per_guest(report),
        )
    ]


def _visible(sec: Section) -> Section:
    """A section with every text passed through `kvmtop.model.text.visible`: guest,
    device and subject names, finding messages and the recording's metadata come from
    outside, and a name's escape sequence must not reach the reader's terminal (text,
    Markdown) or reorder a page (HTML). Each format adds its own escaping on top."""
    tables = [
        dataclasses.replace(
            t,
            title=visible(t.title),
            headers=tuple(map(visible, t.headers)),
            rows=[[visible(c) for c in r] for r in t.rows],
            note=visible(t.note),
        )
        for t in sec.tables
    ]
    return dataclasses.replace(
        sec,
        title=visible(sec.title),
        facts=[(visible(k), visible(v)) for k, v in sec.facts],
        note=visible(sec.note),
        tables=tables,
        subsections=list(map(_visible, sec.subsections)),
    )


def _recording(report: Report) -> Section:
    m = report.meta
    span = (
        DASH
        if report.first_s is None or report.last_s is None
        else fmt_duration(report.last_s - report.first_s)
    )
    resolution = (
        f"one sample per {report.step_s:g} s: rates are means over the step"
        if report.step_s is not None
        else "every sample (as recorded)"
        if report.index_s is None
        else f"every sample, from the recording's index "
        f"(plots: the peak of every {report.index_s:g} s; --exact recomputes it)"
    )
    facts = [
        ("file", report.path),
        ("host", m.hostname or DASH),
        ("kernel", m.kernel or DASH),
        ("libvirt", " / ".join(v for v in (m.libvirt_version, m.hypervisor, m.uri) if v) or DASH),
        (
            "recorded by",
            f"kvmtop {m.kvmtop_version}, every "
            f"{'?' if m.interval_s is None else f'{m.interval_s:g}'} s",
        ),
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
    where = (
        f" on {report.meta.hostname or DASH} from {stamp(report.first_s)} to "
        f"{stamp(report.last_s)} UTC"
        if report.samples
        else ""
    )
    note = (
        f"{n} incident{'' if n == 1 else 's'}{where}: findings grouped by cause, the "
        "most urgent first, each ranked and shown at its worst (a leak's time to "
        "exhaustion, then packets lost or critical, severity, guests involved × "
        "duration); crossings: how often it cleared and came back."
        if n
        else f"No incidents{where}."
    )
    return Section(
        "incidents", "Incidents", note=note, subsections=[_incident(i) for i in report.incidents]
    )


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
    members = Table(
        "Members", ("Guest", "Subject", "Detector", "Severity"), rows, left=4, kind="members"
    )
    return Section(
        f"incident-{i.id}", f"#{i.rank} {i.severity}: {i.title}", facts=facts, tables=[members]
    )


def _timeline(report: Report) -> Section:
    rows = []
    notes: dict[tuple[str, str], list[FindingSpan]] = {}
    for s in report.findings:
        f = s.peak
        if f.severity == "info":  # facts rather than incidents: grouped below
            notes.setdefault((f.detector, f.message), []).append(s)
            continue
        end = "ongoing" if s.ongoing else stamp(s.until_s)
        rows.append(
            (
                stamp(s.since_s),
                end,
                fmt_duration(max(s.until_s - s.since_s, 0.0)),
                f.severity,
                f.detector,
                f.subject_name,
                evidence_text(f.evidence),
                f.message,
            )
        )
    tables = []
    if rows:
        tables.append(
            Table(
                "Findings",
                (
                    "Start (UTC)",
                    "End",
                    "Lasted",
                    "Severity",
                    "Detector",
                    "Subject",
                    "Peak evidence",
                    "Message",
                ),
                rows,
                left=8,
                kind="findings",
            )
        )
    if notes:
        tables.append(
            Table(
                "Notes (info findings, grouped)",
                ("First seen (UTC)", "Detector", "Subjects", "Message"),
                [
                    (stamp(min(s.since_s for s in group)), detector, _names(group), message)
                    for (detector, message), group in sorted(
                        notes.items(), key=lambda kv: kv[1][0].since_s
                    )
                ],
                left=4,
                kind="notes",
            )
        )
    note = (
        "Each finding from its first bad sample to the last sample it was active, "
        "with the evidence at its worst."
        if rows
        else "No warning or critical findings in the range."
    )
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
        by = {
            "max": "peak",
            "total": "total over the range",
            "slope": "least-squares growth of used memory",
        }[m.rank]
        rows = []
        for g, v in offenders(report, m):
            s = g.summary(m.key)
            rows.append((g.name, _rank_text(m, v), *_four(s, m.fmt)[1:]))
        tables.append(
            Table(
                m.offender,
                ("Guest", by, "avg", "p95", "max"),
                rows,
                note="" if rows else "none",
                kind="offenders",
            )
        )
    return Section(
        "offenders",
        "Top offenders",
        tables=tables,
        note=f"Up to {TOP} guests per figure, worst first.",
    )


def _host(report: Report) -> Section:
    host = report.host
    rows = [(m.label, *_four(host.stats[m.key].summary(), m.fmt)) for m in HOST_METRICS]
    tables = [Table("Host", ("Figure", "min", "avg", "p95", "max"), rows, kind="stats")]
    for title, items, figures in (
        ("Block devices", host.disks, DEVICE_FIGURES),
        ("Uplinks", host.uplinks, UPLINK_FIGURES),
    ):
        dev_rows = [
            (name, f.label, *_four(_stats(stats, f.key), f.fmt))
            for name, stats in sorted(items.items())
            for f in figures
        ]
        if dev_rows:
            tables.append(
                Table(
                    title,
                    ("Device", "Figure", "min", "avg", "p95", "max"),
                    dev_rows,
                    left=2,
                    kind="stats",
                )
            )
    return Section("host", "Host baseline", tables=tables)


def _per_guest(report: Report) -> Section:
    tables = []
    for m in GUEST_METRICS:
        rows = []
        for g in sorted(report.guests, key=lambda g: -(p95_of(g.summary(m.key)))):
            base = (
                "; ".join(
                    f"{label} {_avg_p95(s, fmt)}" for label, s, fmt in baselines(report, g, m)
                )
                or DASH
            )
            rows.append((g.name, *_four(g.summary(m.key), m.fmt), base))
        tables.append(
            Table(
                f"{m.label}: {m.help}",
                ("Guest", "min", "avg", "p95", "max", "host baseline avg / p95"),
                rows,
                kind="stats",
            )
        )
    return Section(
        "guests",
        "Per guest",
        tables=tables,
        note="Guests by p95, next to the host figure each is judged against, over the same range.",
    )


def p95_of(s: Summary | None) -> float:
    """A figure's p95 to order guests by, -inf when never known (last, worst first)."""
    return -math.inf if s is None else s.p95
