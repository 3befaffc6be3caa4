"""The metric families kvmtop exports: names, types, labels, help, units.

Layer: model-level data (pure). `kvmtop serve` and `kvmtop export --format
openmetrics` expose these families; docs/metrics.md lists the same (a test keeps the
two in step). Label values are names from outside (guests, disks, interfaces,
threads): `label_value` escapes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from kvmtop.model.text import visible

COUNTER = "counter"
GAUGE = "gauge"

GUEST = ("guest", "uuid")
VCPU = (*GUEST, "vcpu")
DISK = (*GUEST, "disk")
NIC = (*GUEST, "nic")
INCIDENT = ("id", "cause")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric family.

    Attributes:
        name: the sample name as exposed (counters end in `_total`).
        type: COUNTER or GAUGE.
        labels: label names, in order.
        help: what it means (the `# HELP` line; also docs/metrics.md).
        unit: "seconds", "bytes" or "" (OpenMetrics `# UNIT`; the name ends with it).
    """

    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    unit: str = ""

    def family(self) -> CounterMetricFamily | GaugeMetricFamily:
        """An empty prometheus-client metric family for this spec."""
        if self.type == COUNTER:
            return CounterMetricFamily(self.name, self.help, labels=self.labels, unit=self.unit)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels, unit=self.unit)


def _c(name: str, labels: tuple[str, ...], text: str, unit: str = "") -> MetricSpec:
    return MetricSpec(name, COUNTER, labels, text, unit)


def _g(name: str, labels: tuple[str, ...], text: str, unit: str = "") -> MetricSpec:
    return MetricSpec(name, GAUGE, labels, text, unit)


S = "seconds"
B = "bytes"

