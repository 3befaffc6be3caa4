"""The series of one tick: a `Sample` and its `Snapshot` as metric points.

Layer: pure (no clock, no I/O). Counters are the raw cumulative values of the
sample (ns converted to seconds), never rates: Prometheus computes rates with
`rate()`, and a guest restart is a counter reset it already understands. An unknown
value (None) is no series at all, never a 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from kvmtop.model.finding import Finding
from kvmtop.model.incident import Incident
from kvmtop.model.rates.kvm import EXIT_CATEGORIES
from kvmtop.model.sample import GuestSample, HostSample, Sample
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.units import BITS_PER_BYTE, BITS_PER_MBIT, NS_PER_S

_VMSTAT_COUNTERS = ("pgmajfault", "pswpin", "pswpout")
# KVM binary stats of halt polling and HLT (Linux >= 5.8 / 5.15, x86 and generic
# KVM_GENERIC_VCPU_STATS) → metric name.
_HALT_STATS = (
    ("halt_poll_success_ns", "kvmtop_guest_vcpu_halt_poll_success_seconds_total"),
    ("halt_poll_fail_ns", "kvmtop_guest_vcpu_halt_poll_fail_seconds_total"),
    ("halt_wait_ns", "kvmtop_guest_vcpu_halt_wait_seconds_total"),
)


def _s(ns: int | None) -> float | None:
    """Nanoseconds → seconds (None stays None: unknown is never exported as 0)."""
    return None if ns is None else ns / NS_PER_S


Labels = tuple[str, ...]
"""The label values of one series, in the order of its family's `MetricSpec.labels`."""


class Points:
    """The series of one tick by family name, in the order they were added: name →
    [(label values, value)]. Label values are raw here; the encoders escape them."""

    __slots__ = ("by_name",)

    def __init__(self) -> None:
        self.by_name: dict[str, list[tuple[Labels, float]]] = {}

    def add(self, name: str, labels: Sequence[str], value: float | None) -> None:
        """Add one point; a None value is skipped (the series is absent)."""
        if value is None:
            return
        series = self.by_name.get(name)
        if series is None:
            series = self.by_name[name] = []
        series.append((tuple(labels), value))


def _guest(out: Points, g: GuestSample) -> None:
    """Every metric of one guest."""
    gl = (g.name, g.uuid)
    out.add("kvmtop_guest_info", (*gl, g.accel or "unknown", g.managed), 1)
    out.add("kvmtop_guest_state", (*gl, g.state), 1)
    out.add("kvmtop_guest_vcpus", gl, g.vcpus_current)
    out.add("kvmtop_guest_vcpus_maximum", gl, g.vcpus_maximum)
    out.add("kvmtop_guest_cpu_seconds_total", gl, _s(g.cpu_time_ns))
    out.add("kvmtop_guest_cpu_user_seconds_total", gl, _s(g.cpu_user_ns))
    out.add("kvmtop_guest_cpu_system_seconds_total", gl, _s(g.cpu_system_ns))
    for v in g.vcpus:
        vl = (*gl, str(v.index))
        out.add("kvmtop_guest_vcpu_time_seconds_total", vl, _s(v.time_ns))
        out.add("kvmtop_guest_vcpu_delay_seconds_total", vl, _s(v.delay_ns))
        out.add("kvmtop_guest_vcpu_sched_run_seconds_total", vl, _s(v.sched_run_ns))
        out.add("kvmtop_guest_vcpu_sched_delay_seconds_total", vl, _s(v.sched_delay_ns))
        # Binary stats arrive as "<name>.<sum|cur|max>"; cumulative ones are ".sum".
        out.add("kvmtop_guest_vcpu_exits_total", vl, v.kvm.get("exits.sum"))
        for category in EXIT_CATEGORIES:
            out.add(
                "kvmtop_guest_vcpu_exit_category_total",
                (*vl, category),
                v.kvm.get(f"{category}.sum"),
            )
        for stat, name in _HALT_STATS:
            out.add(name, vl, _s(v.kvm.get(f"{stat}.sum")))
    out.add("kvmtop_guest_debugfs_exits_total", gl, g.debugfs.get("exits"))
    for category in EXIT_CATEGORIES:
        out.add(
            "kvmtop_guest_debugfs_exit_category_total", (*gl, category), g.debugfs.get(category)
        )
    for key, count in sorted(g.exit_reasons.items()):
        tracepoint, _, reason = key.partition(":")
        out.add("kvmtop_guest_tracepoint_events_total", (*gl, tracepoint, reason), count)
    for t in g.threads:
        tl = (*gl, t.kind, t.name, str(t.tid))
        out.add("kvmtop_guest_thread_run_seconds_total", tl, _s(t.run_ns))
        out.add("kvmtop_guest_thread_delay_seconds_total", tl, _s(t.delay_ns))
    _disks(out, g)
    _nics(out, g)
    _balloon(out, g)


