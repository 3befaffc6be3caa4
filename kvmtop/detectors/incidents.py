"""Incidents: findings grouped by cause and ranked by time to harm
(docs/detectors.md#incidents).

Layer: detectors (pure). `IncidentTracker.update(wall_s, findings)` takes the engine's
active findings once per tick. Findings with the same `Finding.cause` are one incident:
host CPU over-commit, a pinning collision, a saturated switch, a leaking guest, a slow
host device, or disk latency above the device of one guest; any other finding is an
incident of its own. A cause that clears and raises again within `incident_gap_s`
continues its incident (one more crossing) instead of opening a new one.

No I/O, no clock: time is the sample's wall time. A clock that goes backwards (a replay
seek) resets the tracker, as it resets the engine, and the pipeline resets it wherever
the engine starts over (`kvmtop.feed.pipeline.Pipeline.push`), so a replay groups the findings
it computes as the live run did. The incidents themselves (`Incident`, `Member`) are
model values (`kvmtop.model.incident`): every snapshot carries the ranked current ones.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from kvmtop.detectors.base import CAUSE_KINDS, fmt_duration
from kvmtop.detectors.settings import DetectorSettings
from kvmtop.detectors.topology import summarize
from kvmtop.model.finding import Finding, severity_rank
from kvmtop.model.incident import DROP_EVIDENCE, Incident, Member, dropping, impact, where

KINDS = (*CAUSE_KINDS.values(), "single")
"""Incident kinds: those of the shared causes, and "single" for a finding alone."""

EVIDENCE: dict[str, tuple[str, ...]] = {
    "overcommit": ("vcpu_pcpu_ratio", "steal_max_pct", "steal_mean_pct", "host_psi_cpu_some_pct"),
    "pinning": ("steal_max_pct", "steal_mean_pct", "high_for_s"),
    "switch": (
        "uplink_util_pct",
        "uplink_mbps",
        "uplink_capacity_mbps",
        "uplink_shaped_mbps",
        *DROP_EVIDENCE,
        "rx_drop_pct",
    ),
    "leak": ("tte_min", "slope_mib_per_min", "usable_mib", "over_mib", "slope_mib_per_h"),
    "disk_device": ("read_ms", "write_ms", "flush_ms", "host_dev_ms", "host_dev_util_pct"),
    "disk_above_device": ("read_ms", "write_ms", "flush_ms", "host_dev_ms", "host_dev_util_pct"),
}
"""Kind → the figures an incident shows: the worst over its findings' evidence and
baseline. A single finding's incident shows that finding's evidence."""

SMALLEST_WORST = frozenset({"tte_min", "usable_mib"})
"""Figures whose smallest value is the worst (time and memory left)."""

ADVICE: dict[str, str] = {
    "overcommit": "Keep vCPU:pCPU at or below {vcpu_ratio:g} (vCPUs of running guests per "
    "host CPU): take vCPUs from guests or move guests to another host.",
    "cpu": "Keep vCPU:pCPU at or below {vcpu_ratio:g} and find what else keeps the host CPUs busy.",
    "pinning": "Pin these guests' vCPUs to separate host CPUs (<vcpupin> in <cputune>), or "
    "leave them unpinned.",
    "switch": "Shape the busiest guests' traffic (vSwitch QoS: libvirt <bandwidth>, OVS "
    "ingress policing) or give the switch more uplink capacity.",
    "leak": "Restart or fix the process that grows before the guest runs out of memory; "
    "growth in the QEMU process itself needs a QEMU update or a guest restart.",
    "memory": "Keep {mem_reserve_pct:g} % (8-12 %) of host RAM outside the guests' "
    "maximum memory: lower it (virsh setmaxmem), move guests or add RAM.",
    "thp": "Set transparent huge pages to madvise: QEMU then backs guest RAM with huge pages.",
    "io": "Use the none or mq-deadline I/O scheduler on flash and mq-deadline on spinning "
    "disks; move busy guest disks to other storage.",
    "balloon": "Give the guest a virtio balloon with a stats period (<memballoon "
    "model='virtio'><stats period='10'/>) so its memory figures refresh and a leak shows.",
    "disk_device": "The host device is the bottleneck: move busy guest disks to other "
    "storage, and use none or mq-deadline on flash.",
    "disk_above_device": "The host device is fine: check iotune throttling, give the disk "
    "an iothread, and prefer raw or preallocated images with cache='none'.",
    "steal": "Check the guest's own CPU quota (<cputune>) and what else runs on its host "
    "CPUs; keep vCPU:pCPU at or below {vcpu_ratio:g}.",
    "exit_storm": "Prefer virtio devices to emulated ones; tune halt_poll_ns for HLT "
    "storms and the host IRQ affinity for interrupt storms.",
    "vnic_drops": "Give the guest and its vhost worker CPU time, or a larger virtio ring "
    "(rx_queue_size); TX drops: the host backlog, nftables or ebtables rules, the OVS port.",
    "disk_latency": "The backing device is not known (network storage?): check that "
    "storage and the host's I/O pressure.",
}
"""Advice by topic: the incident kind, or for a finding alone its detector or host
resource. Formatted with the `overcommit` settings."""

HOST_TOPICS = {
    "host:cpu": "cpu",
    "host:vcpus": "overcommit",
    "host:memory": "memory",
    "host:io": "io",
    "host:thp": "thp",
}
"""Advice topic of a `host_pressure` or `overcommit` finding alone, by subject; any
other host subject is an I/O scheduler, a guest's is its balloon."""

