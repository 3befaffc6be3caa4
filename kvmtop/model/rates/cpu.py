"""CPU of a guest over an interval: per vCPU (run, steal, exits) and helper threads.

Layer: model (pure). No I/O.
"""

from __future__ import annotations

import msgspec

from kvmtop.model.rates.counters import counter_delta, pct_of_wall, rate
from kvmtop.model.sample import ThreadSample, VcpuSample
from kvmtop.model.units import NS_PER_S


class VcpuRates(msgspec.Struct, frozen=True, gc=False):
    """Per-vCPU rates. `cpu_pct` and `steal_pct` are percent of wall time."""

    index: int
    cpu_pct: float | None = None
    steal_pct: float | None = None
    exits_per_s: float | None = None
    halt_exits_per_s: float | None = None
    halt_poll_pct: float | None = None
    halt_poll_fail_pct: float | None = None
    halt_wait_pct: float | None = None


def derive_vcpu(
    prev: VcpuSample | None, cur: VcpuSample, dt_s: float, kvm: bool
) -> tuple[VcpuRates, str | None]:
    """Rates of one vCPU and which source the steal figure came from."""
    if prev is None:
        return VcpuRates(index=cur.index), None
    # Prefer schedstat run time (ns) over vcpu.N.time (USER_HZ ticks, 10 ms grain).
    run = counter_delta(prev.sched_run_ns, cur.sched_run_ns)
    if run is None:
        run = counter_delta(prev.time_ns, cur.time_ns)
    wait = counter_delta(prev.delay_ns, cur.delay_ns)
    source = "libvirt" if wait is not None else None
    if wait is None:
        wait = counter_delta(prev.sched_delay_ns, cur.sched_delay_ns)
        source = "schedstat" if wait is not None else None
    # A thread cannot run and wait on a run queue for longer than the time that passed
    # (schedstat fields 1 and 2, Documentation/scheduler/sched-stats.rst). When its
    # counters say it did, the interval is off, not the kernel: libvirt reads each
    # domain at its own moment of the bulk-stats call while the sample has one stamp,
    # and under load that call's length varies from tick to tick (lab recordings showed
    # steal up to 127 %). Their sum is then the better measure of the elapsed time.
    elapsed_ns = max(dt_s * NS_PER_S, (run or 0) + (wait or 0))
    cpu_pct = None if run is None or elapsed_ns <= 0 else 100.0 * run / elapsed_ns
    steal_pct = None if wait is None or elapsed_ns <= 0 else 100.0 * wait / elapsed_ns
    if not kvm:
        return VcpuRates(cur.index, cpu_pct, steal_pct), source
    p, c = prev.kvm, cur.kvm
    return (
        VcpuRates(
            index=cur.index,
            cpu_pct=cpu_pct,
            steal_pct=steal_pct,
            exits_per_s=rate(p.get("exits.sum"), c.get("exits.sum"), dt_s),
            halt_exits_per_s=rate(p.get("halt_exits.sum"), c.get("halt_exits.sum"), dt_s),
            halt_poll_pct=pct_of_wall(
                p.get("halt_poll_success_ns.sum"), c.get("halt_poll_success_ns.sum"), dt_s
            ),
            halt_poll_fail_pct=pct_of_wall(
                p.get("halt_poll_fail_ns.sum"), c.get("halt_poll_fail_ns.sum"), dt_s
            ),
            halt_wait_pct=pct_of_wall(p.get("halt_wait_ns.sum"), c.get("halt_wait_ns.sum"), dt_s),
        ),
        source,
    )


class ThreadRates(msgspec.Struct, frozen=True, gc=False):
    """A helper thread of a guest (emulator, iothread, vhost) over the interval.

    `cpu_pct` is its run time and `delay_pct` its run-queue wait, in percent of wall
    time (schedstat fields 1 and 2): a vhost thread with high delay explains drops.
    """

    tid: int
    kind: str
    name: str
    cpu_pct: float | None = None
    delay_pct: float | None = None


def derive_threads(
    prev: tuple[ThreadSample, ...], cur: tuple[ThreadSample, ...], dt_s: float
) -> tuple[ThreadRates, ...]:
    """Per-thread rates, matched by tid (a new thread has unknown rates)."""
    before = {t.tid: t for t in prev}
    out = []
    for t in cur:
        p = before.get(t.tid)
        out.append(
            ThreadRates(
                tid=t.tid,
                kind=t.kind,
                name=t.name,
                cpu_pct=pct_of_wall(p.run_ns, t.run_ns, dt_s) if p else None,
                delay_pct=pct_of_wall(p.delay_ns, t.delay_ns, dt_s) if p else None,
            )
        )
    return tuple(out)
