"""`kvmtop report FILE`: a summary of a recording, as text, Markdown, JSON or HTML.

Layer: commands. A report comes from the recording's index when it covers the range
(`kvmtop.report.index.indexed_report`), else from every sample of the range
(`kvmtop.report.accumulate.build_report`); `kvmtop.report.render` writes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvmtop.commands.common import Job, recording_arguments, summarize, uplink_kinds
from kvmtop.config import Settings
from kvmtop.report.accumulate import build_report
from kvmtop.report.index import indexed_report
from kvmtop.report.render import FORMATS, format_of, render


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments and options of `kvmtop report` (--config comes from the CLI)."""
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
    recording_arguments(parser)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="text, md (Markdown), json or html (one self-contained page "
        "with plots); default: from -o's suffix, else text",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUT",
        help="write the report to OUT (default: standard output)",
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="recompute every figure from the raw samples instead of the "
        "index the recorder wrote (see `kvmtop reindex`)",
    )
    parser.add_argument(
        "--step",
        type=float,
        metavar="S",
        help="read one sample per S seconds: rates become means over S and "
        "findings shorter than S may be missed (default: every sample)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Write the report of FILE's range to -o or standard output; returns the exit
    status."""
    if args.step is not None and not args.step > 0:
        print("kvmtop: --step must be > 0", file=sys.stderr)
        return 2
    kinds = uplink_kinds(settings)

    def work(job: Job) -> int:
        progress = job.progress("kvmtop report")
        report = None
        if args.step is None and not args.exact:
            report = indexed_report(
                job.reader, from_s=job.from_s, to_s=job.to_s, uplink_kinds=kinds, progress=progress
            )
        if report is None:
            report = build_report(
                job.reader,
                job.pipeline,
                from_s=job.from_s,
                to_s=job.to_s,
                step_s=args.step,
                progress=progress,
                uplink_kinds=kinds,
            )
        if not report.samples:
            print(f"kvmtop report: {job.reader.path}: no samples in the range", file=sys.stderr)
        job.output.file.write(render(report, args.format or format_of(args.output)))
        job.output.commit()
        return 0

    return summarize(args, settings, work)
