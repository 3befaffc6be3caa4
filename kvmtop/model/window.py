"""A bounded window of recent samples and their derived frames.

Layer: model (pure). Detectors read trends from it; the detail view plots it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from kvmtop.model.rates import Frame, derive
from kvmtop.model.sample import Sample


class Window:
    """The last `size` (sample, frame) pairs, oldest first.

    `push(sample)` derives the frame against the previous sample, so a window fed
    the same samples always holds the same frames (live equals replay).
    """

    def __init__(self, size: int = 1800, min_ops: int = 5) -> None:
        """Create an empty window holding at most `size` samples."""
        if size < 2:
            raise ValueError("window size must be at least 2")
        self._items: deque[tuple[Sample, Frame]] = deque(maxlen=size)
        self._min_ops = min_ops

    def push(self, sample: Sample) -> Frame:
        """Add a sample, derive its frame against the previous one, and return it."""
        prev = self._items[-1][0] if self._items else None
        if prev is not None and sample.mono_ns <= prev.mono_ns:
            # A clock that did not advance (or a replay jump backwards) cannot give
            # rates; start over from this sample.
            self._items.clear()
            prev = None
        frame = derive(prev, sample, self._min_ops)
        self._items.append((sample, frame))
        return frame

    def clear(self) -> None:
        """Forget everything (after a seek in replay)."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[Sample, Frame]]:
        return iter(self._items)

    @property
    def latest(self) -> tuple[Sample, Frame] | None:
        """The newest (sample, frame), if any."""
        return self._items[-1] if self._items else None

    def frames(self) -> list[Frame]:
        """All frames, oldest first."""
        return [f for _, f in self._items]

    def recent(self, n: int) -> tuple[Frame, ...]:
        """The newest `n` frames (fewer while the window fills), oldest first."""
        items = self._items
        start = max(0, len(items) - n)
        return tuple(items[i][1] for i in range(start, len(items)))
