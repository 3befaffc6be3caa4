"""Build windows for detector tests from rates, through the real `Window.push`.

A `World` holds mutable specs (per-second rates and gauges) for the host and each
guest; `world.push()` integrates the rates into cumulative counters, builds a raw
`Sample` exactly as a collector would, pushes it into a real `Window` (so rates come
from `kvmtop.model.rates.frame.derive`) and returns the window. Change a spec between pushes
to script a fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvmtop.detectors.engine import DetectorEngine
from kvmtop.detectors.settings import DetectorSettings
from kvmtop.model.finding import Finding
from kvmtop.model.sample import (
    BalloonSample,
    BlockDevSample,
    DiskSample,
    GuestSample,
    HostSample,
    NetDevSample,
    NicSample,
    OvsDatapathSample,
    OvsPortSample,
    PressureSample,
    Sample,
    SoftnetSample,
    ThreadSample,
    VcpuSample,
)
from kvmtop.model.units import MIB, NS_PER_S
from kvmtop.model.window import Window

T0 = 1_700_000_000.0

# ---------------------------------------------------------------- specs


@dataclass
class VcpuSpec:
    """Per-vCPU rates: CPU and steal in % of wall time, exits per second."""

    cpu_pct: float = 50.0
    steal_pct: float | None = 0.0
    exits_per_s: float | None = None
    categories: dict[str, float] = field(default_factory=dict)
    affinity: tuple[int, ...] | None = None


@dataclass
class DiskSpec:
    """Per guest disk: requests per second and ms per request, by kind."""

    target: str = "vda"
    rd_iops: float = 0.0
    rd_ms: float = 0.5
    wr_iops: float = 0.0
    wr_ms: float = 0.5
    fl_iops: float = 0.0
    fl_ms: float = 0.5
    host_dev: str | None = None


@dataclass
class NicSpec:
    """Per guest vNIC (guest point of view): packets and drops per second."""

    name: str = "vnet0"
    rx_pps: float = 1000.0
    rx_drops: float = 0.0
    tx_pps: float = 1000.0
    tx_drops: float = 0.0
    rx_bps: float = 8e6
    bridge: str | None = None


@dataclass
class GuestSpec:
    """One guest; `balloon` is a gauge set by the test (None: no balloon)."""

    uuid: str
    name: str
    dom_id: int | None = 1
    pid: int | None = 100
    accel: str | None = "kvm"
    state: str = "running"
    vcpus: list[VcpuSpec] = field(default_factory=lambda: [VcpuSpec()])
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    balloon: BalloonSample | None = None
    exit_reasons: dict[str, float] = field(default_factory=dict)
    vhost_cpu_pct: float | None = None
    debugfs_exits_per_s: float | None = None
    throttled_pct: float | None = None
    balloon_period_s: int | None = None
    not_responding: str | None = None  # set: the guest did not answer this tick


@dataclass
class HostDiskSpec:
    """A host block device: requests per second and ms per request, busy %."""

    name: str = "sda"
    iops: float = 50.0
    ms: float = 0.3
    util_pct: float = 10.0
    rotational: bool | None = False
    scheduler: str | None = None


@dataclass
class NetDevSpec:
    """A host interface: bytes and packets per second (host point of view), drops, and
    the rate its root qdisc shapes to (`shaped_mbps`, set by a `shaped_by` tbf/htb)."""

    name: str
    kind: str
    master: str | None = None
    speed_mbps: int | None = None
    rx_bps: float = 0.0
    tx_bps: float = 0.0
    rx_pps: float = 0.0
    tx_pps: float = 0.0
    rx_drops: float = 0.0
    tx_drops: float = 0.0
    qdisc_drops: float = 0.0
    shaped_mbps: float | None = None
    shaped_by: str | None = None
    ovs_bridge: str | None = None
    ovs_rx_dropped: float = 0.0


@dataclass
class HostSpec:
    """The host: CPUs, RAM, PSI gauges, block and network devices, softnet drops."""

    ncpu: int = 4
    mem_total: int = 16 << 30
    mem_available: int = 8 << 30
    pressure: dict[str, PressureSample] = field(default_factory=dict)
    psi_cpu_some_pct: float = 0.0
    disks: list[HostDiskSpec] = field(default_factory=lambda: [HostDiskSpec()])
    netdevs: list[NetDevSpec] = field(default_factory=list)
    softnet_drops: float = 0.0
    ovs_lost: float = 0.0
    ovs_bridges: tuple[str, ...] = ()
    thp: str | None = None


class World:
    """Specs + counters → samples → a real Window (and optionally an engine)."""

    def __init__(
        self,
        guests: list[GuestSpec] | None = None,
        host: HostSpec | None = None,
        *,
        settings: DetectorSettings | None = None,
        window_size: int = 300,
    ) -> None:
        self.guests = guests if guests is not None else []
        self.host = host or HostSpec()
        self.window = Window(window_size)
        self.engine = DetectorEngine(settings or DetectorSettings())
        self.wall_s = T0
        self.mono_ns = 10 * NS_PER_S
        self._acc: dict[str, float] = {}

    def guest(self, name: str) -> GuestSpec:
        """The spec of the guest called `name`."""
        return next(g for g in self.guests if g.name == name)

    def _count(self, key: str, per_s: float | None, dt: float) -> int | None:
        """Advance cumulative counter `key` by per_s × dt; None when per_s is None."""
        if per_s is None:
            return None
        self._acc[key] = self._acc.get(key, 1000.0) + per_s * dt
        return int(self._acc[key])

    def reset_counters(self, prefix: str) -> None:
        """Make counters starting with `prefix` start again from zero (a restart)."""
        for key in [k for k in self._acc if k.startswith(prefix)]:
            self._acc[key] = 0.0

    def sample(self, dt: float = 2.0) -> Sample:
        """Advance time by `dt` and build the raw sample."""
        self.wall_s += dt
        self.mono_ns += int(dt * NS_PER_S)
        guests = tuple(self._guest(g, dt) for g in self.guests)
        return Sample(
            wall_s=self.wall_s,
            mono_ns=self.mono_ns,
            host=self._host(dt),
            guests=guests,
            sources=(),
            interval_s=dt,
        )

    def push(self, dt: float = 2.0) -> Window:
        """Push one sample into the window."""
        self.window.push(self.sample(dt))
        return self.window

    def run(self, ticks: int, dt: float = 2.0) -> tuple[Finding, ...]:
        """Push `ticks` samples through window and engine; the last findings."""
        findings: tuple[Finding, ...] = ()
        for _ in range(ticks):
            findings = self.engine(self.push(dt))
        return findings

    def _guest(self, g: GuestSpec, dt: float) -> GuestSample:
        k = f"{g.uuid}:"
        if g.not_responding is not None:
            # As the libvirt collector gives it: identity and size, no counter.
            return GuestSample(
                uuid=g.uuid,
                name=g.name,
                dom_id=g.dom_id,
                state=g.state,
                accel=g.accel,
                pid=g.pid,
                vcpus_current=len(g.vcpus),
                not_responding_since_s=self.wall_s,
                not_responding=g.not_responding,
            )
        vcpus = []
        for i, v in enumerate(g.vcpus):
            kvm: dict[str, int] = {}
            if v.exits_per_s is not None:
                kvm["exits.sum"] = self._count(f"{k}v{i}:exits", v.exits_per_s, dt) or 0
            for cat, r in v.categories.items():
                kvm[f"{cat}.sum"] = self._count(f"{k}v{i}:{cat}", r, dt) or 0
            fields: dict[str, Any] = {
                "index": i,
                "state": 1,
                "time_ns": self._count(f"{k}v{i}:cpu", v.cpu_pct / 100 * NS_PER_S, dt),
                "delay_ns": self._count(
                    f"{k}v{i}:steal",
                    None if v.steal_pct is None else v.steal_pct / 100 * NS_PER_S,
                    dt,
                ),
                "kvm": kvm,
            }
            vcpus.append(VcpuSample(**fields, affinity=v.affinity))
        disks = []
        for d in g.disks:
            dk = f"{k}d:{d.target}:"
            fields = {"target": d.target, "path": f"/var/lib/libvirt/images/{g.name}.qcow2"}
            for kind in ("rd", "wr", "fl"):
                iops = getattr(d, f"{kind}_iops")
                ms = getattr(d, f"{kind}_ms")
                fields[f"{kind}_reqs"] = self._count(dk + kind, iops, dt)
                fields[f"{kind}_times_ns"] = self._count(dk + kind + "t", iops * ms * 1e6, dt)
            disks.append(DiskSample(**fields, host_dev=d.host_dev))
        nics = []
        for n in g.nics:
            nk = f"{k}n:{n.name}:"
            fields = {
                "name": n.name,
                "rx_bytes": self._count(nk + "rxb", n.rx_bps / 8, dt),
                "rx_pkts": self._count(nk + "rxp", n.rx_pps, dt),
                "rx_errs": 0,
                "rx_drop": self._count(nk + "rxd", n.rx_drops, dt),
                "tx_bytes": self._count(nk + "txb", n.tx_pps * 500, dt),
                "tx_pkts": self._count(nk + "txp", n.tx_pps, dt),
                "tx_errs": 0,
                "tx_drop": self._count(nk + "txd", n.tx_drops, dt),
            }
            nics.append(NicSample(**fields, bridge=n.bridge))
        threads: tuple[ThreadSample, ...] = ()
        if g.vhost_cpu_pct is not None:
            threads = (
                ThreadSample(
                    tid=(g.pid or 0) + 50,
                    kind="vhost",
                    name=f"vhost-{g.pid}",
                    run_ns=self._count(k + "vhost", g.vhost_cpu_pct / 100 * NS_PER_S, dt),
                ),
            )
        debugfs: dict[str, int] = {}
        if g.debugfs_exits_per_s is not None:
            debugfs["exits"] = self._count(k + "dbgexits", g.debugfs_exits_per_s, dt) or 0
        reasons = {key: self._count(f"{k}r:{key}", r, dt) or 0 for key, r in g.exit_reasons.items()}
        common: dict[str, Any] = {
            "uuid": g.uuid,
            "name": g.name,
            "dom_id": g.dom_id,
            "state": g.state,
            "accel": g.accel,
            "pid": g.pid,
            "vcpus_current": len(g.vcpus),
            "vcpus_maximum": len(g.vcpus),
            "cpu_time_ns": self._count(
                k + "cpu", sum(v.cpu_pct for v in g.vcpus) / 100 * NS_PER_S, dt
            ),
            "vcpus": tuple(vcpus),
            "disks": tuple(disks),
            "nics": tuple(nics),
            "balloon": g.balloon,
            "debugfs": debugfs,
            "exit_reasons": reasons,
            "threads": threads,
        }
        throttled = periods = None
        if g.throttled_pct is not None:
            periods = self._count(k + "periods", 10.0, dt)  # 100 ms CFS period
            throttled = self._count(k + "throttled", 10.0 * g.throttled_pct / 100, dt)
        return GuestSample(
            **common,
            cpu_nr_periods=periods,
            cpu_nr_throttled=throttled,
            balloon_period_s=g.balloon_period_s,
        )

    def _host(self, dt: float) -> HostSample:
        h = self.host
        blockdevs = []
        for d in h.disks:
            hk = f"host:d:{d.name}:"
            fields: dict[str, Any] = {
                "name": d.name,
                "reads": self._count(hk + "r", d.iops, dt) or 0,
                "read_bytes": 0,
                "read_time_ns": self._count(hk + "rt", d.iops * d.ms * 1e6, dt) or 0,
                "writes": self._count(hk + "w", d.iops, dt) or 0,
                "write_bytes": 0,
                "write_time_ns": self._count(hk + "wt", d.iops * d.ms * 1e6, dt) or 0,
                "in_flight": 0,
                "io_ticks_ns": self._count(hk + "io", d.util_pct / 100 * NS_PER_S, dt) or 0,
                "weighted_ns": 0,
                "rotational": d.rotational,
            }
            blockdevs.append(BlockDevSample(**fields, scheduler=d.scheduler))
        netdevs = []
        for n in h.netdevs:
            nk = f"host:n:{n.name}:"
            fields = {
                "name": n.name,
                "rx_bytes": self._count(nk + "rxb", n.rx_bps / 8, dt) or 0,
                "rx_packets": self._count(nk + "rxp", n.rx_pps, dt) or 0,
                "rx_errs": 0,
                "rx_drop": self._count(nk + "rxd", n.rx_drops, dt) or 0,
                "tx_bytes": self._count(nk + "txb", n.tx_bps / 8, dt) or 0,
                "tx_packets": self._count(nk + "txp", n.tx_pps, dt) or 0,
                "tx_errs": 0,
                "tx_drop": self._count(nk + "txd", n.tx_drops, dt) or 0,
                "kind": n.kind,
                "master": n.master,
                "speed_mbps": n.speed_mbps,
                "shaped_mbps": n.shaped_mbps,
                "shaped_by": n.shaped_by,
            }
            netdevs.append(
                NetDevSample(**fields, qdisc_drops=self._count(nk + "q", n.qdisc_drops, dt))
            )
        pressure = dict(h.pressure)
        if "cpu" not in pressure:
            pressure["cpu"] = PressureSample(
                some_total_ns=self._count("host:psi:cpu", h.psi_cpu_some_pct / 100 * NS_PER_S, dt)
            )
        common: dict[str, Any] = {
            "mono_ns": self.mono_ns,
            "hostname": "lab",
            "ncpu": h.ncpu,
            "mem_total_bytes": h.mem_total,
            "mem_available_bytes": h.mem_available,
            "pressure": pressure,
            "blockdevs": tuple(blockdevs),
            "netdevs": tuple(netdevs),
            "softnet": (
                SoftnetSample(
                    cpu=0,
                    processed=0,
                    dropped=self._count("host:softnet", h.softnet_drops, dt) or 0,
                    time_squeeze=0,
                ),
            ),
        }
        ports = tuple(
            OvsPortSample(
                name=n.name,
                bridge=n.ovs_bridge,
                rx_dropped=self._count(f"host:ovs:{n.name}", n.ovs_rx_dropped, dt),
                tx_dropped=0,
            )
            for n in h.netdevs
            if n.ovs_bridge is not None
        )
        datapaths: tuple[OvsDatapathSample, ...] = ()
        if h.ovs_bridges:
            datapaths = (
                OvsDatapathSample(
                    name="netdev@ovs-netdev",
                    hit=0,
                    missed=0,
                    lost=self._count("host:ovs:lost", h.ovs_lost, dt) or 0,
                    bridges=h.ovs_bridges,
                ),
            )
        return HostSample(
            **common,
            ovs_ports=ports,
            ovs_datapaths=datapaths,
            thp_enabled=h.thp,
        )


def balloon(
    used_mib: float,
    *,
    total_mib: float = 80.0,
    current_mib: float = 128.0,
    last_update_s: float | None = None,
    rss_mib: float | None = 130.0,
    major_fault: int = 100,
    minor_fault: int = 10_000,
    usable: bool = True,
    disk_caches_mib: float | None = 5.0,
) -> BalloonSample:
    """A balloon gauge for a guest with `used_mib` of `total_mib` MemTotal in use."""
    left = total_mib - used_mib
    return BalloonSample(
        current_bytes=int(current_mib * MIB),
        maximum_bytes=int(current_mib * MIB),
        available_bytes=int(total_mib * MIB),
        usable_bytes=int(left * MIB) if usable else None,
        unused_bytes=int((left - (disk_caches_mib or 0)) * MIB),
        disk_caches_bytes=int(disk_caches_mib * MIB) if disk_caches_mib is not None else None,
        rss_bytes=int(rss_mib * MIB) if rss_mib is not None else None,
        swap_in_bytes=0,
        swap_out_bytes=0,
        major_fault=major_fault,
        minor_fault=minor_fault,
        last_update_s=int(last_update_s) if last_update_s is not None else None,
    )


def active(findings: tuple[Finding, ...], detector: str) -> list[Finding]:
    """The findings of one detector."""
    return [f for f in findings if f.detector == detector]


def problems(findings: tuple[Finding, ...]) -> list[Finding]:
    """Warning and critical findings (info notes such as "no balloon stats" left out)."""
    return [f for f in findings if f.severity != "info"]
