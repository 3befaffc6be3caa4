"""`kvmtop record -o FILE`: record raw samples, headless (the loop:
`kvmtop.headless.recorder`).

Layer: commands. Loads no rendering code (an import-linter contract).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kvmtop.commands.common import frameless_pipeline, positive_float, uplink_kinds, uri_error
from kvmtop.config import Settings
from kvmtop.model.units import MIB
from kvmtop.wiring import build_sampler

if TYPE_CHECKING:
    from kvmtop.feed.protocols import SampleSink


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kvmtop record`."""
    parser.description = (
        "Record raw samples (cumulative counters, never derived rates) to FILE until "
        "SIGTERM/SIGINT or --duration, one SQLite transaction per sample: a kill -9 loses "
        "at most the sample being written. SIGHUP reopens FILE (after log rotation). An "
        "existing recording is continued."
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="FILE",
        help="the recording (created with mode 0600)",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        metavar="S",
        help="stop after S seconds (default: until stopped)",
    )
    parser.add_argument(
        "--max-size",
        type=positive_float,
        metavar="MIB",
        help="delete the oldest samples beyond MIB mebibytes",
    )
    parser.add_argument(
        "--max-age", type=positive_float, metavar="H", help="delete samples older than H hours"
    )
    parser.add_argument(
        "--no-index",
        action="store_true",
        help="do not write the report's index as recording goes (about 60 "
        "%% of the recorder's CPU at 50 guests); `kvmtop reindex FILE` "
        "builds it later",
    )
    parser.add_argument(
        "--trace",
        action="append",
        default=[],
        metavar="GUEST",
        help="count GUEST's KVM exits by reason (perf tracepoints, about 120 "
        "fds per vCPU) for the whole recording; name or UUID, repeatable",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Record until stopped or --duration; returns the exit status."""
    from kvmtop.headless.recorder import Recorder
    from kvmtop.report.index import IndexedWriter
    from kvmtop.store.writer import Retention, StoreWriter

    retention = Retention(
        max_bytes=int(args.max_size * MIB) if args.max_size else None,
        max_age_s=args.max_age * 3600 if args.max_age else None,
    )
    sampler = build_sampler(settings)
    try:
        error = uri_error(sampler, explicit=bool(getattr(args, "connect", None)))
        if error:
            print(f"kvmtop: cannot open {settings.uri}: {error}", file=sys.stderr)
            return 1
        sampler.trace(args.trace)

        def open_writer() -> SampleSink:
            writer = StoreWriter(args.output, retention=retention)
            if args.no_index:
                return writer
            # The report's index (kvmtop.report.index), through a pipeline of its own; a
            # window of two samples will do (as for report).
            return IndexedWriter(writer, frameless_pipeline(settings), uplink_kinds(settings))

        until = f"for {args.duration:g} s" if args.duration else "until SIGTERM"
        traced = f", exits by reason of {', '.join(args.trace)}" if args.trace else ""
        recorder = Recorder(
            sampler,
            open_writer,
            duration_s=args.duration,
            announce=(
                f"kvmtop record: recording to {args.output} every {settings.interval_s:g} s "
                f"{until}{traced}"
            ),
        )
        recorder.install_signal_handlers()
        status = recorder.run()
    finally:
        sampler.close()
    print(f"kvmtop record: {recorder.written} samples written to {args.output}", file=sys.stderr)
    return status
