"""Incidents: findings grouped by cause (docs/detectors.md#incidents).

Layer: model (pure). The values a snapshot carries (`Snapshot.incidents`); the
detectors' `IncidentTracker` (`kvmtop.detectors.incidents`) builds and ranks them.
"""

from __future__ import annotations

import msgspec

DROP_EVIDENCE = (
    "rx_drops_per_s",
    "tx_drops_per_s",
    "uplink_drops_per_s",
    "uplink_qdisc_drops_per_s",
    "ovs_port_drops_per_s",
    "ovs_lost_per_s",
    "softnet_drops_per_s",
    "guests_dropping",
)
"""Evidence figures that count packets lost (`vnic_drops`, `vswitch_saturation`)."""

_DROPS = frozenset(DROP_EVIDENCE)


def dropping(evidence: dict[str, float]) -> bool:
    """Whether evidence counts packets lost (a `DROP_EVIDENCE` figure above 0)."""
    # Most evidence has no drop figure at all: the set test spares the lookups.
    return not _DROPS.isdisjoint(evidence) and any(evidence.get(k, 0.0) > 0 for k in DROP_EVIDENCE)


def where(subject_name: str, guest: str | None) -> str:
    """What a finding is about, as a title or a row names it: the subject, after its
    guest when the subject is one of the guest's devices ("web-01 vda")."""
    return subject_name if guest in (None, subject_name) else f"{guest} {subject_name}"


def impact(guests: int, duration_s: float) -> float:
    """Guests involved (at least 1: a host-wide incident counts once) × duration."""
    return max(1, guests) * duration_s


class Member(msgspec.Struct, frozen=True, gc=False):
    """One finding of an incident, as it was last raised.

    Attributes:
        detector / subject / subject_name / guest / severity / since_s / message /
            evidence: those of the finding (`Finding`).
        active: raised at the tracker's last update.
    """

    detector: str
    subject: str
    subject_name: str
    guest: str | None
    severity: str
    since_s: float
    message: str
    evidence: dict[str, float]
    active: bool

    @property
    def where(self) -> str:
        """What it is about (`where`): "web-01", "web-01 vda", "host:cpu"."""
        return where(self.subject_name, self.guest)


class Incident(msgspec.Struct, frozen=True, gc=False):
    """Findings with one cause (docs/detectors.md#incidents).

    Attributes:
        id: stable: derived from the cause and the start when it opened.
        cause: the findings' `Finding.cause`.
        kind: one of `kvmtop.detectors.incidents.KINDS`.
        title: one sentence naming the cause and what it hits.
        severity: the highest of its findings at its last bad tick.
        since_s: the earliest `since_s` of its findings.
        last_bad_s: wall time of the last update that had a finding with its cause.
        active: it has a finding now (False: cleared, closed once `incident_gap_s`
            passes without one).
        members: every finding it has had, the active ones first, worst first.
        guests: the guests it involves, by name: its findings' guests and
            `Finding.cause_guests`.
        evidence: the figures it was judged on at its last bad tick
            (`kvmtop.detectors.incidents.EVIDENCE`).
        advice: one or two sentences on what to change.
        crossings: how often it raised again within `incident_gap_s` after clearing.
        rank: its 1-based place in `IncidentTracker.current()`; 0 once closed.
        eta_s: time to memory exhaustion of a leak `memory_leak` judges a warning or
            critical; None otherwise.
    """

    id: str
    cause: str
    kind: str
    title: str
    severity: str
    since_s: float
    last_bad_s: float
    active: bool
    members: tuple[Member, ...]
    guests: tuple[str, ...]
    evidence: dict[str, float]
    advice: str
    crossings: int
    rank: int
    eta_s: float | None = None

    @property
    def duration_s(self) -> float:
        """Seconds from its start to its last bad tick."""
        return self.last_bad_s - self.since_s

    @property
    def dropping(self) -> bool:
        """Whether its evidence counts packets lost (`DROP_EVIDENCE`)."""
        return dropping(self.evidence)

    @property
    def impact(self) -> float:
        """Guests involved (at least 1: a host-wide incident counts once) × duration."""
        return impact(len(self.guests), self.duration_s)
