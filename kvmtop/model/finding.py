"""Findings: what a detector concluded, with the evidence behind it.

Layer: model (pure).
"""

from __future__ import annotations

from typing import Literal

import msgspec

Severity = Literal["info", "warning", "critical"]
"""How bad a finding is (and a table cell's colour class)."""
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
"""Every severity, least first: the one order every ranking of severities uses."""
_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    """The rank of a severity in `SEVERITIES` (info 0 < warning 1 < critical 2); one
    this version does not know (from a newer recording) ranks below info, -1."""
    return _RANK.get(severity, -1)


class Finding(msgspec.Struct, frozen=True, gc=False):
    """One problem a detector raised.

    Attributes:
        detector: stable detector id ("memory_leak", "steal", "exit_storm", ...).
        severity: a `Severity` (kept as str: a recording may hold another).
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
    evidence: dict[str, float] = msgspec.field(default_factory=dict)
    baseline: dict[str, float] = msgspec.field(default_factory=dict)
    cause: str = ""
    cause_guests: tuple[str, ...] = ()
