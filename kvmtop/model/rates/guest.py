"""One guest's rates over an interval: its CPU, KVM, disks, vNICs and memory together.

Layer: model (pure). No I/O.
"""

from __future__ import annotations

import functools

import msgspec

from kvmtop.model.rates.counters import column_sums, known_max, known_sum, rate
from kvmtop.model.rates.cpu import ThreadRates, VcpuRates, derive_threads, derive_vcpu
from kvmtop.model.rates.disk import DiskRates, derive_disk, weighted_latencies
from kvmtop.model.rates.kvm import EXIT_SPLIT_CATEGORIES, derive_kvm
from kvmtop.model.rates.net import NicRates, derive_nic
from kvmtop.model.sample import BalloonSample, GuestSample
from kvmtop.model.units import NS_PER_S

NA_NOT_KVM = "n/a: not KVM (QEMU TCG emulation)"
NA_FIRST = "needs two samples"
NA_NO_PROBE = "RTT probing is off (opt-in: it sends packets to the guest)"
NA_AFTER_NO_ANSWER = (
    "the guest did not answer at the previous sample: rates need two samples it answered"
)
NA_NO_VNIC = "no vNIC: the guest has no network interface"
NA_NO_DISK = "no disk: the guest has no block device"
_NO_VNIC_NA = dict.fromkeys(("net_rx_bps", "net_rtt_ms"), NA_NO_VNIC)
"""The reasons of the `na` keys the network columns and the detail's RTT read."""
_NO_DISK_NA = dict.fromkeys(("disk_iops", "disk_read_ms", "disk_write_ms"), NA_NO_DISK)
"""The reasons of the `na` keys of the disk columns."""


