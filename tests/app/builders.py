"""Snapshots for UI tests, built through the real model.

Each guest and the host are described by the rates they should show; the builder
turns that into two raw `Sample`s of plausible cumulative counters one interval
apart and runs them through `kvmtop.model.rates.frame.derive` and
`kvmtop.model.snapshot.build_snapshot`, so the views see exactly what the live
pipeline would give them; a frame's findings are grouped into incidents by the real
`IncidentTracker`. `FakeFeed` hands prepared snapshots to the app.
"""

from __future__ import annotations

import queue
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from textual.pilot import Pilot
from textual.worker import get_current_worker

from kvmtop.detectors.incidents import IncidentTracker
from kvmtop.model.finding import Finding
from kvmtop.model.incident import Incident
from kvmtop.model.rates.frame import Frame, derive
from kvmtop.model.rates.kvm import TRACE_ATTACHED, TRACE_FDS, TRACE_SOURCE
from kvmtop.model.sample import (
    BalloonSample,
    BlockDevSample,
    CpuTimes,
    DiskSample,
    GuestSample,
    HostSample,
    NetDevSample,
    NicSample,
    PressureSample,
    Sample,
    SoftnetSample,
    SourceStatus,
    ThreadSample,
    VcpuSample,
)
from kvmtop.model.snapshot import Snapshot, build_snapshot
from tests.records import replace

NS = 1_000_000_000
MIB = 1 << 20
T0 = 1_764_000_000.0
"""Wall time of the first test frame: 2025-11-24 16:00:00 UTC."""
DT = 2
"""Seconds between the two samples of a frame."""


@dataclass(frozen=True)
class GuestSpec:
    """The rates one guest should show (per-vCPU figures apply to every vCPU)."""

    name: str
    state: str = "running"
    accel: str | None = "kvm"
    vcpus: int = 2
    cpu_pct: float = 10.0
    steal_pct: float = 1.0
    exits_per_s: float = 2000.0
    disk_iops: float = 40.0
    disk_ms: float = 1.5
    net_mbps: float = 8.0
    drops_per_s: float = 0.0
    mem_mib: int = 1024
    used_mib: int = 400
    traced: bool = False
    """Count kvm:kvm_exit by reason (per-reason tracing switched on for this guest)."""

    @property
    def uuid(self) -> str:
        """A stable UUID derived from the name."""
        return str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{self.name}.kvmtop.test"))


@dataclass(frozen=True)
class HostSpec:
    """The host baseline a frame should show."""

    ncpu: int = 16
    busy_pct: float = 35.0
    run_delay_pct: float | None = 2.0
    psi: bool = True
    disk_util_pct: float = 30.0
    disk_ms: float = 0.4
    uplink_mbps: float = 1200.0
    softnet_drops_per_s: float = 0.0


COUNTERS_PER_VCPU = 116
"""Tracepoint counters per vCPU thread (the captured 6.18 VMX table)."""

DEFAULT_SOURCES: tuple[SourceStatus, ...] = (
    SourceStatus("host", True, duration_ns=1_200_000),
    SourceStatus(
        "libvirt", True, duration_ns=8_500_000, detail={"uri": "qemu:///system", "libvirt": "9.0.0"}
    ),
    SourceStatus("sched", True, duration_ns=2_100_000),
    SourceStatus(
        "kvm_debugfs", False, reason="debugfs: exits EPERM (kernel lockdown)", duration_ns=300_000
    ),
    SourceStatus(
        TRACE_SOURCE,
        True,
        duration_ns=150_000,
        detail={"counters_per_vcpu": str(COUNTERS_PER_VCPU)},
    ),
)
"""`snapshot()` fills the tracepoint source's attached guests and fds from the specs."""


def _n(rate: float, t: int) -> int:
    """A cumulative counter after t seconds at `rate` per second."""
    return int(rate * t)


