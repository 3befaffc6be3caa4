"""Rates: turn two raw samples into per-second figures.

Layer: model (pure). No I/O.

Rules (docs/sources.md#counters-and-rates):
- rate = Δcounter / Δt with Δt from the monotonic clock of the source;
- a counter that went backwards, a value missing on either side, or a guest whose
  identity changed (libvirt domain ID or QEMU pid) gives None ("unknown"), never 0;
- ratio metrics (latency per request) come from deltas over the same interval, and
  only when at least `min_ops` requests completed in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kvmtop.model.frozen import fast_init
from kvmtop.model.sample import (
    BalloonSample,
    BlockDevSample,
    DiskSample,
    GuestSample,
    HostSample,
    NetDevSample,
    NicSample,
    Sample,
    ThreadSample,
    VcpuSample,
)

NS_PER_S = 1_000_000_000

# KVM binary-stat categories shown per guest (x86 names, arch/x86/kvm/x86.c
# kvm_vcpu_stats_desc). "exits" is the total; the rest are categories, not the
# hardware exit reasons (those need the kvm:kvm_exit tracepoint).
EXIT_CATEGORIES: tuple[str, ...] = (
    "halt_exits",
    "io_exits",
    "mmio_exits",
    "irq_exits",
    "irq_window_exits",
    "nmi_window_exits",
    "request_irq_exits",
    "signal_exits",
    "insn_emulation",
    "hypercalls",
)

NA_NOT_KVM = "n/a: not KVM (QEMU TCG emulation)"
NA_FIRST = "needs two samples"
NA_NO_PROBE = "RTT probing is off (opt-in: it sends packets to the guest)"
NA_AFTER_NO_ANSWER = (
    "the guest did not answer at the previous sample: rates need two samples it answered"
)

INTERVAL_MIN_RATIO = 0.5
"""Guest rates over an interval shorter than this share of the nominal one are unknown.

A guest's counters are not stamped when libvirt reads them: the bulk stats call reads
one domain after another and the sample is stamped when it returns, so a domain's
true read time is off by up to the call's length (50-110 ms for the lab's 12 guests
at load 9; over 1 s seen under heavy load). Ticks on a fixed grid keep that error a
small share of the interval; an interval under half the nominal one comes from a
tick that ran late followed by one on time, or from a burst of catch-up ticks (issue
#16: 0.1 s intervals after a stall gave 941 Mbit/s for a guest sending 16), where
the same error is a large share of Δt."""

INTERVAL_MAX_RATIO = 10.0
"""Guest rates over an interval longer than this multiple of the nominal one are
unknown.

Skipped ticks are ordinary on a slow or loaded host: kvmtop skips the slots its own
tick overran, so a tick that costs more than the interval gives intervals of 2x, 3x
or 4x, and a rate over them is the true average (measured in the nested lab's L1
host, whose CPUs are emulated: ticks of a 1 s interval came every 3-4 s). A stuck
guest no longer stretches an interval (its bulk call is abandoned at the deadline,
kvmtop/collectors/libvirt.py). An interval over 10x is a gap (kvmtop or the host
stopped, samples missing from a recording): a rate over it would be an average that
hides what happened in it while detectors and plots take it for one interval."""


def counter_delta(prev: int | None, cur: int | None) -> int | None:
    """Δ of a cumulative counter; None when either side is unknown or it went back."""
    if prev is None or cur is None or cur < prev:
        return None
    return cur - prev


def per_second(delta: float | None, dt_s: float) -> float | None:
    """delta / dt, or None when the delta is unknown or the interval is not positive."""
    if delta is None or dt_s <= 0:
        return None
    return delta / dt_s


def rate(prev: int | None, cur: int | None, dt_s: float) -> float | None:
    """Per-second rate of a cumulative counter (None on reset or missing value).

    `per_second(counter_delta(prev, cur), dt_s)`, inlined: it runs for every counter
    of every guest on every tick.
    """
    if prev is None or cur is None or cur < prev or dt_s <= 0:
        return None
    return (cur - prev) / dt_s


def interval_gap(dt_s: float, prev_interval_s: float, cur_interval_s: float) -> str | None:
    """Why guest rates over `dt_s` would not be one tick's rates, or None when they are.

    The nominal interval is the sampler's (`Sample.interval_s`) on either side: after
    the interval was changed, anything between half the shorter and three times the
    longer one is accepted (`INTERVAL_MIN_RATIO`, `INTERVAL_MAX_RATIO`).
    """
    low = INTERVAL_MIN_RATIO * min(prev_interval_s, cur_interval_s)
    high = INTERVAL_MAX_RATIO * max(prev_interval_s, cur_interval_s)
    if low <= dt_s <= high:
        return None
    nominal = cur_interval_s
    if dt_s < low:
        return (f"interval {dt_s:.2f} s is under {INTERVAL_MIN_RATIO:g}x the nominal "
                f"{nominal:g} s (a late tick or a burst after a stall): rates over it "
                "would be spikes")
    return (f"interval {dt_s:.1f} s is over {INTERVAL_MAX_RATIO:g}x the nominal {nominal:g} s "
            "(a gap: kvmtop or the host stopped, or samples are missing): a rate over it "
            "would average the gap away")


def latency_ms(
    prev_time_ns: int | None,
    cur_time_ns: int | None,
    prev_reqs: int | None,
    cur_reqs: int | None,
    min_ops: int,
) -> float | None:
    """Mean ms per request over the interval, only with at least `min_ops` requests."""
    if prev_reqs is None or cur_reqs is None or prev_time_ns is None or cur_time_ns is None:
        return None
    dreqs = cur_reqs - prev_reqs
    dtime = cur_time_ns - prev_time_ns
    if dtime < 0 or dreqs < max(min_ops, 1):
        return None
    return dtime / dreqs / 1e6


def _sum(values: Iterable[float | None]) -> float | None:
    """Sum of known values; None when none is known."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _column_sums(
    rows: list[tuple[float | None, ...]], width: int
) -> Sequence[float | None]:
    """`_sum` of each of the `width` columns of `rows` (all None without rows)."""
    if len(rows) == 1:
        # Most guests have one disk and one vNIC: `_sum` of one value is that value.
        return rows[0]
    if not rows:
        return (None,) * width
    return [_sum(column) for column in zip(*rows, strict=True)]


