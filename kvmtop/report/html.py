"""The report as one self-contained HTML page (`kvmtop report --format html`): inline
CSS and SVG, no scripts, nothing fetched, so it opens offline.

The page is the template `templates/report.html.j2` through jinja2 with autoescape:
every text of the content (`kvmtop.report.content`) is escaped there. The plots'
markup (`kvmtop.report.plots`, drawn by `kvmtop.report.svg`, which escapes the
names in it) is the one thing the template inserts as it is.
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined

from kvmtop.model.text import visible
from kvmtop.report.accumulate import Report
from kvmtop.report.content import sections
from kvmtop.report.plots import figure_plots, incident_plot
from kvmtop.report.stats import PLOT_POINTS

SEVERITY_COLUMN = {"findings": 3, "members": 3}
"""Table kind → the column whose severity colours an HTML row."""

_PAGES = Environment(
    loader=PackageLoader("kvmtop.report"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page."""
    return _PAGES.get_template("report.html.j2").render(
        path=visible(report.path),
        sections=sections(report),
        incidents={
            f"incident-{i.id}": (i.severity, incident_plot(report, i)) for i in report.incidents
        },
        plots=figure_plots(report),
        plot_points=PLOT_POINTS,
        severity_column=SEVERITY_COLUMN,
    )
