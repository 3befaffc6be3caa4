"""Feeds: where snapshots come from (the live sampler, or a recording).

Layer: feed. Imports sampler, store and model; never textual.

Everything after the raw `Sample` is shared: `Pipeline.push()` derives rates through
the window, runs the detectors, groups their findings into incidents and builds the
snapshot, whichever feed supplied the sample. So replay shows exactly what live showed
for the same samples.

A recording can also be navigated (`Navigable`): seek, step, playback speed, the
spans during which findings were active and where incidents were first shown, found
by scanning the recording through a second pipeline (`ReplayFeed.scan`).
"""

from __future__ import annotations

import enum
import io
import pickle
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from datetime import time as clock_time
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, runtime_checkable

from kvmtop.model.finding import SEVERITIES, Finding
from kvmtop.model.incident import Incident
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot, build_snapshot
from kvmtop.model.window import Window
from kvmtop.sampler import SampleSource

if TYPE_CHECKING:
    # Importing the detectors takes some 20 ms: only a pipeline with detectors needs
    # them (kvmtop.wiring). The reader loads SQLite and zstd: only replay needs them.
    from kvmtop.detectors.incidents import IncidentTracker
    from kvmtop.store.reader import StoreReader

Detect = Callable[[Window], tuple[Finding, ...]]
"""A detector engine: reads the window after each push, returns active findings."""

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RELATIVE = re.compile(r"\+(\d+(?:\.\d+)?)([smhd]?)")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?")
TIME_FORMATS = "ISO 8601 (local time unless it ends in Z or an offset), HH:MM[:SS] " \
    "during the recording, Unix seconds, or +N[s|m|h|d] from the start of the recording"


def parse_time(text: str, start_s: float | None, end_s: float | None = None) -> float:
    """A point in a recording typed by the user, as Unix seconds.

    Args:
        text: ISO 8601 ("2025-03-01T14:05", "...Z", "...+01:00"), a local time of
            day ("14:05", "14:05:30": the first time the recording's clock reads it,
            or that time on its first day when it never does), Unix seconds
            ("1740837900"), or "+10m" (s, m, h, d; none means s) after `start_s`.
        start_s: the recording's first sample, for relative times and times of day.
        end_s: the recording's last sample (a time of day may fall on a later day).

    Raises:
        ValueError: none of those forms, or a relative time without a start.
    """
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    of_day = _CLOCK.fullmatch(text)
    if (relative or of_day) and start_s is None:
        raise ValueError("a relative time needs a recording that has samples")
    if relative and start_s is not None:
        return start_s + float(relative[1]) * _UNITS_S[relative[2] or "s"]
    if of_day and start_s is not None:
        return _time_of_day(text, of_day, start_s, end_s)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        # A naive datetime is local time: timestamp() applies the local zone.
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time ({TIME_FORMATS})") from None


def _time_of_day(text: str, match: re.Match[str], start_s: float, end_s: float | None) -> float:
    """The first local time reading `match` (HH, MM, SS, fraction) in [start_s, end_s]."""
    try:
        of_day = clock_time(int(match[1]), int(match[2]), int(match[3] or 0),
                            int((match[4] or "0").ljust(6, "0")))
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day") from None
    at = datetime.combine(datetime.fromtimestamp(start_s).date(), of_day)
    while at.timestamp() < start_s and end_s is not None:
        later = at + timedelta(days=1)
        if later.timestamp() > end_s:
            break
        at = later
    return at.timestamp()


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


@dataclass(frozen=True, slots=True)
class FindingSpan:
    """When one finding (a detector about one subject, from one first-bad time) was
    active: the replay timeline's markers and the report's findings timeline.

    A finding that clears and comes back (a new first-bad time) is a second span.

    Attributes:
        peak: the finding at its worst tick: the highest severity and, among those,
            the largest first evidence figure (every detector lists its main
            measurement first).
        message: its message when it was raised.
        since_s: wall time of the first bad observation (`Finding.since_s`).
        raised_s: wall time of the first frame showing it.
        until_s: wall time of the last frame showing it (so far, while it is active).
        ongoing: active at the last frame seen.
    """

    peak: Finding
    message: str
    since_s: float
    raised_s: float
    until_s: float
    ongoing: bool = False

    @property
    def detector(self) -> str:
        """The detector id."""
        return self.peak.detector

    @property
    def subject(self) -> str:
        """What it is about (guest UUID, "host", a switch)."""
        return self.peak.subject

    @property
    def subject_name(self) -> str:
        """The subject's human name."""
        return self.peak.subject_name

    @property
    def severity(self) -> str:
        """The worst severity it reached."""
        return self.peak.severity

    def key(self) -> tuple[str, str, float]:
        """What identifies the span: detector, subject, first-bad time."""
        return self.peak.detector, self.peak.subject, self.since_s

    def merged(self, later: FindingSpan) -> FindingSpan:
        """This span and the same span seen later (a later part of the recording)."""
        peak = later.peak if badness(later.peak) > badness(self.peak) else self.peak
        return replace(self, peak=peak, until_s=max(self.until_s, later.until_s),
                       ongoing=later.ongoing)