def _max(values: Iterable[float | None]) -> float | None:
    """Largest known value; None when none is known."""
    return max((v for v in values if v is not None), default=None)


def _ms(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e6


# --------------------------------------------------------------------------- KVM internals

EXIT_SOURCE_BINARY = "libvirt-binary-stats"
EXIT_SOURCE_DEBUGFS = "debugfs"
EXIT_SOURCE_TRACEPOINTS = "tracepoints"

TRACE_SOURCE = "tracepoints"
"""`SourceStatus.name` of per-reason tracing. Its detail names the guests traced
(TRACE_ATTACHED: UUIDs joined by ", ") and the perf counters open (TRACE_FDS); its
reason says why a guest asked for could not be traced."""
TRACE_ATTACHED = "attached"
TRACE_FDS = "fds"

NA_KVM_EXIT_SILENT = (
    "kvm:kvm_exit silent on this host (PVM?); exits split by category from binary stats "
    "and kvm_pio/kvm_userspace_exit"
)
NA_NO_EXIT_SPLIT = (
    "no source splits exits (no KVM binary stats, debugfs counters refused or absent, "
    "per-reason tracing off)"
)

HALT_POLL_HINT_MIN_PCT = 1.0
"""[H] Failed halt polling below this share of one core is not worth a hint."""

# The categories that count one per exit. insn_emulation counts emulated
# instructions, which can be many per exit when KVM emulates a whole block
# (invalid guest state on VMX, real mode under PVM: about 5 per port write on the
# lab's port-I/O probe), so it is shown as a category but not used to split exits.
EXIT_SPLIT_CATEGORIES: tuple[str, ...] = tuple(c for c in EXIT_CATEGORIES if c != "insn_emulation")

# A category whose binary stat stays 0 while a tracepoint counts the same exits:
# under PVM, port I/O goes through the instruction emulator, which fires kvm_pio
# but never bumps io_exits (only the VMX/SVM I/O exit handlers do, arch/x86/kvm/
# vmx/vmx.c handle_io, svm/svm.c io_interception). mmio_exits counts MMIO exits to
# userspace, which kvm_userspace_exit reports by reason.
_CATEGORY_FROM_TRACE: tuple[tuple[str, str], ...] = (
    ("io_exits", "kvm_pio:total"),
    ("mmio_exits", "kvm_userspace_exit:MMIO"),
)


def kvm_exit_silent(kvm_exit: float | None, exits: float | None) -> bool | None:
    """Whether the kvm:kvm_exit tracepoint stays silent while KVM counts exits.

    Args:
        kvm_exit: kvm_exit events counted over an interval (any unit: count or rate).
        exits: KVM's own exit counter (binary stats or debugfs) over the same interval.

    Returns:
        True when the tracepoint saw nothing while exits happened (measured on the
        PVM test machine, Linux 6.18: 0 kvm_exit events against ~3,600 exits/s),
        False when it fired or nothing exited, None when either side is unknown.
    """
    if kvm_exit is None or exits is None:
        return None
    return kvm_exit == 0 and exits > 0


@fast_init
@dataclass(frozen=True, slots=True)
class ThreadRates:
    """A helper thread of a guest (emulator, iothread, vhost) over the interval.

    `cpu_pct` is its run time and `delay_pct` its run-queue wait, in percent of wall
    time (schedstat fields 1 and 2): a vhost thread with high delay explains drops.
    """

    tid: int
    kind: str
    name: str
    cpu_pct: float | None = None
    delay_pct: float | None = None


def _pct(prev: int | None, cur: int | None, dt_s: float) -> float | None:
    """Percent of wall time of an ns counter over the interval."""
    r = rate(prev, cur, dt_s)
    return None if r is None else 100.0 * r / NS_PER_S


def _thread_rates(
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
                cpu_pct=_pct(p.run_ns, t.run_ns, dt_s) if p else None,
                delay_pct=_pct(p.delay_ns, t.delay_ns, dt_s) if p else None,
            )
        )
    return tuple(out)


@fast_init
@dataclass(frozen=True, slots=True)
class _KvmRates:
    """What `_kvm_internals` adds to a guest's rates."""

    exits_per_s: float | None
    exit_categories: dict[str, float]
    exits_by_reason: dict[str, float] | None
    exit_source: str | None
    tracepoint_rates: dict[str, float]
    halt_poll_cpu_pct: float | None
    halt_poll_hint: str | None


# The KVM stats `_kvm_internals` reads, with their binary-stats key (cumulative: "sum").
_KVM_STATS: tuple[tuple[str, str], ...] = tuple(
    (name, f"{name}.sum")
    for name in ("exits", *EXIT_CATEGORIES, "halt_poll_success_ns", "halt_poll_fail_ns")
)


def _vm_stat_rates(
    prev: GuestSample, cur: GuestSample, dt_s: float
) -> tuple[dict[str, float], str | None]:
    """Rates of the `_KVM_STATS` summed over vCPUs (binary stats), else debugfs.

    Returns:
        {name: per second} for the names known on both sides, and the source used.
    """
    before = {v.index: v.kvm for v in prev.vcpus}
    pairs = [(before[v.index], v.kvm) for v in cur.vcpus if v.index in before]
    binary: dict[str, float] = {}
    if len(pairs) == 1:
        # One vCPU (most small guests): its rates are the sums.
        p, c = pairs[0]
        binary = {
            name: r
            for name, key in _KVM_STATS
            if (r := rate(p.get(key), c.get(key), dt_s)) is not None
        }
    else:
        for name, key in _KVM_STATS:
            total = _sum([rate(p.get(key), c.get(key), dt_s) for p, c in pairs])
            if total is not None:
                binary[name] = total
    if binary:
        return binary, EXIT_SOURCE_BINARY
    # debugfs vCPU stats are already summed over the VM's vCPUs (kvm_main.c
    # kvm_get_stat_per_vcpu).
    debugfs = {
        name: r
        for name, _ in _KVM_STATS
        if (r := rate(prev.debugfs.get(name), cur.debugfs.get(name), dt_s)) is not None
    }
    return debugfs, (EXIT_SOURCE_DEBUGFS if debugfs else None)


