"""Rates: turn two raw samples into per-second figures.

Layer: model (pure). No I/O.

Rules (../shared/reference/metrics.md §3):
- rate = Δcounter / Δt with Δt from the monotonic clock of the source;
- a counter that went backwards, a value missing on either side, or a guest whose
  identity changed (libvirt domain ID or QEMU pid) gives None ("unknown"), never 0;
- ratio metrics (latency per request) come from deltas over the same interval, and
  only when at least `min_ops` requests completed in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kvmtop.model.sample import (
    BalloonSample,
    BlockDevSample,
    DiskSample,
    GuestSample,
    HostSample,
    NetDevSample,
    NicSample,
    Sample,
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
    """Per-second rate of a cumulative counter (None on reset or missing value)."""
    return per_second(counter_delta(prev, cur), dt_s)


def latency_ms(
    prev_time_ns: int | None,
    cur_time_ns: int | None,
    prev_reqs: int | None,
    cur_reqs: int | None,
    min_ops: int,
) -> float | None:
    """Mean ms per request over the interval, only with at least `min_ops` requests."""
    dreqs = counter_delta(prev_reqs, cur_reqs)
    dtime = counter_delta(prev_time_ns, cur_time_ns)
    if dreqs is None or dtime is None or dreqs < max(min_ops, 1):
        return None
    return dtime / dreqs / 1e6


def _sum(values: Iterable[float | None]) -> float | None:
    """Sum of known values; None when none is known."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


# --------------------------------------------------------------------------- guest


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


@dataclass(frozen=True, slots=True)
class DiskRates:
    """Per guest disk: IOPS, throughput and mean latency per request."""

    target: str
    path: str | None = None
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


@dataclass(frozen=True, slots=True)
class NicRates:
    """Per guest NIC, guest point of view; `*_bps` are bits per second."""

    name: str
    rx_bps: float | None = None
    tx_bps: float | None = None
    rx_pps: float | None = None
    tx_pps: float | None = None
    rx_drops_per_s: float | None = None
    tx_drops_per_s: float | None = None
    rx_errs_per_s: float | None = None
    tx_errs_per_s: float | None = None


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

    @property
    def net_drops_per_s(self) -> float | None:
        """RX + TX drops per second."""
        return _sum((self.net_rx_drops_per_s, self.net_tx_drops_per_s))

    @property
    def dominant_exit(self) -> str | None:
        """The exit category with the highest rate, if any category moved."""
        moving = {k: v for k, v in self.exit_categories.items() if v > 0}
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
    cpu = rate(prev.sched_run_ns, cur.sched_run_ns, dt_s)
    if cpu is None:
        cpu = rate(prev.time_ns, cur.time_ns, dt_s)
    steal = rate(prev.delay_ns, cur.delay_ns, dt_s)
    source = "libvirt" if steal is not None else None
    if steal is None:
        steal = rate(prev.sched_delay_ns, cur.sched_delay_ns, dt_s)
        source = "schedstat" if steal is not None else None

    def kvm_rate(name: str) -> float | None:
        if not kvm:
            return None
        return rate(prev.kvm.get(name), cur.kvm.get(name), dt_s)

    def kvm_pct(name: str) -> float | None:
        r = kvm_rate(name)
        return None if r is None else 100.0 * r / NS_PER_S

    return (
        VcpuRates(
            index=cur.index,
            cpu_pct=None if cpu is None else 100.0 * cpu / NS_PER_S,
            steal_pct=None if steal is None else 100.0 * steal / NS_PER_S,
            exits_per_s=kvm_rate("exits.sum"),
            halt_exits_per_s=kvm_rate("halt_exits.sum"),
            halt_poll_pct=kvm_pct("halt_poll_success_ns.sum"),
            halt_poll_fail_pct=kvm_pct("halt_poll_fail_ns.sum"),
            halt_wait_pct=kvm_pct("halt_wait_ns.sum"),
        ),
        source,
    )


