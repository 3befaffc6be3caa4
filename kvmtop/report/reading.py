"""Reading a recording's range for the report and the export: samples in recording
order through the shared pipeline, with progress on a terminal.

With `--step S`, only the first sample at or after every S seconds is pushed:
rates are then means over S (from the raw counters, so exact) and detectors judge
those means, so a burst shorter than S is smoothed; findings equal replay's only
at full resolution (the default).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TextIO

from kvmtop.detectors.base import fmt_duration
from kvmtop.feed.pipeline import Pipeline
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot

if TYPE_CHECKING:
    from kvmtop.store.reader import StoreReader


class Progress:
    """One self-updating line on a terminal (`stream` a TTY); silent otherwise.

    Progress is by time: the share of [start_s, end_s] already read, with an estimate
    of the time left from the pace so far.
    """

    def __init__(
        self,
        label: str,
        start_s: float | None,
        end_s: float | None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Show `label` for the range [start_s, end_s] on `stream` (None: the
        sys.stderr of the moment, not of the first import)."""
        stream = sys.stderr if stream is None else stream
        self.label, self.stream, self.clock = label, stream, clock
        self.start_s, self.end_s = start_s or 0.0, end_s or 0.0
        self.enabled = self.end_s > self.start_s and stream.isatty()
        self._began = clock()
        self._shown = 0.0

    def update(self, t: float) -> None:
        """The sample at wall time `t` was read; redraw at most twice a second."""
        now = self.clock()
        if not self.enabled or now - self._shown < 0.5:
            return
        self._shown = now
        share = min(max((t - self.start_s) / (self.end_s - self.start_s), 1e-6), 1.0)
        left = (now - self._began) * (1 - share) / share
        self.stream.write(f"\r{self.label}: {share:4.0%}, about {fmt_duration(left)} left\x1b[K")
        self.stream.flush()

    def done(self) -> None:
        """Erase the line."""
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def extent(
    reader: StoreReader, from_s: float | None, to_s: float | None
) -> tuple[float, float] | None:
    """Wall times of the first and last sample in the range, None when it holds none."""
    if from_s is None:
        first = reader.first_time()
    else:
        index = reader.seek(from_s)
        first = None if index is None else reader.time_of(index)
    last = reader.last_time()
    if first is None or last is None:
        return None
    last = last if to_s is None else min(last, to_s)
    return (first, last) if last >= first else None


def frames(
    reader: StoreReader,
    pipeline: Pipeline,
    *,
    from_s: float | None = None,
    to_s: float | None = None,
    step_s: float | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[Sample, Snapshot]]:
    """Each sample of the range (damaged ones skipped) and the snapshot the shared
    pipeline makes of it, in recording order.

    With `step_s`, the first sample at or after every `step_s` seconds only (found by
    the reader's time index, so the others are not even decoded).
    """
    if step_s is None:
        chosen: Iterable[Sample] = reader.iter(from_s, to_s)
    else:
        chosen = _stepped(reader, from_s, to_s, step_s)
    for sample in chosen:
        if progress is not None:
            progress.update(sample.wall_s)
        yield sample, pipeline.push(sample, mode="replay")


def _stepped(
    reader: StoreReader, from_s: float | None, to_s: float | None, step_s: float
) -> Iterator[Sample]:
    index = reader.first_index() if from_s is None else reader.seek(from_s)
    while index is not None:
        t = reader.time_of(index)
        if t is None:  # a damaged index page: go on with the next row
            index = reader.next_index(index)
            continue
        if to_s is not None and t > to_s:
            return
        sample = reader.read(index)
        if sample is not None:
            # The step is these samples' sampling interval: rates over it are wanted
            # (means over the step), not lost ticks (`rates.interval_gap`).
            yield dataclasses.replace(sample, interval_s=max(step_s, sample.interval_s))
        index = reader.seek(t + step_s)