def _kvm_internals(
    prev: GuestSample, cur: GuestSample, dt_s: float, na: dict[str, str]
) -> _KvmRates:
    """Exits (total, categories, by reason), tracepoint rates and halt polling.

    Exits come from the best source present: libvirt's KVM binary stats, else
    debugfs, else the kvm_exit tracepoint. `exits_by_reason` holds hardware exit
    reasons when per-reason kvm_exit counters fire; otherwise the exit categories
    (completed from tracepoints where a category's stat stays 0, see
    _CATEGORY_FROM_TRACE) plus "other" for exits no category covers.
    """
    stats, source = _vm_stat_rates(prev, cur, dt_s)
    exits = stats.get("exits")
    categories = {c: stats[c] for c in EXIT_CATEGORIES if c in stats}
    trace = {
        key: r
        for key, value in cur.exit_reasons.items()
        if (r := rate(prev.exit_reasons.get(key), value, dt_s)) is not None
    }
    kvm_exit_total = trace.get("kvm_exit:total")
    silent = kvm_exit_silent(kvm_exit_total, exits)
    reasons = {
        k.partition(":")[2]: v
        for k, v in trace.items()
        if k.startswith("kvm_exit:") and k != "kvm_exit:total"
    }

    if exits is None and kvm_exit_total:
        exits, source = kvm_exit_total, EXIT_SOURCE_TRACEPOINTS
    by_reason: dict[str, float] | None = None
    if reasons and kvm_exit_total:
        by_reason = {r: v for r, v in reasons.items() if v > 0}
        # Exits with flag bits (VMX FAILED_VMENTRY) or reasons missing from the
        # table match no `exit_reason == N` filter.
        unmatched = kvm_exit_total - sum(reasons.values())
        if unmatched > 0:
            by_reason["other"] = unmatched
        source = EXIT_SOURCE_TRACEPOINTS
    elif categories:
        by_reason = {c: categories[c] for c in EXIT_SPLIT_CATEGORIES if categories.get(c)}
        for category, key in _CATEGORY_FROM_TRACE:
            if not by_reason.get(category) and trace.get(key):
                by_reason[category] = trace[key]
        if exits is not None and exits - sum(by_reason.values()) > 0:
            by_reason["other"] = exits - sum(by_reason.values())
    if silent:
        na["exits_by_reason"] = NA_KVM_EXIT_SILENT
    elif by_reason is None:
        na["exits_by_reason"] = NA_NO_EXIT_SPLIT

    poll_ok = stats.get("halt_poll_success_ns")
    poll_fail = stats.get("halt_poll_fail_ns")
    poll_pct = _sum((poll_ok, poll_fail))
    poll_pct = None if poll_pct is None else 100.0 * poll_pct / NS_PER_S
    hint = None
    if poll_fail is not None and poll_fail > (poll_ok or 0.0):
        fail_pct = 100.0 * poll_fail / NS_PER_S
        if fail_pct >= HALT_POLL_HINT_MIN_PCT:
            hint = (
                f"halt polling mostly fails: {fail_pct:.1f}% of a core polled and then "
                "slept anyway; lower the kvm module's halt_poll_ns "
                "(/sys/module/kvm/parameters/halt_poll_ns) or load cpuidle-haltpoll in "
                "the guest, which turns host polling off for it"
            )
    return _KvmRates(
        exits_per_s=exits,
        exit_categories=categories,
        exits_by_reason=by_reason,
        exit_source=source,
        tracepoint_rates={
            k: v for k, v in trace.items() if v > 0 or k.endswith(":total")
        },
        halt_poll_cpu_pct=poll_pct,
        halt_poll_hint=hint,
    )


# --------------------------------------------------------------------------- guest


@fast_init
@dataclass(frozen=True, slots=True)
class VcpuRates:
    """Per-vCPU rates. `cpu_pct` and `steal_pct` are percent of wall time."""

    index: int
    cpu_pct: float | None = None
    steal_pct: float | None = None
    exits_per_s: float | None = None
    halt_exits_per_s: float | None = None
    halt_poll_pct: float | None = None
    halt_poll_fail_pct: float | None = None
    halt_wait_pct: float | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class DiskRates:
    """Per guest disk: IOPS, throughput and mean latency per request.

    `host_dev` is the host disk holding the image (the baseline to compare with).
    """

    target: str
    path: str | None = None
    host_dev: str | None = None
    read_iops: float | None = None
    write_iops: float | None = None
    flush_iops: float | None = None
    read_bytes_per_s: float | None = None
    write_bytes_per_s: float | None = None
    read_ms: float | None = None
    write_ms: float | None = None
    flush_ms: float | None = None

    @property
    def iops(self) -> float | None:
        """Read + write + flush requests per second."""
        return _sum((self.read_iops, self.write_iops, self.flush_iops))


