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
from typing import Any, TextIO

from kvmtop.batch import json_text
from kvmtop.collectors.base import CollectorError
from kvmtop.collectors.prometheus import PrometheusClient
from kvmtop.config import Settings
from kvmtop.model.fleet import SORTS, HostRow, ordered
from kvmtop.model.text import visible
from kvmtop.render import FLEET_HEADERS, fleet_texts


def row_json(row: HostRow) -> dict[str, Any]:
    """One host as batch JSON (every field, and vcpu_ratio)."""
    return dataclasses.asdict(row) | {"vcpu_ratio": row.vcpu_ratio}


def text_table(rows: list[HostRow]) -> str:
    """The rows as an aligned text table (names made visible)."""
    lines = [FLEET_HEADERS] + [tuple(visible(text) for text, _ in fleet_texts(r)) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(FLEET_HEADERS))]
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
    # SUPPRESS: `kvmtop -b fleet` (the global flags, before the command) holds too.
    parser.add_argument("-b", "--batch", action="store_true", default=argparse.SUPPRESS,
                        help="print the rows once, no screen (default: the interactive "
                        "screen, refreshed every --every seconds)")
    parser.add_argument("--format", choices=("text", "json"), default=argparse.SUPPRESS,
                        help="with --batch: a table (default) or JSON rows")
    parser.add_argument("--every", type=float, default=15.0, metavar="S",
                        help="seconds between refreshes of the screen (default 15, "
                        "the scrape interval of contrib/prometheus/prometheus.yml)")
    parser.add_argument("--sort", choices=tuple(SORTS), default="incidents",
                        help="row order, the worst first (default incidents)")


def run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """`kvmtop fleet --batch`: one refresh written to `out` (`--format`); 1 with one
    line on stderr when Prometheus fails. (Without --batch the CLI runs the screen,
    `kvmtop.fleet_app`.)"""
    try:
        rows = PrometheusClient(args.prometheus).fleet(args.job)
    except CollectorError as exc:
        print(f"kvmtop fleet: {exc}", file=sys.stderr)
        return 1
    rows = ordered(rows, args.sort)
    if args.format == "json":
        out.write(json_text([row_json(r) for r in rows], indent=2) + "\n")
    else:
        out.write(text_table(rows))
    return 0
