"""The fleet table's cells, shared by the TUI and `fleet --batch` (the guest table's
columns are the field catalogue's: `kvmtop.model.fields.GUEST_COLUMNS`).

Layer: model (pure; no textual, no rich). Numbers are written by
`kvmtop.model.formatting`.
"""

from __future__ import annotations

from collections.abc import Callable

from kvmtop.model.fleet import HostRow, Peak
from kvmtop.model.formatting import DASH, fmt_mbps, fmt_num, fmt_pct, fmt_si

FLEET_STALE_S = 60.0
"""A host whose kvmtop data (as Prometheus has it) is older than this is flagged."""

FLEET_HEADERS = (
    "Host",
    "Instance",
    "Age",
    "Guests",
    "vCPU:CPU",
    "Steal% max",
    "Exits/s",
    "IOPS max",
    "Mb/s max",
    "Crit/Warn",
    "Most urgent incident",
)
"""The fleet table's columns (`kvmtop fleet`, text and screen)."""


def _peak(p: Peak | None, fmt: Callable[[float | None], str]) -> str:
    return DASH if p is None else f"{fmt(p.value)} {p.guest}"


def fleet_texts(r: HostRow) -> list[tuple[str, str | None]]:
    """One host's cells under FLEET_HEADERS: (text, severity level or None). Names
    as they are: the table draws them through `visible`."""
    top = r.incidents[0] if r.incidents else None
    stale = r.age_s is not None and r.age_s > FLEET_STALE_S
    name = (r.hostname or DASH) + ("" if r.mode in (None, "live") else f" ({r.mode})")
    return [
        (name if r.up else f"{name} DOWN", None if r.up else "critical"),
        (r.instance, None),
        (DASH if r.age_s is None else f"{r.age_s:.0f}s", "warning" if stale else None),
        (DASH if r.guests is None else str(r.guests), None),
        (DASH if r.vcpu_ratio is None else f"{r.vcpu_ratio:.2f}", None),
        (_peak(r.steal, fmt_pct), None),
        (fmt_si(r.exits_per_s), None),
        (_peak(r.iops, lambda v: fmt_num(v, 0)), None),
        (_peak(r.net_bps, fmt_mbps), None),
        (
            f"{r.criticals}/{r.warnings}",
            "critical" if r.criticals else "warning" if r.warnings else None,
        ),
        (
            DASH if top is None else f"{top.severity} {top.kind}: {top.cause}",
            None if top is None else top.severity,
        ),
    ]
