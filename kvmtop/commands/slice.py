"""`kvmtop slice FILE -o OUT`: copy a time range of a recording to a new one.

Layer: commands (the copy: `kvmtop.store.slice`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvmtop.commands.common import (
    open_recording,
    recording_arguments,
    report_notices,
    require_samples,
    time_range,
)
from kvmtop.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments and options of `kvmtop slice`."""
    parser.description = (
        "Copy the raw samples of FILE between --from and --to to OUT, a recording of its "
        "own (small enough for a ticket) that replays, reports and exports like FILE."
    )
    recording_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT",
        help="the new recording (must not exist)",
    )


def run(args: argparse.Namespace, _settings: Settings) -> int:
    """Copy the range; returns the exit status."""
    from kvmtop.store.slice import slice_recording

    with open_recording(args.file) as reader:
        from_s, to_s = time_range(args, reader)
        require_samples(reader, from_s, to_s)
        copied = slice_recording(reader, args.output, from_s=from_s, to_s=to_s)
        report_notices(reader)
    print(f"kvmtop slice: {copied} samples written to {args.output}", file=sys.stderr)
    return 0
