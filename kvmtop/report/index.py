"""The report's index: per-minute rollups of what `kvmtop report` gathers, a cache.

Layer: headless output, below the renderers: `kvmtop record` writes the index
through it, so it imports no rendering code (an import-linter contract).

A recording keeps raw samples only, and a report at full resolution runs every one
through the shared pipeline (rates, window, detectors, snapshot): far too slow for a
day of 50 guests (bench/bench_report.py: bench/results/measurements.md#report-index-vs-replay).
So `kvmtop record` runs that pipeline too, folds each wall-clock minute of snapshots
into the
report's own `Accumulator`, and writes what it gathered as one row of the file's
`rollups` table (`StoreWriter.append_rollup`); the minutes of each wall-clock hour
are merged into one row of `hour_rollups` as well. `kvmtop report` merges the hours
and minutes that cover the range instead of replaying it (`indexed_report`): about
30 rows for a day instead of 43,200 samples.

Accuracy of a report from the index, against `kvmtop report --exact` over the same
samples (tests/report/test_rollup.py compares both on a lab recording):

- count, min, max, mean, time integrals, p95 (the same `LogHistogram` bins, merged)
  and memory growth (the least-squares sums, merged): the same figures, up to the
  order of floating-point additions;
- findings and incidents: the same spans and incidents when the report covers the
  whole recording and the detector settings are the recorder's (the index holds the
  findings the recorder's detectors raised, and each minute's incidents at their
  worst, which merge into those of the range: `IncidentAcc.merge`). Over a part, the
  detectors have their history from before it;
- plots: the maximum of every `PLOT_S` seconds instead of every sample;
- `--from`/`--to` are widened to the minutes of the index that overlap them (the
  report's range line shows the samples actually covered).

A cache, never the record: `kvmtop reindex FILE` rebuilds it from the raw samples
(after an upgrade with better detectors, other detector settings, a recording made
from the TUI, or one whose recorder was killed mid-minute), `kvmtop report --exact`
ignores it, and a report whose range the index does not cover whole (or that holds
a damaged or other-version row) is computed from the samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from kvmtop.feed.pipeline import Pipeline
from kvmtop.feed.spans import FindingSpan
from kvmtop.model.finding import Finding
from kvmtop.model.incident import Incident
from kvmtop.model.sample import Sample
from kvmtop.report.accumulate import Accumulator, GuestAcc, Report
from kvmtop.report.reading import Progress, extent
from kvmtop.report.stats import Series, Stats, Trend
from kvmtop.store.codec import decode, encode
from kvmtop.store.meta import StoreWriteError
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter

VERSION = 3
"""Layout of a rollup document; rows of another version are ignored (rebuild them
with `kvmtop reindex`). 2: findings carry their cause (`Finding.cause`); 3: the
incidents (`IncidentAcc.incidents`)."""

MINUTE_S = 60.0
"""Wall-clock span of one rollup."""

PLOT_S = 10.0
"""Plot resolution kept in a rollup: the maximum of each such stretch, with its time
(to 0.1 s, the value to `PLOT_DIGITS` significant digits: a plot is 600 points wide)."""

PLOT_DIGITS = 4

HOUR_S = 3600.0
"""Wall-clock span of one hour rollup (merged minutes)."""

Emit = Callable[[float, float, int, bytes, bool], None]
"""Where a finished rollup goes: (first_s, last_s, samples, JSON document, is an hour)."""

Spans = dict[tuple[str, str, float], FindingSpan]
"""Finding spans by `FindingSpan.key`."""


# --------------------------------------------------------------------------- documents


def _peaks(series: Series) -> list[float]:
    """The maximum of every `PLOT_S` of a series, as flat (time, value) pairs."""
    best: dict[int, tuple[float, float]] = {}
    for t, v in series.points():
        slot = math.floor(t / PLOT_S)
        if slot not in best or v > best[slot][1]:
            best[slot] = (t, v)
    return [
        x
        for _, (t, v) in sorted(best.items())
        for x in (round(t, 1), float(f"{v:.{PLOT_DIGITS}g}"))
    ]


def _stats(stats: dict[str, Stats]) -> dict[str, list[Any]]:
    return {k: s.state() for k, s in stats.items() if s.n}


def document(acc: Accumulator, spans: Iterable[FindingSpan]) -> dict[str, Any]:
    """The rollup document of an accumulation and the finding spans seen in it."""
    host = acc.host
    return {
        "v": VERSION,
        "guests": [
            [
                g.uuid,
                g.name,
                g.first_s,
                g.last_s,
                g.frames,
                _stats(g.stats),
                {k: _peaks(s) for k, s in g.series.items()},
                g.memory.state(),
                sorted(g.devices),
                sorted(g.bridges),
            ]
            for g in acc.guests.values()
        ],
        "host": {
            "stats": _stats(host.stats),
            "disks": {name: _stats(st) for name, st in host.disks.items()},
            "uplinks": {name: _stats(st) for name, st in host.uplinks.items()},
            "masters": host.masters,
            "peaks": {k: _peaks(s) for k, s in host.series.items()},
        },
        # The message when raised, None when the peak says the same.
        "findings": [
            [
                encode(s.peak),
                None if s.message == s.peak.message else s.message,
                s.since_s,
                s.raised_s,
                s.until_s,
                s.ongoing,
            ]
            for s in spans
        ],
        # Each incident seen, at its worst so far: merged in order, the same as folding
        # every frame (IncidentAcc.merge).
        "incidents": [encode(i) for i in acc.incidents.incidents()],
    }


def _merge_stats(into: dict[str, Stats], states: dict[str, list[Any]]) -> None:
    for key, state in states.items():
        stats = into.get(key)
        if stats is None:
            stats = into[key] = Stats()
        stats.merge_state(state)


def _pairs(flat: list[float]) -> Iterable[tuple[float, float]]:
    return zip(flat[::2], flat[1::2], strict=True)


def merge(
    acc: Accumulator, row: tuple[float, float, int], doc: dict[str, Any], spans: Spans
) -> None:
    """Fold one rollup document (of the `row` (first_s, last_s, samples)) into an
    accumulation, its finding spans into `spans`.

    Raises:
        ValueError: the document is not a rollup of this `VERSION` (`CodecError`,
            `KeyError` and `TypeError` included, as ValueError).
    """
    try:
        _merge(acc, doc, spans)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a rollup document: {exc!r}") from None
    first_s, last_s, samples = row
    acc.first_s = first_s if acc.first_s is None else acc.first_s
    acc.last_s = last_s
    acc.samples += samples


def _merge(acc: Accumulator, doc: dict[str, Any], spans: Spans) -> None:
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise ValueError(f"rollup version {doc.get('v')!r}, not {VERSION}")
    for uuid, name, first_s, last_s, frames, stats, peaks, memory, devices, bridges in doc[
        "guests"
    ]:
        g = acc.guests.get(uuid)
        if g is None:
            g = acc.guests[uuid] = GuestAcc(uuid, name, first_s, last_s, acc.series_range)
        g.name, g.last_s = name, last_s
        g.frames += frames
        _merge_stats(g.stats, stats)
        for key, flat in peaks.items():
            if key in g.series:
                for t, v in _pairs(flat):
                    g.series[key].add(t, v)
        g.memory.merge(Trend.from_state(memory))
        g.devices.update(devices)
        g.bridges.update(bridges)
    host = doc["host"]
    _merge_stats(acc.host.stats, host["stats"])
    for name, stats in host["disks"].items():
        _merge_stats(acc.host.disks.setdefault(name, {}), stats)
    for name, stats in host["uplinks"].items():
        _merge_stats(acc.host.uplinks.setdefault(name, {}), stats)
    acc.host.masters.update(host["masters"])
    for key, flat in host["peaks"].items():
        for t, v in _pairs(flat):
            acc.host.plot(key, t, v)
    for peak, message, since_s, raised_s, until_s, ongoing in doc["findings"]:
        finding = decode(Finding, peak)
        span = FindingSpan(finding, message or finding.message, since_s, raised_s, until_s, ongoing)
        seen = spans.get(span.key())
        spans[span.key()] = span if seen is None else seen.merged(span)
    acc.incidents.merge([decode(Incident, i) for i in doc["incidents"]])


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- writing


class HourRoller:
    """Merges the minute rollups of each wall-clock hour into one hour rollup.

    Args:
        uplink_kinds: host interface kinds that are uplinks.
        emit: receives each finished hour (its last argument True).
    """

    def __init__(self, uplink_kinds: tuple[str, ...], emit: Emit) -> None:
        self.uplink_kinds = uplink_kinds
        self.emit = emit
        self._acc: Accumulator | None = None
        self._spans: Spans = {}
        self._hour = -math.inf

    def add(self, row: tuple[float, float, int], doc: dict[str, Any]) -> None:
        """Merge one minute (`row`: first_s, last_s, samples) into its hour.

        Raises:
            ValueError: `doc` is not a rollup document of this `VERSION`.
        """
        hour = math.floor(row[0] / HOUR_S) * HOUR_S
        if self._acc is not None and hour != self._hour:
            self.flush()
        if self._acc is None:
            self._hour = hour
            self._acc = Accumulator((hour, hour + HOUR_S), self.uplink_kinds)
        merge(self._acc, row, doc, self._spans)

    def flush(self) -> None:
        """Emit the hour gathered so far."""
        acc, spans, self._acc, self._spans = self._acc, self._spans, None, {}
        if acc is not None and acc.first_s is not None and acc.last_s is not None:
            doc = document(acc, _ended(spans.values(), acc.last_s))
            self.emit(acc.first_s, acc.last_s, acc.samples, _dumps(doc), True)


class Indexer:
    """Runs the shared pipeline over samples as they are recorded and emits one
    rollup per wall-clock minute, and one per hour.

    Args:
        pipeline: the shared pipeline with the detector engine (a window of two
            samples will do: the detectors keep their own history).
        uplink_kinds: host interface kinds that are uplinks.
        emit: receives each finished rollup.
    """

    def __init__(self, pipeline: Pipeline, uplink_kinds: tuple[str, ...], emit: Emit) -> None:
        self.pipeline = pipeline
        self.uplink_kinds = uplink_kinds
        self.emit = emit
        self.hours = HourRoller(uplink_kinds, emit)
        self._acc: Accumulator | None = None
        self._minute = -math.inf
        self._last_s: float | None = None

    def push(self, sample: Sample) -> None:
        """Run one sample through the pipeline into the current minute."""
        minute = math.floor(sample.wall_s / MINUTE_S) * MINUTE_S
        if self._acc is not None and minute != self._minute:
            self._flush_minute()
        if self._acc is None:
            self._minute = minute
            self._acc = Accumulator(
                (minute, minute + MINUTE_S), self.uplink_kinds, after_s=self._last_s
            )
        self._acc.add(self.pipeline.push(sample, mode="replay"))
        self._last_s = sample.wall_s

    def _flush_minute(self) -> None:
        acc, self._acc = self._acc, None
        if acc is not None and acc.first_s is not None and acc.last_s is not None:
            row = (acc.first_s, acc.last_s, acc.samples)
            doc = document(acc, acc.tracker.spans())
            self.emit(*row, _dumps(doc), False)
            self.hours.add(row, doc)

    def flush(self) -> None:
        """Emit the minute and the hour gathered so far (at the end of a recording)."""
        self._flush_minute()
        self.hours.flush()


class IndexedWriter:
    """A `SampleSink` that writes raw samples and the index of them.

    Args:
        writer: the recording.
        pipeline: the shared pipeline (see `Indexer`).
        uplink_kinds: host interface kinds that are uplinks.
    """

    def __init__(
        self, writer: StoreWriter, pipeline: Pipeline, uplink_kinds: tuple[str, ...]
    ) -> None:
        self.writer = writer
        self.path = writer.path
        self.indexer = Indexer(pipeline, uplink_kinds, writer.append_rollup)

    def append(self, sample: Sample) -> None:
        """Commit the sample, then index it (a minute's rollup is written when the
        next minute starts).

        Raises:
            StoreWriteError: the write failed; what was committed before is intact
                (`committed`: the sample too, and its index failed).
        """
        self.writer.append(sample)
        try:
            self.indexer.push(sample)
        except StoreWriteError as exc:
            exc.committed = True
            raise

    def close(self) -> None:
        """Write the last minute's rollup and close the recording."""
        try:
            self.indexer.flush()
        finally:
            self.writer.close()


