"""The detector engine: the `detect` callable the pipeline runs after every push.

Layer: detectors (pure). `DetectorEngine(settings)(window)` reads only the newest
(sample, frame) of the window, hands one `Tick` to every enabled detector, and turns
their observations into findings with hysteresis (docs/detectors.md#hysteresis):
raise after K consecutive bad observations, clear after K good ones; `since_s` is the
wall time of the first bad observation of the streak that raised it. A finding's
`cause` is its observation's, or "<detector>/<key>" when that names none
(docs/detectors.md#incidents).

State is kept per guest and dropped when the guest restarts (new libvirt domain ID or
QEMU pid), stops running or disappears. A window that was cleared (replay seek) or a
clock that went backwards resets everything, so replaying the same samples gives the
same findings as live.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvmtop.detectors.base import (
    Detector,
    GuestView,
    Observation,
    Tick,
    host_baseline,
)
from kvmtop.detectors.disk_latency import DiskLatency
from kvmtop.detectors.exit_storm import ExitStorm
from kvmtop.detectors.host_pressure import HostPressure
from kvmtop.detectors.memory_leak import MemoryLeak
from kvmtop.detectors.overcommit import Overcommit
from kvmtop.detectors.qemu_memory_growth import QemuMemoryGrowth
from kvmtop.detectors.settings import DetectorSettings
from kvmtop.detectors.steal import Steal
from kvmtop.detectors.vnic_drops import VnicDrops
from kvmtop.detectors.vswitch_saturation import VswitchSaturation
from kvmtop.model.finding import Finding, severity_rank
from kvmtop.model.rates.frame import Frame
from kvmtop.model.rates.guest import same_incarnation
from kvmtop.model.sample import Sample
from kvmtop.model.window import Window

DETECTORS: dict[str, Callable[[DetectorSettings], Detector]] = {
    "memory_leak": MemoryLeak,
    "qemu_memory_growth": QemuMemoryGrowth,
    "vswitch_saturation": VswitchSaturation,
    "vnic_drops": VnicDrops,
    "steal": Steal,
    "exit_storm": ExitStorm,
    "disk_latency": DiskLatency,
    "host_pressure": HostPressure,
    "overcommit": Overcommit,
}
"""Detector id → constructor, in the order they run."""


@dataclass(slots=True)
class _Track:
    """Hysteresis state of one (detector, key); `cause` is the finding's cause when the
    observation names none: "<detector>/<key>", unique to it."""

    cause: str
    bad_streak: int = 0
    good_streak: int = 0
    active: bool = False
    since_s: float = 0.0
    first_bad_s: float = 0.0
    last_seen_s: float = 0.0
    hold_s: float = 60.0
    guest_uuid: str | None = None
    finding: Finding | None = None

    def update(self, detector: str, obs: Observation, now: float) -> None:
        """Count one observation and raise or clear."""
        self.last_seen_s = now
        self.hold_s = obs.hold_s
        self.guest_uuid = obs.guest_uuid
        if obs.bad:
            self.good_streak = 0
            self.bad_streak += 1
            if self.bad_streak == 1:
                self.first_bad_s = now
            if not self.active and (obs.immediate or self.bad_streak >= obs.raise_after):
                self.active = True
                self.since_s = self.first_bad_s
            self.finding = Finding(
                detector=detector,
                severity=obs.severity,
                subject=obs.subject,
                subject_name=obs.subject_name,
                message=obs.message,
                since_s=self.since_s if self.active else self.first_bad_s,
                guest=obs.guest,
                evidence=obs.evidence,
                baseline=obs.baseline,
                cause=obs.cause or self.cause,
                cause_guests=obs.cause_guests,
            )
        else:
            self.bad_streak = 0
            self.good_streak += 1
            if self.active and (obs.immediate or self.good_streak >= obs.clear_after):
                self.active = False


class DetectorEngine:
    """Runs the enabled detectors on each new window state and keeps hysteresis.

    Cheap per tick: every detector reads the newest sample only and keeps what it
    needs (rolling medians, decimated trend series) incrementally.
    """

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        """Build the enabled detectors from `settings` (defaults when None)."""
        self.settings = settings or DetectorSettings()
        self._detectors: list[tuple[str, Detector]] = [
            (det_id, make(self.settings))
            for det_id, make in DETECTORS.items()
            if self.settings.enabled(det_id)
        ]
        # Per detector, observation key → its hysteresis state; one dict per enabled
        # detector for the engine's life, so `Tick.tracked_keys` hands out a live view.
        self._tracks: dict[str, dict[str, _Track]] = {det_id: {} for det_id, _ in self._detectors}
        self._identity: dict[str, tuple[int | None, int | None]] = {}
        self._resolved: dict[str, DetectorSettings] = {}
        self._prev: Sample | None = None
        self._findings: tuple[Finding, ...] = ()

    def reset(self) -> None:
        """Forget all state (the window was cleared or time went backwards)."""
        for uuid in list(self._identity):
            self._forget(uuid)
        for tracks in self._tracks.values():
            tracks.clear()
        self._prev = None
        self._findings = ()

    def __call__(self, window: Window) -> tuple[Finding, ...]:
        """Findings active after the newest sample of `window`."""
        latest = window.latest
        if latest is None:
            self.reset()
            return ()
        sample, frame = latest
        if sample is self._prev:
            return self._findings
        if self._prev is not None and (len(window) == 1 or sample.mono_ns <= self._prev.mono_ns):
            self.reset()
        prev = self._prev
        guests = self._guests(sample, prev, frame)
        tick = Tick(
            wall_s=sample.wall_s,
            dt_s=frame.dt_s,
            sample=sample,
            prev=prev,
            frame=frame,
            guests=guests,
            settings=self.settings,
            baseline=host_baseline(frame.host),
            tracked=self._tracks,
        )
        now = sample.wall_s
        for det_id, detector in self._detectors:
            tracks = self._tracks[det_id]
            for obs in detector.observe(tick):
                key = obs.key
                track = tracks.get(key)
                if track is None:
                    if not obs.bad:
                        continue
                    track = tracks[key] = _Track(f"{det_id}/{key}")
                track.update(det_id, obs, now)
                if not track.active and not track.bad_streak:
                    # Back to no streak and no finding: the same as never observed
                    # (a new track starts there), so only subjects with something
                    # pending are tracked and good verdicts on the rest are skipped.
                    del tracks[key]
        for tracks in self._tracks.values():
            for key, track in list(tracks.items()):
                if now - track.last_seen_s > track.hold_s:
                    del tracks[key]
        self._prev = sample
        self._findings = tuple(
            sorted(
                (
                    t.finding
                    for tracks in self._tracks.values()
                    for t in tracks.values()
                    if t.active and t.finding is not None
                ),
                key=lambda f: (-severity_rank(f.severity), f.detector, f.subject_name),
            )
        )
        return self._findings

    def _guests(self, sample: Sample, prev: Sample | None, frame: Frame) -> tuple[GuestView, ...]:
        """Running guests with their previous sample; forget restarted or gone ones."""
        prev_guests = {g.uuid: g for g in prev.guests} if prev is not None else {}
        rates = {g.uuid: g for g in frame.guests}
        identities = self._identity
        resolved = self._resolved
        views: list[GuestView] = []
        seen: set[str] = set()
        for g in sample.guests:
            uuid = g.uuid
            r = rates.get(uuid)
            if g.state != "running" or r is None:
                continue
            identity = (g.dom_id, g.pid)
            if identities.get(uuid, identity) != identity:
                self._forget(uuid)
            identities[uuid] = identity
            seen.add(uuid)
            p = prev_guests.get(uuid)
            if p is not None and (not same_incarnation(p, g) or p.state != "running"):
                p = None
            settings = resolved.get(g.name)
            if settings is None:
                settings = resolved[g.name] = self.settings.for_guest(g.name)
            views.append(
                GuestView(sample=g, rates=r, prev=p, settings=settings, uuid=uuid, name=g.name)
            )
        if len(identities) > len(seen):
            # Every guest seen is in `identities`: a longer one holds gone guests.
            for uuid in set(identities) - seen:
                self._forget(uuid)
        return tuple(views)

    def _forget(self, uuid: str) -> None:
        """Drop detector state and findings of one guest."""
        self._identity.pop(uuid, None)
        for _, detector in self._detectors:
            detector.forget(uuid)
        for tracks in self._tracks.values():
            for key in [k for k, t in tracks.items() if t.guest_uuid == uuid]:
                del tracks[key]


def build_engine(settings: DetectorSettings) -> Callable[[Window], tuple[Finding, ...]]:
    """The `detect` callable for `kvmtop.feed.pipeline.Pipeline` (pass `Settings.detectors`)."""
    return DetectorEngine(settings)
