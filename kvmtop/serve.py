"""`kvmtop serve`: an OpenMetrics / Prometheus text endpoint for this host.

Layer: headless output (like `batch`). Never imports textual.

Collection runs on its own thread, once per interval, through the live feed's
sampler and the shared `Pipeline` (so findings and incidents come from the same
detectors as in the TUI). `/metrics` answers from the last *complete* tick and never
waits for a collection in progress: a libvirt call stuck on a hung QEMU monitor
(libvirt's NOWAIT flag only skips a domain whose job is held by someone else, not a
monitor that does not answer) stalls the collection thread, not the scrapes, and shows
as a stale `kvmtop_last_sample_timestamp_seconds` and a growing
`kvmtop_collection_running_seconds`.

Counters are exported as the raw cumulative values of the `Sample` (ns converted
to seconds), never as rates: Prometheus computes rates with `rate()`, and a guest
restart is a counter reset it already understands. Every metric name, type, label
set and meaning is in `METRICS` and documented in docs/metrics.md. Label values are
names from outside (guests, disks, interfaces, threads): `label_value` escapes them.
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from kvmtop import __version__
from kvmtop.model.finding import Finding
from kvmtop.model.incident import Incident
from kvmtop.model.rates.counters import NS_PER_S
from kvmtop.model.rates.kvm import EXIT_CATEGORIES
from kvmtop.model.sample import GuestSample, HostSample, Sample
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import visible

if TYPE_CHECKING:
    from kvmtop.config import Settings
    from kvmtop.feed.live import LiveFeed

DEFAULT_LISTEN = ("127.0.0.1", 9177)
"""Loopback only unless told otherwise: the endpoint has no authentication."""

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
    _g("kvmtop_guest_info", (*GUEST, "accel", "managed"),
       "1 per guest; accel is kvm, tcg or unknown, managed is libvirt or unmanaged"),
    _g("kvmtop_guest_state", (*GUEST, "state"),
       "1 for the guest's current libvirt state (running, paused, shutoff, ...)"),
    _g("kvmtop_guest_vcpus", GUEST, "vCPUs currently online (libvirt vcpu.current)"),
    _g("kvmtop_guest_vcpus_maximum", GUEST, "maximum vCPUs (libvirt vcpu.maximum)"),
    _c("kvmtop_guest_cpu_seconds_total", GUEST,
       "CPU time of the whole QEMU process: vCPUs, emulator and I/O threads (cpu.time)", S),
    _c("kvmtop_guest_cpu_user_seconds_total", GUEST, "user CPU time of QEMU (cpu.user)", S),
    _c("kvmtop_guest_cpu_system_seconds_total", GUEST,
       "system CPU time of QEMU (cpu.system)", S),
    _c("kvmtop_guest_vcpu_time_seconds_total", VCPU,
       "vCPU thread CPU time (vcpu.N.time; 10 ms ticks)", S),
    _c("kvmtop_guest_vcpu_delay_seconds_total", VCPU,
       "vCPU run-queue wait = steal the guest sees (vcpu.N.delay, libvirt >= 7.2)", S),
    _c("kvmtop_guest_vcpu_sched_run_seconds_total", VCPU,
       "vCPU thread run time from /proc/PID/task/TID/schedstat (ns resolution)", S),
    _c("kvmtop_guest_vcpu_sched_delay_seconds_total", VCPU,
       "vCPU thread run-queue wait from schedstat (steal; fallback for libvirt < 7.2)", S),
    _c("kvmtop_guest_vcpu_exits_total", VCPU,
       "VM exits of the vCPU (KVM binary stat exits, libvirt >= 8.9 with QEMU >= 7.1)"),
    _c("kvmtop_guest_vcpu_exit_category_total", (*VCPU, "category"),
       "exits by KVM category (halt_exits, io_exits, mmio_exits, ...; "
       "insn_emulation counts emulated instructions)"),
    _c("kvmtop_guest_vcpu_halt_poll_success_seconds_total", VCPU,
       "host CPU time spent halt-polling before a wakeup arrived (halt_poll_success_ns)", S),
    _c("kvmtop_guest_vcpu_halt_poll_fail_seconds_total", VCPU,
       "host CPU time spent halt-polling in vain before sleeping (halt_poll_fail_ns)", S),
    _c("kvmtop_guest_vcpu_halt_wait_seconds_total", VCPU,
       "time the vCPU was blocked in HLT, i.e. idle (halt_wait_ns)", S),
    _c("kvmtop_guest_debugfs_exits_total", GUEST,
       "VM exits summed over vCPUs from KVM debugfs <pid>-<fd>/exits (refused under lockdown)"),
    _c("kvmtop_guest_debugfs_exit_category_total", (*GUEST, "category"),
       "exit categories summed over vCPUs from KVM debugfs"),
    _c("kvmtop_guest_tracepoint_events_total", (*GUEST, "tracepoint", "reason"),
       "KVM tracepoint counts since tracing was attached (kvm_exit by exit reason, "
       "kvm_userspace_exit by reason, ...); only for traced guests"),
    _c("kvmtop_guest_thread_run_seconds_total", (*GUEST, "kind", "thread", "tid"),
       "run time of a helper thread (emulator, iothread, vhost) from schedstat", S),
    _c("kvmtop_guest_thread_delay_seconds_total", (*GUEST, "kind", "thread", "tid"),
       "run-queue wait of a helper thread from schedstat", S),
    _c("kvmtop_guest_disk_read_requests_total", DISK, "read requests (block.N.rd.reqs)"),
    _c("kvmtop_guest_disk_read_bytes_total", DISK, "bytes read (block.N.rd.bytes)", B),
    _c("kvmtop_guest_disk_read_time_seconds_total", DISK,
       "total time of read requests in QEMU's block layer (block.N.rd.times)", S),
    _c("kvmtop_guest_disk_write_requests_total", DISK, "write requests (block.N.wr.reqs)"),
    _c("kvmtop_guest_disk_write_bytes_total", DISK, "bytes written (block.N.wr.bytes)", B),
    _c("kvmtop_guest_disk_write_time_seconds_total", DISK,
       "total time of write requests (block.N.wr.times)", S),
    _c("kvmtop_guest_disk_flush_requests_total", DISK, "flush requests (block.N.fl.reqs)"),
    _c("kvmtop_guest_disk_flush_time_seconds_total", DISK,
       "total time of flush requests (block.N.fl.times)", S),
    _g("kvmtop_guest_disk_capacity_bytes", DISK, "virtual disk size (block.N.capacity)", B),
    _g("kvmtop_guest_disk_allocation_bytes", DISK,
       "highest written offset in the image (block.N.allocation)", B),
    _g("kvmtop_guest_disk_physical_bytes", DISK,
       "host storage used by the image (block.N.physical)", B),
    _c("kvmtop_guest_nic_receive_bytes_total", NIC, "bytes the guest received (net.N.rx.bytes)", B),
    _c("kvmtop_guest_nic_receive_packets_total", NIC, "packets the guest received"),
    _c("kvmtop_guest_nic_receive_errors_total", NIC, "receive errors"),
    _c("kvmtop_guest_nic_receive_drops_total", NIC,
       "packets dropped before the guest took them (host tap tx_dropped: guest too slow)"),
    _c("kvmtop_guest_nic_transmit_bytes_total", NIC, "bytes the guest sent (net.N.tx.bytes)", B),
    _c("kvmtop_guest_nic_transmit_packets_total", NIC, "packets the guest sent"),
    _c("kvmtop_guest_nic_transmit_errors_total", NIC, "transmit errors"),
    _c("kvmtop_guest_nic_transmit_drops_total", NIC,
       "packets the guest sent that the host dropped (host tap rx_dropped)"),
    _g("kvmtop_guest_balloon_current_bytes", GUEST,
       "memory the guest has now (balloon.current)", B),
    _g("kvmtop_guest_balloon_maximum_bytes", GUEST, "maximum memory (balloon.maximum)", B),
    _g("kvmtop_guest_memory_total_bytes", GUEST,
       "guest MemTotal (balloon.available; needs a balloon stats period)", B),
    _g("kvmtop_guest_memory_available_bytes", GUEST,
       "guest MemAvailable (balloon.usable); used = total - available", B),
    _g("kvmtop_guest_memory_free_bytes", GUEST, "guest MemFree (balloon.unused)", B),
    _g("kvmtop_guest_memory_disk_caches_bytes", GUEST, "guest page cache (balloon.disk_caches)", B),
    _g("kvmtop_guest_qemu_rss_bytes", GUEST,
       "resident memory of the QEMU process (balloon.rss)", B),
    _c("kvmtop_guest_memory_swap_in_bytes_total", GUEST, "guest swap-in (balloon.swap_in)", B),
    _c("kvmtop_guest_memory_swap_out_bytes_total", GUEST, "guest swap-out (balloon.swap_out)", B),
    _c("kvmtop_guest_memory_major_faults_total", GUEST, "guest major page faults"),
    _c("kvmtop_guest_memory_minor_faults_total", GUEST, "guest minor page faults"),
    _g("kvmtop_guest_balloon_last_update_timestamp_seconds", GUEST,
       "when the guest last reported its memory stats (balloon.last-update); stale "
       "when no stats period is set", S),
    # ------------------------------------------------------------------ host
    _g("kvmtop_host_cpus", (), "online host CPUs"),
    _c("kvmtop_host_cpu_seconds_total", ("mode",),
       "host CPU time by mode, summed over CPUs (/proc/stat cpu line)", S),
    _c("kvmtop_host_cpu_guest_seconds_total", ("mode",),
       "host CPU time running guests (already inside mode user / nice)", S),
    _c("kvmtop_host_run_delay_seconds_total", (),
       "run-queue wait of all host tasks (/proc/schedstat; needs CONFIG_SCHEDSTATS)", S),
    _g("kvmtop_host_load_average", ("period",), "load average over 1m, 5m, 15m"),
    _g("kvmtop_host_memory_total_bytes", (), "host MemTotal", B),
    _g("kvmtop_host_memory_available_bytes", (), "host MemAvailable", B),
    _g("kvmtop_host_memory_free_bytes", (), "host MemFree", B),
    _g("kvmtop_host_swap_total_bytes", (), "host SwapTotal", B),
    _g("kvmtop_host_swap_free_bytes", (), "host SwapFree", B),
    _c("kvmtop_host_vmstat_total", ("counter",),
       "selected /proc/vmstat event counters (pgmajfault, pswpin, pswpout)"),
    _c("kvmtop_host_pressure_stalled_seconds_total", ("resource", "kind"),
       "PSI stall time (/proc/pressure/<resource> total=, kind some or full)", S),
    _c("kvmtop_host_disk_reads_completed_total", ("device",), "/proc/diskstats reads"),
    _c("kvmtop_host_disk_read_bytes_total", ("device",), "/proc/diskstats bytes read", B),
    _c("kvmtop_host_disk_read_time_seconds_total", ("device",), "time spent reading", S),
    _c("kvmtop_host_disk_writes_completed_total", ("device",), "/proc/diskstats writes"),
    _c("kvmtop_host_disk_written_bytes_total", ("device",), "/proc/diskstats bytes written", B),
    _c("kvmtop_host_disk_write_time_seconds_total", ("device",), "time spent writing", S),
    _c("kvmtop_host_disk_flushes_completed_total", ("device",), "flushes (Linux >= 5.5)"),
    _c("kvmtop_host_disk_flush_time_seconds_total", ("device",), "time spent flushing", S),
    _c("kvmtop_host_disk_io_time_seconds_total", ("device",),
       "time the device had I/O in flight (utilization = rate of this)", S),
    _c("kvmtop_host_disk_io_time_weighted_seconds_total", ("device",),
       "in-flight-weighted I/O time (average queue = rate of this)", S),
    _g("kvmtop_host_disk_io_now", ("device",), "requests in flight"),
    _g("kvmtop_host_network_info", ("device", "kind", "master", "operstate"),
       "1 per host interface; kind is physical, bridge, ovs, tap, veth, bond, ..."),
    _g("kvmtop_host_network_speed_bytes", ("device",),
       "link speed in bytes/s (physical NICs and bonds only; taps/bridges report none)"),
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
    _c("kvmtop_host_softnet_dropped_total", ("cpu",),
       "packets dropped because the backlog queue was full (softnet_stat col 2)"),
    _c("kvmtop_host_softnet_times_squeezed_total", ("cpu",),
       "net_rx_action ran out of budget or time with work left (softnet_stat col 3)"),
    # ------------------------------------------------------------------ findings
    _g("kvmtop_finding", ("detector", "guest", "subject", "severity"),
       "active findings of the detectors (normally 1; more when several share the labels)"),
    # ------------------------------------------------------------------ incidents
    _g("kvmtop_incident", (*INCIDENT, "kind", "severity", "active"),
       "1 per open incident (findings grouped by cause); active=\"false\": cleared, kept "
       "for incident_gap_s in case it comes back; id is new for each incident"),
    _g("kvmtop_incident_rank", INCIDENT,
       "the incident's place in the ranking by time to harm (1: the most urgent)"),
    _g("kvmtop_incident_guests", INCIDENT, "guests the incident involves"),
    _g("kvmtop_incident_since_timestamp_seconds", INCIDENT,
       "when the incident started (the earliest first bad tick of its findings)", S),
    _g("kvmtop_incident_eta_seconds", INCIDENT,
       "time left until a leaking guest runs out of memory (leaks memory_leak judges a "
       "warning or critical)", S),
    _c("kvmtop_incident_crossings_total", INCIDENT,
       "how often the incident's cause cleared and came back within incident_gap_s"),
    # ------------------------------------------------------------------ kvmtop itself
    _g("kvmtop_build_info", ("version",), "1, labelled with the kvmtop version"),
    _g("kvmtop_host_info", ("hostname", "mode"),
       "1, labelled with the host's name and what is served: live, or replay (a "
       "recording played as if live, `kvmtop serve --replay`)"),
    _g("kvmtop_last_sample_timestamp_seconds", (),
       "wall time of the last complete sample served", S),
    _g("kvmtop_collection_duration_seconds", ("source",),
       "time the last complete tick spent in each source; source=\"tick\" is the whole "
       "tick (sampling, rates, detectors)", S),
    _g("kvmtop_collection_running_seconds", (),
       "how long the collection in progress has been running (0 when idle); grows while "
       "a source is stalled", S),
    _g("kvmtop_source_up", ("source",), "1 when the source delivered data in the last tick"),
    _c("kvmtop_collection_errors_total", ("source",),
       "ticks in which the source failed or was unavailable (source=\"pipeline\": the "
       "tick itself failed)"),
    _c("kvmtop_samples_total", (), "ticks completed since start"),
    _c("kvmtop_process_cpu_seconds_total", (), "CPU time used by kvmtop itself", S),
    _g("kvmtop_process_resident_memory_bytes", (), "resident memory of kvmtop itself", B),
)
"""Every metric family the endpoint can export (docs/metrics.md lists the same)."""

SPECS: dict[str, MetricSpec] = {m.name: m for m in METRICS}

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


class _Families:
    """Collects samples into families, creating a family on its first value."""

    def __init__(self) -> None:
        self._families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}

    def add(self, name: str, labels: Sequence[str], value: float | None) -> None:
        """Add one sample; a None value is skipped (the series is absent). Every label
        value goes through `label_value`."""
        if value is None:
            return
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = SPECS[name].family()
        # One isprintable over the joined values (~0.2 us) spares the per-value calls
        # when no value has anything to escape: nearly always.
        if not "".join(labels).isprintable():
            labels = [label_value(v) for v in labels]
        family.add_metric(labels, value)

    def families(self) -> list[Metric]:
        """The families that got at least one sample, in METRICS order."""
        return [self._families[m.name] for m in METRICS if m.name in self._families]


def _guest(out: _Families, g: GuestSample) -> None:
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
        out.add("kvmtop_guest_debugfs_exit_category_total", (*gl, category),
                g.debugfs.get(category))
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


def _disks(out: _Families, g: GuestSample) -> None:
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


def _nics(out: _Families, g: GuestSample) -> None:
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


def _balloon(out: _Families, g: GuestSample) -> None:
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


def _host(out: _Families, h: HostSample) -> None:
    """Every host baseline metric."""
    out.add("kvmtop_host_cpus", (), h.ncpu or None)
    if h.cpu is not None:
        c = h.cpu
        for mode, ns in (
            ("user", c.user_ns), ("nice", c.nice_ns), ("system", c.system_ns),
            ("idle", c.idle_ns), ("iowait", c.iowait_ns), ("irq", c.irq_ns),
            ("softirq", c.softirq_ns), ("steal", c.steal_ns),
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
        out.add("kvmtop_host_pressure_stalled_seconds_total", (resource, "some"),
                _s(p.some_total_ns))
        out.add("kvmtop_host_pressure_stalled_seconds_total", (resource, "full"),
                _s(p.full_total_ns))
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
        speed = None if n.speed_mbps is None else n.speed_mbps * 1_000_000 / 8
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


def _findings(out: _Families, findings: Iterable[Finding]) -> None:
    """One series per (detector, guest, subject, severity), valued by the count.

    Findings are keyed finer than these labels inside the engine, and a duplicate
    series would make the whole exposition invalid, so findings sharing the labels
    add up instead.
    """
    counts = Counter((f.detector, f.guest or "", f.subject, f.severity) for f in findings)
    for labels, n in sorted(counts.items()):
        out.add("kvmtop_finding", labels, n)


def _incidents(out: _Families, incidents: Iterable[Incident]) -> None:
    """The series of each open incident, keyed by its id and cause."""
    for i in incidents:
        il = (i.id, i.cause)
        out.add("kvmtop_incident", (*il, i.kind, i.severity, "true" if i.active else "false"), 1)
        out.add("kvmtop_incident_rank", il, i.rank)
        out.add("kvmtop_incident_guests", il, len(i.guests))
        out.add("kvmtop_incident_since_timestamp_seconds", il, i.since_s)
        out.add("kvmtop_incident_eta_seconds", il, i.eta_s)
        out.add("kvmtop_incident_crossings_total", il, i.crossings)


def sample_families(
    sample: Sample, snapshot: Snapshot, tick_elapsed_s: float | None = None
) -> list[Metric]:
    """The metric families of one tick: raw counters of `sample`, findings and
    incidents of `snapshot`.

    Pure (no clock, no I/O), so `kvmtop export --format openmetrics` can reuse it.

    Args:
        sample: the raw sample.
        snapshot: the snapshot the pipeline built from it (for the findings and
            incidents).
        tick_elapsed_s: wall time of the whole tick, exported as
            kvmtop_collection_duration_seconds{source="tick"} when given.
    """
    out = _Families()
    for g in sample.guests:
        _guest(out, g)
    if sample.host is not None:
        _host(out, sample.host)
    _findings(out, snapshot.findings)
    _incidents(out, snapshot.incidents)
    out.add("kvmtop_host_info",
            (sample.host.hostname if sample.host is not None else "", snapshot.mode), 1)
    out.add("kvmtop_last_sample_timestamp_seconds", (), sample.wall_s)
    for status in sample.sources:
        out.add("kvmtop_source_up", (status.name,), 1 if status.ok else 0)
        out.add("kvmtop_collection_duration_seconds", (status.name,), _s(status.duration_ns))
    out.add("kvmtop_collection_duration_seconds", ("tick",), tick_elapsed_s)
    return out.families()


# --------------------------------------------------------------------------- exporter


@dataclass(frozen=True, slots=True)
class _Tick:
    """The last complete tick and its metric families (built on first scrape)."""

    sample: Sample
    snapshot: Snapshot
    elapsed_s: float


class Exporter:
    """A prometheus-client `Collector` serving the last complete tick.

    The collection thread calls `begin()` / `publish()` (or `fail()`); scrapes call
    `collect()`, which never waits for a collection: it takes the lock only to read
    references (the lock is never held across I/O).

    Args:
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tick: _Tick | None = None
        self._families: tuple[_Tick, list[Metric]] | None = None
        self._build_lock = threading.Lock()
        # Exported from the start, so `increase()` sees the first pipeline failure.
        self._errors: Counter[str] = Counter({"pipeline": 0})
        self._samples = 0
        self._running_since: float | None = None

    def begin(self) -> None:
        """A collection starts now."""
        with self._lock:
            self._running_since = self._clock()

    def publish(self, sample: Sample, snapshot: Snapshot, elapsed_s: float) -> None:
        """A collection completed: serve it from now on."""
        with self._lock:
            self._tick = _Tick(sample, snapshot, elapsed_s)
            self._samples += 1
            self._running_since = None
            for status in sample.sources:
                if not status.ok:
                    self._errors[status.name] += 1
                else:
                    self._errors.setdefault(status.name, 0)

    def fail(self, source: str) -> None:
        """A collection failed as a whole; the previous tick stays served."""
        with self._lock:
            self._errors[source] += 1
            self._running_since = None

    def _tick_families(self, tick: _Tick) -> list[Metric]:
        """Families of `tick`, built once however many scrapes ask for them."""
        with self._build_lock:
            cached = self._families
            if cached is None or cached[0] is not tick:
                families = sample_families(tick.sample, tick.snapshot, tick.elapsed_s)
                cached = self._families = (tick, families)
            return cached[1]

    def collect(self) -> Iterator[Metric]:
        """The metric families of the last complete tick plus kvmtop's own state."""
        with self._lock:
            tick = self._tick
            errors = dict(self._errors)
            samples = self._samples
            since = self._running_since
        if tick is not None:
            yield from self._tick_families(tick)
        own = _Families()
        own.add("kvmtop_build_info", (__version__,), 1)
        own.add("kvmtop_collection_running_seconds", (),
                0.0 if since is None else max(0.0, self._clock() - since))
        for source, n in sorted(errors.items()):
            own.add("kvmtop_collection_errors_total", (source,), n)
        own.add("kvmtop_samples_total", (), samples)
        yield from own.families()


