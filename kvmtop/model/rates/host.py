"""The host baseline over an interval: CPU, PSI, memory, block devices, interfaces.

Layer: model (pure). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmtop.model.rates.counters import (
    counter_delta,
    known_sum,
    latency_ms,
    rate,
    to_bits,
)
from kvmtop.model.sample import BlockDevSample, HostSample, NetDevSample
from kvmtop.model.units import NS_PER_S


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
    guest's steal. `psi_*pct_of_wall` come from Δ of the PSI `total=` counters (a 0-100 %
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
    rx = to_bits(rate(prev.rx_bytes, cur.rx_bytes, dt_s))
    tx = to_bits(rate(prev.tx_bytes, cur.tx_bytes, dt_s))
    util = None
    if cur.kind in ("physical", "bond") and cur.speed_mbps and cur.speed_mbps > 0:
        busiest = max((v for v in (rx, tx) if v is not None), default=None)
        # Full duplex: the busier direction against the link speed (atop's rule).
        util = None if busiest is None else 100.0 * busiest / (cur.speed_mbps * 1e6)
    drops_rx = known_sum(
        (rate(prev.rx_drop, cur.rx_drop, dt_s), rate(prev.rx_fifo, cur.rx_fifo, dt_s))
    )
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
    soft_drops = known_sum(
        rate(psoft[s.cpu].dropped, s.dropped, dt_s) for s in cur.softnet if s.cpu in psoft
    )
    soft_squeeze = known_sum(
        rate(psoft[s.cpu].time_squeeze, s.time_squeeze, dt_s) for s in cur.softnet if s.cpu in psoft
    )
    return HostRates(
        cpu_busy_pct=cpu_busy,
        cpu_steal_pct=cpu_steal,
        cpu_iowait_pct=cpu_iowait,
        run_delay_pct=(
            None if run_delay is None or not cur.ncpu else 100.0 * run_delay / NS_PER_S / cur.ncpu
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