def badness(f: Finding) -> tuple[int, float]:
    """Orders a finding's ticks: severity, then the size of its main evidence figure."""
    first = next(iter(f.evidence.values()), 0.0)
    rank = SEVERITIES.index(f.severity) if f.severity in SEVERITIES else 0
    return rank, abs(first)


class FindingTracker:
    """Turns the active findings of consecutive frames into `FindingSpan`s."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str, float], FindingSpan] = {}
        self._ended: list[FindingSpan] = []

    def add(self, frame: Snapshot) -> None:
        """Extend the spans still active, open new ones, end the others."""
        t = frame.wall_s
        active: set[tuple[str, str, float]] = set()
        for f in frame.findings:
            key = (f.detector, f.subject, f.since_s)
            active.add(key)
            span = self._open.get(key)
            if span is None:
                self._open[key] = FindingSpan(f, f.message, f.since_s, t, t)
            else:
                self._open[key] = replace(
                    span, until_s=t, peak=f if badness(f) > badness(span.peak) else span.peak)
        for key in [k for k in self._open if k not in active]:
            self._ended.append(self._open.pop(key))

    def spans(self) -> list[FindingSpan]:
        """Every span so far in raise order; those active at the last frame are ongoing."""
        current = [replace(s, ongoing=True) for s in self._open.values()]
        return sorted([*self._ended, *current],
                      key=lambda s: (s.raised_s, s.detector, s.subject))


class IncidentLog:
    """Every incident of consecutive frames (`Snapshot.incidents`), closed ones too.

    The pipeline's tracker keeps only recent closed incidents
    (`kvmtop.detectors.incidents.HISTORY_MAX`), so a long-running process does not grow;
    a report over a recording folds its frames in here instead, and holds them for as
    long as it needs them. An incident's last version in the frames is its final one:
    the tracker changes nothing in it between its last frame and its closing.
    """

    def __init__(self) -> None:
        self._seen: dict[str, Incident] = {}
        self._open: frozenset[str] = frozenset()

    def add(self, frame: Snapshot) -> None:
        """Take the incidents of the next frame (in recording order, no seek)."""
        seen = self._seen
        for i in frame.incidents:
            seen[i.id] = i
        self._open = frozenset(i.id for i in frame.incidents)

    def merge(self, incidents: Iterable[Incident]) -> None:
        """Take what another log gathered over the frames that follow (its
        `incidents()`): its versions are the later ones, and the incidents it has open
        (rank above 0) are the open ones now, as if its frames had been added here."""
        seen = self._seen
        open_: set[str] = set()
        for i in incidents:
            seen[i.id] = i
            if i.rank:
                open_.add(i.id)
        self._open = frozenset(open_)

    def incidents(self) -> list[Incident]:
        """Every incident seen, by start (`since_s`, then `id`), as
        `IncidentTracker.history` gives them: those gone from the last frame closed
        (rank 0)."""
        return sorted(
            (i if i.id in self._open else replace(i, rank=0) for i in self._seen.values()),
            key=lambda i: (i.since_s, i.id),
        )


@dataclass(frozen=True, slots=True)
class IncidentSpan:
    """When one incident was first shown in a recording: where `f` / `F` jump in a
    replay.

    Attributes:
        incident: the incident as the last frame showing it had it.
        raised_s: wall time of the first frame showing it (its `since_s` is earlier:
            the first bad observation of its findings).
    """

    incident: Incident
    raised_s: float


class IncidentStarts:
    """Where each incident of consecutive frames (`Snapshot.incidents`) was first
    shown: the replay's `f` / `F` stops (`ReplayFeed.scan`)."""

    def __init__(self) -> None:
        self._raised: dict[str, float] = {}
        self._latest: dict[str, Incident] = {}

    def add(self, frame: Snapshot) -> bool:
        """Take the incidents of the next frame (in recording order, no seek); True
        when it is the first to show one of them."""
        first = False
        for i in frame.incidents:
            if i.id not in self._raised:
                self._raised[i.id] = frame.wall_s
                first = True
            self._latest[i.id] = i
        return first

    def spans(self) -> list[IncidentSpan]:
        """Every incident seen, as its last frame had it, with the first frame showing
        it, in that order (those of one frame in their rank order)."""
        raised = self._raised
        return sorted((IncidentSpan(i, raised[key]) for key, i in self._latest.items()),
                      key=lambda s: s.raised_s)


def adjacent_span(spans: Sequence[IncidentSpan], time_s: float,
                  direction: int) -> IncidentSpan | None:
    """The first incident shown after `time_s` (direction > 0), or the last one shown
    before it (direction < 0); `spans` are in the order they were shown."""
    if direction > 0:
        return next((s for s in spans if s.raised_s > time_s + 1e-6), None)
    return next((s for s in reversed(spans) if s.raised_s < time_s - 1e-6), None)


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


RECENT_FRAMES = 300
"""Frames a snapshot carries for plots: 10 minutes at the default 2 s interval."""