def guest_sample(spec: GuestSpec, t: int) -> GuestSample:
    """One guest's raw counters t seconds into the test."""
    if spec.state != "running":
        return GuestSample(
            uuid=spec.uuid,
            name=spec.name,
            state=spec.state,
            accel=spec.accel,
            vcpus_current=spec.vcpus,
        )
    kvm = spec.accel == "kvm"
    vcpus = tuple(
        VcpuSample(
            index=i,
            state=1,
            time_ns=_n(spec.cpu_pct / 100 * NS, t),
            delay_ns=_n(spec.steal_pct / 100 * NS, t),
            tid=5000 + i,
            kvm={
                "exits.sum": _n(spec.exits_per_s, t),
                "halt_exits.sum": _n(spec.exits_per_s * 0.6, t),
                "io_exits.sum": _n(spec.exits_per_s * 0.1, t),
                "mmio_exits.sum": _n(spec.exits_per_s * 0.05, t),
                "halt_poll_success_ns.sum": _n(0.02 * NS, t),
                "halt_wait_ns.sum": _n(0.7 * NS, t),
            }
            if kvm
            else {},
        )
        for i in range(spec.vcpus)
    )
    rd, wr = spec.disk_iops * 0.6, spec.disk_iops * 0.4
    disk = DiskSample(
        target="vda",
        path=f"/var/lib/libvirt/images/{spec.name}.qcow2",
        rd_reqs=_n(rd, t),
        rd_bytes=_n(rd * 16384, t),
        rd_times_ns=_n(rd * spec.disk_ms * 1e6, t),
        wr_reqs=_n(wr, t),
        wr_bytes=_n(wr * 65536, t),
        wr_times_ns=_n(wr * spec.disk_ms * 1e6, t),
        fl_reqs=0,
        fl_times_ns=0,
    )
    bytes_per_s = spec.net_mbps * 1e6 / 8
    nic = NicSample(
        name=f"vnet-{spec.name}"[:15],
        rx_bytes=_n(bytes_per_s * 0.7, t),
        rx_pkts=_n(bytes_per_s * 0.7 / 900, t),
        rx_errs=0,
        rx_drop=_n(spec.drops_per_s, t),
        tx_bytes=_n(bytes_per_s * 0.3, t),
        tx_pkts=_n(bytes_per_s * 0.3 / 900, t),
        tx_errs=0,
        tx_drop=0,
    )
    total = spec.mem_mib * MIB
    balloon = BalloonSample(
        current_bytes=total,
        maximum_bytes=total,
        available_bytes=total - 40 * MIB,
        usable_bytes=total - 40 * MIB - spec.used_mib * MIB,
        rss_bytes=total + 90 * MIB,
        last_update_s=int(T0) - 3,
    )
    return GuestSample(
        uuid=spec.uuid,
        name=spec.name,
        dom_id=7,
        state="running",
        accel=spec.accel,
        pid=4242,
        vcpus_current=spec.vcpus,
        vcpus_maximum=spec.vcpus,
        cpu_time_ns=_n(spec.vcpus * spec.cpu_pct / 100 * NS * 1.05, t),
        vcpus=vcpus,
        disks=(disk,),
        nics=(nic,),
        balloon=balloon,
        exit_reasons={
            "kvm_exit:total": _n(spec.vcpus * spec.exits_per_s, t),
            "kvm_exit:HLT": _n(spec.vcpus * spec.exits_per_s * 0.6, t),
            "kvm_exit:EPT_MISCONFIG": _n(spec.vcpus * spec.exits_per_s * 0.3, t),
        }
        if spec.traced
        else {},
        threads=(
            ThreadSample(
                4242,
                "emulator",
                "qemu-system-x86",
                run_ns=_n(0.03 * NS, t),
                delay_ns=_n(0.001 * NS, t),
            ),
            ThreadSample(
                4300,
                "vhost",
                "vhost-4242",
                run_ns=_n(spec.net_mbps / 1e4 * NS, t),
                delay_ns=_n(spec.steal_pct / 200 * NS, t),
            ),
        ),
    )


