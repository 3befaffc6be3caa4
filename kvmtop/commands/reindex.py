"""`kvmtop reindex FILE`: rebuild a recording's index (what makes reports fast).

Layer: commands (the index: `kvmtop.report.index`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvmtop.commands.common import (
    frameless_pipeline,
    open_recording,
    require_samples,
    uplink_kinds,
)
from kvmtop.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The argument of `kvmtop reindex`."""
    parser.description = (
        "Replay FILE's raw samples through the rates and detectors (with the detector "
        "settings of --config) and rewrite its index: the per-minute rollups `kvmtop "
        "report` merges instead of replaying every sample. `kvmtop record` writes them as "
        "it goes; rebuild after an upgrade, after changing detector settings, or for a "
        "recording made from the TUI."
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the recording")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild the index; returns the exit status."""
    from kvmtop.report.index import reindex
    from kvmtop.report.reading import Progress

    with open_recording(args.file) as reader:  # refuses a file that is not a recording
        require_samples(reader, None, None)
        progress = Progress("kvmtop reindex", reader.first_time(), reader.last_time())
    written = reindex(
        str(args.file), frameless_pipeline(settings), uplink_kinds(settings), progress
    )
    print(f"kvmtop reindex: {written} minutes indexed in {args.file}", file=sys.stderr)
    return 0