SINGLE_TOPICS = {
    "vswitch_saturation": "switch",
    "qemu_memory_growth": "leak",
    "memory_leak": "balloon",
}
"""Advice topic of any other finding alone, by detector (else the detector id): a
leak or a switch has its shared cause, so these are recorded without one, or
`memory_leak`'s missing stats."""


HISTORY_S = 3600.0
"""Seconds a closed incident stays in `IncidentTracker.history` after its last bad
tick (sample time)."""

HISTORY_MAX = 100
"""Closed incidents `IncidentTracker.history` keeps at most, the first closed dropped
first. With `HISTORY_S` this bounds the memory of a process that runs for months
(`kvmtop serve`, the index `kvmtop record` writes); the whole history of a recording
comes from its frames (`kvmtop.feed.spans.IncidentLog`)."""

RankKey = tuple[int, int, float, int, float, float, str]
"""The sort key of the incident ranking (`rank_key`)."""


def rank_key(i: Incident) -> RankKey:
    """The sort key of the incident ranking: time to harm first.

    1. active incidents before cleared ones (those still within `incident_gap_s`);
    2. the tier: (a) a leak with an ETA (`eta_s`: exhaustion within `memory_leak`'s
       warning horizon), (b) an incident losing packets (`dropping`) or critical,
       (c) the rest;
    3. in tier (a), the ETA, sooner first;
    4. severity, highest first;
    5. impact: guests involved × duration, largest first;
    6. `since_s`, earliest first, then `id`: a total, deterministic order.
    """
    standing = _standing(i.eta_s, i.severity, i.dropping)
    return _rank(i.active, standing, i.impact, i.since_s, i.id)


Standing = tuple[int, float, int]
"""Points 2 to 4 of `rank_key`: (tier, ETA, −severity rank)."""


def _standing(eta_s: float | None, severity: str, losing: bool) -> Standing:
    """What an incident's findings give its rank (`rank_key`, points 2 to 4): the
    tracker keeps it with them, it changes only when they do."""
    if eta_s is not None:
        return (0, eta_s, -severity_rank(severity))
    return (1 if severity == "critical" or losing else 2, 0.0, -severity_rank(severity))


