"""kvmtop's values as plain-text tables: a snapshot as `--batch` prints it, and the
fleet's hosts as `fleet --batch` prints them.

Layer: model (pure). Names are shown with their control and bidi characters escaped
(`kvmtop.model.text.visible`); numbers as on screen (`kvmtop.model.formatting`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from kvmtop.model.columns import FLEET_HEADERS, fleet_texts
from kvmtop.model.fields import GUEST_COLUMNS, cell_text
from kvmtop.model.fleet import HostRow
from kvmtop.model.formatting import DASH, fmt_bytes, fmt_mbps, fmt_pct, fmt_si
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import visible


def snapshot_text(snap: Snapshot) -> str:
    """A top-style text block: host line, guest table, incidents in rank order,
    findings, failing sources."""
    h = snap.host
    stamp = datetime.fromtimestamp(snap.wall_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"kvmtop {stamp}  interval {snap.interval_s:g}s  guests {snap.summary.guests_running}"
        f"/{snap.summary.guests_total} running",
        f"host: cpu {fmt_pct(h.cpu_busy_pct)}% steal {fmt_pct(h.cpu_steal_pct)}%"
        f"  runq-delay {fmt_pct(h.run_delay_pct)}%  psi cpu {fmt_pct(h.psi_cpu_some_pct)}%"
        f" mem {fmt_pct(h.psi_mem_some_pct)}% io {fmt_pct(h.psi_io_some_pct)}%"
        f"  mem {fmt_bytes(h.mem_used_bytes)}/{fmt_bytes(h.mem_total_bytes)}"
        f"  exits/s {fmt_si(snap.summary.exits_per_s)}  kvmtop cpu {fmt_pct(h.self_cpu_pct)}%",
    ]
    header = "  ".join(
        c.header.rjust(c.width) if i > 1 else c.header.ljust(c.width)
        for i, c in enumerate(GUEST_COLUMNS)
    )
    lines.append(header)
    for g in snap.guests:
        cells = []
        for i, c in enumerate(GUEST_COLUMNS):
            text = cell_text(c, g)[: c.width]
            cells.append(text.rjust(c.width) if i > 1 else text.ljust(c.width))
        lines.append("  ".join(cells))
    uplinks = [n for n in h.nets if n.kind in ("physical", "bond")]
    if uplinks:
        lines.append(
            "uplinks: "
            + "  ".join(
                f"{visible(n.name)} {fmt_mbps(n.rx_bps)}/{fmt_mbps(n.tx_bps)} Mb/s" for n in uplinks
            )
        )
    # An incident's title (guest names), a finding's subject and message, a source's
    # reason: text from outside, escaped.
    for inc in snap.incidents:
        cleared = "" if inc.active else " (cleared)"
        lines.append(visible(f"incident #{inc.rank} [{inc.severity}] {inc.title}{cleared}"))
    for f in snap.findings:
        lines.append(visible(f"[{f.severity}] {f.subject_name}: {f.message}"))
    for s in snap.sources:
        if not s.ok or s.reason:
            lines.append(
                visible(f"source {s.name}: {'ok' if s.ok else 'FAILED'}: {s.reason or DASH}")
            )
    return "\n".join(lines)


def text_table(rows: list[HostRow]) -> str:
    """The rows as an aligned text table (names made visible)."""
    lines = [FLEET_HEADERS] + [tuple(visible(text) for text, _ in fleet_texts(r)) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(FLEET_HEADERS))]
    return (
        "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )
        + "\n"
    )
