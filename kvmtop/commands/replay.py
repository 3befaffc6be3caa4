"""`kvmtop replay FILE`: a recording through the same rates, detectors and views as
live, in the TUI or as batch output.

Layer: commands. The app (and textual) is imported only when the TUI starts.
"""

from __future__ import annotations

import argparse
import sys

from kvmtop.commands import top
from kvmtop.commands.common import (
    frameless_pipeline,
    open_recording,
    positive_float,
    print_batches,
    recording_arguments,
    refuse_input_as_output,
    report_notices,
    require_samples,
    time_range,
)
from kvmtop.config import Settings
from kvmtop.wiring import build_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments and options of `kvmtop replay`."""
    parser.description = (
        "Replay FILE through the same rates, detectors and views as live: in the TUI "
        "(pause, step, seek, jump to the next incident, change speed) or, with --batch, "
        "as text or JSON lines as fast as they are read."
    )
    recording_arguments(parser)
    parser.add_argument(
        "--speed",
        type=positive_float,
        default=1.0,
        metavar="X",
        help="playback speed (default 1: as recorded)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep showing samples a recorder is still appending (TUI)",
    )
    top.add_arguments(parser)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Replay in the TUI or as batch output; returns the exit status."""
    from kvmtop.feed.replay import ReplayFeed

    if args.follow and args.batch:
        print("kvmtop: replay --follow works in the TUI only", file=sys.stderr)
        return 2
    if args.batch:
        refuse_input_as_output(args.file, None)
    reader = open_recording(args.file)
    try:
        from_s, to_s = time_range(args, reader)
        require_samples(reader, from_s, to_s)
    except BaseException:
        reader.close()
        raise
    # The TUI scans the recording for finding spans (timeline markers) and incidents
    # (f / F).
    scanner = None if args.batch else frameless_pipeline(settings)
    feed = ReplayFeed(
        reader,
        build_pipeline(settings),
        speed=args.speed,
        from_s=from_s,
        to_s=to_s,
        follow=args.follow,
        scanner=scanner,
    )
    try:
        status = 0
        if args.batch:
            print_batches(feed, args, paced=False)
        else:
            status = top.run_tui(feed, settings, title=f"replay of {args.file}")
        report_notices(reader)
        return status
    finally:
        feed.close()
