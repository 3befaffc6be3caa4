"""What feeds offer: `Feed` (snapshots), `Navigable` (a recording one can move
through) and `SampleSink` (where live samples are recorded).

Layer: feed. Protocols only.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from kvmtop.feed.spans import FindingSpan, IncidentSpan
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot


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

    def focus(self, uuid: str | None) -> None:
        """Count this guest's exits by reason from the next snapshot on (None: no guest).

        Must return at once (the app calls it from the UI thread): the work is done
        by `next()`, on the thread that collects.
        """
        ...

    def close(self) -> None:
        """Release resources."""
        ...


@runtime_checkable
class Navigable(Feed, Protocol):
    """A feed the user can move through: a recording (`ReplayFeed`).

    The app calls the methods from its collection thread only, since they read the
    file; the attributes are plain values that any thread may read (or set, for
    `speed`).
    """

    speed: float
    """Playback speed (1 = as recorded)."""

    follow: bool
    """The file is still being written and playback waits for new samples."""

    extent: tuple[float, float] | None
    """Wall times of the first and last sample that can be shown; None when empty."""

    spans: tuple[FindingSpan, ...]
    """Finding spans found so far, in raise order."""

    incidents: tuple[IncidentSpan, ...]
    """Incidents found so far, in the order they were first shown."""

    scanned_s: float | None
    """How far the scan has got (a wall time); None before it starts."""

    @property
    def notices(self) -> list[str]:
        """Samples skipped as unreadable (and facts about the file), one line each,
        in the order found; the list only grows."""
        ...

    @property
    def position_s(self) -> float | None:
        """Wall time of the latest frame."""
        ...

    def seek(self, time_s: float, *, lead_s: float = 0.0) -> Snapshot | None:
        """Show the sample at `time_s` (or the nearest inside the recording)."""
        ...

    def step(self, n: int = 1) -> Snapshot | None:
        """Move `n` samples forward or back; None past either end."""
        ...

    def scan(self, budget: int) -> bool:
        """Scan up to `budget` more samples for findings and incidents; False when
        none are left."""
        ...

    def interrupt(self) -> None:
        """End a wait inside `next()` at once (the app has a request)."""
        ...