def reindex(
    path: str, pipeline: Pipeline, uplink_kinds: tuple[str, ...], progress: Progress | None = None
) -> int:
    """Rebuild the index of the recording at `path` from its raw samples.

    Returns:
        The number of minutes indexed.

    Raises:
        StoreError: not a recording this kvmtop may write to.
        StoreWriteError: the file cannot be written.
    """
    written = 0
    writer = StoreWriter(path)

    def emit(first_s: float, last_s: float, samples: int, data: bytes, hour: bool) -> None:
        nonlocal written
        writer.append_rollup(first_s, last_s, samples, data, hour)
        written += not hour

    try:
        writer.clear_rollups()
        indexer = Indexer(pipeline, uplink_kinds, emit)
        with StoreReader(path) as reader:
            for sample in reader.iter():
                if progress is not None:
                    progress.update(sample.wall_s)
                indexer.push(sample)
        indexer.flush()
        writer.release_free_pages()  # the old index's pages
    finally:
        if progress is not None:
            progress.done()
        writer.close()
    return written


# --------------------------------------------------------------------------- reading


def indexed_report(
    reader: StoreReader,
    *,
    from_s: float | None = None,
    to_s: float | None = None,
    uplink_kinds: tuple[str, ...],
    progress: Progress | None = None,
) -> Report | None:
    """The report of the range from the recording's index; None when the index does
    not cover the range whole (then compute it from the samples)."""
    minutes = reader.rollups(from_s, to_s)
    span = extent(reader, from_s, to_s)  # (first sample in the range, end of the range)
    if not minutes or span is None or minutes[0][0] > span[0]:
        return None
    first_s, last_s = minutes[0][0], minutes[-1][1]
    # Every sample from the first minute to the end of the range is in a minute: none
    # missing in between (a killed recorder, a recording from the TUI) or after.
    if sum(n for _, _, n, _ in minutes) != reader.count_between(first_s, max(last_s, span[1])):
        return None
    acc = Accumulator((first_s, last_s), uplink_kinds)
    spans: Spans = {}
    for row_first, row_last, n, data in _cover(
        minutes, reader.rollups(first_s, last_s, hours=True)
    ):
        try:
            if data is None:
                raise ValueError("damaged")
            merge(acc, (row_first, row_last, n), json.loads(data), spans)
        except ValueError:  # json.JSONDecodeError and CodecError included
            return None
        if progress is not None:
            progress.update(row_last)
    if progress is not None:
        progress.done()
    # The rows cover the minutes from the first to the last: the accumulation's first
    # and last sample times are `first_s` and `last_s`.
    return acc.report(reader, from_s, to_s, _ended(spans.values(), last_s), index_s=PLOT_S)


Row = tuple[float, float, int, bytes | None]


def _cover(minutes: list[Row], hours: list[Row]) -> list[Row]:
    """The minutes, with each run of them an hour row holds (the same first and last
    sample times and as many samples) replaced by that hour."""
    ends = {row[1]: i for i, row in enumerate(minutes)}
    out: list[Row] = []
    i = 0
    by_first = {row[0]: row for row in hours}
    while i < len(minutes):
        hour = by_first.get(minutes[i][0])
        j = ends.get(hour[1], -1) if hour is not None else -1
        if hour is not None and j >= i and sum(m[2] for m in minutes[i : j + 1]) == hour[2]:
            out.append(hour)
            i = j + 1
        else:
            out.append(minutes[i])
            i += 1
    return out


def _ended(spans: Iterable[FindingSpan], last_s: float) -> list[FindingSpan]:
    """The spans, ongoing only when active at the last frame of the range."""
    return [replace(s, ongoing=s.ongoing and s.until_s >= last_s) for s in spans]
