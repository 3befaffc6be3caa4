"""Feeds: where snapshots come from (the live sampler, or a recording).

Layer: feed. Imports sampler, store and model; never textual.

Everything after the raw `Sample` is shared: `Pipeline.push()` derives rates through
the window, runs the detectors and builds the snapshot, whichever feed supplied the
sample. So replay shows exactly what live showed for the same samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kvmtop.model.finding import Finding
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot, build_snapshot
from kvmtop.model.window import Window
from kvmtop.sampler import Sampler

Detect = Callable[[Window], tuple[Finding, ...]]
"""A detector engine: reads the window after each push, returns active findings."""


class SampleSink(Protocol):
    """Where live samples are recorded (a store writer)."""

    path: str

    def append(self, sample: Sample) -> None:
        """Persist one raw sample."""
        ...

    def close(self) -> None:
        """Flush and close."""
        ...


class Feed(Protocol):
    """A source of snapshots the app and headless outputs consume."""

    interval_s: float

    def next(self) -> Snapshot | None:
        """The next snapshot, or None when the source is exhausted."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


class Pipeline:
    """Sample → rates (window) → findings → snapshot: the code live and replay share."""

    def __init__(self, *, window_size: int = 1800, min_ops: int = 5, detect: Detect | None = None):
        """Create a pipeline with an empty window.

        Args:
            window_size: samples kept for trends and plots.
            min_ops: minimum disk requests per interval before a latency is shown.
            detect: detector engine; None runs no detectors.
        """
        self.window = Window(window_size, min_ops=min_ops)
        self._detect = detect
        self._seq = 0

    def push(self, sample: Sample, *, mode: str, recording: str | None = None) -> Snapshot:
        """Feed one raw sample through the shared pipeline and return its snapshot."""
        frame = self.window.push(sample)
        findings = self._detect(self.window) if self._detect is not None else ()
        self._seq += 1
        return build_snapshot(
            frame,
            findings,
            sample.sources,
            mode=mode,
            interval_s=sample.interval_s,
            recording=recording,
            seq=self._seq,
        )

    def reset(self) -> None:
        """Forget the window (after a seek)."""
        self.window.clear()


class LiveFeed:
    """Samples the host now; optionally records every raw sample.

    A recording failure (disk full, read-only path) stops the recording with a
    reason in `record_error` and never stops monitoring.
    """

    def __init__(self, sampler: Sampler, pipeline: Pipeline, recorder: SampleSink | None = None):
        """Wrap a sampler and the shared pipeline."""
        self.sampler = sampler
        self.pipeline = pipeline
        self.recorder = recorder
        self.record_error: str | None = None

    @property
    def interval_s(self) -> float:
        """Sampling interval in seconds."""
        return self.sampler.interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        self.sampler.interval_s = value

    def set_recorder(self, recorder: SampleSink | None) -> None:
        """Start (or with None, stop) recording raw samples."""
        if self.recorder is not None:
            self.recorder.close()
        self.recorder = recorder
        self.record_error = None

    def next(self) -> Snapshot:
        """Sample now, record the raw sample, and return the snapshot."""
        sample = self.sampler.sample()
        if self.recorder is not None:
            try:
                self.recorder.append(sample)
            except OSError as exc:
                self.record_error = f"recording to {self.recorder.path} stopped: {exc}"
                self.recorder = None
        path = self.recorder.path if self.recorder is not None else None
        return self.pipeline.push(sample, mode="live", recording=path)

    def close(self) -> None:
        """Close the recorder and the collectors."""
        self.set_recorder(None)
        self.sampler.close()
