"""The replay feed: a recording through the shared pipeline, navigable, with the scan
that finds its finding spans and incident starts and pins a checkpoint to each start.

Layer: feed. Reads a recording (store).
"""

from __future__ import annotations

import enum
import threading
import time
from typing import TYPE_CHECKING

from kvmtop.feed.pipeline import RECENT_FRAMES, Pipeline
from kvmtop.feed.spans import FindingSpan, FindingTracker, IncidentSpan, IncidentStarts
from kvmtop.model.snapshot import Snapshot

if TYPE_CHECKING:
    # The reader loads SQLite and zstd: only replay needs them.
    from kvmtop.store.reader import StoreReader

CHECKPOINT_SPACING = 16
"""Samples between the replay scan's checkpoints: a jump to an incident pushes at
most this many samples through the pipeline (cost in bench/)."""

PINS = 100
"""Incident starts a replay keeps a checkpoint for (the newest), as many as the
incident history holds."""


class _End(enum.Enum):
    """Why `ReplayFeed` has no next frame."""

    FILE = "end of the file"
    RANGE = "past the end of the requested range"


class ReplayFeed:
    """Replays a recording through the same `Pipeline` as live (mode "replay", or
    "follow" on a file still being written); a `Navigable` feed.

    Each raw sample goes through the shared rates, window, detectors and snapshot,
    so a frame in replay is the frame live showed for the same samples. A seek
    resets the window and first pushes the sample before the target (or, with
    `lead_s`, the samples of that many seconds before it), so the target frame has
    rates; detectors that need a longer history (trends) start over there.

    Where findings were active and where incidents were first shown comes from
    `scan()`: a second pipeline plays the range from its start, never seeking, a few
    samples per call; `spans` and `incidents` grow as it goes. It costs one pipeline
    push per sample, as playing does, and a checkpoint of its detectors every
    CHECKPOINT_SPACING samples. Where a frame first shows an incident, the scan keeps
    its latest checkpoint; a seek to that frame (`f` / `F`) resumes the pipeline from
    it, so the frame shows the incident as continuous play did, even one judged on
    an hour of history (a leak).

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
        scanner: a pipeline of its own (fresh detectors) for `scan()`; None finds
            no spans and no incidents.
    """

    def __init__(
        self,
        reader: StoreReader,
        pipeline: Pipeline,
        *,
        speed: float = 1.0,
        from_s: float | None = None,
        to_s: float | None = None,
        follow: bool = False,
        scanner: Pipeline | None = None,
    ) -> None:
        self.reader = reader
        self.pipeline = pipeline
        self.speed = speed
        self.from_s = from_s
        self.to_s = to_s
        self.follow = follow
        self.mode = "follow" if follow else "replay"
        """The mode of the snapshots: FOLLOW on a file still being written, else REPLAY."""
        self.position: int | None = None
        """Index (in the reader) of the sample behind the latest frame."""
        self.latest: Snapshot | None = None
        """The latest frame produced."""
        self.extent: tuple[float, float] | None = None
        """Wall times of the first and last sample in range, as of the latest call."""
        self.spans: tuple[FindingSpan, ...] = ()
        """Finding spans `scan()` has found so far, in raise order."""
        self.incidents: tuple[IncidentSpan, ...] = ()
        """Incidents `scan()` has found so far, in the order they were first shown."""
        self.scanned_s: float | None = None
        """Wall time of the last sample `scan()` has read; None before it starts."""
        self._interval_s = reader.meta.interval_s or 2.0
        self._closed = threading.Event()
        self._poke = threading.Event()
        # next(), seek(), step() and scan() may come from different threads: one at a
        # time through the reader and the windows.
        self._lock = threading.RLock()
        self._scanner = scanner
        self._scan_index: int | None = None
        self._tracker = FindingTracker()
        self._starts = IncidentStarts()
        self._checkpoint: tuple[int, bytes] | None = None
        """The scanner's latest checkpoint: (index, its state after that sample)."""
        self._unchecked = 0
        self._pins: dict[int, tuple[int, bytes] | None] = {}
        """Index of a frame that first shows an incident → the checkpoint before it
        (None: before the first one, the scan's fresh start)."""

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
        """Samples skipped as unreadable (and facts about the file), one line each."""
        return self.reader.notices

    def focus(self, uuid: str | None) -> None:
        """Nothing to do: a recording holds the exits traced while it was recorded."""

    def _start(self) -> int | None:
        """Index of the first sample in range."""
        if self.from_s is None:
            return self.reader.first_index()
        return self.reader.seek(self.from_s)

    def _past_range(self, index: int) -> bool:
        """Whether the sample at `index` comes after `to_s`."""
        return self.to_s is not None and (self.reader.time_of(index) or 0.0) > self.to_s

    def _last(self) -> int | None:
        """Index of the last sample in range."""
        if self.to_s is None:
            return self.reader.last_index()
        index = self.reader.seek(self.to_s)
        if index is None:
            return self.reader.last_index()
        return self.reader.prev_index(index) if self._past_range(index) else index

    def _refresh_extent(self) -> None:
        """Re-read the first and last sample times (a followed file grows, retention
        trims)."""
        first, last = self.reader.first_time(), self.reader.last_time()
        if first is None or last is None:
            self.extent = None
            return
        lo = first if self.from_s is None else max(first, self.from_s)
        hi = last if self.to_s is None else min(last, self.to_s)
        self.extent = (lo, hi) if lo <= hi else None

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
            index = (
                self._start() if self.position is None else self.reader.next_index(self.position)
            )
            if index is None:
                return _End.FILE
            if self._past_range(index):
                return _End.RANGE
            frame = self._push(index)
            if frame is not None:
                return frame

    def next(self) -> Snapshot | None:
        """The next frame; None at the end (of the file, or past `to_s`).

        In follow mode the end of the file is not the end: `next()` waits up to one
        recorded interval for the recorder's next sample, and when none comes it
        returns the latest frame again, so a caller polling once per interval stays
        responsive; `interrupt()` and `close()` end the wait.
        """
        deadline: float | None = None
        while not self._closed.is_set():
            with self._lock:
                self._refresh_extent()
                got = self._advance()
                if not isinstance(got, _End):
                    return got
                if got is _End.RANGE or not self.follow:
                    return None
            now = time.monotonic()
            deadline = now + self._interval_s if deadline is None else deadline
            if now >= deadline or self._poke.wait(min(deadline - now, 0.25)):
                self._poke.clear()
                return self.latest
        return None

    def interrupt(self) -> None:
        """End a follow-mode wait in `next()` at once (it returns the latest frame)."""
        self._poke.set()

    def seek(self, time_s: float, *, lead_s: float = 0.0) -> Snapshot | None:
        """Jump to the first sample at or after `time_s` and return its frame.

        Before the range gives its first sample, past its end the last one; None when
        the range is empty. With `lead_s`, the window is primed with the samples of
        that many seconds before the target, so detectors see the lead-up to it
        (e.g. the bad observations before a finding is raised).
        """
        with self._lock:
            self._refresh_extent()
            index = self.reader.seek(time_s)
            last = self._last()
            if index is None or (last is not None and index > last):
                index = last
            start = self._start()
            if index is not None and start is not None and index < start:
                index = start
            return None if index is None else self._jump(index, lead_s)

    def step(self, n: int = 1) -> Snapshot | None:
        """Move `n` samples forward (through the window, as playing does) or back
        (a jump); returns the frame there, or None past either end of the range."""
        with self._lock:
            self._refresh_extent()
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
            start = self._start()
            # A damaged target: the readable sample before it (after it would be
            # where the step came from).
            while index is not None and (start is None or index >= start):
                frame = self._jump(index, forward=False)
                if frame is not None:
                    return frame
                index = self.reader.prev_index(index)
            return None

    def _pin(self, index: int) -> None:
        """Keep the latest checkpoint for the frame at `index` (the newest PINS)."""
        self._pins[index] = self._checkpoint
        if len(self._pins) > PINS:
            del self._pins[next(iter(self._pins))]

    def _resume(self, first: int, index: int) -> int | None:
        """For a frame that first shows an incident: resume the pipeline from its pinned
        checkpoint, the window holding the samples from `first` on, and return the
        index of the next sample to push (None: not such a frame)."""
        if index not in self._pins:
            return None
        pinned = self._pins[index]
        if pinned is None:
            self.pipeline.reset()  # before the first checkpoint: fresh, as the scan began
            return self._start()
        at, state = pinned
        history = []
        # From the sample before the lead's first one, as a plain seek primes (rates).
        i = self.reader.prev_index(first) if first <= at else at
        i = first if i is None else i
        while i is not None and i < at:
            if (sample := self.reader.read(i)) is not None:
                history.append(sample)
            i = self.reader.next_index(i)
        latest = self.reader.read(at)
        if latest is None:
            return None  # the scan read it: only a file changed since would do this
        self.pipeline.resume(state, [*history, latest])
        return self.reader.next_index(at)

    def _jump(self, index: int, lead_s: float = 0.0, *, forward: bool = True) -> Snapshot | None:
        """Reset the window, prime it with the sample before `index` (and with the
        `lead_s` seconds before that, up to RECENT_FRAMES), show `index`; when it
        cannot be read, the next readable one (`forward`) or None. A frame that first
        shows an incident resumes from the scan's checkpoint instead (class notes)."""
        first = index
        at = self.reader.time_of(index)
        lead_s = min(lead_s, RECENT_FRAMES * self._interval_s)
        if lead_s > 0 and at is not None and (led := self.reader.seek(at - lead_s)) is not None:
            first = min(index, led)
        prime = self._resume(first, index)
        if prime is None:
            self.pipeline.reset()
            # The sample before the lead's first one, for its rates (none at the start).
            prime = self.reader.prev_index(first)
            if prime is None:
                prime = first
        while prime is not None and prime < index:
            sample = self.reader.read(prime)
            if sample is not None:
                self.pipeline.push(sample, mode=self.mode)
            prime = self.reader.next_index(prime)
        frame = self._push(index)
        if frame is not None or not forward:
            return frame
        got = self._advance()  # the target is damaged: show the next readable one
        return None if isinstance(got, _End) else got

    def scan(self, budget: int) -> bool:
        """Play up to `budget` more samples through the scanner and note when each
        finding was active and where each incident was first shown (`spans`,
        `incidents`, `scanned_s`).

        Returns:
            True while samples in range are left to scan; False once all are (a
            followed file may grow: call again later) or without a scanner.
        """
        if self._scanner is None:
            return False
        with self._lock:
            left = True
            for _ in range(budget):
                index = (
                    self._start()
                    if self._scan_index is None
                    else (self.reader.next_index(self._scan_index))
                )
                if index is None or self._past_range(index):
                    left = False
                    break
                self._scan_index = index
                sample = self.reader.read(index)
                if sample is not None:
                    frame = self._scanner.push(sample, mode=self.mode)
                    self._tracker.add(frame)
                    if self._starts.add(frame):
                        self._pin(index)
                    self.scanned_s = frame.wall_s
                    self._unchecked += 1
                    if self._unchecked >= CHECKPOINT_SPACING:
                        self._checkpoint = (index, self._scanner.checkpoint())
                        self._unchecked = 0
            self.spans = tuple(self._tracker.spans())
            self.incidents = tuple(self._starts.spans())
            return left

    def close(self) -> None:
        """End any follow-mode wait and close the recording."""
        self._closed.set()
        self._poke.set()
        with self._lock:
            self.reader.close()
