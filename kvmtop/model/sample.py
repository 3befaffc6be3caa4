"""Raw samples: cumulative counters exactly as the sources reported them.

Layer: model (pure). Must not import textual, rich, libvirt, psutil or any collector.

A `Sample` is what one tick of the sampler produced and what the recorder stores.
It holds *cumulative* counters and gauges, never rates: rates come from
`kvmtop.model.rates.frame.derive(prev, cur)`, so live and replay compute them the same way
and an improved derivation applies to old recordings.

Units are normalised at ingest and carried in field names: `_ns` nanoseconds,
`_bytes` bytes, `_s` seconds, `_pct` percent. A value a source did not report is
`None` (unknown), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import msgspec

SCHEMA_VERSION = 1
"""Version of the sample layout; bumped on incompatible changes (recordings carry it)."""


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """Health of one collector during one tick.

    Attributes:
        name: collector name ("libvirt", "host", "sched", ...).
        ok: whether the source delivered data this tick.
        reason: human explanation when it did not, or when it delivered only part
            (e.g. "libvirt-python not installed", "debugfs: exits EPERM (lockdown)").
        duration_ns: wall time the collection took.
        detail: extra facts worth showing in the sources view (versions, URI, ...).
    """

    name: str
    ok: bool
    reason: str | None = None
    duration_ns: int = 0
    detail: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- guests


class VcpuSample(msgspec.Struct, frozen=True, gc=False):
    """One vCPU of a guest.

    `time_ns` and `delay_ns` come from libvirt's vcpu group (`vcpu.N.time`, and
    `vcpu.N.delay` since libvirt 7.2 = schedstat run_delay of the vCPU thread, which is
    what KVM reports to the guest as steal). `sched_*` come from
    /proc/PID/task/TID/schedstat read by kvmtop itself (fallback and finer grain).
    `kvm` holds the KVM binary statistics libvirt re-exports for KVM guests
    (`vcpu.N.<name>.<sum|cur|max>` since libvirt 8.9 with QEMU >= 7.1), keyed
    "<name>.<type>", e.g. "exits.sum", "halt_wait_ns.sum". `affinity` lists the host
    CPUs the vCPU thread may run on (Cpus_allowed_list of its /proc status).
    """

    index: int
    state: int | None = None
    time_ns: int | None = None
    delay_ns: int | None = None
    tid: int | None = None
    sched_run_ns: int | None = None
    sched_delay_ns: int | None = None
    kvm: dict[str, int] = msgspec.field(default_factory=dict)
    affinity: tuple[int, ...] | None = None


class DiskSample(msgspec.Struct, frozen=True, gc=False):
    """One guest block device (`block.N.*`, top of the backing chain only).

    Times are libvirt's totals in ns (QEMU rd_total_time_ns etc.). `path` is the
    source (image file or block device) and `host_dev` the whole host disk that holds
    it (file → filesystem st_dev → /sys/dev/block → parent disk, through dm/md
    slaves); None for network storage inside QEMU (rbd, iscsi, nbd).
    """

    target: str
    path: str | None = None
    host_dev: str | None = None
    rd_reqs: int | None = None
    rd_bytes: int | None = None
    rd_times_ns: int | None = None
    wr_reqs: int | None = None
    wr_bytes: int | None = None
    wr_times_ns: int | None = None
    fl_reqs: int | None = None
    fl_times_ns: int | None = None
    capacity_bytes: int | None = None
    allocation_bytes: int | None = None
    physical_bytes: int | None = None


class NicSample(msgspec.Struct, frozen=True, gc=False):
    """One guest network interface, counters from the guest's point of view.

    libvirt reads the host tap's /proc/net/dev row and swaps RX/TX for taps
    (virNetDevTapInterfaceStats), so `rx_drop` (guest RX drops) is the tap's
    tx_dropped: the tun ring was full because the guest did not drain it.
    `bridge` is the switch the vNIC is plugged into (`<source bridge=...>` of the
    domain XML) and `switch` its kind: "linux" (Linux bridge), "ovs" (Open vSwitch,
    `<virtualport type='openvswitch'/>`), or None when unknown.

    RTT fields come from the opt-in net probe (`kvmtop.collectors.netprobe`): `addr`
    is the guest IPv4 address probed; `rtt_ns` / `rtt_p95_ns` the median and 95th
    percentile of the answered probes in the probe's window; `host_rtt_ns` the median
    RTT to the host's own address on `bridge` over the same window (the host
    baseline); `rtt_lost` the cumulative count of probes that got no answer;
    `rtt_reason` why `rtt_ns` is None (no address, guest drops ICMP, ...).
    """

    name: str
    bridge: str | None = None
    switch: str | None = None
    rx_bytes: int | None = None
    rx_pkts: int | None = None
    rx_errs: int | None = None
    rx_drop: int | None = None
    tx_bytes: int | None = None
    tx_pkts: int | None = None
    tx_errs: int | None = None
    tx_drop: int | None = None
    addr: str | None = None
    rtt_ns: int | None = None
    rtt_p95_ns: int | None = None
    host_rtt_ns: int | None = None
    rtt_lost: int | None = None
    rtt_reason: str | None = None


class BalloonSample(msgspec.Struct, frozen=True, gc=False):
    """Guest memory as reported by the virtio balloon (libvirt balloon group).

    libvirt reports KiB; converted to bytes at ingest. `available_bytes` is the
    guest's MemTotal and `usable_bytes` its MemAvailable (virsh(1) domstats, QEMU
    docs/virtio-balloon-stats.txt). The guest-internal stats refresh only when a
    stats period is set; `last_update_s` (host epoch seconds) says when.
    """

    current_bytes: int | None = None
    maximum_bytes: int | None = None
    available_bytes: int | None = None
    usable_bytes: int | None = None
    unused_bytes: int | None = None
    disk_caches_bytes: int | None = None
    rss_bytes: int | None = None
    swap_in_bytes: int | None = None
    swap_out_bytes: int | None = None
    major_fault: int | None = None
    minor_fault: int | None = None
    last_update_s: int | None = None


class ThreadSample(msgspec.Struct, frozen=True, gc=False):
    """A non-vCPU thread that works for a guest (schedstat of /proc/PID/task/TID).

    `kind` is "emulator" (QEMU main loop), "iothread", "vhost" (vhost-net worker
    `vhost-<pid>`) or "other".
    """

    tid: int
    kind: str
    name: str
    run_ns: int | None = None
    delay_ns: int | None = None


class GuestSample(msgspec.Struct, frozen=True, gc=False):
    """Everything collected about one guest in one tick.

    Attributes:
        uuid: libvirt domain UUID (the stable key).
        name: domain name.
        dom_id: libvirt domain ID; changes when the domain restarts.
        state: "running", "paused", "shutoff", "crashed", "pmsuspended", "blocked",
            "shutdown", "nostate".
        accel: "kvm" when the guest runs on KVM, "tcg" when QEMU emulates it,
            None when unknown (e.g. remote URI without the domain XML).
        pid: QEMU process id when known (local hosts only).
        vm_kvm: VM-wide KVM binary stats (`vm.<name>.<type>` keys, "<name>.<type>").
        managed: "libvirt" for libvirt domains, "unmanaged" for KVM processes found
            without libvirt (plain QEMU, Firecracker, ...).
        debugfs: VM-wide KVM counters read from debugfs `<pid>-<fd>/` (only the
            files that were readable; under lockdown the cumulative ones are not).
        exit_reasons: cumulative counts from perf tracepoints, keyed
            "<tracepoint>:<reason>", e.g. "kvm_exit:HLT", "kvm_userspace_exit:IO",
            "kvm_pio:total"; empty when tracing is off for this guest.
        threads: emulator, iothread and vhost threads with their schedstat.
        max_memory_bytes: `<memory>` of the domain XML.
        balloon_period_s: `<memballoon><stats period=...>`; 0 or None means the
            guest memory stats never refresh.
        cpu_nr_periods / cpu_nr_throttled / cpu_throttled_ns: cgroup v2 `cpu.stat` of
            the VM's scope (CFS quota throttling shows up as guest steal).
        not_responding_since_s: wall time (Unix s) since which the guest has not
            answered within the tick's deadline: its QEMU monitor has not replied to a
            command libvirt sent then (`kvmtop.collectors.libvirt`). Its counters are
            then left out (None): only identity and state are known.
        not_responding: why it is blank, when `not_responding_since_s` is set.
    """

    uuid: str
    name: str
    dom_id: int | None = None
    state: str = "nostate"
    state_reason: int | None = None
    accel: str | None = None
    pid: int | None = None
    vcpus_current: int | None = None
    vcpus_maximum: int | None = None
    cpu_time_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    vcpus: tuple[VcpuSample, ...] = ()
    disks: tuple[DiskSample, ...] = ()
    nics: tuple[NicSample, ...] = ()
    balloon: BalloonSample | None = None
    vm_kvm: dict[str, int] = msgspec.field(default_factory=dict)
    managed: str = "libvirt"
    debugfs: dict[str, int] = msgspec.field(default_factory=dict)
    exit_reasons: dict[str, int] = msgspec.field(default_factory=dict)
    threads: tuple[ThreadSample, ...] = ()
    max_memory_bytes: int | None = None
    balloon_period_s: int | None = None
    cpu_nr_periods: int | None = None
    cpu_nr_throttled: int | None = None
    cpu_throttled_ns: int | None = None
    not_responding_since_s: float | None = None
    not_responding: str | None = None


# --------------------------------------------------------------------------- host


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Host CPU time from the `cpu` line of /proc/stat (USER_HZ ticks → ns)."""

    user_ns: int
    nice_ns: int
    system_ns: int
    idle_ns: int
    iowait_ns: int
    irq_ns: int
    softirq_ns: int
    steal_ns: int
    guest_ns: int = 0
    guest_nice_ns: int = 0

    @property
    def total_ns(self) -> int:
        """All accounted time (guest time is already inside user/nice)."""
        return (
            self.user_ns
            + self.nice_ns
            + self.system_ns
            + self.idle_ns
            + self.iowait_ns
            + self.irq_ns
            + self.softirq_ns
            + self.steal_ns
        )

    @property
    def busy_ns(self) -> int:
        """Time not idle, not waiting for I/O and not stolen."""
        return self.total_ns - self.idle_ns - self.iowait_ns - self.steal_ns


