"""The report as plain text (aligned columns) and as Markdown (GitHub tables), from
its content (`kvmtop.report.content.sections`)."""

from __future__ import annotations

from collections.abc import Sequence

from kvmtop.model.text import visible
from kvmtop.report.accumulate import Report
from kvmtop.report.content import Section, Table, sections


def _widths(t: Table) -> list[int]:
    return [
        max(len(h), *(len(r[i]) for r in t.rows)) if t.rows else len(h)
        for i, h in enumerate(t.headers)
    ]


def _cells(t: Table, cells: Sequence[str], widths: list[int]) -> str:
    return "  ".join(
        c.ljust(w) if i < t.left else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()


def render_text(report: Report) -> str:
    """The report as plain text (aligned columns)."""
    out = [f"kvmtop report: {visible(report.path)}"]
    for sec in sections(report):
        out += ["", f"== {sec.title} ==", *_text_body(sec, "")]
    return "\n".join(out) + "\n"


def _text_body(sec: Section, indent: str) -> list[str]:
    """A section's facts, note, tables and parts as text lines; its parts' lines
    indented under their titles."""
    width = max((len(k) for k, _ in sec.facts), default=0)
    out = [f"{indent}{k.ljust(width)}  {v}" for k, v in sec.facts]
    out += [indent + sec.note] if sec.note else []
    for t in sec.tables:
        out += ["", f"{indent}-- {t.title} --"]
        if not t.rows:
            out.append(indent + (t.note or "none"))
            continue
        widths = _widths(t)
        rows = [t.headers, ["-" * w for w in widths], *t.rows]
        out += [indent + _cells(t, r, widths) for r in rows]
    for sub in sec.subsections:
        out += ["", indent + sub.title, *_text_body(sub, indent + "  ")]
    return out


def _md(text: str) -> str:
    """A table cell's, heading's or fact's text (already visible) in Markdown: a pipe
    would end the cell, a "<" open an HTML tag (advice quotes libvirt XML elements)."""
    return text.replace("|", "\\|").replace("<", "\\<")


def render_md(report: Report) -> str:
    """The report as Markdown (GitHub tables)."""
    out = [f"# kvmtop report: `{visible(report.path)}`"]
    for sec in sections(report):
        out += _md_section(sec, 2)
    return "\n".join(out) + "\n"


def _md_section(sec: Section, level: int) -> list[str]:
    """A section as Markdown under a heading of `level`; its tables and parts one
    level below."""
    out = ["", f"{'#' * level} {_md(sec.title)}", ""]
    out += [f"- **{k}**: {_md(v)}" for k, v in sec.facts]
    if sec.note:  # the summary's names the host
        out += ["", _md(sec.note)] if sec.facts else [_md(sec.note)]
    for t in sec.tables:
        out += ["", f"{'#' * (level + 1)} {_md(t.title)}", ""]
        if not t.rows:
            out.append(t.note or "none")
            continue
        out.append("| " + " | ".join(_md(h) for h in t.headers) + " |")
        out.append(
            "|" + "|".join(":---" if i < t.left else "---:" for i in range(len(t.headers))) + "|"
        )
        out += ["| " + " | ".join(_md(c) for c in r) + " |" for r in t.rows]
    for sub in sec.subsections:
        out += _md_section(sub, level + 1)
    return out