def host_sample(spec: HostSpec, t: int) -> HostSample:
    """The host's raw counters t seconds into the test."""
    cpu_ns = spec.ncpu * NS
    busy = spec.busy_pct / 100
    link_bytes = spec.uplink_mbps * 1e6 / 8
    return HostSample(
        mono_ns=t * NS,
        hostname="lab-host",
        ncpu=spec.ncpu,
        cpu=CpuTimes(
            user_ns=_n(cpu_ns * busy * 0.7, t),
            nice_ns=0,
            system_ns=_n(cpu_ns * busy * 0.3, t),
            idle_ns=_n(cpu_ns * (1 - busy - 0.01), t),
            iowait_ns=_n(cpu_ns * 0.01, t),
            irq_ns=0,
            softirq_ns=0,
            steal_ns=0,
        ),
        run_delay_ns=None
        if spec.run_delay_pct is None
        else _n(spec.run_delay_pct / 100 * cpu_ns, t),
        mem_total_bytes=64 * 1024 * MIB,
        mem_available_bytes=40 * 1024 * MIB,
        pressure={
            "cpu": PressureSample(some_total_ns=_n(0.03 * NS, t)),
            "memory": PressureSample(some_total_ns=0, full_total_ns=0),
            "io": PressureSample(some_total_ns=_n(0.005 * NS, t), full_total_ns=0),
        }
        if spec.psi
        else {},
        blockdevs=(
            BlockDevSample(
                "nvme0n1",
                reads=_n(900, t),
                read_bytes=_n(900 * 16384, t),
                read_time_ns=_n(900 * spec.disk_ms * 1e6, t),
                writes=_n(600, t),
                write_bytes=_n(600 * 65536, t),
                write_time_ns=_n(600 * spec.disk_ms * 1.5e6, t),
                in_flight=1,
                io_ticks_ns=_n(spec.disk_util_pct / 100 * NS, t),
                weighted_ns=_n(0.8 * NS, t),
                rotational=False,
            ),
            BlockDevSample(
                "sda",
                reads=_n(2, t),
                read_bytes=_n(8192, t),
                read_time_ns=_n(2 * 6e6, t),
                writes=0,
                write_bytes=0,
                write_time_ns=0,
                in_flight=0,
                io_ticks_ns=_n(0.01 * NS, t),
                weighted_ns=0,
                rotational=True,
            ),
        ),
        netdevs=(
            NetDevSample(
                "eno1",
                rx_bytes=_n(link_bytes * 0.6, t),
                rx_packets=_n(link_bytes * 0.6 / 1200, t),
                rx_errs=0,
                rx_drop=0,
                tx_bytes=_n(link_bytes * 0.4, t),
                tx_packets=_n(link_bytes * 0.4 / 1200, t),
                tx_errs=0,
                tx_drop=0,
                kind="physical",
                master="br0",
                speed_mbps=10_000,
                operstate="up",
            ),
            NetDevSample(
                "br0",
                rx_bytes=_n(link_bytes * 0.6, t),
                rx_packets=0,
                rx_errs=0,
                rx_drop=0,
                tx_bytes=_n(link_bytes * 0.4, t),
                tx_packets=0,
                tx_errs=0,
                tx_drop=0,
                kind="bridge",
                speed_mbps=10_000,
            ),
        ),
        softnet=(
            SoftnetSample(
                0, processed=_n(5000, t), dropped=_n(spec.softnet_drops_per_s, t), time_squeeze=0
            ),
        ),
        loadavg=(3.2, 2.9, 2.5),
        self_cpu_ns=_n(0.012 * NS, t),
        self_rss_bytes=46 * MIB,
    )