def _disks(out: Points, g: GuestSample) -> None:
    for d in g.disks:
        dl = (g.name, g.uuid, d.target)
        out.add("kvmtop_guest_disk_read_requests_total", dl, d.rd_reqs)
        out.add("kvmtop_guest_disk_read_bytes_total", dl, d.rd_bytes)
        out.add("kvmtop_guest_disk_read_time_seconds_total", dl, _s(d.rd_times_ns))
        out.add("kvmtop_guest_disk_write_requests_total", dl, d.wr_reqs)
        out.add("kvmtop_guest_disk_write_bytes_total", dl, d.wr_bytes)
        out.add("kvmtop_guest_disk_write_time_seconds_total", dl, _s(d.wr_times_ns))
        out.add("kvmtop_guest_disk_flush_requests_total", dl, d.fl_reqs)
        out.add("kvmtop_guest_disk_flush_time_seconds_total", dl, _s(d.fl_times_ns))
        out.add("kvmtop_guest_disk_capacity_bytes", dl, d.capacity_bytes)
        out.add("kvmtop_guest_disk_allocation_bytes", dl, d.allocation_bytes)
        out.add("kvmtop_guest_disk_physical_bytes", dl, d.physical_bytes)


def _nics(out: Points, g: GuestSample) -> None:
    for n in g.nics:
        nl = (g.name, g.uuid, n.name)
        out.add("kvmtop_guest_nic_receive_bytes_total", nl, n.rx_bytes)
        out.add("kvmtop_guest_nic_receive_packets_total", nl, n.rx_pkts)
        out.add("kvmtop_guest_nic_receive_errors_total", nl, n.rx_errs)
        out.add("kvmtop_guest_nic_receive_drops_total", nl, n.rx_drop)
        out.add("kvmtop_guest_nic_transmit_bytes_total", nl, n.tx_bytes)
        out.add("kvmtop_guest_nic_transmit_packets_total", nl, n.tx_pkts)
        out.add("kvmtop_guest_nic_transmit_errors_total", nl, n.tx_errs)
        out.add("kvmtop_guest_nic_transmit_drops_total", nl, n.tx_drop)


def _balloon(out: Points, g: GuestSample) -> None:
    b = g.balloon
    if b is None:
        return
    gl = (g.name, g.uuid)
    out.add("kvmtop_guest_balloon_current_bytes", gl, b.current_bytes)
    out.add("kvmtop_guest_balloon_maximum_bytes", gl, b.maximum_bytes)
    out.add("kvmtop_guest_memory_total_bytes", gl, b.available_bytes)
    out.add("kvmtop_guest_memory_available_bytes", gl, b.usable_bytes)
    out.add("kvmtop_guest_memory_free_bytes", gl, b.unused_bytes)
    out.add("kvmtop_guest_memory_disk_caches_bytes", gl, b.disk_caches_bytes)
    out.add("kvmtop_guest_qemu_rss_bytes", gl, b.rss_bytes)
    out.add("kvmtop_guest_memory_swap_in_bytes_total", gl, b.swap_in_bytes)
    out.add("kvmtop_guest_memory_swap_out_bytes_total", gl, b.swap_out_bytes)
    out.add("kvmtop_guest_memory_major_faults_total", gl, b.major_fault)
    out.add("kvmtop_guest_memory_minor_faults_total", gl, b.minor_fault)
    out.add("kvmtop_guest_balloon_last_update_timestamp_seconds", gl, b.last_update_s)


