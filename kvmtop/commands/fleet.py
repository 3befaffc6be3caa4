"""`kvmtop fleet --prometheus URL`: every host whose kvmtop Prometheus scrapes, one
row each: is it answering, guests running, vCPU:pCPU, the worst steal, exits/s, the
disk and network peaks (with the guest), open findings and incidents.

Layer: commands. The queries and rows are `kvmtop.model.fleet`, the HTTP API client
`kvmtop.collectors.prometheus`, the screen `kvmtop.fleet_app` (imported only when
it starts).

One refresh is `len(QUERIES)` instant queries at one evaluation time, each
aggregated per host (see `kvmtop.model.fleet`), so its cost grows with the number of
hosts, not guests. `--format json` gives the rows for scripts; text is a table for a
terminal (names made visible: control characters never reach it raw).
"""

from __future__ import annotations

import argparse
import io
import sys
from typing import TextIO

from kvmtop.collectors.base import CollectorError
from kvmtop.collectors.prometheus import PrometheusClient
from kvmtop.commands.common import UsageError, write_stdout
from kvmtop.config import Settings
from kvmtop.model.as_json import json_text, row_json
from kvmtop.model.as_text import text_table
from kvmtop.model.fleet import SORTS, ordered


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kvmtop fleet`."""
    parser.description = (
        "Every host whose kvmtop (`kvmtop serve`) Prometheus scrapes, one row each, from "
        "instant queries aggregated per host: whether it answers and how old its data "
        "is, guests running, vCPU:pCPU, the worst steal, exits/s, disk and network "
        "peaks with the guest, open findings and the most urgent incident."
    )
    parser.add_argument(
        "--prometheus",
        required=True,
        metavar="URL",
        help="the Prometheus server, e.g. http://prometheus:9090",
    )
    parser.add_argument(
        "--job", default="kvmtop", help="the scrape job of kvmtop in Prometheus (default kvmtop)"
    )
    # SUPPRESS: `kvmtop -b fleet` (the global flags, before the command) holds too.
    parser.add_argument(
        "-b",
        "--batch",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the rows once, no screen (default: the interactive "
        "screen, refreshed every --every seconds)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default=argparse.SUPPRESS,
        help="with --batch: a table (default) or JSON rows",
    )
    parser.add_argument(
        "--every",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds between refreshes of the screen (default 15, "
        "the scrape interval of contrib/prometheus/prometheus.yml)",
    )
    parser.add_argument(
        "--sort",
        choices=tuple(SORTS),
        default="incidents",
        help="row order, the worst first (default incidents)",
    )


def print_rows(args: argparse.Namespace, out: TextIO) -> int:
    """`kvmtop fleet --batch`: one refresh written to `out` (`--format`); 1 with one
    line on stderr when Prometheus fails."""
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


def run_screen(args: argparse.Namespace, settings: Settings) -> int:
    """`kvmtop fleet` on a terminal; 1 with one line for a URL that is none, or when
    the screen ended on an error."""
    from kvmtop.fleet_app import FleetApp

    if args.every <= 0:
        raise UsageError(f"--every must be more than 0, got {args.every:g}")
    try:
        client = PrometheusClient(args.prometheus)
    except CollectorError as exc:
        print(f"kvmtop fleet: {exc}", file=sys.stderr)
        return 1
    app = FleetApp(
        client, job=args.job, every_s=args.every, sort=args.sort, theme_name=settings.theme
    )
    app.run()
    return 1 if app.return_code else 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The screen, or with --batch the rows once; returns the exit status."""
    if not args.batch:
        return run_screen(args, settings)
    text = io.StringIO()
    status = print_rows(args, text)
    write_stdout(text.getvalue())
    return status
