"""The stats call: what it asks for, and running a libvirt call on a thread of its own
so the tick can stop waiting (a stuck guest never holds up the tick).

Layer: collectors (I/O).
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

MAX_ABANDONED = 2
"""Abandoned stats calls (each waiting on a guest that does not answer) allowed to
wait at once; past it no new call is made until one returns. libvirtd serves at most
`max_client_requests` (default 5, libvirtd.conf) calls of one client at a time, and a
tick needs one for its own call and one for the control info."""

STALL_FACTOR = 1.5
"""A call not back after this multiple of the recent median call is checked for a
stuck guest (`LibvirtCollector.stall_after`): a monitor occupied for a usual call's
time (the median) is stuck.
The first tick of a stall is late by about this much (lab, 12 guests, calls of
60-150 ms: 2.0 made that tick 130-220 ms late at a 1 s interval)."""

OVERDUE_FACTOR = 2.0
"""A call not back after this multiple, with no monitor occupied, waits on a job
another client holds: it is abandoned for a NOWAIT call. Later than the stall check,
so a call that is only slow (libvirtd busy) is not retried on a mere jitter."""

STALL_MIN_SHARE = 0.1
"""`stall_after` is at least this share of the deadline (no check on a mere jitter)."""

STALL_MAX_SHARE = 0.5
"""... and at most this share, leaving time for the second call."""

CONTROL_OCCUPIED = 2
"""VIR_DOMAIN_CONTROL_OCCUPIED (libvirt-domain.h virDomainControlState; since 0.9.3)."""

T = TypeVar("T")


def stats_groups(lv: Any, with_balloon: bool) -> int:
    """The stats groups of one call (virDomainStatsTypes, libvirt-domain.h).

    STATE, CPU_TOTAL, VCPU, INTERFACE and BLOCK every tick; BALLOON only every
    `balloon_every` ticks (guests refresh their memory stats every few seconds
    anyway, and the group costs a QMP round trip per domain).

    The VM group (1 << 10, libvirt 8.9) is not requested. On libvirt 9.0 with
    QEMU 7.2 the VCPU group already carries the per-vCPU KVM binary stats
    (`vcpu.N.exits.sum`, `halt_exits`, `halt_wait_ns`, ... ~45 per vCPU) of KVM
    guests; VM adds only the 16 VM-wide `vm.*` stats (mmu_*, pages_4k/2m/1g,
    remote_tlb_flush), which no kvmtop view or detector uses, for one more QMP
    round trip per domain (query-stats). Measured in the lab, VM adds about what
    BALLOON adds to a call (bench/results/measurements.md#libvirt-vm-stats-group).
    Not worth it every tick for no column; `vm_kvm` is parsed when present.
    """
    groups: int = (
        lv.VIR_DOMAIN_STATS_STATE
        | lv.VIR_DOMAIN_STATS_CPU_TOTAL
        | lv.VIR_DOMAIN_STATS_VCPU
        | lv.VIR_DOMAIN_STATS_INTERFACE
        | lv.VIR_DOMAIN_STATS_BLOCK
    )
    if with_balloon:
        groups |= lv.VIR_DOMAIN_STATS_BALLOON
    return groups


class Call(Generic[T]):
    """One libvirt call on a daemon thread of its own, so the tick can stop waiting.

    libvirt connections may be used from several threads at once (libvirt "Thread
    safety"), and libvirt-python releases the GIL for the call. A call abandoned by the
    tick runs on until libvirt returns; its result is dropped then.
    """

    def __init__(self, fn: Callable[[], T], name: str, conn: Any | None = None) -> None:
        self._fn = fn
        self._done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.conn = conn
        """The connection the call goes over (closed once an abandoned call returns)."""
        self.name = name

    def start(self) -> Call[T]:
        """Start the call; returns the call."""
        threading.Thread(target=self._run, name=f"kvmtop-libvirt-{self.name}", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the waiting tick, re-raised there
            self.error = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        """Whether libvirt has returned (or raised)."""
        return self._done.is_set()

    def wait(self, timeout_s: float | None) -> bool:
        """Wait up to `timeout_s` (None: as long as it takes); True once it returned."""
        return self._done.wait(None if timeout_s is None else max(0.0, timeout_s))


class NoRecords(Exception):
    """The stats call did not return within the deadline (the reason is the message)."""


def after_typical(durations: Iterable[float], factor: float, deadline_s: float) -> float:
    """`factor` times the median of the recent `durations` (s), within
    STALL_MIN_SHARE-STALL_MAX_SHARE of the deadline; STALL_MAX_SHARE of it before any."""
    recent = list(durations)
    if not recent:
        return STALL_MAX_SHARE * deadline_s
    return min(
        max(factor * statistics.median(recent), STALL_MIN_SHARE * deadline_s),
        STALL_MAX_SHARE * deadline_s,
    )


def late_domains(occupied: dict[str, tuple[float, float]], threshold_s: float) -> dict[str, float]:
    """The domains of a sweep busy for at least `threshold_s`, with since when."""
    return {uuid: since for uuid, (held, since) in occupied.items() if held >= threshold_s}
