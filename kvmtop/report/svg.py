"""Inline SVG time-series plots of the HTML report: data in, SVG markup out.

Pure: no report types, no I/O. Every text that comes from outside (a line's label, a
shaded finding's tooltip, a metric key) is passed through `kvmtop.model.text.visible`
where it is a name, and escaped here, so the page inserts the markup as it is.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from kvmtop.model.text import visible

SHADE = {"critical": "#d62728", "warning": "#ff7f0e"}
"""Finding shading by severity (info findings are facts, not incidents: not shaded)."""
W, H, ML, MR, MT, MB = 960, 240, 72, 16, 12, 28
"""SVG plot size and margins (px)."""

Points = Sequence[tuple[float, float]]
"""(time, value) pairs, in time order."""


class Line(NamedTuple):
    """A line of a plot: its label (a name: shown escaped), colour and points;
    `bucket_s` the time a point stands for (a lone point is drawn half as wide)."""

    label: str
    colour: str
    points: Points
    bucket_s: float


class Shade(NamedTuple):
    """A finding shaded behind the lines from `since_s` to `until_s`, coloured by
    severity, with its tooltip `tip` (data: shown escaped)."""

    since_s: float
    until_s: float
    severity: str
    detector: str
    tip: str


def svg_plot(
    key: str,
    lines: Sequence[Line],
    shades: Sequence[Shade],
    x_range: tuple[float, float],
    fmt: Callable[[float | None], str],
    gap_s: float,
    min_top: float,
    size: tuple[int, int] = (W, H),
) -> str:
    """One inline SVG time-series plot.

    Args:
        key: the metric (the svg's data-metric attribute).
        lines: the lines, drawn in this order.
        shades: findings shaded behind the lines.
        x_range: the time range (x axis), Unix s.
        fmt: formatter of the y axis labels.
        gap_s: a line breaks where no value came for longer than this.
        min_top: the least top of the y axis.
        size: width and height (px).
    """
    start, end = x_range
    w, h = size
    values = [v for line in lines for _, v in line.points]
    top = max(max(values, default=0.0) * 1.05, min_top) or 1.0

    def x(t: float) -> float:
        return ML + (t - start) / max(end - start, 1e-9) * (w - ML - MR)

    def y(v: float) -> float:
        return MT + (1 - v / top) * (h - MT - MB)

    out = [
        f'<svg class="plot" data-metric="{html.escape(key)}" xmlns="http://www.w3.org/2000/svg"'
        f' viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">'
    ]
    for s in shades:
        x0 = x(max(s.since_s, start))
        x1 = max(x(min(s.until_s, end)), x0 + 2)
        out.append(
            f'<rect class="finding-span" data-detector="{html.escape(s.detector)}" '
            f'data-severity="{html.escape(s.severity)}" x="{x0:.1f}" y="{MT}" '
            f'width="{x1 - x0:.1f}" height="{h - MT - MB}" '
            f'fill="{SHADE.get(s.severity, "#888")}" fill-opacity="0.15">'
            f"<title>{html.escape(visible(s.tip))}</title></rect>"
        )
    out.append(f'<line x1="{ML}" y1="{h - MB}" x2="{w - MR}" y2="{h - MB}" stroke="#999"/>')
    out.append(f'<line x1="{ML}" y1="{MT}" x2="{ML}" y2="{h - MB}" stroke="#999"/>')
    for frac in (0.0, 0.5, 1.0):
        v = top * frac
        out.append(
            f'<text x="{ML - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{html.escape(fmt(v))}</text>'
        )
        out.append(f'<line x1="{ML}" y1="{y(v):.1f}" x2="{w - MR}" y2="{y(v):.1f}" stroke="#eee"/>')
    long = end - start > 12 * 3600  # a day or so: the date matters
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        t = start + frac * (end - start)
        clock = datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M" if long else "%H:%M:%S")
        out.append(f'<text x="{x(t):.1f}" y="{h - 8}" text-anchor="{anchor}">{clock}</text>')
    for line in lines:
        for run in _runs(line.points, gap_s):
            if len(run) == 1:
                run.append((run[0][0] + line.bucket_s / 2, run[0][1]))
            pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
            out.append(
                f'<polyline class="series" fill="none" stroke="{html.escape(line.colour)}" '
                f'stroke-width="1.5" points="{pts}">'
                f"<title>{html.escape(visible(line.label))}</title></polyline>"
            )
    if not values:
        out.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle">no data</text>')
    out.append("</svg>")
    return "".join(out)


def _runs(points: Points, gap_s: float) -> Iterator[list[tuple[float, float]]]:
    """The points as lines, broken where no data came for more than `gap_s`."""
    run: list[tuple[float, float]] = []
    for t, v in points:
        if run and t - run[-1][0] > gap_s:
            yield run
            run = []
        run.append((t, v))
    if run:
        yield run