@dataclass(frozen=True, slots=True)
class PressureSample:
    """One /proc/pressure/<resource> file (PSI, Linux >= 4.20).

    `*_total_ns` are the cumulative stall times (the file's `total=` is µs);
    `*_avg10`/`*_avg60` are the kernel's running averages in percent.
    """

    some_total_ns: int | None = None
    some_avg10: float | None = None
    some_avg60: float | None = None
    full_total_ns: int | None = None
    full_avg10: float | None = None
    full_avg60: float | None = None


class BlockDevSample(msgspec.Struct, frozen=True, gc=False):
    """One row of /proc/diskstats (Documentation/admin-guide/iostats.rst).

    Sectors are 512 bytes whatever the device's sector size; times are ms in the
    file, ns here. Flush fields exist since Linux 5.5. `scheduler` is the selected
    I/O scheduler (/sys/block/<dev>/queue/scheduler).
    """

    name: str
    reads: int
    read_bytes: int
    read_time_ns: int
    writes: int
    write_bytes: int
    write_time_ns: int
    in_flight: int
    io_ticks_ns: int
    weighted_ns: int
    flushes: int | None = None
    flush_time_ns: int | None = None
    rotational: bool | None = None
    is_partition: bool = False
    scheduler: str | None = None


class NetDevSample(msgspec.Struct, frozen=True, gc=False):
    """One host network interface (/proc/net/dev plus /sys/class/net/<if>).

    Counters are from the host's point of view. `kind` is "physical", "bridge",
    "ovs", "tap", "veth", "loopback", "bond" or "virtual"; `speed_mbps` is only
    meaningful for physical NICs and bonds (tun, veth and bridges report made-up
    speeds: drivers/net/tun.c, net/bridge/br_device.c). `qdisc_drops` is the root
    qdisc's cumulative drop count (what `tc -s qdisc` shows): shaping (tbf/htb)
    drops land there, not in /proc/net/dev. `shaped_mbps` is what the root qdisc lets
    through when it shapes, in Mbit/s, and `shaped_by` that qdisc's kind: "tbf" (its
    rate) or "htb" (its top-level classes' min(rate, ceil), summed); both None for
    any other root qdisc and in recordings made before they existed.
    """

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errs: int
    rx_drop: int
    tx_bytes: int
    tx_packets: int
    tx_errs: int
    tx_drop: int
    rx_fifo: int = 0
    kind: str = "virtual"
    master: str | None = None
    speed_mbps: int | None = None
    operstate: str | None = None
    qdisc_drops: int | None = None
    qdisc_backlog_bytes: int | None = None
    shaped_mbps: float | None = None
    shaped_by: str | None = None


