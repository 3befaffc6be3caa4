"""The report as one self-contained HTML page (`kvmtop report --format html`): inline
CSS and SVG, no scripts, nothing fetched, so it opens offline.

Every text of the content (`kvmtop.report.content`) is escaped here. The plots'
markup (`kvmtop.report.plots`, drawn by `kvmtop.report.svg`, which escapes the
names in it) goes in as it is.
"""

from __future__ import annotations

import html

from kvmtop.model.text import visible
from kvmtop.report.accumulate import Report
from kvmtop.report.content import Section, Table, sections
from kvmtop.report.plots import Plot, figure_plots, incident_plot
from kvmtop.report.stats import PLOT_POINTS

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px}h2{font-size:17px;border-bottom:1px solid #ccc;margin-top:32px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 14px}
th,td{padding:2px 8px;border-bottom:1px solid #e4e4e4;vertical-align:top}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:4px 0}
table.findings td:nth-child(-n+3),table.notes td:first-child{white-space:nowrap}
tr.critical td{background:#fde8e8}tr.warning td{background:#fff4e0}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px}dt{color:#666}dd{margin:0}
figure{margin:10px 0 22px}figcaption{font-weight:600}
svg.plot{display:block;border:1px solid #ddd;background:#fff}
svg.plot text{font:11px sans-serif;fill:#444}
ul.legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:4px 16px}
ul.legend span{display:inline-block;width:12px;height:12px;margin-right:5px;
vertical-align:-1px}
section.incident{border-left:4px solid #bbb;padding:0 0 2px 12px;margin:18px 0}
section.incident.critical{border-left-color:#d62728}
section.incident.warning{border-left-color:#ff7f0e}
table.members td:nth-child(-n+4){white-space:nowrap}
"""

SEVERITY_COLUMN = {"findings": 3, "members": 3}
"""Table kind → the column whose severity colours an HTML row."""


def _figure_html(p: Plot | None) -> str:
    if p is None:
        return ""
    legend = "".join(f'<li><span style="background:{c}"></span>{html.escape(label)}</li>'
                     for label, c in p.legend)
    return (f"<figure><figcaption>{html.escape(p.caption)}</figcaption>{p.svg}"
            f'<ul class="legend">{legend}</ul></figure>')


def _table_html(t: Table, severity_col: int | None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.headers)
    body = []
    for r in t.rows:
        cls = f' class="{html.escape(r[severity_col])}"' if severity_col is not None else ""
        cells = "".join(f"<td>{html.escape(c)}</td>" if i < t.left else
                        f'<td class="n">{html.escape(c)}</td>' for i, c in enumerate(r))
        body.append(f"<tr{cls}>{cells}</tr>")
    if not t.rows:
        body.append(f'<tr><td colspan="{len(t.headers)}">{html.escape(t.note or "none")}'
                    "</td></tr>")
    return (f'<table class="{t.kind}"><caption>{html.escape(t.title)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _html_body(sec: Section) -> list[str]:
    """A section's facts, note and tables as HTML."""
    out = []
    if sec.facts:
        out.append("<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                    for k, v in sec.facts) + "</dl>")
    if sec.note:
        out.append(f"<p>{html.escape(sec.note)}</p>")
    out += [_table_html(t, SEVERITY_COLUMN.get(t.kind)) for t in sec.tables]
    return out


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>kvmtop report: {html.escape(visible(report.path))}</title>",
           f"<style>{CSS}</style></head><body>",
           f"<h1>kvmtop report: {html.escape(visible(report.path))}</h1>"]
    incidents = {f"incident-{i.id}": i for i in report.incidents}
    for sec in sections(report):
        out.append(f'<section id="{sec.id}"><h2>{html.escape(sec.title)}</h2>')
        out += _html_body(sec)
        for sub in sec.subsections:
            i = incidents[sub.id]
            out.append(f'<section class="incident {html.escape(i.severity)}" '
                       f'id="{html.escape(sub.id)}"><h3>{html.escape(sub.title)}</h3>')
            out += [*_html_body(sub), _figure_html(incident_plot(report, i)), "</section>"]
        out.append("</section>")
        if sec.id == "offenders":
            plots = "".join(map(_figure_html, figure_plots(report)))
            out.append('<section id="plots"><h2>Plots</h2><p>The top guests of each figure '
                       "and the guests with a related finding; shaded: warning (orange) and "
                       "critical (red) findings. Each point is the "
                       f"maximum over 1/{PLOT_POINTS} of the range.</p>{plots}</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
