"""Findings: what a detector concluded, with the evidence behind it.

Layer: model (pure).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmtop.model.frozen import fast_init

SEVERITIES = ("info", "warning", "critical")


@fast_init
@dataclass(frozen=True, slots=True)
class Finding:
    """One problem a detector raised.

    Attributes:
        detector: stable detector id ("memory_leak", "steal", "exit_storm", ...).
        severity: "info", "warning" or "critical".
        subject: what it is about: a guest UUID, or "host", or a switch name.
        subject_name: human name of the subject (guest name, bridge name).
        guest: the guest's name when the finding is about one guest, else None.
        message: one line (a row of the incidents panel, batch text).
        since_s: wall time when the condition was first raised.
        evidence: the numbers it was judged on, by name (units in the names).
        baseline: the host baseline it was judged against, by name.
        cause: machine-readable key of what caused it: findings sharing one are one
            incident (`kvmtop.detectors.incidents`, docs/detectors.md#incidents).
            Empty in findings recorded before causes existed.
        cause_guests: every guest the cause involves, this one's included, by name
            (the guests of a pinning collision); empty when that is only its own.
    """

    detector: str
    severity: str
    subject: str
    subject_name: str
    message: str
    since_s: float
    guest: str | None = None
    evidence: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    cause: str = ""
    cause_guests: tuple[str, ...] = ()