CHECKPOINT_SPACING = 16
"""Samples between the replay scan's checkpoints: a jump to an incident pushes at
most this many samples through the pipeline (cost in bench/)."""

PINS = 100
"""Incident starts a replay keeps a checkpoint for (the newest), as many as the
incident history holds."""


class Pipeline:
    """Sample → rates (window) → findings → incidents → snapshot: the code live and
    replay share."""

    def __init__(
        self,
        *,
        window_size: int = 300,
        min_ops: int = 5,
        detect: Detect | None = None,
        incidents: IncidentTracker | None = None,
        recent: int = RECENT_FRAMES,
    ):
        """Create a pipeline with an empty window.

        Args:
            window_size: frames kept for plots (see `kvmtop.model.window`).
            min_ops: minimum disk requests per interval before a latency is shown.
            detect: detector engine; None runs no detectors.
            incidents: groups each push's findings into incidents
                (`Snapshot.incidents`); None groups none.
            recent: newest frames each snapshot carries (`Snapshot.recent`, plots).
        """
        self.window = Window(window_size, min_ops=min_ops)
        self._detect = detect
        self._incidents = incidents
        self._seq = 0
        self._recent = recent

    def push(self, sample: Sample, *, mode: str, recording: str | None = None) -> Snapshot:
        """Feed one raw sample through the shared pipeline and return its snapshot."""
        window = self.window
        frame = window.push(sample)
        findings = self._detect(window) if self._detect is not None else ()
        incidents: tuple[Incident, ...] = ()
        tracker = self._incidents
        if tracker is not None:
            if len(window) == 1:
                # The window started over (a seek's reset, a clock that did not move
                # on): the detector engine forgets everything here, and so do incidents.
                tracker.reset()
            tracker.update(sample.wall_s, findings)
            incidents = tracker.current()
        self._seq += 1
        return build_snapshot(
            frame,
            findings,
            sample.sources,
            mode=mode,
            interval_s=sample.interval_s,
            recording=recording,
            seq=self._seq,
            recent=window.recent(self._recent),
            incidents=incidents,
        )

    def reset(self) -> None:
        """Forget the window (after a seek); the detectors and incidents start over
        with the next push."""
        self.window.clear()

    def checkpoint(self) -> bytes:
        """The detectors' and incidents' state after the latest push, for `resume`:
        pickled (in memory only) without the latest sample, which the recording
        holds, and compressed (bench/ measures size and time)."""
        latest = self.window.latest
        out = io.BytesIO()
        _StatePickler(out, None if latest is None else latest[0]).dump(
            (self._detect, self._incidents))
        return zlib.compress(out.getvalue(), 1)

    def resume(self, state: bytes, history: Sequence[Sample]) -> None:
        """Continue from a `checkpoint` of a pipeline built from the same settings, as
        if every sample up to it had been pushed here.

        Args:
            state: the checkpoint.
            history: the samples up to the checkpoint's latest one (last, required),
                oldest first: the window's frames (plots); the detectors do not see
                them again.
        """
        self.window.clear()
        for sample in history:
            self.window.push(sample)
        # The next push has a window longer than one frame, which the engine and the
        # tracker read as "continues", not "started over".
        self._detect, self._incidents = _StateUnpickler(
            io.BytesIO(zlib.decompress(state)), history[-1]).load()


class _StatePickler(pickle.Pickler):
    """Pickles a pipeline's state with the latest sample as a reference, not a copy."""

    def __init__(self, out: io.BytesIO, latest: Sample | None) -> None:
        super().__init__(out, protocol=pickle.HIGHEST_PROTOCOL)
        self._latest = latest

    def persistent_id(self, obj: object) -> str | None:
        """The latest sample by reference."""
        return "latest" if obj is self._latest and obj is not None else None


class _StateUnpickler(pickle.Unpickler):
    """Loads a `_StatePickler` state around the latest sample, read again."""

    def __init__(self, data: io.BytesIO, latest: Sample) -> None:
        super().__init__(data)
        self._latest = latest

    def persistent_load(self, pid: object) -> Sample:
        """The latest sample (the only reference a state holds)."""
        if pid != "latest":
            raise pickle.UnpicklingError(f"unknown reference {pid!r}")
        return self._latest


Source = TypeVar("Source", bound=SampleSource)


class LiveFeed(Generic[Source]):
    """Samples the host now (or a recording played as if now, `kvmtop serve
    --replay`); optionally records every raw sample.

    A recording failure (disk full, read-only path) stops the recording with a
    reason in `record_error` and never stops monitoring.
    """

    def __init__(self, sampler: Source, pipeline: Pipeline,
                 recorder: SampleSink | None = None):
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
        the tracer and detaches the previous guest, which takes up to 0.7 s."""
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
            index = self._start() if self.position is None else self.reader.next_index(
                self.position)
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

    def _jump(self, index: int, lead_s: float = 0.0, *,
              forward: bool = True) -> Snapshot | None:
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
                index = self._start() if self._scan_index is None else (
                    self.reader.next_index(self._scan_index))
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