def _host(out: Points, h: HostSample) -> None:
    """Every host baseline metric."""
    out.add("kvmtop_host_cpus", (), h.ncpu or None)
    if h.cpu is not None:
        c = h.cpu
        for mode, ns in (
            ("user", c.user_ns),
            ("nice", c.nice_ns),
            ("system", c.system_ns),
            ("idle", c.idle_ns),
            ("iowait", c.iowait_ns),
            ("irq", c.irq_ns),
            ("softirq", c.softirq_ns),
            ("steal", c.steal_ns),
        ):
            out.add("kvmtop_host_cpu_seconds_total", (mode,), _s(ns))
        out.add("kvmtop_host_cpu_guest_seconds_total", ("user",), _s(c.guest_ns))
        out.add("kvmtop_host_cpu_guest_seconds_total", ("nice",), _s(c.guest_nice_ns))
    out.add("kvmtop_host_run_delay_seconds_total", (), _s(h.run_delay_ns))
    if h.loadavg is not None:
        for period, load in zip(("1m", "5m", "15m"), h.loadavg, strict=True):
            out.add("kvmtop_host_load_average", (period,), load)
    out.add("kvmtop_host_memory_total_bytes", (), h.mem_total_bytes)
    out.add("kvmtop_host_memory_available_bytes", (), h.mem_available_bytes)
    out.add("kvmtop_host_memory_free_bytes", (), h.mem_free_bytes)
    out.add("kvmtop_host_swap_total_bytes", (), h.swap_total_bytes)
    out.add("kvmtop_host_swap_free_bytes", (), h.swap_free_bytes)
    for key in _VMSTAT_COUNTERS:
        out.add("kvmtop_host_vmstat_total", (key,), h.vmstat.get(key))
    for resource, p in sorted(h.pressure.items()):
        out.add(
            "kvmtop_host_pressure_stalled_seconds_total", (resource, "some"), _s(p.some_total_ns)
        )
        out.add(
            "kvmtop_host_pressure_stalled_seconds_total", (resource, "full"), _s(p.full_total_ns)
        )
    for d in h.blockdevs:
        dl = (d.name,)
        out.add("kvmtop_host_disk_reads_completed_total", dl, d.reads)
        out.add("kvmtop_host_disk_read_bytes_total", dl, d.read_bytes)
        out.add("kvmtop_host_disk_read_time_seconds_total", dl, _s(d.read_time_ns))
        out.add("kvmtop_host_disk_writes_completed_total", dl, d.writes)
        out.add("kvmtop_host_disk_written_bytes_total", dl, d.write_bytes)
        out.add("kvmtop_host_disk_write_time_seconds_total", dl, _s(d.write_time_ns))
        out.add("kvmtop_host_disk_flushes_completed_total", dl, d.flushes)
        out.add("kvmtop_host_disk_flush_time_seconds_total", dl, _s(d.flush_time_ns))
        out.add("kvmtop_host_disk_io_time_seconds_total", dl, _s(d.io_ticks_ns))
        out.add("kvmtop_host_disk_io_time_weighted_seconds_total", dl, _s(d.weighted_ns))
        out.add("kvmtop_host_disk_io_now", dl, d.in_flight)
    for n in h.netdevs:
        nl = (n.name,)
        out.add("kvmtop_host_network_info", (n.name, n.kind, n.master or "", n.operstate or ""), 1)
        speed = None if n.speed_mbps is None else n.speed_mbps * BITS_PER_MBIT / BITS_PER_BYTE
        out.add("kvmtop_host_network_speed_bytes", nl, speed)
        out.add("kvmtop_host_network_receive_bytes_total", nl, n.rx_bytes)
        out.add("kvmtop_host_network_receive_packets_total", nl, n.rx_packets)
        out.add("kvmtop_host_network_receive_errors_total", nl, n.rx_errs)
        out.add("kvmtop_host_network_receive_drops_total", nl, n.rx_drop)
        out.add("kvmtop_host_network_receive_fifo_total", nl, n.rx_fifo)
        out.add("kvmtop_host_network_transmit_bytes_total", nl, n.tx_bytes)
        out.add("kvmtop_host_network_transmit_packets_total", nl, n.tx_packets)
        out.add("kvmtop_host_network_transmit_errors_total", nl, n.tx_errs)
        out.add("kvmtop_host_network_transmit_drops_total", nl, n.tx_drop)
    for s in h.softnet:
        cl = (str(s.cpu),)
        out.add("kvmtop_host_softnet_processed_total", cl, s.processed)
        out.add("kvmtop_host_softnet_dropped_total", cl, s.dropped)
        out.add("kvmtop_host_softnet_times_squeezed_total", cl, s.time_squeeze)
    out.add("kvmtop_process_cpu_seconds_total", (), _s(h.self_cpu_ns))
    out.add("kvmtop_process_resident_memory_bytes", (), h.self_rss_bytes)