def _rank(active: bool, standing: Standing, impact_: float, since_s: float, id_: str) -> RankKey:
    """`rank_key` of an incident with these figures (the tracker ranks before it
    builds the incidents)."""
    return (0 if active else 1, *standing, -impact_, since_s, id_)


def cause_of(f: Finding) -> str:
    """A finding's cause key; "<detector>/<subject>" for one recorded without any."""
    return f.cause or f"{f.detector}/{f.subject}"


def kind_of(cause: str) -> str:
    """The incident kind of a cause key (`CAUSE_KINDS` by its prefix, else "single")."""
    return CAUSE_KINDS.get(cause.partition(":")[0], "single")


def incident_id(cause: str, since_s: float) -> str:
    """12 hex digits from the cause and the start: the same in every replay."""
    return hashlib.blake2s(f"{cause}@{since_s:.3f}".encode(), digest_size=6).hexdigest()


MemberKey = tuple[str, str, str | None]
"""(detector, subject, guest): one member of an incident."""


class _Body(NamedTuple):
    """What an incident's findings say: rebuilt only when they change (most findings
    are the same from tick to tick; only the incident's times move)."""

    kind: str
    title: str
    severity: str
    members: tuple[Member, ...]
    guests: tuple[str, ...]
    evidence: dict[str, float]
    advice: str
    eta_s: float | None
    standing: Standing
    """Its place in the ranking as far as its findings say (`_standing`)."""


@dataclass(slots=True, eq=False)
class _Open:
    """An incident not closed yet: its findings, latest per member (equal only to
    itself)."""

    id: str
    cause: str
    since_s: float
    last_bad_s: float
    latest: tuple[Finding, ...]
    """The findings of its last bad tick."""
    members: dict[MemberKey, Finding] = field(default_factory=dict)
    now: set[MemberKey] = field(default_factory=set)
    """The members of `latest`."""
    active: bool = True
    crossings: int = 0
    body: _Body | None = None
    """None: to be rebuilt from the findings."""