def snapshot(
    guests: Sequence[GuestSpec],
    *,
    seq: int = 1,
    host: HostSpec | None = None,
    findings: tuple[Finding, ...] = (),
    sources: tuple[SourceStatus, ...] = DEFAULT_SOURCES,
    mode: str = "live",
    recording: str | None = None,
    incidents: tuple[Incident, ...] | None = None,
    recent: tuple[Frame, ...] = (),
) -> Snapshot:
    """A frame (number `seq`) showing these guests and host at these rates, and
    `incidents` (None: `findings` grouped as the pipeline groups them, `grouped`);
    `recent`: the window's earlier frames (the frame itself is added after them)."""
    host = host or HostSpec()
    traced = [g for g in guests if g.traced]
    sources = tuple(
        replace(
            s,
            detail={
                **s.detail,
                TRACE_ATTACHED: ", ".join(g.uuid for g in traced),
                TRACE_FDS: str(sum(COUNTERS_PER_VCPU * g.vcpus for g in traced)),
            },
        )
        if s.name == TRACE_SOURCE
        else s
        for s in sources
    )
    wall = T0 + seq * DT
    samples = [
        Sample(
            wall_s=wall - DT + t,
            mono_ns=(seq * DT + t) * NS,
            host=host_sample(host, seq * DT + t),
            guests=tuple(guest_sample(g, seq * DT + t) for g in guests),
            sources=sources,
            interval_s=DT,
        )
        for t in (0, DT)
    ]
    frame = derive(samples[0], samples[1])
    if incidents is None:
        incidents = grouped(wall, findings)
    return build_snapshot(
        frame,
        findings,
        sources,
        mode=mode,
        interval_s=DT,
        recording=recording,
        seq=seq,
        incidents=incidents,
        recent=(*recent, frame),
    )


def grouped(
    wall_s: float, findings: tuple[Finding, ...], tracker: IncidentTracker | None = None
) -> tuple[Incident, ...]:
    """The ranked incidents of `findings` at `wall_s`, as `tracker` (a fresh one when
    None: every finding opens or joins an incident now) groups them."""
    if not findings and tracker is None:
        return ()
    tracker = tracker or IncidentTracker()
    tracker.update(wall_s, findings)
    return tracker.current()


def fleet(n: int, seq: int = 1) -> list[GuestSpec]:
    """n varied guests; their rates move with `seq` so every frame changes cells."""
    return [
        GuestSpec(
            name=f"vm-{i:03d}",
            vcpus=1 + i % 8,
            cpu_pct=(i * 7 + seq * 3) % 100,
            steal_pct=(i * 3 + seq) % 25,
            exits_per_s=1000.0 * (1 + (i + seq) % 50),
            disk_iops=float((i * 13 + seq * 5) % 400),
            disk_ms=0.2 + (i % 30),
            net_mbps=float((i * 11 + seq) % 900),
            drops_per_s=float(i % 4 == 0) * seq,
            mem_mib=512 * (1 + i % 8),
            used_mib=200 + (i * 17 + seq) % 300,
        )
        for i in range(n)
    ]


class FakeFeed:
    """A `Feed` over prepared snapshots.

    `next()` returns the queued snapshots in order and then blocks, like a live feed
    between ticks, until `push()` adds one, `end()` ends the stream (None), or the
    app cancels its worker (so a test never leaves a thread behind).
    """

    def __init__(
        self, frames: Iterable[Snapshot] = (), *, interval_s: float = 0.0, ended: bool = False
    ) -> None:
        """Queue `frames`; with `ended`, the feed reports its end after them."""
        self.interval_s = interval_s
        self.closed = False
        self.focused: list[str | None] = []
        """Every `focus()` request, in order."""
        self._queue: queue.Queue[Snapshot | None] = queue.Queue()
        for frame in frames:
            self.push(frame)
        if ended:
            self.end()

    def push(self, frame: Snapshot) -> None:
        """Queue one more snapshot."""
        self._queue.put(frame)

    def end(self) -> None:
        """End the stream after the queued snapshots."""
        self._queue.put(None)

    def next(self) -> Snapshot | None:
        """The next queued snapshot, waiting for one; None at the end or on cancel."""
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                return self._queue.get(timeout=0.02)
            except queue.Empty:
                continue
        return None

    def focus(self, uuid: str | None) -> None:
        """Record the request (nothing is traced)."""
        self.focused.append(uuid)

    def close(self) -> None:
        """Nothing to release."""
        self.closed = True


async def wait_until(
    pilot: Pilot[None], condition: Callable[[], bool], timeout: float = 5.0
) -> None:
    """Let the app run until `condition()` holds (frames arrive from a thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the app did not reach the expected state in time")
        await pilot.pause(0.01)
