"""What every detector shares: the per-tick input, the observation it returns, helpers.

Layer: detectors (pure). A detector is an object with per-subject state (rolling
medians, trend series) that turns one `Tick` into `Observation`s: a verdict (bad or
good) on one subject, with the evidence. The engine (`kvmtop.detectors.engine`) turns
observations into findings with hysteresis. No I/O, no clock: time is the sample's
wall time.

"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

import msgspec

from kvmtop.detectors.settings import DetectorSettings
from kvmtop.model.rates.counters import rate
from kvmtop.model.rates.frame import Frame
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.rates.host import HostRates
from kvmtop.model.sample import GuestSample, Sample
from kvmtop.model.units import NS_PER_S

CAUSE_KINDS: dict[str, str] = {
    "overcommit": "overcommit",
    "pinning": "pinning",
    "switch": "switch",
    "leak": "leak",
    "disk": "disk_device",
    "disk-above-device": "disk_above_device",
}
"""Prefix of a shared cause key ("<prefix>:<detail>") → the incident kind it opens
(docs/detectors.md#incidents). A finding with no shared cause gets the engine's key
"<detector>/<observation key>", whose prefix is never one of these."""

OVERCOMMIT_CAUSE = "overcommit:host"
"""Host CPU over-commit: `overcommit`'s vCPU:pCPU finding and every guest `steal`
blames on it."""

_NONE: frozenset[str] = frozenset()
"""The keys tracked for a detector that does not run."""

HOLD_S = 60.0
"""How long a raised finding survives without an observation, unless the detector
says otherwise (`Observation.hold_s`)."""

A = TypeVar("A")
S = TypeVar("S")
T = TypeVar("T")


class GuestView(msgspec.Struct, frozen=True, gc=False):
    """One running guest this tick.

    Attributes:
        sample: the raw sample.
        rates: its derived rates.
        prev: the same guest in the previous sample, None after a restart.
        settings: the detector settings with this guest's overrides applied.
        uuid / name: the sample's. Fields rather than properties reading the sample:
            every detector reads them for every guest per tick, and a property is a
            Python call each time (bench/results/measurements.md#guest-view-fields).
    """

    sample: GuestSample
    rates: GuestRates
    prev: GuestSample | None
    settings: DetectorSettings
    uuid: str
    name: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Everything a detector sees for one sample.

    Attributes:
        wall_s: wall time of the sample (the detectors' only clock).
        dt_s: seconds since the previous sample, None for the first.
        sample / prev: this and the previous raw sample (prev None after a reset).
        frame: the derived rates.
        guests: running guests, with their resolved settings.
        settings: the global detector settings.
        baseline: host context attached to every finding (PSI shares, CPU busy).
        tracked: per detector id, the observation keys the engine keeps hysteresis
            state for (see `tracked_keys`).
        memo: values computed once per tick for several detectors (see `shared`).
    """

    wall_s: float
    dt_s: float | None
    sample: Sample
    prev: Sample | None
    frame: Frame
    guests: tuple[GuestView, ...]
    settings: DetectorSettings
    baseline: Mapping[str, float]
    tracked: Mapping[str, Collection[str]]
    memo: dict[Callable[..., Any], tuple[object, Any]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def host(self) -> HostRates:
        """Host rates of this frame."""
        return self.frame.host

    def tracking(self, detector: str, key: str) -> bool:
        """Whether a good verdict on `key` matters: the engine holds a bad streak or a
        raised finding for it. A good verdict on any other subject changes nothing
        (the engine keeps no state for it), so detectors leave those out."""
        return key in self.tracked_keys(detector)

    def tracked_keys(self, detector: str) -> Collection[str]:
        """The keys `tracking(detector, key)` holds for, as they stand when asked: the
        engine's live state, so a detector reads it once per tick.

        For speed: a detector judging every guest per tick tests its keys here rather
        than calling `tracking` for each, and builds no key at all while this is empty
        (no subject of it has a streak, the usual case).
        """
        return self.tracked.get(detector, _NONE)

    def shared(self, fn: Callable[[Tick, A], T], arg: A) -> T:
        """`fn(self, arg)`, computed once per tick for every detector asking with the
        same `arg` object (e.g. the switch topology both network detectors read)."""
        hit = self.memo.get(fn)
        if hit is not None and hit[0] is arg:
            return cast(T, hit[1])
        value = fn(self, arg)
        self.memo[fn] = (arg, value)
        return value


class Observation(msgspec.Struct, frozen=True, gc=False):
    """A detector's verdict on one subject for one tick (or one evaluation).

    Attributes:
        key: unique within the detector (e.g. "<uuid>/vda", "labbr0", "host:io").
        bad: whether the condition holds now.
        subject / subject_name / guest: as in `Finding`.
        guest_uuid: the guest the subject belongs to (state is dropped on restart).
        severity: "info", "warning" or "critical" (meaningful when bad).
        message: the one-line finding text (when bad).
        evidence / baseline: the numbers behind it.
        raise_after / clear_after: K for this subject (settings may differ per guest).
        immediate: raise or clear at once (the condition is already sustained or is
            a fact, e.g. stale stats).
        hold_s: a raised finding with no observation for this long is cleared.
        cause / cause_guests: as in `Finding`; an empty cause gets the engine's
            "<detector>/<key>", unique to the subject.
    """

    key: str
    bad: bool
    subject: str
    subject_name: str
    raise_after: int
    clear_after: int
    guest: str | None = None
    guest_uuid: str | None = None
    severity: str = "warning"
    message: str = ""
    evidence: dict[str, float] = msgspec.field(default_factory=dict)
    baseline: dict[str, float] = msgspec.field(default_factory=dict)
    immediate: bool = False
    hold_s: float = HOLD_S
    cause: str = ""
    cause_guests: tuple[str, ...] = ()


class Detector(Protocol):
    """One detector: per-subject state plus `observe()` once per tick."""

    id: str

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """Verdicts for this tick; subjects without new evidence are left out."""
        ...

    def forget(self, uuid: str) -> None:
        """Drop every piece of state about one guest (restart, gone, stopped)."""
        ...


class Hysteresis(Protocol):
    """What a detector's settings give each of its observations: the K to raise and
    to clear."""

    @property
    def raise_after(self) -> int:
        """Bad observations in a row that raise a finding."""
        ...

    @property
    def clear_after(self) -> int:
        """Good observations in a row that clear it."""
        ...


def verdict(
    g: GuestView,
    s: Hysteresis,
    key: str,
    *,
    bad: bool,
    evidence: dict[str, float],
    baseline: dict[str, float],
    device: str | None = None,
    severity: str = "warning",
    message: str = "",
    immediate: bool = False,
    hold_s: float = HOLD_S,
    cause: str = "",
    cause_guests: tuple[str, ...] = (),
) -> Observation:
    """A verdict on `key`: the guest `g` itself, or its `device` (a disk target, a vNIC
    name) when given, with the K of `s`; the other arguments are `Observation`'s
    fields, with its defaults (tests/detectors/test_base.py pins them).

    The fields are parameters of their own, not `**rest` passed on: a verdict is built
    for every guest per tick, and packing the keywords into a dict and unpacking it
    again cost several times what building the `Observation` does
    (bench/results/measurements.md#detector-verdicts).
    """
    subject, name = (g.uuid, g.name) if device is None else (device, device)
    return Observation(
        key=key,
        bad=bad,
        subject=subject,
        subject_name=name,
        raise_after=s.raise_after,
        clear_after=s.clear_after,
        guest=g.name,
        guest_uuid=g.uuid,
        severity=severity,
        message=message,
        evidence=evidence,
        baseline=baseline,
        immediate=immediate,
        hold_s=hold_s,
        cause=cause,
        cause_guests=cause_guests,
    )


def good_verdict(
    g: GuestView, s: Hysteresis, key: str, device: str | None = None, hold_s: float = HOLD_S
) -> Observation:
    """A good `verdict` on `key` (the guest `g`, or its `device`).

    It carries no evidence (the engine keeps only bad observations'). A detector builds
    one only when `tick.tracking(its id, key)`: on any other subject it changes nothing.
    """
    return verdict(g, s, key, bad=False, evidence={}, baseline={}, device=device, hold_s=hold_s)


class PerGuest(Generic[S]):
    """The state of a detector that keeps one `S` per guest (a rolling median, a trend
    series, a clock), in `_guests` by guest UUID: `forget` drops a guest's."""

    def __init__(self, settings: DetectorSettings) -> None:
        """Start with no guests."""
        self._guests: dict[str, S] = {}

    def forget(self, uuid: str) -> None:
        """Drop a guest's state."""
        self._guests.pop(uuid, None)


def cause_key(prefix: str, detail: str) -> str:
    """A shared cause key, "<prefix>:<detail>"; `prefix` is one of `CAUSE_KINDS`."""
    return f"{prefix}:{detail}"


def host_baseline(host: HostRates) -> dict[str, float]:
    """The host context every finding carries (PSI as the baseline column:
    docs/detectors.md#host_pressure)."""
    values = {
        "host_cpu_busy_pct": host.cpu_busy_pct,
        "host_psi_cpu_some_pct": host.psi_cpu_some_pct,
        "host_psi_mem_some_pct": host.psi_mem_some_pct,
        "host_psi_mem_full_pct": host.psi_mem_full_pct,
        "host_psi_io_full_pct": host.psi_io_full_pct,
    }
    return {k: round(v, 2) for k, v in values.items() if v is not None}


def known(values: Mapping[str, float | None]) -> dict[str, float]:
    """The entries whose value is known, rounded for display and JSON.

    A whole float is kept as it is: rounding returns it unchanged, and `round(v, 3)`
    (a decimal conversion each way) is the costliest step of the many evidence dicts
    built per tick, most of them holding counts and zeros.
    """
    return {
        k: v if v.__class__ is float and v.is_integer() else round(v, 3)
        for k, v in values.items()
        if v is not None
    }


def thread_cpu_pct(guest: GuestView, kind: str, dt_s: float | None) -> float | None:
    """CPU % of one core used by the guest's helper threads of `kind` (e.g. "vhost").

    Σ Δrun_ns / Δt over the threads present in both samples (schedstat field 1).
    """
    if guest.prev is None or not dt_s:
        return None
    before = {t.tid: t for t in guest.prev.threads if t.kind == kind}
    total: float | None = None
    for t in guest.sample.threads:
        p = before.get(t.tid)
        if t.kind != kind or p is None:
            continue
        r = rate(p.run_ns, t.run_ns, dt_s)
        if r is not None:
            total = (total or 0.0) + 100.0 * r / NS_PER_S
    return total


def fmt_rate(value: float) -> str:
    """A per-second count in k/M units (1.2k, 3.4M)."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


def fmt_duration(seconds: float) -> str:
    """A rough human duration: 45 s, 5 min, 3.5 h, 2.0 d."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