class IncidentTracker:
    """Groups the engine's findings into incidents, tick by tick (see the module).

    Args:
        settings: `incident_gap_s`, and the `overcommit` figures the advice quotes.
    """

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        """Start with no incidents (default settings when None)."""
        self.settings = settings or DetectorSettings()
        s = self.settings.overcommit
        values = {"vcpu_ratio": s.vcpu_ratio, "mem_reserve_pct": s.mem_reserve_pct}
        self._advice = {topic: text.format(**values) for topic, text in ADVICE.items()}
        self._open: dict[str, _Open] = {}
        self._ranked: list[_Open] = []
        """The open incidents in the order of the last ranking, new ones after them."""
        self._closed: deque[Incident] = deque(maxlen=HISTORY_MAX)
        self._wall_s: float | None = None
        self._current: tuple[Incident, ...] | None = ()

    def reset(self) -> None:
        """Forget every incident (a replay seek, the clock going backwards)."""
        self._open.clear()
        self._ranked.clear()
        self._closed.clear()
        self._wall_s = None
        self._current = ()

    def update(self, wall_s: float, findings: Iterable[Finding]) -> None:
        """Take the active findings after the sample of `wall_s`."""
        if self._wall_s is not None and wall_s < self._wall_s:
            self.reset()
        self._wall_s = wall_s
        groups: dict[str, list[Finding]] = {}
        for f in findings:
            # A finding of the engine always has a cause: no call to build one.
            groups.setdefault(f.cause or cause_of(f), []).append(f)
        gap = self.settings.incident_gap_s
        for cause, o in list(self._open.items()):
            if o.active and cause in groups:
                continue
            if o.active:
                o.active, o.body = False, None
            if wall_s - o.last_bad_s > gap:
                self._close(o)  # a raise now opens a new incident
        closed = self._closed
        while closed and wall_s - closed[0].last_bad_s > HISTORY_S:
            closed.popleft()
        for cause, group in groups.items():
            latest = tuple(group)
            inc = self._open.get(cause)
            if inc is None:
                since = min(f.since_s for f in group)
                inc = self._open[cause] = _Open(incident_id(cause, since), cause, since, wall_s, ())
                self._ranked.append(inc)
            elif not inc.active:
                inc.crossings += 1
            inc.last_bad_s = wall_s
            if inc.active and latest == inc.latest:
                continue  # the same findings (equal, rebuilt by the engine)
            inc.active, inc.body, inc.latest = True, None, latest
            inc.since_s = min(inc.since_s, *(f.since_s for f in group))
            keys = [_key(f) for f in group]
            inc.members.update(zip(keys, group, strict=True))
            inc.now = set(keys)
        self._current = None

    def current(self) -> tuple[Incident, ...]:
        """Open incidents (active, and cleared within `incident_gap_s`), ranked
        (`rank_key`)."""
        if self._current is None:
            # Sorted in place from the last ranking, which changes little from tick to
            # tick: the sort then mostly confirms it, in about one comparison per
            # incident. The key is a total order, so the start changes no result.
            ranked = self._ranked
            ranked.sort(key=self._rank_key)
            self._current = tuple(self._incident(o, n) for n, o in enumerate(ranked, 1))
        return self._current

    def history(self) -> tuple[Incident, ...]:
        """The open incidents and those closed recently (`HISTORY_S`, `HISTORY_MAX`)
        since the start or the last reset, by start (`since_s`, then `id`)."""
        return tuple(sorted((*self._closed, *self.current()), key=lambda i: (i.since_s, i.id)))

    def _close(self, o: _Open) -> None:
        """Move an incident to the history."""
        self._closed.append(self._incident(o, 0))
        del self._open[o.cause]
        self._ranked.remove(o)

    def _body_of(self, o: _Open) -> _Body:
        """The incident's body, rebuilt when its findings changed."""
        b = o.body
        if b is None:
            b = o.body = self._body(o)
        return b

    def _rank_key(self, o: _Open) -> RankKey:
        """`rank_key` of the incident as it stands, without building it."""
        b = self._body_of(o)
        duration_s = o.last_bad_s - o.since_s
        return _rank(o.active, b.standing, impact(len(b.guests), duration_s), o.since_s, o.id)

    def _incident(self, o: _Open, rank: int) -> Incident:
        """The incident as it stands, at `rank` (0: not ranked)."""
        b = self._body_of(o)
        return Incident(
            id=o.id,
            cause=o.cause,
            kind=b.kind,
            title=b.title,
            severity=b.severity,
            since_s=o.since_s,
            last_bad_s=o.last_bad_s,
            active=o.active,
            members=b.members,
            guests=b.guests,
            evidence=b.evidence,
            advice=b.advice,
            crossings=o.crossings,
            rank=rank,
            eta_s=b.eta_s,
        )

    def _body(self, o: _Open) -> _Body:
        """What the incident's findings say."""
        kind = kind_of(o.cause)
        latest = o.latest
        now = o.now if o.active else set()
        members = sorted(
            (
                Member(
                    detector=f.detector,
                    subject=f.subject,
                    subject_name=f.subject_name,
                    guest=f.guest,
                    severity=f.severity,
                    since_s=f.since_s,
                    message=f.message,
                    evidence=f.evidence,
                    active=key in now,
                )
                for key, f in o.members.items()
            ),
            key=lambda m: (
                not m.active,
                -severity_rank(m.severity),
                m.guest or "",
                m.subject_name,
                m.detector,
            ),
        )
        guests = tuple(
            sorted(
                {f.guest for f in o.members.values() if f.guest is not None}
                | {g for f in o.members.values() for g in f.cause_guests}
            )
        )
        evidence = _evidence(kind, latest)
        etas = [
            f.evidence["tte_min"] * 60.0
            for f in latest
            if "tte_min" in f.evidence and f.severity != "info"
        ]
        eta_s = min(etas) if etas else None
        # The first of the worst, over the severities once each (in order of appearance,
        # as over every finding): not a key call per finding.
        severity = max(dict.fromkeys(f.severity for f in latest), key=severity_rank)
        return _Body(
            kind=kind,
            title=_title(kind, o.cause, guests, evidence, latest, o.members),
            severity=severity,
            members=tuple(members),
            guests=guests,
            evidence=evidence,
            advice=self._advice[_topic(kind, latest[0])],
            eta_s=eta_s,
            standing=_standing(eta_s, severity, dropping(evidence)),
        )


