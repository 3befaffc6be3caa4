"""`kvmtop` without a command: the live TUI, or with --batch, text or JSON snapshots
on standard output.

Layer: commands. The app (and textual) is imported only when a TUI starts.
"""

from __future__ import annotations

import argparse
import sys

from kvmtop.commands.common import print_batches, uri_error
from kvmtop.config import Settings
from kvmtop.feed.protocols import Feed
from kvmtop.wiring import build_live_feed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--batch and its options (also those of `kvmtop replay`)."""
    parser.add_argument(
        "-b", "--batch", action="store_true", help="print snapshots to stdout, no TUI"
    )
    parser.add_argument(
        "-n", "--count", type=int, metavar="N", help="with --batch: stop after N lines"
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="with --batch: output format (json: one object per line)",
    )


def run_tui(feed: Feed, settings: Settings, title: str = "") -> int:
    """Run the TUI; returns its exit status (1 when it ended on an error, whose
    traceback Textual has printed)."""
    from kvmtop.app.main import KvmtopApp

    app = KvmtopApp(feed, theme_name=settings.theme, title_suffix=title)
    app.run()
    return 1 if app.return_code else 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Monitor this host live: the TUI, or --batch; returns the exit status."""
    feed = build_live_feed(settings)
    error = uri_error(feed.sampler, explicit=bool(args.connect))
    if error:
        print(f"kvmtop: cannot open {settings.uri}: {error}", file=sys.stderr)
        feed.close()
        return 1
    try:
        if args.batch:
            print_batches(feed, args)
            return 0
        return run_tui(feed, settings)
    finally:
        feed.close()
