"""Spans of a recording: when each finding was active, where each incident was first
shown, and every incident of the frames (the replay timeline and the report).

Layer: feed. Folds consecutive snapshots; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import msgspec

from kvmtop.model.finding import Finding, severity_rank
from kvmtop.model.incident import Incident
from kvmtop.model.snapshot import Snapshot


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
        return replace(
            self, peak=peak, until_s=max(self.until_s, later.until_s), ongoing=later.ongoing
        )


def badness(f: Finding) -> tuple[int, float]:
    """Orders a finding's ticks: severity, then the size of its main evidence figure."""
    first = next(iter(f.evidence.values()), 0.0)
    return severity_rank(f.severity), abs(first)


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
                    span, until_s=t, peak=f if badness(f) > badness(span.peak) else span.peak
                )
        for key in [k for k in self._open if k not in active]:
            self._ended.append(self._open.pop(key))

    def spans(self) -> list[FindingSpan]:
        """Every span so far in raise order; those active at the last frame are ongoing."""
        current = [replace(s, ongoing=True) for s in self._open.values()]
        return sorted([*self._ended, *current], key=lambda s: (s.raised_s, s.detector, s.subject))


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
            (
                i if i.id in self._open else msgspec.structs.replace(i, rank=0)
                for i in self._seen.values()
            ),
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
        return sorted(
            (IncidentSpan(i, raised[key]) for key, i in self._latest.items()),
            key=lambda s: s.raised_s,
        )


def adjacent_span(
    spans: Sequence[IncidentSpan], time_s: float, direction: int
) -> IncidentSpan | None:
    """The first incident shown after `time_s` (direction > 0), or the last one shown
    before it (direction < 0); `spans` are in the order they were shown."""
    if direction > 0:
        return next((s for s in spans if s.raised_s > time_s + 1e-6), None)
    return next((s for s in reversed(spans) if s.raised_s < time_s - 1e-6), None)