class GuestRates(msgspec.Struct, frozen=True, gc=False):
    """One guest's figures for one interval: what views and batch output read.

    A None value is unknown; `na` maps a field name to the reason it is unknown
    (for the sources view and tooltips), e.g. {"exits_per_s": NA_NOT_KVM}.
    Network `*_bps` are bits per second; memory values are bytes. `vcpu` holds one
    entry per `GuestSample.vcpus` entry of the sample it was derived from, in the
    same order (none for a guest that did not answer).
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
    exit_categories: dict[str, float] = msgspec.field(default_factory=dict)
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
    na: dict[str, str] = msgspec.field(default_factory=dict)
    exits_by_reason: dict[str, float] | None = None
    """Exits per second by hardware reason (tracepoints) or by category; None when
    no source can split exits (reason in `na["exits_by_reason"]`)."""
    exit_source: str | None = None
    """Which source fed `exits_by_reason` (else `exits_per_s`): EXIT_SOURCE_*."""
    tracepoint_rates: dict[str, float] = msgspec.field(default_factory=dict)
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
        return known_sum(t.cpu_pct for t in threads), known_sum(t.delay_pct for t in threads)

    @property
    def net_drops_per_s(self) -> float | None:
        """RX + TX drops per second."""
        return known_sum((self.net_rx_drops_per_s, self.net_tx_drops_per_s))

    @property
    def net_rtt_ms(self) -> float | None:
        """The slowest vNIC's median RTT (ms), None when no vNIC was answered."""
        return known_max(n.rtt_ms for n in self.nics)

    @property
    def net_host_rtt_ms(self) -> float | None:
        """The baseline of `net_rtt_ms`: the slowest bridge RTT of the guest's vNICs."""
        return known_max(n.host_rtt_ms for n in self.nics)

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
    libvirt < 2.1): available − unused − disk_caches. Without disk_caches it is
    unknown: the page cache counted as used would make every file read look like
    growth (and the leak check judges this same figure).
    """
    if b is None or b.available_bytes is None:
        return None
    if b.usable_bytes is not None:
        return b.available_bytes - b.usable_bytes
    if b.unused_bytes is not None and b.disk_caches_bytes is not None:
        return b.available_bytes - b.unused_bytes - b.disk_caches_bytes
    return None


def same_incarnation(prev: GuestSample, cur: GuestSample) -> bool:
    """False when the guest restarted between samples (new domain ID or QEMU pid)."""
    if prev.dom_id != cur.dom_id:
        return False
    return not (prev.pid is not None and cur.pid is not None and prev.pid != cur.pid)


_NOT_RESPONDING_NA: tuple[str, ...] = (
    "cpu_pct",
    "steal_pct",
    "exits_per_s",
    "exits_by_reason",
    "disk_iops",
    "disk_read_ms",
    "disk_write_ms",
    "net_rx_bps",
    "net_rtt_ms",
    "mem_used_bytes",
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


@functools.cache
def _too_few(min_ops: int, what: str) -> str:
    """Why a latency is unknown (the same few texts for every idle disk, every tick)."""
    return f"fewer than {max(min_ops, 1)} {what} completed in the interval"


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
    steals: list[float] = []
    steal_source: str | None = None
    for v in cur.vcpus:
        vr, src = derive_vcpu(prev_vcpus.get(v.index), v, dt_s, kvm)
        vcpu_rates.append(vr)
        if vr.steal_pct is not None:
            steals.append(vr.steal_pct)
        steal_source = steal_source or src

    # Exits: KVM binary stats summed over vCPUs (libvirt vcpu group), else debugfs,
    # else the kvm_exit tracepoint (see derive_kvm).
    kvm_rates = derive_kvm(prev, cur, dt_s, na) if kvm and prev is not None else None
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

    # A guest without a vNIC or a disk has no figure to show there, ever: that is the
    # reason on every tick, the first one included.
    if not cur.nics:
        na.update(_NO_VNIC_NA)
    if not cur.disks:
        na.update(_NO_DISK_NA)
    prev_disks = {d.target: d for d in prev.disks} if prev else {}
    disks = tuple([derive_disk(prev_disks.get(d.target), d, dt_s, min_ops) for d in cur.disks])
    prev_nics = {n.name: n for n in prev.nics} if prev else {}
    nics = tuple([derive_nic(prev_nics.get(n.name), n, dt_s) for n in cur.nics])
    if nics and all(n.rtt_ms is None for n in nics):
        reasons = [n.rtt_reason for n in nics if n.rtt_reason]
        na["net_rtt_ms"] = reasons[0] if reasons else NA_NO_PROBE
    # Per-guest totals: the sum of the devices' known values (None when none is).
    disk_iops, disk_read_bps, disk_write_bps = column_sums(
        [(d.iops, d.read_bytes_per_s, d.write_bytes_per_s) for d in disks], 3
    )
    net_rx_bps, net_tx_bps, net_rx_pps, net_tx_pps, net_rx_drops, net_tx_drops = column_sums(
        [
            (n.rx_bps, n.tx_bps, n.rx_pps, n.tx_pps, n.rx_drops_per_s, n.tx_drops_per_s)
            for n in nics
        ],
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
        # None on the same counters going back or missing as `weighted_latencies`).
        read_ms, write_ms, flush_ms = disks[0].read_ms, disks[0].write_ms, disks[0].flush_ms
    else:
        read_ms, write_ms, flush_ms = weighted_latencies(cur.disks, prev_disks, min_ops)
    if first:
        for key in (
            "cpu_pct",
            "steal_pct",
            "exits_per_s",
            "disk_iops",
            "disk_read_ms",
            "disk_write_ms",
            "net_rx_bps",
        ):
            na.setdefault(
                key, (no_prev or NA_FIRST) if cur.state == "running" else f"guest {cur.state}"
            )
    elif cur.disks:
        if read_ms is None:
            na["disk_read_ms"] = _too_few(min_ops, "reads")
        if write_ms is None:
            na["disk_write_ms"] = _too_few(min_ops, "writes")

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
        threads=derive_threads(prev.threads if prev else (), cur.threads, dt_s)
        if cur.threads
        else (),
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