@dataclass(frozen=True, slots=True)
class SoftnetSample:
    """One CPU's row of /proc/net/softnet_stat (hex columns 1-3)."""

    cpu: int
    processed: int
    dropped: int
    time_squeeze: int


@dataclass(frozen=True, slots=True)
class OvsPortSample:
    """One Open vSwitch port (OVSDB Interface.statistics; refreshed by ovs-vswitchd
    every other_config:stats-update-interval, 5 s by default)."""

    name: str
    bridge: str
    rx_packets: int | None = None
    tx_packets: int | None = None
    rx_dropped: int | None = None
    tx_dropped: int | None = None
    rx_errors: int | None = None
    tx_errors: int | None = None


@dataclass(frozen=True, slots=True)
class OvsDatapathSample:
    """One OVS datapath (`ovs-appctl dpctl/show -s`): `lost` counts upcalls dropped
    because a datapath queue overflowed (lib/dpif.h dpif_dp_stats.n_lost)."""

    name: str
    hit: int | None = None
    missed: int | None = None
    lost: int | None = None
    bridges: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HostSample:
    """Host baseline counters for one tick.

    Attributes:
        mono_ns: monotonic clock right after the host sources were read.
        run_delay_ns: sum over CPUs of /proc/schedstat run-queue wait (needs
            CONFIG_SCHEDSTATS; None where the file is absent).
        self_cpu_ns: CPU time used so far by the kvmtop process itself.
        thp_enabled: the selected word of /sys/kernel/mm/transparent_hugepage/enabled.
        ovs_mono_ns: monotonic time `ovs_ports` and `ovs_datapaths` were read. They
            are refreshed on a slow tier and carried forward in between, so rate OVS
            counters over the difference of this field, only where it changed.
    """

    mono_ns: int
    hostname: str = ""
    kernel: str = ""
    ncpu: int = 0
    cpu: CpuTimes | None = None
    run_delay_ns: int | None = None
    run_time_ns: int | None = None
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    mem_free_bytes: int | None = None
    swap_total_bytes: int | None = None
    swap_free_bytes: int | None = None
    vmstat: dict[str, int] = field(default_factory=dict)
    pressure: dict[str, PressureSample] = field(default_factory=dict)
    blockdevs: tuple[BlockDevSample, ...] = ()
    netdevs: tuple[NetDevSample, ...] = ()
    softnet: tuple[SoftnetSample, ...] = ()
    loadavg: tuple[float, float, float] | None = None
    self_cpu_ns: int | None = None
    self_rss_bytes: int | None = None
    ovs_ports: tuple[OvsPortSample, ...] = ()
    ovs_datapaths: tuple[OvsDatapathSample, ...] = ()
    ovs_mono_ns: int | None = None
    thp_enabled: str | None = None


