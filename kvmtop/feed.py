"""Feeds: where snapshots come from (the live sampler, or a recording).

Layer: feed. Imports sampler, store and model; never textual.

Everything after the raw `Sample` is shared: `Pipeline.push()` derives rates through
the window, runs the detectors and builds the snapshot, whichever feed supplied the
sample. So replay shows exactly what live showed for the same samples.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from kvmtop.model.finding import Finding
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot, build_snapshot
from kvmtop.model.window import Window
from kvmtop.sampler import Sampler

if TYPE_CHECKING:  # the reader loads SQLite and zstd: only replay needs them
    from kvmtop.store.reader import StoreReader

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


class _End(enum.Enum):
    """Why `ReplayFeed` has no next frame."""

    FILE = "end of the file"
    RANGE = "past the end of the requested range"


class ReplayFeed:
    """Replays a recording through the same `Pipeline` as live (mode "replay").

    Each raw sample goes through the shared rates, window, detectors and snapshot,
    so a frame in replay is the frame live showed for the same samples. A seek
    resets the window and first pushes the sample before the target, so the target
    frame has rates; detectors that need a longer history (trends) start over there.

    Damaged samples are skipped (see `notices`); the next frame's rates then span
    the gap.

    Args:
        reader: the open recording.
        pipeline: the shared pipeline (its window is reset on seek).
        speed: playback speed; the app sleeps `interval_s` between frames.
        from_s: start at the first sample at or after this wall time.
        to_s: end after the last sample at or before this wall time.
        follow: at the end of the file, wait for the samples a recorder is still
            appending instead of ending.
    """

    mode = "replay"

    def __init__(
        self,
        reader: StoreReader,
        pipeline: Pipeline,
        *,
        speed: float = 1.0,
        from_s: float | None = None,
        to_s: float | None = None,
        follow: bool = False,
    ) -> None:
        self.reader = reader
        self.pipeline = pipeline
        self.speed = speed
        self.from_s = from_s
        self.to_s = to_s
        self.follow = follow
        self.position: int | None = None
        """Index (in the reader) of the sample behind the latest frame."""
        self.latest: Snapshot | None = None
        """The latest frame produced."""
        self._interval_s = reader.meta.interval_s or 2.0
        self._closed = threading.Event()
        # The app calls next() from its collection thread and seek()/step() from the
        # UI thread: one at a time through the reader and the window.
        self._lock = threading.RLock()

    @property
    def speed(self) -> float:
        """Playback speed (1 = as recorded)."""
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"speed must be > 0, got {value}")
        self._speed = value

    @property
    def interval_s(self) -> float:
        """Seconds between frames: the recording's interval divided by the speed."""
        return self._interval_s / self._speed

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        self.speed = self._interval_s / value

    @property
    def position_s(self) -> float | None:
        """Wall time of the latest frame."""
        return None if self.latest is None else self.latest.wall_s

    @property
    def notices(self) -> list[str]:
        """Samples skipped as unreadable, one line each."""
        return self.reader.notices

    def _start(self) -> int | None:
        if self.from_s is None:
            return self.reader.first_index()
        return self.reader.seek(self.from_s)

    def _push(self, index: int) -> Snapshot | None:
        """Feed the sample at `index` to the pipeline; None when it cannot be read."""
        self.position = index
        sample = self.reader.read(index)
        if sample is None:
            return None
        self._interval_s = sample.interval_s
        self.latest = self.pipeline.push(sample, mode=self.mode)
        return self.latest

    def _advance(self) -> Snapshot | _End:
        """The frame of the next readable sample, or why there is none."""
        while True:
            index = self._start() if self.position is None else self.reader.next_index(
                self.position)
            if index is None:
                return _End.FILE
            if self.to_s is not None and (self.reader.time_of(index) or 0.0) > self.to_s:
                return _End.RANGE
            frame = self._push(index)
            if frame is not None:
                return frame

    def next(self) -> Snapshot | None:
        """The next frame; None at the end (of the file, or past `to_s`).

        In follow mode the end of the file is not the end: `next()` waits up to one
        recorded interval for the recorder's next sample, and when none comes it
        returns the latest frame again, so a caller polling once per interval stays
        responsive; `close()` ends the wait.
        """
        deadline: float | None = None
        while not self._closed.is_set():
            with self._lock:
                got = self._advance()
                if not isinstance(got, _End):
                    return got
                if got is _End.RANGE or not self.follow:
                    return None
            now = time.monotonic()
            deadline = now + self._interval_s if deadline is None else deadline
            if now >= deadline or self._closed.wait(min(deadline - now, 0.25)):
                return self.latest
        return None

    def seek(self, time_s: float) -> Snapshot | None:
        """Jump to the first sample at or after `time_s` (the last one when past the
        end) and return its frame; None when the recording is empty."""
        with self._lock:
            index = self.reader.seek(time_s)
            if index is None:
                index = self.reader.last_index()
            return None if index is None else self._jump(index)

    def step(self, n: int = 1) -> Snapshot | None:
        """Move `n` samples forward (through the window, as playing does) or back
        (a jump); returns the frame there, or None past either end."""
        with self._lock:
            if n >= 0:
                frame = self.latest
                for _ in range(n):
                    got = self._advance()
                    if isinstance(got, _End):
                        return None
                    frame = got
                return frame
            index = self.position
            for _ in range(-n):
                index = None if index is None else self.reader.prev_index(index)
            return None if index is None else self._jump(index)

    def _jump(self, index: int) -> Snapshot | None:
        """Reset the window, prime it with the sample before `index`, show `index`."""
        self.pipeline.reset()
        before = self.reader.prev_index(index)
        if before is not None:
            sample = self.reader.read(before)
            if sample is not None:
                self.pipeline.push(sample, mode=self.mode)
        frame = self._push(index)
        if frame is not None:
            return frame
        got = self._advance()  # the target is damaged: show the next readable one
        return None if isinstance(got, _End) else got

    def close(self) -> None:
        """End any follow-mode wait and close the recording."""
        self._closed.set()
        with self._lock:
            self.reader.close()
