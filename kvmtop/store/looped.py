"""A recording played as if it were being sampled now, over and over: the sample
source of `kvmtop serve --replay`, so a test or a demo serves several "hosts" (the
live lab plus recordings) to one Prometheus.

Layer: store (beside the sampler: it hands out `Sample`s as the sampler does).

Each `sample()` is the recording's next readable sample with its clocks moved
(`kvmtop.model.sample.shift_clocks`) so that the first one is stamped now and the
rest follow at their recorded spacing. At the end the recording starts again one
recorded interval after its last sample: a lap. The counters then go back to the
first sample's, which rates treat as a reset (unknown for that tick, as for a
restarted guest) and Prometheus as a counter reset. Gaps inside the recording are
kept in the clocks; the caller ticks at the recording's interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from kvmtop.model.sample import Sample, shift_clocks
from kvmtop.model.units import NS_PER_S
from kvmtop.store.meta import StoreError
from kvmtop.store.reader import StoreReader


class LoopedRecording:
    """Hands out the samples of `reader` in a loop, clocks moved to now.

    Args:
        reader: the open recording (closed by `close()`).
        hostname: the host name the samples carry (None: the recorded one).
        wall: wall clock, Unix seconds (injectable for tests).
        mono: monotonic clock, ns (injectable for tests).

    Raises:
        StoreError: the recording holds no readable sample.
    """

    def __init__(
        self,
        reader: StoreReader,
        *,
        hostname: str | None = None,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.reader = reader
        self.hostname = hostname
        self.laps = 0
        """Times the recording has started again."""
        first = self._readable(reader.first_index())
        last = self._readable(reader.last_index(), backwards=True)
        if first is None or last is None:
            raise StoreError(f"{reader.path}: no sample can be read")
        self._first_index = first[0]
        self.interval_s = reader.meta.interval_s or first[1].interval_s
        # A lap: from the first sample to one interval after the last (whole seconds,
        # so the balloons' whole-second stamps move exactly).
        self._lap_s = round(last[1].wall_s - first[1].wall_s + self.interval_s)
        lap_mono_ns = last[1].mono_ns - first[1].mono_ns + round(self.interval_s * NS_PER_S)
        self._lap_mono_ns = max(lap_mono_ns, self._lap_s * NS_PER_S)
        self._wall_s = round(wall() - first[1].wall_s)
        self._mono_ns = mono() - first[1].mono_ns
        self._next: int | None = self._first_index

    def _readable(self, index: int | None, backwards: bool = False) -> tuple[int, Sample] | None:
        """The first readable sample from `index` on (or back)."""
        while index is not None:
            sample = self.reader.read(index)
            if sample is not None:
                return index, sample
            index = self.reader.prev_index(index) if backwards else self.reader.next_index(index)
        return None

    def sample(self) -> Sample:
        """The next sample, stamped as if taken now (see the module notes)."""
        found = self._readable(self._next)
        if found is None:  # past the last readable one: the next lap
            self.laps += 1
            self._wall_s += self._lap_s
            self._mono_ns += self._lap_mono_ns
            found = self._readable(self._first_index)
            assert found is not None  # the first one was readable when we opened it
        index, sample = found
        self._next = self.reader.next_index(index)
        return shift_clocks(sample, self._wall_s, self._mono_ns, self.hostname)

    def trace(self, guests: Iterable[str]) -> None:
        """Nothing to attach: a recording holds the exits traced while it was recorded."""

    def close(self) -> None:
        """Close the recording."""
        self.reader.close()