# --------------------------------------------------------------------------- tick


@dataclass(frozen=True, slots=True)
class Sample:
    """One tick: host baseline, every guest, and the health of every source.

    Attributes:
        wall_s: wall-clock time (Unix seconds) when the tick started.
        mono_ns: monotonic time when the guest sources returned (rates use it).
        host: host counters, or None when the host source failed.
        guests: one entry per domain, any order.
        sources: status of each collector this tick.
        interval_s: the sampling interval the sampler was asked for.
    """

    wall_s: float
    mono_ns: int
    host: HostSample | None
    guests: tuple[GuestSample, ...]
    sources: tuple[SourceStatus, ...]
    interval_s: float = 2.0


def shift_clocks(
    sample: Sample, wall_s: float, mono_ns: int, hostname: str | None = None
) -> Sample:
    """`sample` as if taken `wall_s` seconds (wall clock) and `mono_ns` (monotonic)
    later, optionally on another host name: every clock field moves (the tick's, the
    host sources', OVS's, each balloon's last update (whole seconds: pass a whole
    `wall_s` to keep it exact), a guest's not-responding start), counters stay.
    `kvmtop serve --replay` serves a recording this way."""
    host = sample.host
    if host is not None:
        host = replace(
            host,
            mono_ns=host.mono_ns + mono_ns,
            ovs_mono_ns=None if host.ovs_mono_ns is None else host.ovs_mono_ns + mono_ns,
            hostname=host.hostname if hostname is None else hostname,
        )
    guests = tuple(
        g
        if g.balloon is None and g.not_responding_since_s is None
        else msgspec.structs.replace(
            g,
            balloon=g.balloon
            if g.balloon is None or g.balloon.last_update_s is None
            else msgspec.structs.replace(
                g.balloon, last_update_s=g.balloon.last_update_s + round(wall_s)
            ),
            not_responding_since_s=None
            if g.not_responding_since_s is None
            else g.not_responding_since_s + wall_s,
        )
        for g in sample.guests
    )
    return replace(
        sample,
        wall_s=sample.wall_s + wall_s,
        mono_ns=sample.mono_ns + mono_ns,
        host=host,
        guests=guests,
    )
