"""A bounded window of recent frames, and the newest raw sample they derive from.

Layer: model (pure). The detail view plots the frames (`Snapshot.recent`); the
detectors read the newest sample and frame and keep their own long-horizon state
(rolling medians, decimated trend series), so no raw sample but the newest is kept.

Memory: a frame costs a few KB per guest (bench/bench_pipeline.py, captured lab stats:
bench/results/measurements.md#window-memory), so 300 frames of 500 guests would hold
hundreds of MB. The window therefore keeps at most `size` frames and at most
`guest_frames` guest entries across them: with the
defaults, 300 frames (10 min at 2 s) up to 66 guests, and proportionally fewer frames
beyond (40 frames, 80 s, at 500 guests).
"""

from __future__ import annotations

from collections import deque

from kvmtop.model.rates.frame import Frame, derive
from kvmtop.model.sample import Sample

GUEST_FRAMES = 20_000
"""Guest entries kept across all frames: the window's memory budget
(bench/results/measurements.md#window-memory)."""


class Window:
    """The last frames (oldest first) and the newest sample.

    `push(sample)` derives the frame against the previous sample, so a window fed
    the same samples always holds the same frames (live equals replay).
    """

    def __init__(self, size: int = 300, min_ops: int = 5, guest_frames: int = GUEST_FRAMES) -> None:
        """Create an empty window holding at most `size` frames.

        Args:
            size: frames kept (at least 2).
            min_ops: minimum disk requests per interval before a latency is shown.
            guest_frames: guest entries kept across all frames; with many guests
                fewer than `size` frames are kept (never fewer than 2).
        """
        if size < 2:
            raise ValueError("window size must be at least 2")
        self._size = size
        self._guest_frames = guest_frames
        self._frames: deque[Frame] = deque()
        self._entries = 0
        self._latest: tuple[Sample, Frame] | None = None
        self._min_ops = min_ops

    def push(self, sample: Sample) -> Frame:
        """Add a sample, derive its frame against the previous one, and return it."""
        prev = self._latest[0] if self._latest is not None else None
        if prev is not None and sample.mono_ns <= prev.mono_ns:
            # A clock that did not advance (or a replay jump backwards) cannot give
            # rates; start over from this sample.
            self.clear()
            prev = None
        frame = derive(prev, sample, self._min_ops)
        self._latest = (sample, frame)
        self._frames.append(frame)
        self._entries += len(frame.guests)
        while len(self._frames) > 2 and (
            len(self._frames) > self._size or self._entries > self._guest_frames
        ):
            self._entries -= len(self._frames.popleft().guests)
        return frame

    def clear(self) -> None:
        """Forget everything (after a seek in replay)."""
        self._frames.clear()
        self._entries = 0
        self._latest = None

    def __len__(self) -> int:
        """Frames held."""
        return len(self._frames)

    @property
    def latest(self) -> tuple[Sample, Frame] | None:
        """The newest (sample, frame), if any."""
        return self._latest

    def recent(self, n: int) -> tuple[Frame, ...]:
        """The newest `n` frames (fewer while the window fills), oldest first."""
        frames = self._frames
        start = max(0, len(frames) - n)
        return tuple(frames[i] for i in range(start, len(frames)))