# --------------------------------------------------------------------------- collection


class CollectionLoop:
    """Runs the live feed's sampler and the shared pipeline on a daemon thread.

    Each tick: `sampler.sample()` (raw counters), `pipeline.push()` (rates, window,
    detectors, snapshot), then `Exporter.publish()`. Ticks start every `interval_s`;
    a tick that overruns makes the next one start at once (no burst of catch-up
    ticks). An exception in a tick is counted and reported, never fatal.
    """

    def __init__(self, feed: LiveFeed[Any], exporter: Exporter, log: TextIO = sys.stderr,
                 mode: str = "live") -> None:
        """Wire a live feed (sampler + pipeline) to an exporter; `mode` is the
        snapshots' ("live", or "replay" for a recording played as if live)."""
        self.feed = feed
        self.exporter = exporter
        self._log = log
        self._mode = mode
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvmtop-collect", daemon=True)

    def start(self) -> None:
        """Start collecting."""
        self._thread.start()

    def tick(self) -> None:
        """Collect once and publish (the thread's body; tests call it directly)."""
        self.exporter.begin()
        started = time.monotonic()
        try:
            sample = self.feed.sampler.sample()
            snapshot = self.feed.pipeline.push(sample, mode=self._mode)
        except Exception as exc:  # a bug in one tick must not end the endpoint
            self.exporter.fail("pipeline")
            print(f"kvmtop serve: collection failed: {exc!r}", file=self._log, flush=True)
            return
        self.exporter.publish(sample, snapshot, time.monotonic() - started)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            next_at = max(next_at + self.feed.interval_s, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def stop(self, timeout_s: float) -> bool:
        """Ask the thread to stop; True when it ended within `timeout_s`."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()


# --------------------------------------------------------------------------- HTTP

_INDEX = (
    b"<html><head><title>kvmtop</title></head><body><h1>kvmtop</h1>"
    b'<p><a href="/metrics">/metrics</a> (OpenMetrics with Accept: '
    b"application/openmetrics-text, else Prometheus text 0.0.4)</p></body></html>\n"
)


class _Handler(BaseHTTPRequestHandler):
    """GET /metrics with content negotiation, GET / with a pointer to it; HEAD of both."""

    server: MetricsServer
    # Seconds a client may take to send its request (StreamRequestHandler.timeout):
    # a stuck client must not hold a thread forever.
    timeout = 10
    server_version = f"kvmtop/{__version__}"
    _content = True
    """Send the body (False while answering HEAD; one handler per request)."""

    def do_GET(self) -> None:
        """Serve the metrics or the index page."""
        self._serve(content=True)

    def do_HEAD(self) -> None:
        """GET without the body: RFC 9110, 9.3.2 (HEAD) wants the same header fields,
        and 8.6 a Content-Length, if sent, equal to GET's (so the body is built)."""
        self._serve(content=False)

    def _serve(self, *, content: bool) -> None:
        self._content = content
        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(self.server.exporter)
            headers = [("Content-Type", content_type)]
            if gzip_accepted(self.headers.get("Accept-Encoding", "")):
                body = gzip.compress(body)
                headers.append(("Content-Encoding", "gzip"))
            self._reply(200, body, headers)
        elif path == "/":
            self._reply(200, _INDEX, [("Content-Type", "text/html; charset=utf-8")])
        else:
            self._reply(404, b"not found; metrics are at /metrics\n",
                        [("Content-Type", "text/plain; charset=utf-8")])

    def _reply(self, code: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self._content:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        """No access log: Prometheus scrapes every few seconds."""


class MetricsServer(ThreadingHTTPServer):
    """A thread-per-request HTTP server over one `Exporter`."""

    daemon_threads = True
    # The listen backlog: connections the kernel completes before serve_forever's
    # thread accepts them. socketserver's 5 overflowed under 50 scrapes at once (a lost
    # SYN is sent again after 1 s, then 3 s...); 128 is what socket.listen() chooses
    # when not told (min(SOMAXCONN, 128)), room for every Prometheus, federation and
    # dashboard of a site at once. The kernel caps it at net.core.somaxconn.
    request_queue_size = min(socket.SOMAXCONN, 128)

    def __init__(self, address: tuple[str, int], exporter: Exporter) -> None:
        """Bind `address` (IPv4 or IPv6 literal, or a host name) and listen."""
        self.exporter = exporter
        self.address_family = _family(address[0])
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-scrape (Prometheus closes a scrape past its
        scrape_timeout) is no error of ours: nothing is logged. Any other exception in a
        handler gets socketserver's traceback on stderr."""
        if not isinstance(sys.exc_info()[1], ConnectionError):  # EPIPE, ECONNRESET, ...
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        """http://HOST:PORT/metrics with the port actually bound (0 picks one)."""
        host, port = self.socket.getsockname()[:2]
        shown = f"[{host}]" if self.address_family == socket.AF_INET6 else host
        return f"http://{shown}:{port}/metrics"


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name: use what it resolves to first
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPV6]:PORT` or `PORT` (on 127.0.0.1) → (host, port).

    Raises:
        argparse.ArgumentTypeError: not one of those forms, or a bad port.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_LISTEN[0], text
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    # An IPv6 address needs its brackets: "::1:9177" could end in a port or not.
    if not host or (":" in host and not (bracketed and _is_v6(host))):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ADDR:PORT, [IPV6]:PORT or PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: port must be 0-65535")
    return host, int(port)


def _is_v6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


# --------------------------------------------------------------------------- command


def serve(
    feed: LiveFeed[Any],
    address: tuple[str, int],
    stop: threading.Event,
    *,
    log: TextIO = sys.stderr,
    ready: Callable[[MetricsServer], None] | None = None,
    mode: str = "live",
) -> int:
    """Collect in the background and answer scrapes until `stop` is set.

    Args:
        feed: the live feed whose sampler and pipeline produce the ticks.
        address: (host, port) to bind; port 0 picks a free one.
        stop: set it (e.g. from a signal handler) to shut down.
        log: where the start and stop lines go.
        ready: called with the bound server before the first tick (tests use it).
        mode: "live", or "replay" when the feed plays a recording as if live.

    Returns:
        The exit status: 0, or 1 when the address cannot be bound.
    """
    exporter = Exporter()
    try:
        server = MetricsServer(address, exporter)
    except OSError as exc:
        print(f"kvmtop serve: cannot listen on {address[0]}:{address[1]}: {exc.strerror}",
              file=log)
        return 1
    loop = CollectionLoop(feed, exporter, log, mode)
    http = threading.Thread(target=server.serve_forever, name="kvmtop-http", daemon=True)
    http.start()
    what = "" if mode == "live" else f", {mode}"
    print(f"kvmtop serve: listening on {server.url} (every {feed.interval_s:g} s{what})",
          file=log, flush=True)
    if ready is not None:
        ready(server)
    loop.start()
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        # A tick stuck in libvirt cannot be interrupted; give a normal tick time to
        # end, then leave without closing the connection under its feet.
        if loop.stop(timeout_s=feed.interval_s + 5):
            feed.close()
        else:
            print("kvmtop serve: a collection is still stuck; exiting without waiting",
                  file=log)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kvmtop serve` (the global -c/-d/--config come from the CLI)."""
    parser.description = (
        "Serve the same metrics as the TUI on an OpenMetrics / Prometheus endpoint "
        "(GET /metrics), collected every interval on a background thread. Counters are "
        "raw cumulative values (use rate() in PromQL); findings are the kvmtop_finding "
        "gauge, incidents the kvmtop_incident* families. Metric names: docs/metrics.md."
    )
    parser.add_argument(
        "--listen", type=parse_listen, default=DEFAULT_LISTEN, metavar="ADDR:PORT",
        help="address to listen on (default 127.0.0.1:9177; [::1]:9177 for IPv6; "
        "0.0.0.0:9177 for every interface)",
    )
    parser.add_argument(
        "--replay", type=Path, metavar="FILE",
        help="serve a recording as if it were live: its samples in a loop at its "
        "interval, clocks moved to now (a demo or test host for Prometheus)",
    )
    parser.add_argument(
        "--host", metavar="NAME",
        help="with --replay: the host name to serve it as (default: the recorded one)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`kvmtop serve`: run until SIGTERM or SIGINT; returns the exit status.

    Raises:
        StoreError: the --replay file is missing, damaged or holds no sample.
    """
    from kvmtop.feed.live import LiveFeed
    from kvmtop.wiring import build_live_feed, build_pipeline

    mode = "live"
    feed: LiveFeed[Any]
    if args.replay is not None:
        from kvmtop.store.looped import LoopedRecording
        from kvmtop.store.reader import StoreReader

        # The shared pipeline, with the detectors and incidents the endpoint exports.
        feed = LiveFeed(LoopedRecording(StoreReader(args.replay), hostname=args.host),
                        build_pipeline(settings))
        mode = "replay"
    elif args.host is not None:
        print("kvmtop: --host names a replayed recording's host: use it with --replay",
              file=sys.stderr)
        return 2
    else:
        feed = build_live_feed(settings)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        print(f"kvmtop serve: {signal.Signals(signum).name}, stopping", file=sys.stderr)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    return serve(feed, args.listen, stop, mode=mode)