def _disk_rates(prev: DiskSample | None, cur: DiskSample, dt_s: float, min_ops: int) -> DiskRates:
    if prev is None:
        return DiskRates(target=cur.target, path=cur.path)
    return DiskRates(
        target=cur.target,
        path=cur.path,
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
    if prev is None:
        return NicRates(name=cur.name)
    return NicRates(
        name=cur.name,
        rx_bps=_bits(rate(prev.rx_bytes, cur.rx_bytes, dt_s)),
        tx_bps=_bits(rate(prev.tx_bytes, cur.tx_bytes, dt_s)),
        rx_pps=rate(prev.rx_pkts, cur.rx_pkts, dt_s),
        tx_pps=rate(prev.tx_pkts, cur.tx_pkts, dt_s),
        rx_drops_per_s=rate(prev.rx_drop, cur.rx_drop, dt_s),
        tx_drops_per_s=rate(prev.tx_drop, cur.tx_drop, dt_s),
        rx_errs_per_s=rate(prev.rx_errs, cur.rx_errs, dt_s),
        tx_errs_per_s=rate(prev.tx_errs, cur.tx_errs, dt_s),
    )


def _weighted_latency(
    disks: tuple[DiskSample, ...],
    prev_disks: Mapping[str, DiskSample],
    kind: str,
    min_ops: int,
) -> float | None:
    """Latency over all disks of a guest: Σ Δtimes / Σ Δreqs (not a mean of means)."""
    total_ns = 0
    total_reqs = 0
    for d in disks:
        p = prev_disks.get(d.target)
        if p is None:
            continue
        dreqs = counter_delta(getattr(p, f"{kind}_reqs"), getattr(d, f"{kind}_reqs"))
        dtime = counter_delta(getattr(p, f"{kind}_times_ns"), getattr(d, f"{kind}_times_ns"))
        if dreqs is None or dtime is None:
            continue
        total_ns += dtime
        total_reqs += dreqs
    if total_reqs < max(min_ops, 1):
        return None
    return total_ns / total_reqs / 1e6


def same_incarnation(prev: GuestSample, cur: GuestSample) -> bool:
    """False when the guest restarted between samples (new domain ID or QEMU pid)."""
    if prev.dom_id != cur.dom_id:
        return False
    return not (prev.pid is not None and cur.pid is not None and prev.pid != cur.pid)


def derive_guest(
    prev: GuestSample | None, cur: GuestSample, dt_s: float, now_s: float, min_ops: int = 5
) -> GuestRates:
    """Rates for one guest between two samples.

    Args:
        prev: the same guest (same UUID) in the previous sample, or None.
        cur: the guest now.
        dt_s: seconds between the two samples (monotonic).
        now_s: wall-clock time of `cur`, to age the balloon stats.
        min_ops: minimum requests in the interval before a latency is computed.

    Returns:
        The guest's rates; unknown values are None with a reason in `na`.
    """
    na: dict[str, str] = {}
    kvm = cur.accel == "kvm"
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

    # Exits: sum over vCPUs of the KVM binary stats (libvirt vcpu group).
    exits: float | None = None
    categories: dict[str, float] = {}
    if kvm and prev is not None:
        exits = _sum(v.exits_per_s for v in vcpu_rates)
        for cat in EXIT_CATEGORIES:
            key = f"{cat}.sum"
            total = _sum(
                rate(prev_vcpus[v.index].kvm.get(key), v.kvm.get(key), dt_s)
                for v in cur.vcpus
                if v.index in prev_vcpus
            )
            if total is not None:
                categories[cat] = total
    if cur.accel == "tcg":
        na["exits_per_s"] = NA_NOT_KVM
    elif cur.accel is None:
        na["exits_per_s"] = "n/a: accelerator unknown (no domain XML)"
    elif exits is None and not first:
        na["exits_per_s"] = "KVM stats not exported (needs libvirt >= 8.9 and QEMU >= 7.1)"

    prev_disks = {d.target: d for d in prev.disks} if prev else {}
    disks = tuple(_disk_rates(prev_disks.get(d.target), d, dt_s, min_ops) for d in cur.disks)
    prev_nics = {n.name: n for n in prev.nics} if prev else {}
    nics = tuple(_nic_rates(prev_nics.get(n.name), n, dt_s) for n in cur.nics)

    b = cur.balloon
    pb = prev.balloon if prev else None
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
    if first:
        for key in ("cpu_pct", "steal_pct", "disk_iops", "net_rx_bps"):
            na.setdefault(key, NA_FIRST if cur.state == "running" else f"guest {cur.state}")

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
        exit_categories=categories,
        disks=disks,
        disk_iops=_sum(d.iops for d in disks),
        disk_read_bytes_per_s=_sum(d.read_bytes_per_s for d in disks),
        disk_write_bytes_per_s=_sum(d.write_bytes_per_s for d in disks),
        disk_read_ms=_weighted_latency(cur.disks, prev_disks, "rd", min_ops),
        disk_write_ms=_weighted_latency(cur.disks, prev_disks, "wr", min_ops),
        disk_flush_ms=_weighted_latency(cur.disks, prev_disks, "fl", min_ops),
        nics=nics,
        net_rx_bps=_sum(n.rx_bps for n in nics),
        net_tx_bps=_sum(n.tx_bps for n in nics),
        net_rx_pps=_sum(n.rx_pps for n in nics),
        net_tx_pps=_sum(n.tx_pps for n in nics),
        net_rx_drops_per_s=_sum(n.rx_drops_per_s for n in nics),
        net_tx_drops_per_s=_sum(n.tx_drops_per_s for n in nics),
        mem_used_bytes=used,
        mem_total_bytes=b.available_bytes if b else None,
        mem_usable_bytes=b.usable_bytes if b else None,
        mem_current_bytes=b.current_bytes if b else None,
        mem_max_bytes=b.maximum_bytes if b else None,
        mem_rss_bytes=b.rss_bytes if b else None,
        balloon_age_s=age,
        major_faults_per_s=rate(pb.major_fault, b.major_fault, dt_s) if pb and b else None,
        swap_in_bytes_per_s=rate(pb.swap_in_bytes, b.swap_in_bytes, dt_s) if pb and b else None,
        swap_out_bytes_per_s=rate(pb.swap_out_bytes, b.swap_out_bytes, dt_s) if pb and b else None,
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
    share of the interval, more responsive than avg10).
    """

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


def _host_disk(prev: BlockDevSample | None, cur: BlockDevSample, dt_s: float) -> HostDiskRates:
    if prev is None:
        return HostDiskRates(name=cur.name, rotational=cur.rotational)
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
    )


def _host_net(prev: NetDevSample | None, cur: NetDevSample, dt_s: float) -> HostNetRates:
    if prev is None:
        return HostNetRates(name=cur.name, kind=cur.kind, master=cur.master, speed_mbps=cur.speed_mbps)
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
        "ncpu": cur.ncpu,
        "mem_total_bytes": cur.mem_total_bytes,
        "mem_used_bytes": used,
        "mem_available_bytes": cur.mem_available_bytes,
        "load1": cur.loadavg[0] if cur.loadavg else None,
        "self_rss_bytes": cur.self_rss_bytes,
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

    Guests are matched by UUID; a guest absent from `prev`, restarted, or not running
    has unknown rates. Host rates use the host source's own monotonic stamp.
    """
    dt_s = (cur.mono_ns - prev.mono_ns) / NS_PER_S if prev is not None else None
    prev_guests = {g.uuid: g for g in prev.guests} if prev is not None else {}
    guests = tuple(
        derive_guest(prev_guests.get(g.uuid), g, dt_s or 0.0, cur.wall_s, min_ops)
        for g in cur.guests
    )
    if cur.host is None:
        host = HostRates(na={"host": "host source failed this tick"})
    else:
        host = derive_host(prev.host if prev is not None else None, cur.host)
    return Frame(wall_s=cur.wall_s, dt_s=dt_s, host=host, guests=guests)
