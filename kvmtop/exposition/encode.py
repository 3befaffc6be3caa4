"""`Points` as exposition text: Prometheus text 0.0.4 or OpenMetrics 1.0.0.

Layer: pure. Two ways to one text:

- `families()` hands the points to prometheus_client as metric families (its
  encoders then write them); `kvmtop export --format openmetrics` uses it, with a
  timestamp on every point.
- `Encoder` writes the same bytes itself, for the endpoint's scrapes. At the lab's 12
  guests prometheus_client took as much CPU per tick to build the families and encode
  them as the whole collection (bench/results/measurements.md#openmetrics-encoder);
  most of it goes to escaping and validating label names and values again on every
  line. The encoder takes each family's header lines from prometheus_client once,
  escapes a series' label set once while the series lives, and formats values with
  prometheus_client's own `floatToGoString`. tests/serve/test_exposition.py proves
  the bytes identical to prometheus_client's `generate_latest` in both formats on
  captured lab samples and hostile names; `python -m bench` (section "pipeline", rows
  "serve: one tick written for a scrape") measures both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kvmtop.exposition.metrics import METRICS, MetricSpec, label_value
from kvmtop.exposition.points import Labels, Points


def families(points: Points, timestamp: float | None = None) -> list[Metric]:
    """The families of `points` as prometheus_client metric families, in `METRICS`
    order, every label value escaped by `label_value`.

    Args:
        points: the series.
        timestamp: wall seconds stamped on every point (None: no timestamp).
    """
    out: list[Metric] = []
    for spec in METRICS:
        series = points.by_name.get(spec.name)
        if not series:
            continue
        family = spec.family()
        for labels, value in series:
            family.add_metric([label_value(v) for v in labels], value, timestamp=timestamp)
        out.append(family)
    return out


OPENMETRICS_TYPE = "application/openmetrics-text"
"""The media type of OpenMetrics (its content types carry a version and charset)."""

# prometheus_client's encoders and value format, typed (the library leaves them bare).
_TEXT: Callable[[Collector], bytes] = generate_latest
_OPENMETRICS: Callable[[Collector], bytes] = generate_openmetrics
_VALUE: Callable[[float], str] = floatToGoString


class Prepared(Collector):
    """Families built beforehand, for prometheus_client's encoders (which take a
    collector)."""

    def __init__(self, prepared: list[Metric]) -> None:
        self.prepared = prepared

    def collect(self) -> Iterator[Metric]:
        """The families."""
        return iter(self.prepared)


def _head(spec: MetricSpec, openmetrics: bool) -> str:
    """The HELP / TYPE (/ UNIT) lines of a family, as prometheus_client writes them."""
    if openmetrics:
        return _OPENMETRICS(Prepared([spec.family()])).decode().removesuffix("# EOF\n")
    return _TEXT(Prepared([spec.family()])).decode()


def _escape(value: str) -> str:
    """A label value on the wire: `label_value`, then the exposition's three escapes
    (backslash, newline, double quote; the same in both formats)."""
    return label_value(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _block(spec: MetricSpec, labels: Labels) -> str:
    """`{name="value",...}` of one series, names sorted as prometheus_client writes
    them; "" for a family without labels."""
    if not labels:
        return ""
    pairs = sorted(zip(spec.labels, labels, strict=True))
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


class Encoder:
    """Writes `Points` as exposition text, caching what does not change between ticks.

    Not thread-safe: one caller at a time (the endpoint renders under a lock). Keep
    one encoder per stream of similar points (the tick's, the endpoint's own): each
    `render` keeps only the label sets it used, so the cache holds the series that
    exist now, whatever churn of threads or guests came before.
    """

    def __init__(self) -> None:
        self._heads: dict[tuple[str, bool], str] = {}
        self._blocks: dict[tuple[str, Labels], str] = {}

    def render(self, points: Points, *, openmetrics: bool) -> str:
        """The families of `points` in `METRICS` order, as Prometheus text 0.0.4 or
        (`openmetrics`) OpenMetrics without the closing `# EOF` line, which the caller
        writes after the last family."""
        out: list[str] = []
        kept: dict[tuple[str, Labels], str] = {}
        blocks = self._blocks
        for spec in METRICS:
            series = points.by_name.get(spec.name)
            if not series:
                continue
            head = self._heads.get((spec.name, openmetrics))
            if head is None:
                head = self._heads[spec.name, openmetrics] = _head(spec, openmetrics)
            out.append(head)
            # The sample name is the spec's in both formats: a counter's family is
            # named without `_total` in OpenMetrics, its samples with it.
            name = spec.name
            for labels, value in series:
                key = (name, labels)
                block = blocks.get(key)
                if block is None:
                    block = _block(spec, labels)
                kept[key] = block
                out.append(f"{name}{block} {_VALUE(value)}\n")
        self._blocks = kept
        return "".join(out)
