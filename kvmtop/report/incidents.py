"""The incidents of a report's range, each at its worst, and their rank order.

`IncidentAcc` keeps every incident of the range (the last version of each,
`kvmtop.feed.spans.IncidentLog`, with the figures of its worst tick), and `ranked` orders
them by that worst (docs/detectors.md#incidents).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from kvmtop.detectors.incidents import SMALLEST_WORST, MemberKey, rank_key
from kvmtop.feed.spans import IncidentLog
from kvmtop.model.finding import severity_rank
from kvmtop.model.incident import Incident, Member
from kvmtop.model.snapshot import Snapshot


def _worst_key(i: Incident) -> tuple[int, float, int, float]:
    """Orders the versions (ticks) of one incident, the worst first: by `rank_key`'s
    tier, ETA and severity, then by its main evidence figure (the first; the smaller
    the worse for `SMALLEST_WORST` figures, else the larger). Only the figures an
    `IncidentAcc` keeps of the worst tick count, so the order is the same over frames
    and over merged accumulations."""
    _, tier, eta, severity, *_ = rank_key(i)
    first = next(iter(i.evidence.items()), None)
    main = 0.0 if first is None else first[1] if first[0] in SMALLEST_WORST else -abs(first[1])
    return tier, eta, severity, main


class IncidentAcc:
    """The incidents of the range, each at its worst: its last version
    (`kvmtop.feed.spans.IncidentLog`) with the title, severity, evidence and ETA of its worst
    tick (`_worst_key`, the last of equals: a steady figure reads as it was last), and
    each member at the highest severity it reached.

    Frames come in one by one (`add`), or as what another `IncidentAcc` gathered over
    the frames that follow (`merge`, the report's index): either way the same incidents.
    """

    __slots__ = ("_highest", "_log", "_members", "_worst")

    def __init__(self) -> None:
        self._log = IncidentLog()
        self._worst: dict[str, Incident] = {}
        self._members: dict[str, tuple[Member, ...]] = {}
        """Per incident, the members last folded in (the tracker hands out the same
        tuple while they do not change)."""
        self._highest: dict[str, dict[MemberKey, str]] = {}

    def add(self, snap: Snapshot) -> None:
        """Fold in the incidents of the next frame (in recording order, no seek)."""
        self._log.add(snap)
        for i in snap.incidents:
            self._fold(i)

    def merge(self, incidents: Sequence[Incident]) -> None:
        """Fold in another accumulation's `incidents()`, of the frames that follow."""
        self._log.merge(incidents)
        for i in incidents:
            self._fold(i)

    def _fold(self, i: Incident) -> None:
        worst = self._worst.get(i.id)
        # The same evidence object: the same findings as the worst tick (the tracker
        # rebuilds an incident's figures only when they change), so the same figures.
        if worst is None or (
            i.evidence is not worst.evidence and _worst_key(i) <= _worst_key(worst)
        ):
            self._worst[i.id] = i
        if i.members is not self._members.get(i.id):
            self._members[i.id] = i.members
            highest = self._highest.setdefault(i.id, {})
            for m in i.members:
                key = (m.detector, m.subject, m.guest)
                seen = highest.get(key)
                if seen is None or severity_rank(m.severity) > severity_rank(seen):
                    highest[key] = m.severity

    def incidents(self) -> list[Incident]:
        """Every incident, by start, at its worst (see the class): `active` when still
        active at the last frame, `rank` its rank there (0: gone from it)."""
        out = []
        for i in self._log.incidents():
            worst, highest = self._worst[i.id], self._highest[i.id]
            members = tuple(
                m
                if m.severity == (s := highest[(m.detector, m.subject, m.guest)])
                else msgspec.structs.replace(m, severity=s)
                for m in i.members
            )
            out.append(
                msgspec.structs.replace(
                    i,
                    title=worst.title,
                    severity=worst.severity,
                    evidence=worst.evidence,
                    eta_s=worst.eta_s,
                    members=members,
                    active=i.active and i.rank > 0,
                )
            )
        return out


def ranked(incidents: Iterable[Incident]) -> list[Incident]:
    """The report's order of incidents, ranked from 1: `rank_key` of each at its worst
    (`IncidentAcc`), leaving out its first criterion (active first), so an incident
    that cleared before the end of the range keeps the place its worst tick earns it
    (docs/detectors.md#incidents)."""
    order = sorted(incidents, key=lambda i: rank_key(i)[1:])
    return [msgspec.structs.replace(i, rank=n) for n, i in enumerate(order, 1)]