def _key(f: Finding) -> MemberKey:
    """The member a finding is in its incident."""
    return f.detector, f.subject, f.guest


def _evidence(kind: str, findings: Sequence[Finding]) -> dict[str, float]:
    """The figures of `EVIDENCE[kind]`, the worst over the findings' evidence and
    baseline; a single finding's own evidence."""
    names = EVIDENCE.get(kind)
    if names is None:
        return dict(findings[0].evidence)
    result: dict[str, float] = {}
    for name in names:
        # The baseline only when the evidence has no such figure (it has no None).
        values = [
            v
            for f in findings
            if (v := f.evidence.get(name)) is not None or (v := f.baseline.get(name)) is not None
        ]
        if values:
            result[name] = min(values) if name in SMALLEST_WORST else max(values)
    return result


def _topic(kind: str, f: Finding) -> str:
    """The `ADVICE` topic of an incident of `kind` whose first finding is `f`."""
    if kind != "single":
        return kind
    if f.detector in ("host_pressure", "overcommit"):
        return "balloon" if f.guest is not None else HOST_TOPICS.get(f.subject, "io")
    return SINGLE_TOPICS.get(f.detector, f.detector)


def _title(
    kind: str,
    cause: str,
    guests: tuple[str, ...],
    evidence: dict[str, float],
    latest: Sequence[Finding],
    members: dict[MemberKey, Finding],
) -> str:
    """One sentence for an incident, from its kind, cause, guests, evidence, the
    findings of its last bad tick and every member."""
    detail = cause.partition(":")[2]
    names = summarize(guests)
    if kind == "overcommit":
        parts = []
        if "vcpu_pcpu_ratio" in evidence:
            parts.append(f"vCPU:pCPU {evidence['vcpu_pcpu_ratio']:.3g}")
        stealing = sorted({f.guest for f in latest if f.detector == "steal" and f.guest})
        if stealing:
            parts.append(f"{len(stealing)} guest(s) stealing: {summarize(stealing)}")
        return "Host CPU over-commit" + (": " + "; ".join(parts) if parts else "")
    if kind == "pinning":
        cpus = detail.removeprefix("cpu=")
        return f"Pinning collision on CPU {cpus}: {names} steal from each other"
    if kind == "switch":
        lost = ", dropping packets" if dropping(evidence) else ""
        return f"Switch {detail} saturated{lost}" + (f" (guests: {names})" if guests else "")
    if kind == "leak":
        sides = [
            side
            for det, side in (
                ("memory_leak", "in the guest"),
                ("qemu_memory_growth", "in its QEMU process"),
            )
            if any(key[0] == det for key in members)
        ]
        tte = evidence.get("tte_min")
        return f"{names or detail} leaking memory {' and '.join(sides)}" + (
            f": exhausted in ~{fmt_duration(tte * 60.0)}" if tte is not None else ""
        )
    if kind == "disk_device":
        disks = sorted({f"{f.guest}:{f.subject}" if f.guest else f.subject for f in latest})
        return f"Host device {detail} slow under {len(disks)} guest disk(s): {summarize(disks)}"
    if kind == "disk_above_device":
        own = sorted({f.subject for f in latest})
        return f"{names or detail}: disk latency above the host device on {summarize(own)}"
    f = latest[0]
    return f"{where(f.subject_name, f.guest)}: {f.message}"