@fast_init
@dataclass(frozen=True, slots=True)
class NicRates:
    """Per guest NIC, guest point of view; `*_bps` are bits per second.

    `bridge` and `switch` name the vSwitch the vNIC is plugged into (the baseline;
    its uplinks are `HostRates.switch_uplinks[bridge]`). The RTT fields are the net
    probe's (`NicSample`), in ms: `rtt_ms` / `rtt_p95_ms` to the guest's `addr`,
    `host_rtt_ms` to the host's own address on the bridge; `rtt_reason` says why
    `rtt_ms` is None.
    """

    name: str
    bridge: str | None = None
    switch: str | None = None
    addr: str | None = None
    rtt_ms: float | None = None
    rtt_p95_ms: float | None = None
    host_rtt_ms: float | None = None
    rtt_reason: str | None = None
    rx_bps: float | None = None
    tx_bps: float | None = None
    rx_pps: float | None = None
    tx_pps: float | None = None
    rx_drops_per_s: float | None = None
    tx_drops_per_s: float | None = None
    rx_errs_per_s: float | None = None
    tx_errs_per_s: float | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class GuestRates:
    """One guest's figures for one interval: what views and batch output read.

    A None value is unknown; `na` maps a field name to the reason it is unknown
    (for the sources view and tooltips), e.g. {"exits_per_s": NA_NOT_KVM}.
    Network `*_bps` are bits per second; memory values are bytes.
    """

    uuid: str
    name: str
    state: str
    accel: str | None = None
    dom_id: int | None = None
    pid: int | None = None
    vcpus: int | None = None
    cpu_pct: float | None = None
    steal_pct: float | None = None
    steal_max_pct: float | None = None
    steal_source: str | None = None
    vcpu: tuple[VcpuRates, ...] = ()
    exits_per_s: float | None = None
    exit_categories: dict[str, float] = field(default_factory=dict)
    disks: tuple[DiskRates, ...] = ()
    disk_iops: float | None = None
    disk_read_bytes_per_s: float | None = None
    disk_write_bytes_per_s: float | None = None
    disk_read_ms: float | None = None
    disk_write_ms: float | None = None
    disk_flush_ms: float | None = None
    nics: tuple[NicRates, ...] = ()
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    net_rx_pps: float | None = None
    net_tx_pps: float | None = None
    net_rx_drops_per_s: float | None = None
    net_tx_drops_per_s: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    mem_usable_bytes: int | None = None
    mem_current_bytes: int | None = None
    mem_max_bytes: int | None = None
    mem_rss_bytes: int | None = None
    balloon_age_s: float | None = None
    major_faults_per_s: float | None = None
    swap_in_bytes_per_s: float | None = None
    swap_out_bytes_per_s: float | None = None
    na: dict[str, str] = field(default_factory=dict)
    exits_by_reason: dict[str, float] | None = None
    """Exits per second by hardware reason (tracepoints) or by category; None when
    no source can split exits (reason in `na["exits_by_reason"]`)."""
    exit_source: str | None = None
    """Which source fed `exits_by_reason` (else `exits_per_s`): EXIT_SOURCE_*."""
    tracepoint_rates: dict[str, float] = field(default_factory=dict)
    """Per second for every traced "<tracepoint>:<name>" that moved, and every
    ":total" (so a silent tracepoint shows as 0); empty when tracing is off."""
    halt_poll_cpu_pct: float | None = None
    """CPU burnt in host halt polling (success + fail ns per s), % of one core."""
    halt_poll_hint: str | None = None
    """Advice when failed polling dominates, else None."""
    threads: tuple[ThreadRates, ...] = ()
    managed: str = "libvirt"
    not_responding: str | None = None
    """Why every figure is blank: the guest did not answer within the tick's deadline
    (`GuestSample.not_responding`); None when it answered."""
    not_responding_since_s: float | None = None
    """Wall time (Unix s) since which it has not answered."""

    def thread_pct(self, kind: str) -> tuple[float | None, float | None]:
        """(CPU %, run-queue delay %) summed over the helper threads of `kind`."""
        threads = [t for t in self.threads if t.kind == kind]
        return _sum(t.cpu_pct for t in threads), _sum(t.delay_pct for t in threads)

    @property
    def net_drops_per_s(self) -> float | None:
        """RX + TX drops per second."""
        return _sum((self.net_rx_drops_per_s, self.net_tx_drops_per_s))

    @property
    def net_rtt_ms(self) -> float | None:
        """The slowest vNIC's median RTT (ms), None when no vNIC was answered."""
        return _max(n.rtt_ms for n in self.nics)

    @property
    def net_host_rtt_ms(self) -> float | None:
        """The baseline of `net_rtt_ms`: the slowest bridge RTT of the guest's vNICs."""
        return _max(n.host_rtt_ms for n in self.nics)

    @property
    def dominant_exit(self) -> str | None:
        """The exit reason or category with the highest rate, if any moved.

        Reasons (tracepoints, or categories split from the exit total) come first;
        `insn_emulation` counts emulated instructions rather than exits, so it never
        wins on its own.
        """
        split = self.exits_by_reason or {
            k: v for k, v in self.exit_categories.items() if k in EXIT_SPLIT_CATEGORIES
        }
        moving = {k: v for k, v in split.items() if v > 0}
        return max(moving, key=lambda k: moving[k]) if moving else None


def guest_used_bytes(b: BalloonSample | None) -> int | None:
    """Guest used memory = MemTotal − MemAvailable (balloon available − usable).

    Fallback for guests whose driver does not report `usable` (Linux < 3.14 guests,
    libvirt < 2.1): available − unused − disk_caches.
    """
    if b is None or b.available_bytes is None:
        return None
    if b.usable_bytes is not None:
        return b.available_bytes - b.usable_bytes
    if b.unused_bytes is not None:
        return b.available_bytes - b.unused_bytes - (b.disk_caches_bytes or 0)
    return None


def _vcpu_rates(
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
            halt_poll_pct=_pct(
                p.get("halt_poll_success_ns.sum"), c.get("halt_poll_success_ns.sum"), dt_s
            ),
            halt_poll_fail_pct=_pct(
                p.get("halt_poll_fail_ns.sum"), c.get("halt_poll_fail_ns.sum"), dt_s
            ),
            halt_wait_pct=_pct(p.get("halt_wait_ns.sum"), c.get("halt_wait_ns.sum"), dt_s),
        ),
        source,
    )


def _disk_rates(prev: DiskSample | None, cur: DiskSample, dt_s: float, min_ops: int) -> DiskRates:
    if prev is None:
        return DiskRates(target=cur.target, path=cur.path, host_dev=cur.host_dev)
    return DiskRates(
        target=cur.target,
        path=cur.path,
        host_dev=cur.host_dev,
        read_iops=rate(prev.rd_reqs, cur.rd_reqs, dt_s),
        write_iops=rate(prev.wr_reqs, cur.wr_reqs, dt_s),
        flush_iops=rate(prev.fl_reqs, cur.fl_reqs, dt_s),
        read_bytes_per_s=rate(prev.rd_bytes, cur.rd_bytes, dt_s),
        write_bytes_per_s=rate(prev.wr_bytes, cur.wr_bytes, dt_s),
        read_ms=latency_ms(prev.rd_times_ns, cur.rd_times_ns, prev.rd_reqs, cur.rd_reqs, min_ops),
        write_ms=latency_ms(prev.wr_times_ns, cur.wr_times_ns, prev.wr_reqs, cur.wr_reqs, min_ops),
        flush_ms=latency_ms(prev.fl_times_ns, cur.fl_times_ns, prev.fl_reqs, cur.fl_reqs, min_ops),
    )


def _bits(v: float | None) -> float | None:
    return None if v is None else v * 8