METRICS: tuple[MetricSpec, ...] = (
    # ------------------------------------------------------------------ guests
    _g(
        "kvmtop_guest_info",
        (*GUEST, "accel", "managed"),
        "1 per guest; accel is kvm, tcg or unknown, managed is libvirt or unmanaged",
    ),
    _g(
        "kvmtop_guest_state",
        (*GUEST, "state"),
        "1 for the guest's current libvirt state (running, paused, shutoff, ...)",
    ),
    _g("kvmtop_guest_vcpus", GUEST, "vCPUs currently online (libvirt vcpu.current)"),
    _g("kvmtop_guest_vcpus_maximum", GUEST, "maximum vCPUs (libvirt vcpu.maximum)"),
    _c(
        "kvmtop_guest_cpu_seconds_total",
        GUEST,
        "CPU time of the whole QEMU process: vCPUs, emulator and I/O threads (cpu.time)",
        S,
    ),
    _c("kvmtop_guest_cpu_user_seconds_total", GUEST, "user CPU time of QEMU (cpu.user)", S),
    _c("kvmtop_guest_cpu_system_seconds_total", GUEST, "system CPU time of QEMU (cpu.system)", S),
    _c(
        "kvmtop_guest_vcpu_time_seconds_total",
        VCPU,
        "vCPU thread CPU time (vcpu.N.time; 10 ms ticks)",
        S,
    ),
    _c(
        "kvmtop_guest_vcpu_delay_seconds_total",
        VCPU,
        "vCPU run-queue wait = steal the guest sees (vcpu.N.delay, libvirt >= 7.2)",
        S,
    ),
    _c(
        "kvmtop_guest_vcpu_sched_run_seconds_total",
        VCPU,
        "vCPU thread run time from /proc/PID/task/TID/schedstat (ns resolution)",
        S,
    ),
    _c(
        "kvmtop_guest_vcpu_sched_delay_seconds_total",
        VCPU,
        "vCPU thread run-queue wait from schedstat (steal; fallback for libvirt < 7.2)",
        S,
    ),
    _c(
        "kvmtop_guest_vcpu_exits_total",
        VCPU,
        "VM exits of the vCPU (KVM binary stat exits, libvirt >= 8.9 with QEMU >= 7.1)",
    ),
    _c(
        "kvmtop_guest_vcpu_exit_category_total",
        (*VCPU, "category"),
        "exits by KVM category (halt_exits, io_exits, mmio_exits, ...; "
        "insn_emulation counts emulated instructions)",
    ),
    _c(
        "kvmtop_guest_vcpu_halt_poll_success_seconds_total",
        VCPU,
        "host CPU time spent halt-polling before a wakeup arrived (halt_poll_success_ns)",
        S,
    ),
    _c(
        "kvmtop_guest_vcpu_halt_poll_fail_seconds_total",
        VCPU,
        "host CPU time spent halt-polling in vain before sleeping (halt_poll_fail_ns)",
        S,
    ),
    _c(
        "kvmtop_guest_vcpu_halt_wait_seconds_total",
        VCPU,
        "time the vCPU was blocked in HLT, i.e. idle (halt_wait_ns)",
        S,
    ),
    _c(
        "kvmtop_guest_debugfs_exits_total",
        GUEST,
        "VM exits summed over vCPUs from KVM debugfs <pid>-<fd>/exits (refused under lockdown)",
    ),
    _c(
        "kvmtop_guest_debugfs_exit_category_total",
        (*GUEST, "category"),
        "exit categories summed over vCPUs from KVM debugfs",
    ),
    _c(
        "kvmtop_guest_tracepoint_events_total",
        (*GUEST, "tracepoint", "reason"),
        "KVM tracepoint counts since tracing was attached (kvm_exit by exit reason, "
        "kvm_userspace_exit by reason, ...); only for traced guests",
    ),
    _c(
        "kvmtop_guest_thread_run_seconds_total",
        (*GUEST, "kind", "thread", "tid"),
        "run time of a helper thread (emulator, iothread, vhost) from schedstat",
        S,
    ),
    _c(
        "kvmtop_guest_thread_delay_seconds_total",
        (*GUEST, "kind", "thread", "tid"),
        "run-queue wait of a helper thread from schedstat",
        S,
    ),
    _c("kvmtop_guest_disk_read_requests_total", DISK, "read requests (block.N.rd.reqs)"),
    _c("kvmtop_guest_disk_read_bytes_total", DISK, "bytes read (block.N.rd.bytes)", B),
    _c(
        "kvmtop_guest_disk_read_time_seconds_total",
        DISK,
        "total time of read requests in QEMU's block layer (block.N.rd.times)",
        S,
    ),
    _c("kvmtop_guest_disk_write_requests_total", DISK, "write requests (block.N.wr.reqs)"),
    _c("kvmtop_guest_disk_write_bytes_total", DISK, "bytes written (block.N.wr.bytes)", B),
    _c(
        "kvmtop_guest_disk_write_time_seconds_total",
        DISK,
        "total time of write requests (block.N.wr.times)",
        S,
    ),
    _c("kvmtop_guest_disk_flush_requests_total", DISK, "flush requests (block.N.fl.reqs)"),
    _c(
        "kvmtop_guest_disk_flush_time_seconds_total",
        DISK,
        "total time of flush requests (block.N.fl.times)",
        S,
    ),
    _g("kvmtop_guest_disk_capacity_bytes", DISK, "virtual disk size (block.N.capacity)", B),
    _g(
        "kvmtop_guest_disk_allocation_bytes",
        DISK,
        "highest written offset in the image (block.N.allocation)",
        B,
    ),
    _g(
        "kvmtop_guest_disk_physical_bytes",
        DISK,
        "host storage used by the image (block.N.physical)",
        B,
    ),
    _c("kvmtop_guest_nic_receive_bytes_total", NIC, "bytes the guest received (net.N.rx.bytes)", B),
    _c("kvmtop_guest_nic_receive_packets_total", NIC, "packets the guest received"),
    _c("kvmtop_guest_nic_receive_errors_total", NIC, "receive errors"),
    _c(
        "kvmtop_guest_nic_receive_drops_total",
        NIC,
        "packets dropped before the guest took them (host tap tx_dropped: guest too slow)",
    ),
    _c("kvmtop_guest_nic_transmit_bytes_total", NIC, "bytes the guest sent (net.N.tx.bytes)", B),
    _c("kvmtop_guest_nic_transmit_packets_total", NIC, "packets the guest sent"),
    _c("kvmtop_guest_nic_transmit_errors_total", NIC, "transmit errors"),
    _c(
        "kvmtop_guest_nic_transmit_drops_total",
        NIC,
        "packets the guest sent that the host dropped (host tap rx_dropped)",
    ),
    _g(
        "kvmtop_guest_balloon_current_bytes", GUEST, "memory the guest has now (balloon.current)", B
    ),
    _g("kvmtop_guest_balloon_maximum_bytes", GUEST, "maximum memory (balloon.maximum)", B),
    _g(
        "kvmtop_guest_memory_total_bytes",
        GUEST,
        "guest MemTotal (balloon.available; needs a balloon stats period)",
        B,
    ),
    _g(
        "kvmtop_guest_memory_available_bytes",
        GUEST,
        "guest MemAvailable (balloon.usable); used = total - available",
        B,
    ),
    _g("kvmtop_guest_memory_free_bytes", GUEST, "guest MemFree (balloon.unused)", B),
    _g("kvmtop_guest_memory_disk_caches_bytes", GUEST, "guest page cache (balloon.disk_caches)", B),
    _g(
        "kvmtop_guest_qemu_rss_bytes", GUEST, "resident memory of the QEMU process (balloon.rss)", B
    ),
    _c("kvmtop_guest_memory_swap_in_bytes_total", GUEST, "guest swap-in (balloon.swap_in)", B),
    _c("kvmtop_guest_memory_swap_out_bytes_total", GUEST, "guest swap-out (balloon.swap_out)", B),
    _c("kvmtop_guest_memory_major_faults_total", GUEST, "guest major page faults"),
    _c("kvmtop_guest_memory_minor_faults_total", GUEST, "guest minor page faults"),
    _g(
        "kvmtop_guest_balloon_last_update_timestamp_seconds",
        GUEST,
        "when the guest last reported its memory stats (balloon.last-update); stale "
        "when no stats period is set",
        S,
    ),
    # ------------------------------------------------------------------ host
    _g("kvmtop_host_cpus", (), "online host CPUs"),
    _c(
        "kvmtop_host_cpu_seconds_total",
        ("mode",),
        "host CPU time by mode, summed over CPUs (/proc/stat cpu line)",
        S,
    ),
    _c(
        "kvmtop_host_cpu_guest_seconds_total",
        ("mode",),
        "host CPU time running guests (already inside mode user / nice)",
        S,
    ),
    _c(
        "kvmtop_host_run_delay_seconds_total",
        (),
        "run-queue wait of all host tasks (/proc/schedstat; needs CONFIG_SCHEDSTATS)",
        S,
    ),
    _g("kvmtop_host_load_average", ("period",), "load average over 1m, 5m, 15m"),
    _g("kvmtop_host_memory_total_bytes", (), "host MemTotal", B),
    _g("kvmtop_host_memory_available_bytes", (), "host MemAvailable", B),
    _g("kvmtop_host_memory_free_bytes", (), "host MemFree", B),
    _g("kvmtop_host_swap_total_bytes", (), "host SwapTotal", B),
    _g("kvmtop_host_swap_free_bytes", (), "host SwapFree", B),
    _c(
        "kvmtop_host_vmstat_total",
        ("counter",),
        "selected /proc/vmstat event counters (pgmajfault, pswpin, pswpout)",
    ),
    _c(
        "kvmtop_host_pressure_stalled_seconds_total",
        ("resource", "kind"),
        "PSI stall time (/proc/pressure/<resource> total=, kind some or full)",
        S,
    ),
    _c("kvmtop_host_disk_reads_completed_total", ("device",), "/proc/diskstats reads"),
    _c("kvmtop_host_disk_read_bytes_total", ("device",), "/proc/diskstats bytes read", B),
    _c("kvmtop_host_disk_read_time_seconds_total", ("device",), "time spent reading", S),
    _c("kvmtop_host_disk_writes_completed_total", ("device",), "/proc/diskstats writes"),
    _c("kvmtop_host_disk_written_bytes_total", ("device",), "/proc/diskstats bytes written", B),
    _c("kvmtop_host_disk_write_time_seconds_total", ("device",), "time spent writing", S),
    _c("kvmtop_host_disk_flushes_completed_total", ("device",), "flushes (Linux >= 5.5)"),
    _c("kvmtop_host_disk_flush_time_seconds_total", ("device",), "time spent flushing", S),
    _c(
        "kvmtop_host_disk_io_time_seconds_total",
        ("device",),
        "time the device had I/O in flight (utilization = rate of this)",
        S,
    ),
    _c(
        "kvmtop_host_disk_io_time_weighted_seconds_total",
        ("device",),
        "in-flight-weighted I/O time (average queue = rate of this)",
        S,
    ),
    _g("kvmtop_host_disk_io_now", ("device",), "requests in flight"),
    _g(
        "kvmtop_host_network_info",
        ("device", "kind", "master", "operstate"),
        "1 per host interface; kind is physical, bridge, ovs, tap, veth, bond, ...",
    ),
    _g(
        "kvmtop_host_network_speed_bytes",
        ("device",),
        "link speed in bytes/s (physical NICs and bonds only; taps/bridges report none)",
    ),
    _c("kvmtop_host_network_receive_bytes_total", ("device",), "/proc/net/dev rx bytes", B),
    _c("kvmtop_host_network_receive_packets_total", ("device",), "/proc/net/dev rx packets"),
    _c("kvmtop_host_network_receive_errors_total", ("device",), "/proc/net/dev rx errs"),
    _c("kvmtop_host_network_receive_drops_total", ("device",), "/proc/net/dev rx drop"),
    _c("kvmtop_host_network_receive_fifo_total", ("device",), "/proc/net/dev rx fifo"),
    _c("kvmtop_host_network_transmit_bytes_total", ("device",), "/proc/net/dev tx bytes", B),
    _c("kvmtop_host_network_transmit_packets_total", ("device",), "/proc/net/dev tx packets"),
    _c("kvmtop_host_network_transmit_errors_total", ("device",), "/proc/net/dev tx errs"),
    _c("kvmtop_host_network_transmit_drops_total", ("device",), "/proc/net/dev tx drop"),
    _c("kvmtop_host_softnet_processed_total", ("cpu",), "packets processed (softnet_stat)"),
    _c(
        "kvmtop_host_softnet_dropped_total",
        ("cpu",),
        "packets dropped because the backlog queue was full (softnet_stat col 2)",
    ),
    _c(
        "kvmtop_host_softnet_times_squeezed_total",
        ("cpu",),
        "net_rx_action ran out of budget or time with work left (softnet_stat col 3)",
    ),
    # ------------------------------------------------------------------ findings
    _g(
        "kvmtop_finding",
        ("detector", "guest", "subject", "severity"),
        "active findings of the detectors (normally 1; more when several share the labels)",
    ),
    # ------------------------------------------------------------------ incidents
    _g(
        "kvmtop_incident",
        (*INCIDENT, "kind", "severity", "active"),
        '1 per open incident (findings grouped by cause); active="false": cleared, kept '
        "for incident_gap_s in case it comes back; id is new for each incident",
    ),
    _g(
        "kvmtop_incident_rank",
        INCIDENT,
        "the incident's place in the ranking by time to harm (1: the most urgent)",
    ),
    _g("kvmtop_incident_guests", INCIDENT, "guests the incident involves"),
    _g(
        "kvmtop_incident_since_timestamp_seconds",
        INCIDENT,
        "when the incident started (the earliest first bad tick of its findings)",
        S,
    ),
    _g(
        "kvmtop_incident_eta_seconds",
        INCIDENT,
        "time left until a leaking guest runs out of memory (leaks memory_leak judges a "
        "warning or critical)",
        S,
    ),
    _c(
        "kvmtop_incident_crossings_total",
        INCIDENT,
        "how often the incident's cause cleared and came back within incident_gap_s",
    ),
    # ------------------------------------------------------------------ kvmtop itself
    _g("kvmtop_build_info", ("version",), "1, labelled with the kvmtop version"),
    _g(
        "kvmtop_host_info",
        ("hostname", "mode"),
        "1, labelled with the host's name and what is served: live, or replay (a "
        "recording played as if live, `kvmtop serve --replay`)",
    ),
    _g(
        "kvmtop_last_sample_timestamp_seconds",
        (),
        "wall time of the last complete sample served",
        S,
    ),
    _g(
        "kvmtop_collection_duration_seconds",
        ("source",),
        'time the last complete tick spent in each source; source="tick" is the whole '
        "tick (sampling, rates, detectors)",
        S,
    ),
    _g(
        "kvmtop_collection_running_seconds",
        (),
        "how long the collection in progress has been running (0 when idle); grows while "
        "a source is stalled",
        S,
    ),
    _g("kvmtop_source_up", ("source",), "1 when the source delivered data in the last tick"),
    _c(
        "kvmtop_collection_errors_total",
        ("source",),
        'ticks in which the source failed or was unavailable (source="pipeline": the '
        "tick itself failed)",
    ),
    _c("kvmtop_samples_total", (), "ticks completed since start"),
    _c("kvmtop_process_cpu_seconds_total", (), "CPU time used by kvmtop itself", S),
    _g("kvmtop_process_resident_memory_bytes", (), "resident memory of kvmtop itself", B),
)
"""Every metric family the endpoint can export (docs/metrics.md lists the same)."""

SPECS: dict[str, MetricSpec] = {m.name: m for m in METRICS}


def label_value(text: str) -> str:
    """A label value as exposed: newlines kept, every other control, bidi or surrogate
    code point escaped visibly (`kvmtop.model.text.visible`: ESC becomes the four
    characters `\\x1b` of the value, written `\\\\x1b` on the wire).

    OpenMetrics 1.0 (text format, ABNF): a label value is an `escaped-string` whose
    `normal-char` is any code point but LF, `"` and `\\` (U+D800-U+DFFF are not UTF-8,
    so not allowed at all), and those three are written `\\n`, `\\"`, `\\\\`. That
    last step is the encoder's (prometheus_client writes the three escapes, for
    OpenMetrics and for the 0.0.4 text format alike), so a newline stays a newline of
    the value. The format would carry ESC or U+202E raw: they are escaped here, so
    `curl /metrics` or a dashboard cannot be taken over by a guest's name.
    """
    if "\n" not in text:
        return visible(text)
    return "\n".join(map(visible, text.split("\n")))