def _findings(out: Points, findings: Iterable[Finding]) -> None:
    """One series per (detector, guest, subject, severity), valued by the count.

    Findings are keyed finer than these labels inside the engine, and a duplicate
    series would make the whole exposition invalid, so findings sharing the labels
    add up instead.
    """
    counts = Counter((f.detector, f.guest or "", f.subject, f.severity) for f in findings)
    for labels, n in sorted(counts.items()):
        out.add("kvmtop_finding", labels, n)


def _incidents(out: Points, incidents: Iterable[Incident]) -> None:
    """The series of each open incident, keyed by its id and cause."""
    for i in incidents:
        il = (i.id, i.cause)
        out.add("kvmtop_incident", (*il, i.kind, i.severity, "true" if i.active else "false"), 1)
        out.add("kvmtop_incident_rank", il, i.rank)
        out.add("kvmtop_incident_guests", il, len(i.guests))
        out.add("kvmtop_incident_since_timestamp_seconds", il, i.since_s)
        out.add("kvmtop_incident_eta_seconds", il, i.eta_s)
        out.add("kvmtop_incident_crossings_total", il, i.crossings)


def tick_points(sample: Sample, snapshot: Snapshot, tick_elapsed_s: float | None = None) -> Points:
    """The points of one tick: raw counters of `sample`, findings and incidents of
    `snapshot`.

    Args:
        sample: the raw sample.
        snapshot: the snapshot the pipeline built from it (for the findings and
            incidents).
        tick_elapsed_s: wall time of the whole tick, exported as
            kvmtop_collection_duration_seconds{source="tick"} when given.
    """
    out = Points()
    for g in sample.guests:
        _guest(out, g)
    if sample.host is not None:
        _host(out, sample.host)
    _findings(out, snapshot.findings)
    _incidents(out, snapshot.incidents)
    out.add(
        "kvmtop_host_info",
        (sample.host.hostname if sample.host is not None else "", snapshot.mode),
        1,
    )
    out.add("kvmtop_last_sample_timestamp_seconds", (), sample.wall_s)
    for status in sample.sources:
        out.add("kvmtop_source_up", (status.name,), 1 if status.ok else 0)
        out.add("kvmtop_collection_duration_seconds", (status.name,), _s(status.duration_ns))
    out.add("kvmtop_collection_duration_seconds", ("tick",), tick_elapsed_s)
    return out