def _nic_rates(prev: NicSample | None, cur: NicSample, dt_s: float) -> NicRates:
    # Without a previous sample every counter rate is unknown (`_UNKNOWN_NIC`); the
    # RTTs are gauges over the probe's own window, known at once.
    p = prev or _UNKNOWN_NIC
    return NicRates(
        name=cur.name,
        bridge=cur.bridge,
        switch=cur.switch,
        addr=cur.addr,
        rtt_ms=_ms(cur.rtt_ns),
        rtt_p95_ms=_ms(cur.rtt_p95_ns),
        host_rtt_ms=_ms(cur.host_rtt_ns),
        rtt_reason=cur.rtt_reason,
        rx_bps=_bits(rate(p.rx_bytes, cur.rx_bytes, dt_s)),
        tx_bps=_bits(rate(p.tx_bytes, cur.tx_bytes, dt_s)),
        rx_pps=rate(p.rx_pkts, cur.rx_pkts, dt_s),
        tx_pps=rate(p.tx_pkts, cur.tx_pkts, dt_s),
        rx_drops_per_s=rate(p.rx_drop, cur.rx_drop, dt_s),
        tx_drops_per_s=rate(p.tx_drop, cur.tx_drop, dt_s),
        rx_errs_per_s=rate(p.rx_errs, cur.rx_errs, dt_s),
        tx_errs_per_s=rate(p.tx_errs, cur.tx_errs, dt_s),
    )


_UNKNOWN_NIC = NicSample(name="")
"""A previous vNIC sample whose counters are all unknown, so every rate is None."""


def _weighted_latencies(
    disks: tuple[DiskSample, ...],
    prev_disks: Mapping[str, DiskSample],
    min_ops: int,
) -> tuple[float | None, float | None, float | None]:
    """Read, write and flush latency over all disks of a guest: Σ Δtimes / Σ Δreqs per
    kind (not a mean of means), each over the disks whose counters moved forward."""
    totals = [0, 0, 0, 0, 0, 0]  # (ns, reqs) of rd, wr, fl
    for d in disks:
        p = prev_disks.get(d.target)
        if p is None:
            continue
        for i, (pr, cr, pt, ct) in enumerate((
            (p.rd_reqs, d.rd_reqs, p.rd_times_ns, d.rd_times_ns),
            (p.wr_reqs, d.wr_reqs, p.wr_times_ns, d.wr_times_ns),
            (p.fl_reqs, d.fl_reqs, p.fl_times_ns, d.fl_times_ns),
        )):
            if pr is None or cr is None or pt is None or ct is None or cr < pr or ct < pt:
                continue
            totals[2 * i] += ct - pt
            totals[2 * i + 1] += cr - pr
    least = max(min_ops, 1)
    rd, wr, fl = (
        None if reqs < least else ns / reqs / 1e6
        for ns, reqs in zip(totals[::2], totals[1::2], strict=True)
    )
    return rd, wr, fl


def same_incarnation(prev: GuestSample, cur: GuestSample) -> bool:
    """False when the guest restarted between samples (new domain ID or QEMU pid)."""
    if prev.dom_id != cur.dom_id:
        return False
    return not (prev.pid is not None and cur.pid is not None and prev.pid != cur.pid)


_NOT_RESPONDING_NA: tuple[str, ...] = (
    "cpu_pct", "steal_pct", "exits_per_s", "exits_by_reason", "disk_iops", "disk_read_ms",
    "disk_write_ms", "net_rx_bps", "net_rtt_ms", "mem_used_bytes",
)
"""The `na` keys of a guest that did not answer (every column's and the detail's)."""


def _not_responding(cur: GuestSample, reason: str) -> GuestRates:
    """The rates of a guest that did not answer: identity and state, every figure
    unknown for `reason`."""
    return GuestRates(
        uuid=cur.uuid,
        name=cur.name,
        state=cur.state,
        accel=cur.accel,
        dom_id=cur.dom_id,
        pid=cur.pid,
        vcpus=cur.vcpus_current,
        managed=cur.managed,
        na=dict.fromkeys(_NOT_RESPONDING_NA, reason),
        not_responding=reason,
        not_responding_since_s=cur.not_responding_since_s,
    )


