"""The live feed: samples the host now and optionally records every raw sample.

Layer: feed. Imports the sampler's protocol; the sampler itself comes from the caller.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from kvmtop.feed.pipeline import Pipeline
from kvmtop.feed.protocols import SampleSink
from kvmtop.model.snapshot import Snapshot
from kvmtop.sampler import SampleSource

Source = TypeVar("Source", bound=SampleSource)


class LiveFeed(Generic[Source]):
    """Samples the host now (or a recording played as if now, `kvmtop serve
    --replay`); optionally records every raw sample.

    A recording failure (disk full, read-only path) stops the recording with a
    reason in `record_error` and never stops monitoring.
    """

    def __init__(self, sampler: Source, pipeline: Pipeline, recorder: SampleSink | None = None):
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

    def focus(self, uuid: str | None) -> None:
        """Trace this guest's exits by reason (None: stop); the next `next()` attaches
        the tracer and detaches the previous guest, which can take a good part of a second
        (bench/results/measurements.md#tracepoint-detach-time)."""
        self.sampler.trace(() if uuid is None else (uuid,))

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
