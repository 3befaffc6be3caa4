"""The pipeline live and replay share: sample → rates (window) → findings →
incidents → snapshot.

Layer: feed. Imports model; the detectors only for type checking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from kvmtop.feed.checkpoint import load_state, save_state
from kvmtop.model.finding import Finding
from kvmtop.model.incident import Incident
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot, build_snapshot
from kvmtop.model.window import Window

if TYPE_CHECKING:
    # Importing the detectors takes a noticeable time
    # (bench/results/measurements.md#detectors-import-time): only a pipeline with
    # detectors needs them (kvmtop.wiring).
    from kvmtop.detectors.incidents import IncidentTracker

Detect = Callable[[Window], tuple[Finding, ...]]
"""A detector engine: reads the window after each push, returns active findings."""

RECENT_FRAMES = 300
"""Frames a snapshot carries for plots: 10 minutes at the default 2 s interval."""


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
        return save_state((self._detect, self._incidents), None if latest is None else latest[0])

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
        self._detect, self._incidents = load_state(state, history[-1])