def derive_guest(
    prev: GuestSample | None,
    cur: GuestSample,
    dt_s: float,
    now_s: float,
    min_ops: int = 5,
    no_prev: str | None = None,
) -> GuestRates:
    """Rates for one guest between two samples.

    Args:
        prev: the same guest (same UUID) in the previous sample, or None.
        cur: the guest now.
        dt_s: seconds between the two samples (monotonic).
        now_s: wall-clock time of `cur`, to age the balloon stats.
        min_ops: minimum requests in the interval before a latency is computed.
        no_prev: why `prev` is None, when the caller dropped it (the interval guard);
            "needs two samples" otherwise.

    Returns:
        The guest's rates; unknown values are None with a reason in `na`. A guest
        that did not answer (`cur.not_responding_since_s`) has every figure unknown,
        and so does the next sample after it: a rate needs two samples it answered.
    """
    if cur.not_responding_since_s is not None:
        return _not_responding(cur, cur.not_responding or "not responding")
    na: dict[str, str] = {}
    kvm = cur.accel == "kvm"
    if prev is not None and prev.not_responding_since_s is not None:
        prev, no_prev = None, NA_AFTER_NO_ANSWER
    if prev is not None and (not same_incarnation(prev, cur) or cur.state != "running"):
        prev = None
    first = prev is None

    prev_vcpus = {v.index: v for v in prev.vcpus} if prev else {}
    vcpu_rates: list[VcpuRates] = []
    steal_source: str | None = None
    for v in cur.vcpus:
        vr, src = _vcpu_rates(prev_vcpus.get(v.index), v, dt_s, kvm)
        vcpu_rates.append(vr)
        steal_source = steal_source or src
    steals = [v.steal_pct for v in vcpu_rates if v.steal_pct is not None]

    # Exits: KVM binary stats summed over vCPUs (libvirt vcpu group), else debugfs,
    # else the kvm_exit tracepoint (see _kvm_internals).
    kvm_rates = _kvm_internals(prev, cur, dt_s, na) if kvm and prev is not None else None
    exits = kvm_rates.exits_per_s if kvm_rates else None
    if cur.accel == "tcg":
        na["exits_per_s"] = NA_NOT_KVM
        na["exits_by_reason"] = NA_NOT_KVM
    elif cur.accel is None:
        na["exits_per_s"] = "n/a: accelerator unknown (no domain XML)"
    elif exits is None and not first:
        na["exits_per_s"] = (
            "KVM stats not exported (needs libvirt >= 8.9 and QEMU >= 7.1), debugfs "
            "exits refused or absent, kvm_exit not counted"
        )

    prev_disks = {d.target: d for d in prev.disks} if prev else {}
    disks = tuple([_disk_rates(prev_disks.get(d.target), d, dt_s, min_ops) for d in cur.disks])
    prev_nics = {n.name: n for n in prev.nics} if prev else {}
    nics = tuple([_nic_rates(prev_nics.get(n.name), n, dt_s) for n in cur.nics])
    if nics and all(n.rtt_ms is None for n in nics):
        reasons = [n.rtt_reason for n in nics if n.rtt_reason]
        na["net_rtt_ms"] = reasons[0] if reasons else NA_NO_PROBE
    # Per-guest totals: the sum of the devices' known values (None when none is).
    disk_iops, disk_read_bps, disk_write_bps = _column_sums(
        [(d.iops, d.read_bytes_per_s, d.write_bytes_per_s) for d in disks], 3
    )
    net_rx_bps, net_tx_bps, net_rx_pps, net_tx_pps, net_rx_drops, net_tx_drops = _column_sums(
        [(n.rx_bps, n.tx_bps, n.rx_pps, n.tx_pps, n.rx_drops_per_s, n.tx_drops_per_s)
         for n in nics],
        6,
    )

    b = cur.balloon
    pb = prev.balloon if prev else None
    # Balloon counters refresh on the guest's stats period and are collected on the
    # slow tier, so rate them over their own clock (Δ last-update); between two
    # refreshes the rate is unknown, not 0.
    bdt = 0.0
    if pb is not None and b is not None and pb.last_update_s and b.last_update_s:
        bdt = float(b.last_update_s - pb.last_update_s)
    used = guest_used_bytes(b)
    age = None
    if b is not None and b.last_update_s:
        age = max(0.0, now_s - b.last_update_s)
    if b is None:
        na["mem_used_bytes"] = "no balloon stats (no virtio balloon, or not collected yet)"
    elif used is None:
        na["mem_used_bytes"] = "balloon reports no guest memory stats (set a stats period)"

    cpu_pct: float | None = None
    if prev is not None:
        r = rate(prev.cpu_time_ns, cur.cpu_time_ns, dt_s)
        cpu_pct = None if r is None else 100.0 * r / NS_PER_S
    if len(disks) == 1:
        # Σ Δtimes / Σ Δreqs over one disk is that disk's latency (`latency_ms` gives
        # None on the same counters going back or missing as `_weighted_latencies`).
        read_ms, write_ms, flush_ms = disks[0].read_ms, disks[0].write_ms, disks[0].flush_ms
    else:
        read_ms, write_ms, flush_ms = _weighted_latencies(cur.disks, prev_disks, min_ops)
    if first:
        for key in ("cpu_pct", "steal_pct", "disk_iops", "disk_read_ms", "disk_write_ms",
                    "net_rx_bps"):
            na.setdefault(key, (no_prev or NA_FIRST) if cur.state == "running"
                          else f"guest {cur.state}")
    elif cur.disks:
        for latency, key, what in ((read_ms, "disk_read_ms", "reads"),
                                   (write_ms, "disk_write_ms", "writes")):
            if latency is None:
                na[key] = f"fewer than {max(min_ops, 1)} {what} completed in the interval"

    return GuestRates(
        uuid=cur.uuid,
        name=cur.name,
        state=cur.state,
        accel=cur.accel,
        dom_id=cur.dom_id,
        pid=cur.pid,
        vcpus=cur.vcpus_current if cur.vcpus_current is not None else (len(cur.vcpus) or None),
        cpu_pct=cpu_pct,
        steal_pct=sum(steals) / len(steals) if steals else None,
        steal_max_pct=max(steals) if steals else None,
        steal_source=steal_source,
        vcpu=tuple(vcpu_rates),
        exits_per_s=exits,
        exit_categories=kvm_rates.exit_categories if kvm_rates else {},
        exits_by_reason=kvm_rates.exits_by_reason if kvm_rates else None,
        exit_source=kvm_rates.exit_source if kvm_rates else None,
        tracepoint_rates=kvm_rates.tracepoint_rates if kvm_rates else {},
        halt_poll_cpu_pct=kvm_rates.halt_poll_cpu_pct if kvm_rates else None,
        halt_poll_hint=kvm_rates.halt_poll_hint if kvm_rates else None,
        threads=_thread_rates(prev.threads if prev else (), cur.threads, dt_s)
        if cur.threads else (),
        managed=cur.managed,
        disks=disks,
        disk_iops=disk_iops,
        disk_read_bytes_per_s=disk_read_bps,
        disk_write_bytes_per_s=disk_write_bps,
        disk_read_ms=read_ms,
        disk_write_ms=write_ms,
        disk_flush_ms=flush_ms,
        nics=nics,
        net_rx_bps=net_rx_bps,
        net_tx_bps=net_tx_bps,
        net_rx_pps=net_rx_pps,
        net_tx_pps=net_tx_pps,
        net_rx_drops_per_s=net_rx_drops,
        net_tx_drops_per_s=net_tx_drops,
        mem_used_bytes=used,
        mem_total_bytes=b.available_bytes if b else None,
        mem_usable_bytes=b.usable_bytes if b else None,
        mem_current_bytes=b.current_bytes if b else None,
        mem_max_bytes=b.maximum_bytes if b else None,
        mem_rss_bytes=b.rss_bytes if b else None,
        balloon_age_s=age,
        major_faults_per_s=rate(pb.major_fault, b.major_fault, bdt) if pb and b else None,
        swap_in_bytes_per_s=rate(pb.swap_in_bytes, b.swap_in_bytes, bdt) if pb and b else None,
        swap_out_bytes_per_s=rate(pb.swap_out_bytes, b.swap_out_bytes, bdt) if pb and b else None,
        na=na,
    )


# --------------------------------------------------------------------------- host


@dataclass(frozen=True, slots=True)
class HostDiskRates:
    """A host block device over the interval (/proc/diskstats deltas)."""

    name: str
    read_iops: float | None = None
    write_iops: float | None = None
    read_bytes_per_s: float | None = None
    write_bytes_per_s: float | None = None
    read_ms: float | None = None
    write_ms: float | None = None
    util_pct: float | None = None
    queue_depth: float | None = None
    rotational: bool | None = None
    is_partition: bool = False


