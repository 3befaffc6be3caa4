"""A report in the format asked for: text, Markdown, JSON or HTML.

The renderers are imported when a report is rendered, not with this module: the CLI
builds every command's options (`kvmtop report`'s choices of `FORMATS` too) for
`kvmtop record` as well, which must load no rendering code (tests/test_architecture.py).
"""

from __future__ import annotations

from pathlib import Path

from kvmtop.report.accumulate import Report

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
