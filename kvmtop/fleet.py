"""`kvmtop fleet --prometheus URL`: every host whose kvmtop Prometheus scrapes, one
row each: is it answering, guests running, vCPU:pCPU, the worst steal, exits/s, the
disk and network peaks (with the guest), open findings and incidents.

Layer: headless output (like `serve`); the queries and rows are
`kvmtop.model.fleet`, the HTTP API client `kvmtop.collectors.prometheus`.

One refresh is `len(QUERIES)` instant queries at one evaluation time, each
aggregated per host (see `kvmtop.model.fleet`), so its cost grows with the number of
hosts, not guests. `--format json` gives the rows for scripts; text is a table for a
terminal (names made visible: control characters never reach it raw).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from kvmtop.batch import json_text
from kvmtop.collectors.base import CollectorError
from kvmtop.collectors.prometheus import PrometheusClient
from kvmtop.config import Settings
from kvmtop.model.fleet import HostRow, build_rows, queries
from kvmtop.model.text import visible
from kvmtop.render import DASH, fmt_mbps, fmt_num, fmt_pct, fmt_si

SORTS: dict[str, Callable[[HostRow], Any]] = {
    "instance": lambda r: r.instance,
    "incidents": lambda r: (-len(r.incidents), -r.criticals, -r.warnings, r.instance),
    "steal": lambda r: (-(r.steal.value if r.steal else -1.0), r.instance),
    "exits": lambda r: (-(r.exits_per_s if r.exits_per_s is not None else -1.0), r.instance),
    "ratio": lambda r: (-(r.vcpu_ratio if r.vcpu_ratio is not None else -1.0), r.instance),
}
"""--sort keys: the worst first (hosts that do not answer first of all)."""


def fetch(client: PrometheusClient, job: str, now_s: float | None = None) -> list[HostRow]:
    """The fleet's rows from one evaluation time (now by default)."""
    return build_rows(client.queries(queries(job), time.time() if now_s is None else now_s))


def row_json(row: HostRow) -> dict[str, Any]:
    """One host as batch JSON (every field, and vcpu_ratio)."""
    return dataclasses.asdict(row) | {"vcpu_ratio": row.vcpu_ratio}


def _peak(p: Any, fmt: Callable[[float | None], str]) -> str:
    return DASH if p is None else f"{fmt(p.value)} {visible(p.guest)}"


def text_table(rows: list[HostRow]) -> str:
    """The rows as an aligned text table."""
    head = ("HOST", "INSTANCE", "UP", "AGE", "GUESTS", "vCPU:CPU", "STEAL% max",
            "EXITS/s", "IOPS max", "NET Mb/s max", "FINDINGS", "INCIDENT (rank 1)")
    lines = [head]
    for r in rows:
        top = r.incidents[0] if r.incidents else None
        lines.append((
            visible(r.hostname or DASH) + ("" if r.mode in (None, "live") else f" ({r.mode})"),
            visible(r.instance),
            "yes" if r.up else "NO",
            DASH if r.age_s is None else f"{r.age_s:.0f}s",
            DASH if r.guests is None else str(r.guests),
            DASH if r.vcpu_ratio is None else f"{r.vcpu_ratio:.2f}",
            _peak(r.steal, fmt_pct),
            fmt_si(r.exits_per_s),
            _peak(r.iops, lambda v: fmt_num(v, 0)),
            _peak(r.net_bps, fmt_mbps),
            f"{r.criticals} crit, {r.warnings} warn",
            DASH if top is None else visible(f"{top.severity} {top.kind} {top.cause}"),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kvmtop fleet`."""
    parser.description = (
        "Every host whose kvmtop (`kvmtop serve`) Prometheus scrapes, one row each, from "
        "instant queries aggregated per host: whether it answers and how old its data "
        "is, guests running, vCPU:pCPU, the worst steal, exits/s, disk and network "
        "peaks with the guest, open findings and the most urgent incident."
    )
    parser.add_argument("--prometheus", required=True, metavar="URL",
                        help="the Prometheus server, e.g. http://prometheus:9090")
    parser.add_argument("--job", default="kvmtop",
                        help="the scrape job of kvmtop in Prometheus (default kvmtop)")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="a table (default) or JSON rows")
    parser.add_argument("--sort", choices=tuple(SORTS), default="incidents",
                        help="row order, the worst first (default incidents)")


def run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """`kvmtop fleet`: one refresh written to `out`; 1 with one line on stderr when
    Prometheus fails."""
    try:
        rows = fetch(PrometheusClient(args.prometheus), args.job)
    except CollectorError as exc:
        print(f"kvmtop fleet: {exc}", file=sys.stderr)
        return 1
    rows = sorted(rows, key=lambda r: (r.up, SORTS[args.sort](r)))  # not answering first
    if args.format == "json":
        out.write(json_text([row_json(r) for r in rows], indent=2) + "\n")
    else:
        out.write(text_table(rows))
    return 0