@dataclass(frozen=True, slots=True)
class HostNetRates:
    """A host interface over the interval; `util_pct` only where the speed is real."""

    name: str
    kind: str
    master: str | None = None
    speed_mbps: int | None = None
    rx_bps: float | None = None
    tx_bps: float | None = None
    rx_pps: float | None = None
    tx_pps: float | None = None
    rx_drops_per_s: float | None = None
    tx_drops_per_s: float | None = None
    util_pct: float | None = None


@dataclass(frozen=True, slots=True)
class HostRates:
    """The host baseline for one interval.

    Percentages of CPU are of all CPUs (0-100). `run_delay_pct` is the mean
    run-queue wait of host tasks per CPU (/proc/schedstat), the host analogue of a
    guest's steal. `psi_*_pct` come from Δ of the PSI `total=` counters (a 0-100 %
    share of the interval, more responsive than avg10). `hostname` names the host.
    """

    hostname: str = ""
    ncpu: int = 0
    cpu_busy_pct: float | None = None
    cpu_steal_pct: float | None = None
    cpu_iowait_pct: float | None = None
    run_delay_pct: float | None = None
    psi_cpu_some_pct: float | None = None
    psi_mem_some_pct: float | None = None
    psi_mem_full_pct: float | None = None
    psi_io_some_pct: float | None = None
    psi_io_full_pct: float | None = None
    mem_total_bytes: int | None = None
    mem_used_bytes: int | None = None
    mem_available_bytes: int | None = None
    major_faults_per_s: float | None = None
    disks: tuple[HostDiskRates, ...] = ()
    nets: tuple[HostNetRates, ...] = ()
    softnet_drops_per_s: float | None = None
    softnet_squeeze_per_s: float | None = None
    load1: float | None = None
    self_cpu_pct: float | None = None
    self_rss_bytes: int | None = None
    na: dict[str, str] = field(default_factory=dict)
    switch_uplinks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Switch (Linux or OVS bridge) → its uplinks, see `switch_uplinks`."""

    def disk(self, name: str | None) -> HostDiskRates | None:
        """The host block device of this name (a guest disk's `host_dev`), if present."""
        return next((d for d in self.disks if d.name == name), None) if name else None

    def net(self, name: str | None) -> HostNetRates | None:
        """The host interface of this name (an uplink), if present."""
        return next((n for n in self.nets if n.name == name), None) if name else None


def switch_uplinks(cur: HostSample) -> dict[str, tuple[str, ...]]:
    """Each switch's uplinks: its ports that are not a guest's tap nor itself.

    Ports of a Linux bridge are the interfaces whose master is the bridge
    (/sys/class/net/IF/master); ports of an OVS bridge come from OVSDB
    (`HostSample.ovs_ports`), whose bridge's own internal port has the bridge's
    name. Guest vNICs are tun/tap devices (kind "tap"); what else is plugged in
    (a physical NIC, a bond, a veth to another namespace, a DPDK port the kernel
    does not see) leads off the host, so it is an uplink. Bonds are uplinks as a
    whole, not their slaves (whose master is the bond, not the bridge).
    """
    kinds = {n.name: n.kind for n in cur.netdevs}
    ports: dict[str, list[str]] = {n.name: [] for n in cur.netdevs if n.kind == "bridge"}
    for n in cur.netdevs:
        if n.master in ports:
            ports[n.master].append(n.name)
    for port in cur.ovs_ports:
        ports.setdefault(port.bridge, [])
        if port.name != port.bridge:
            ports[port.bridge].append(port.name)
    return {
        bridge: tuple(sorted(p for p in names if kinds.get(p) != "tap"))
        for bridge, names in ports.items()
    }


def _host_disk(prev: BlockDevSample | None, cur: BlockDevSample, dt_s: float) -> HostDiskRates:
    if prev is None:
        return HostDiskRates(
            name=cur.name, rotational=cur.rotational, is_partition=cur.is_partition
        )
    io = rate(prev.io_ticks_ns, cur.io_ticks_ns, dt_s)
    qd = rate(prev.weighted_ns, cur.weighted_ns, dt_s)
    return HostDiskRates(
        name=cur.name,
        read_iops=rate(prev.reads, cur.reads, dt_s),
        write_iops=rate(prev.writes, cur.writes, dt_s),
        read_bytes_per_s=rate(prev.read_bytes, cur.read_bytes, dt_s),
        write_bytes_per_s=rate(prev.write_bytes, cur.write_bytes, dt_s),
        # A host device is idle far more often than a guest disk is "quiet", so any
        # completed request gives a latency (min_ops=1).
        read_ms=latency_ms(prev.read_time_ns, cur.read_time_ns, prev.reads, cur.reads, 1),
        write_ms=latency_ms(prev.write_time_ns, cur.write_time_ns, prev.writes, cur.writes, 1),
        # io_ticks: time with at least one request in flight (iostats.rst field 10).
        util_pct=None if io is None else min(100.0, 100.0 * io / NS_PER_S),
        # weighted time / wall time = mean number in flight (Little's law, field 11).
        queue_depth=None if qd is None else qd / NS_PER_S,
        rotational=cur.rotational,
        is_partition=cur.is_partition,
    )


def _host_net(prev: NetDevSample | None, cur: NetDevSample, dt_s: float) -> HostNetRates:
    if prev is None:
        return HostNetRates(
            name=cur.name, kind=cur.kind, master=cur.master, speed_mbps=cur.speed_mbps
        )
    rx = _bits(rate(prev.rx_bytes, cur.rx_bytes, dt_s))
    tx = _bits(rate(prev.tx_bytes, cur.tx_bytes, dt_s))
    util = None
    if cur.kind in ("physical", "bond") and cur.speed_mbps and cur.speed_mbps > 0:
        busiest = max((v for v in (rx, tx) if v is not None), default=None)
        # Full duplex: the busier direction against the link speed (atop's rule).
        util = None if busiest is None else 100.0 * busiest / (cur.speed_mbps * 1e6)
    drops_rx = _sum((rate(prev.rx_drop, cur.rx_drop, dt_s), rate(prev.rx_fifo, cur.rx_fifo, dt_s)))
    return HostNetRates(
        name=cur.name,
        kind=cur.kind,
        master=cur.master,
        speed_mbps=cur.speed_mbps,
        rx_bps=rx,
        tx_bps=tx,
        rx_pps=rate(prev.rx_packets, cur.rx_packets, dt_s),
        tx_pps=rate(prev.tx_packets, cur.tx_packets, dt_s),
        rx_drops_per_s=drops_rx,
        tx_drops_per_s=rate(prev.tx_drop, cur.tx_drop, dt_s),
        util_pct=util,
    )


def _psi_pct(
    prev: HostSample, cur: HostSample, resource: str, kind: str, dt_s: float
) -> float | None:
    p = prev.pressure.get(resource)
    c = cur.pressure.get(resource)
    if p is None or c is None:
        return None
    r = rate(getattr(p, f"{kind}_total_ns"), getattr(c, f"{kind}_total_ns"), dt_s)
    return None if r is None else min(100.0, 100.0 * r / NS_PER_S)


def derive_host(prev: HostSample | None, cur: HostSample) -> HostRates:
    """The host baseline between two host samples (None `prev`: gauges only)."""
    na: dict[str, str] = {}
    used = None
    if cur.mem_total_bytes is not None and cur.mem_available_bytes is not None:
        used = cur.mem_total_bytes - cur.mem_available_bytes
    gauges = {
        "hostname": cur.hostname,
        "ncpu": cur.ncpu,
        "mem_total_bytes": cur.mem_total_bytes,
        "mem_used_bytes": used,
        "mem_available_bytes": cur.mem_available_bytes,
        "load1": cur.loadavg[0] if cur.loadavg else None,
        "self_rss_bytes": cur.self_rss_bytes,
        "switch_uplinks": switch_uplinks(cur),
    }
    if cur.run_delay_ns is None:
        na["run_delay_pct"] = "/proc/schedstat absent (kernel without CONFIG_SCHEDSTATS)"
    if not cur.pressure:
        na["psi"] = "/proc/pressure absent (kernel < 4.20 or psi=0)"
    if prev is None:
        return HostRates(na=na, **gauges)  # type: ignore[arg-type]
    dt_s = (cur.mono_ns - prev.mono_ns) / NS_PER_S
    cpu_busy = cpu_steal = cpu_iowait = None
    if prev.cpu is not None and cur.cpu is not None:
        total = counter_delta(prev.cpu.total_ns, cur.cpu.total_ns)
        if total:
            busy = counter_delta(prev.cpu.busy_ns, cur.cpu.busy_ns)
            steal = counter_delta(prev.cpu.steal_ns, cur.cpu.steal_ns)
            iowait = counter_delta(prev.cpu.iowait_ns, cur.cpu.iowait_ns)
            cpu_busy = None if busy is None else 100.0 * busy / total
            cpu_steal = None if steal is None else 100.0 * steal / total
            cpu_iowait = None if iowait is None else 100.0 * iowait / total
    run_delay = rate(prev.run_delay_ns, cur.run_delay_ns, dt_s)
    self_cpu = rate(prev.self_cpu_ns, cur.self_cpu_ns, dt_s)
    pdisks = {d.name: d for d in prev.blockdevs}
    pnets = {n.name: n for n in prev.netdevs}
    psoft = {s.cpu: s for s in prev.softnet}
    soft_drops = _sum(
        rate(psoft[s.cpu].dropped, s.dropped, dt_s) for s in cur.softnet if s.cpu in psoft
    )
    soft_squeeze = _sum(
        rate(psoft[s.cpu].time_squeeze, s.time_squeeze, dt_s) for s in cur.softnet if s.cpu in psoft
    )
    return HostRates(
        cpu_busy_pct=cpu_busy,
        cpu_steal_pct=cpu_steal,
        cpu_iowait_pct=cpu_iowait,
        run_delay_pct=(
            None
            if run_delay is None or not cur.ncpu
            else 100.0 * run_delay / NS_PER_S / cur.ncpu
        ),
        psi_cpu_some_pct=_psi_pct(prev, cur, "cpu", "some", dt_s),
        psi_mem_some_pct=_psi_pct(prev, cur, "memory", "some", dt_s),
        psi_mem_full_pct=_psi_pct(prev, cur, "memory", "full", dt_s),
        psi_io_some_pct=_psi_pct(prev, cur, "io", "some", dt_s),
        psi_io_full_pct=_psi_pct(prev, cur, "io", "full", dt_s),
        major_faults_per_s=rate(prev.vmstat.get("pgmajfault"), cur.vmstat.get("pgmajfault"), dt_s),
        disks=tuple(_host_disk(pdisks.get(d.name), d, dt_s) for d in cur.blockdevs),
        nets=tuple(_host_net(pnets.get(n.name), n, dt_s) for n in cur.netdevs),
        softnet_drops_per_s=soft_drops,
        softnet_squeeze_per_s=soft_squeeze,
        self_cpu_pct=None if self_cpu is None else 100.0 * self_cpu / NS_PER_S,
        na=na,
        **gauges,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- frame


@dataclass(frozen=True, slots=True)
class Frame:
    """Rates for every guest and the host between two consecutive samples."""

    wall_s: float
    dt_s: float | None
    host: HostRates
    guests: tuple[GuestRates, ...]


def derive(prev: Sample | None, cur: Sample, min_ops: int = 5) -> Frame:
    """Derive the frame for `cur` from the previous sample (None for the first).

    Guests are matched by UUID; a guest absent from `prev`, restarted, not running, or
    not answering on either side has unknown rates, and so has every guest when the
    interval is far off the nominal one (`interval_gap`). Host rates use the host
    source's own monotonic stamp: kvmtop reads the host counters itself, right at
    that stamp, so they are rates over the time that really passed, whatever it was.
    """
    dt_s = (cur.mono_ns - prev.mono_ns) / NS_PER_S if prev is not None else None
    gap = None
    if prev is not None and dt_s is not None:
        gap = interval_gap(dt_s, prev.interval_s, cur.interval_s)
    prev_guests = {g.uuid: g for g in prev.guests} if prev is not None and gap is None else {}
    guests = tuple(
        derive_guest(prev_guests.get(g.uuid), g, dt_s or 0.0, cur.wall_s, min_ops, gap)
        for g in cur.guests
    )
    if cur.host is None:
        host = HostRates(na={"host": "host source failed this tick"})
    else:
        host = derive_host(prev.host if prev is not None else None, cur.host)
    return Frame(wall_s=cur.wall_s, dt_s=dt_s, host=host, guests=guests)
