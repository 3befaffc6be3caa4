"""Cost of per-reason KVM tracing for one guest: kvmtop's CPU per tick, and the guest's.

    python bench/bench_tracepoints.py [--guest lab-probe-pio] [--ticks 100] [--window 10]

Needs root, tracefs, perf_event_open and a running KVM guest (the lab's port-I/O
probe by default: 200 port writes per BIOS timer tick, about 3,650 userspace exits/s).

Three configurations of `TracepointCollector`, each measured the same way:
  off      nothing attached (what every tick costs when no detail screen is open);
  default  attached with the counters this host supports (all but per-reason kvm_exit
           when the KVM vendor module is unknown, e.g. PVM);
  vmx      attached with the VMX reason table forced on (the full per-reason set a
           VMX host gets: about 120 events per vCPU).
For each: kvmtop's CPU per `enrich()` call (`time.process_time_ns` over `--ticks`
back-to-back calls), attach and detach wall time, and the guest vCPU thread's run
time per second over `--window` seconds (schedstat), since the filters run in the
vCPU thread when a traced event fires.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvmtop.collectors import procfs
from kvmtop.collectors.host import read_text
from kvmtop.collectors.tracepoints import KVM_ISA_VMX, TracepointCollector
from kvmtop.model.sample import GuestSample, VcpuSample
from kvmtop.model.units import NS_PER_S


def lab_guest(name: str) -> GuestSample:
    """A running libvirt guest with its vCPU threads (by comm)."""
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
    uuid = subprocess.run(
        ["virsh", "-q", "domuuid", name], capture_output=True, text=True, check=True
    ).stdout.strip()
    vcpus = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found = procfs.parse_vcpu_comm(read_text(task / "comm"))
        if found is not None:
            vcpus.append(VcpuSample(found[0], tid=int(task.name)))
    return GuestSample(
        uuid=uuid, name=name, pid=pid, state="running", accel="kvm", vcpus=tuple(vcpus)
    )


def vcpu_run_ns(guest: GuestSample) -> int:
    """Sum of the vCPU threads' schedstat run time."""
    return sum(
        procfs.parse_task_schedstat(read_text(Path(f"/proc/{guest.pid}/task/{v.tid}/schedstat")))[0]
        for v in guest.vcpus
    )


@dataclass(frozen=True)
class Row:
    """One configuration's figures."""

    label: str
    counters: int
    mean_us: float
    median_us: float
    p95_us: float
    attach_ms: float
    detach_ms: float
    vcpu_pct: float


def measure(
    label: str, tracer: TracepointCollector | None, guest: GuestSample, ticks: int, window: float
) -> Row:
    """CPU per enrich, attach/detach time and guest vCPU CPU% for one configuration."""
    collector = tracer or TracepointCollector()
    attach_s = detach_s = 0.0
    if tracer is not None:
        t0 = time.perf_counter()
        tracer.attach(guest.uuid, [v.tid for v in guest.vcpus if v.tid])
        attach_s = time.perf_counter() - t0
    try:
        per_tick = []
        for _ in range(ticks):
            t0 = time.process_time_ns()
            out = collector.enrich([guest])
            per_tick.append(time.process_time_ns() - t0)
        run0, w0 = vcpu_run_ns(guest), time.monotonic()
        time.sleep(window)
        run1, w1 = vcpu_run_ns(guest), time.monotonic()
        counters = len(out[0].exit_reasons)
    finally:
        if tracer is not None:
            t0 = time.perf_counter()
            tracer.detach(guest.uuid)
            detach_s = time.perf_counter() - t0
    return Row(
        label=label,
        counters=counters,
        mean_us=statistics.mean(per_tick) / 1e3,
        median_us=statistics.median(per_tick) / 1e3,
        p95_us=sorted(per_tick)[int(0.95 * (len(per_tick) - 1))] / 1e3,
        attach_ms=attach_s * 1e3,
        detach_ms=detach_s * 1e3,
        vcpu_pct=100.0 * (run1 - run0) / ((w1 - w0) * NS_PER_S),
    )


def main() -> None:
    """Run the three configurations and print one row each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guest", default="lab-probe-pio")
    p.add_argument("--ticks", type=int, default=100)
    p.add_argument("--window", type=float, default=10.0)
    args = p.parse_args()
    guest = lab_guest(args.guest)
    default = TracepointCollector()
    vmx = TracepointCollector(isa=KVM_ISA_VMX)
    for c in (default, vmx):
        probe = c.probe()
        if not probe.available:
            sys.exit(f"tracepoints unavailable: {probe.reason}")
    print(f"guest {guest.name} pid {guest.pid} vCPU tids {[v.tid for v in guest.vcpus]}")
    print(f"host ISA: {default.probe().detail['isa']}")
    rows = [
        measure("off", None, guest, args.ticks, args.window),
        measure("default", default, guest, args.ticks, args.window),
        measure("vmx", vmx, guest, args.ticks, args.window),
        measure("off", None, guest, args.ticks, args.window),
    ]
    print(
        f"{'config':8} {'events':>6} {'enrich mean':>12} {'median':>8} {'p95':>8} "
        f"{'attach':>8} {'detach':>8} {'guest vCPU':>10}"
    )
    for r in rows:
        print(
            f"{r.label:8} {r.counters:6d} {r.mean_us:10.1f}us {r.median_us:6.1f}us "
            f"{r.p95_us:6.1f}us {r.attach_ms:6.1f}ms {r.detach_ms:6.1f}ms {r.vcpu_pct:9.1f}%"
        )


if __name__ == "__main__":
    main()
