"""The report as one JSON object (`kvmtop report --format json`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from kvmtop.model.as_json import finding_json, incident_json, json_text
from kvmtop.report.accumulate import Report
from kvmtop.report.content import baselines, offenders
from kvmtop.report.metrics import GUEST_METRICS, HOST_METRICS
from kvmtop.report.stats import Summary, rounded


def report_json(report: Report) -> dict[str, Any]:
    """The report as one JSON object; figures are raw numbers (null: unknown)."""

    def summary(s: Summary | None) -> dict[str, float] | None:
        return None if s is None else s.as_json()

    host = report.host
    return {
        "file": report.path,
        "meta": dataclasses.asdict(report.meta),
        "range": {
            "from": report.first_s,
            "to": report.last_s,
            "requested_from": report.from_s,
            "requested_to": report.to_s,
            "samples": report.samples,
            "skipped": report.skipped,
            "step_s": report.step_s,
            "index_s": report.index_s,
        },
        "incidents": [
            incident_json(i)
            | {"until": None if i.active else i.last_bad_s, "duration_s": rounded(i.duration_s)}
            for i in report.incidents
        ],
        "findings": [
            finding_json(s.peak) | {"start": s.since_s, "end": s.until_s, "ongoing": s.ongoing}
            for s in report.findings
        ],
        "offenders": {
            m.key: [
                {"guest": g.name, "uuid": g.uuid, "by": m.rank, "value": rounded(v)}
                for g, v in offenders(report, m)
            ]
            for m in GUEST_METRICS
            if m.offender is not None
        },
        "host": {
            "metrics": {m.key: summary(host.stats[m.key].summary()) for m in HOST_METRICS},
            "disks": {
                name: {k: summary(s.summary()) for k, s in figs.items()}
                for name, figs in sorted(host.disks.items())
            },
            "uplinks": {
                name: {k: summary(s.summary()) for k, s in figs.items()}
                for name, figs in sorted(host.uplinks.items())
            },
        },
        "guests": [
            {
                "uuid": g.uuid,
                "name": g.name,
                "first": g.first_s,
                "last": g.last_s,
                "frames": g.frames,
                "metrics": {m.key: summary(g.summary(m.key)) for m in GUEST_METRICS},
                "memory_growth_mib_per_h": (
                    None if (v := g.growth_mib_per_h()) is None else rounded(v)
                ),
                "net_drops_total": rounded(g.stats["net_drops_per_s"].integral)
                if g.stats["net_drops_per_s"].n
                else None,
                "host_devices": sorted(g.devices),
                "bridges": sorted(g.bridges),
                "baseline": {
                    m.key: [
                        {"of": label, "figures": summary(s)}
                        for label, s, _ in baselines(report, g, m)
                    ]
                    for m in GUEST_METRICS
                },
            }
            for g in report.guests
        ],
        "notices": report.notices,
    }


def render_json(report: Report) -> str:
    """The report as JSON text (`report_json`, one space of indent per level)."""
    return json_text(report_json(report), indent=1) + "\n"
