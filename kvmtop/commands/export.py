"""`kvmtop export FILE --format csv|jsonl|openmetrics`: a recording for other tools.

Layer: commands. The writers are `kvmtop.headless.export`; OpenMetrics writes the
families `kvmtop serve` exposes (`kvmtop.exposition`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvmtop.commands.common import Job, recording_arguments, summarize
from kvmtop.config import Settings
from kvmtop.headless.export import FORMATS, Writer, write_csv, write_jsonl, write_openmetrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments and options of `kvmtop export` (--config comes from the CLI)."""
    parser.description = (
        "Export a recording through the same rates and detectors as the TUI: csv (one "
        "row per guest per sample, the guest-table columns as raw numbers), jsonl (the "
        "batch JSON schema, one object per sample) or openmetrics (raw counters and "
        "findings as `kvmtop serve` exposes them, with timestamps)."
    )
    parser.epilog = (
        "Names: jsonl keeps every name exact (JSON escapes). csv and openmetrics show a "
        "name's control and bidi characters escaped (\\x1b, \\u202e), and a csv text "
        "cell that begins with = + - or @ gets a leading ' so that a spreadsheet does "
        "not run it as a formula."
    )
    recording_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, required=True, help="output format")
    parser.add_argument(
        "-o", "--output", type=Path, metavar="OUT", help="write to OUT (default: standard output)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Export FILE's range to -o or standard output; returns the exit status."""
    from kvmtop.report.reading import frames

    writers: dict[str, Writer] = {
        "csv": write_csv,
        "jsonl": write_jsonl,
        "openmetrics": write_openmetrics,
    }

    def work(job: Job) -> int:
        progress = job.progress("kvmtop export")
        pairs = frames(
            job.reader, job.pipeline, from_s=job.from_s, to_s=job.to_s, progress=progress
        )
        count = writers[args.format](pairs, job.output.file)
        job.output.commit()
        progress.done()
        unit = "rows" if args.format == "csv" else "samples"
        print(f"kvmtop export: {count} {unit} written to {job.output.name}", file=sys.stderr)
        return 0

    return summarize(args, settings, work)
