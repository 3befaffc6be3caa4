"""`kvmtop report`: its options, and the run over the range the CLI opened.

A report comes from the recording's index when it covers the range
(`kvmtop.report.index.indexed_report`), else from every sample of the range
(`kvmtop.report.accumulate.build_report`); then it is rendered in the format asked
for. The renderers are imported when a report is rendered, not with this module:
the CLI builds every command's options (`add_arguments`) for `kvmtop record` too,
which must load no rendering code (an import-linter contract, and
tests/test_architecture.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kvmtop.feed.pipeline import Pipeline
from kvmtop.report.accumulate import Report, build_report
from kvmtop.report.index import indexed_report
from kvmtop.report.reading import Progress, extent

if TYPE_CHECKING:
    from kvmtop.config import Settings
    from kvmtop.outfile import TextOutput
    from kvmtop.store.reader import StoreReader

FORMATS = ("text", "md", "json", "html")


def render(report: Report, fmt: str) -> str:
    """The report in `fmt`: one of `FORMATS`."""
    if fmt == "json":
        from kvmtop.report.as_json import render_json

        return render_json(report)
    if fmt == "html":
        from kvmtop.report.html import render_html

        return render_html(report)
    from kvmtop.report.text import render_md, render_text

    return {"text": render_text, "md": render_md}[fmt](report)


def format_of(output: Path | None) -> str:
    """The format an output file's suffix implies (.md, .json, .html/.htm), else text."""
    suffix = "" if output is None else output.suffix.lower()
    return {".md": "md", ".json": "json", ".html": "html", ".htm": "html"}.get(suffix, "text")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kvmtop report` (FILE, --from/--to and --config come from the CLI)."""
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
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="text, md (Markdown), json or html (one self-contained page "
                        "with plots); default: from -o's suffix, else text")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT",
                        help="write the report to OUT (default: standard output)")
    parser.add_argument("--exact", action="store_true",
                        help="recompute every figure from the raw samples instead of the "
                        "index the recorder wrote (see `kvmtop reindex`)")
    parser.add_argument("--step", type=float, metavar="S",
                        help="read one sample per S seconds: rates become means over S and "
                        "findings shorter than S may be missed (default: every sample)")


def run(args: argparse.Namespace, settings: Settings, reader: StoreReader, pipeline: Pipeline,
        from_s: float | None, to_s: float | None, output: TextOutput) -> int:
    """`kvmtop report` over the open recording, range and output the CLI prepared
    (`output` committed here once complete); returns the exit status."""
    if args.step is not None and not args.step > 0:
        print("kvmtop: --step must be > 0", file=sys.stderr)
        return 2
    kinds = settings.detectors.vswitch_saturation.uplink_kinds
    progress = Progress("kvmtop report", *(extent(reader, from_s, to_s) or (None, None)))
    report = None
    if args.step is None and not args.exact:
        report = indexed_report(reader, from_s=from_s, to_s=to_s, uplink_kinds=kinds,
                                progress=progress)
    if report is None:
        report = build_report(reader, pipeline, from_s=from_s, to_s=to_s, step_s=args.step,
                              progress=progress, uplink_kinds=kinds)
    if not report.samples:
        print(f"kvmtop report: {reader.path}: no samples in the range", file=sys.stderr)
    output.file.write(render(report, args.format or format_of(args.output)))
    output.commit()
    return 0
