"""CPU cost of one live tick on this host, against `virsh domstats` for the same groups.

Usage: python bench/bench_collect.py [TICKS]

Runs the real sampler and pipeline (collectors → rates → detectors → snapshot) at
a 2 s interval for TICKS ticks against qemu:///system and reports, per tick:
kvmtop's own CPU (process time), libvirtd's CPU during kvmtop's ticks, and the same
two numbers for `virsh domstats` asking the groups kvmtop asks (libvirt's own C
client, the floor for a libvirt consumer), run in the same process and minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kvmtop.cli import build_pipeline, build_sampler
from kvmtop.config import Settings

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (and its reaped children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / CLK


def libvirtd_pid() -> int:
    """The running libvirtd's pid."""
    out = subprocess.run(["pidof", "libvirtd"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def main() -> None:
    """Measure and print the table."""
    ticks = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    daemon = libvirtd_pid()
    settings = Settings(interval_s=2.0)
    sampler = build_sampler(settings)
    pipeline = build_pipeline(settings)
    pipeline.push(sampler.sample(), mode="live")  # warm up: XML, thread maps, probes
    guests = 0
    cpu0, d0 = time.process_time(), proc_cpu_s(daemon)
    deadline = time.monotonic()
    for _ in range(ticks):
        snap = pipeline.push(sampler.sample(), mode="live")
        guests = len(snap.guests)
        deadline += settings.interval_s
        time.sleep(max(0.0, deadline - time.monotonic()))
    kvmtop_ms = (time.process_time() - cpu0) / ticks * 1000
    kvmtop_daemon_ms = (proc_cpu_s(daemon) - d0) / ticks * 1000
    sampler.close()

    # virsh domstats with the fast-tier groups (and balloon every 5th call, as kvmtop).
    self_pid = os.getpid()
    c0, d0 = proc_cpu_s(self_pid), proc_cpu_s(daemon)
    deadline = time.monotonic()
    for i in range(ticks):
        args = ["virsh", "-r", "-c", "qemu:///system", "domstats", "--state", "--cpu-total",
                "--vcpu", "--interface", "--block", "--nowait"]
        if i % settings.balloon_every == 0:
            args.append("--balloon")
        subprocess.run(args, capture_output=True, check=True)
        deadline += settings.interval_s
        time.sleep(max(0.0, deadline - time.monotonic()))
    # Children's CPU shows in our cutime/cstime once reaped.
    virsh_ms = (proc_cpu_s(self_pid) - c0) / ticks * 1000
    virsh_daemon_ms = (proc_cpu_s(daemon) - d0) / ticks * 1000

    print(f"guests: {guests}, ticks: {ticks}, interval 2 s")
    print(f"{'':28}{'client ms/tick':>16}{'libvirtd ms/tick':>18}{'total':>10}")
    print(f"{'kvmtop (all collectors)':28}{kvmtop_ms:16.1f}{kvmtop_daemon_ms:18.1f}"
          f"{kvmtop_ms + kvmtop_daemon_ms:10.1f}")
    print(f"{'virsh domstats (same groups)':28}{virsh_ms:16.1f}{virsh_daemon_ms:18.1f}"
          f"{virsh_ms + virsh_daemon_ms:10.1f}")
    print(f"kvmtop client CPU per guest per tick: {kvmtop_ms / max(guests, 1):.2f} ms")
    print(f"ratio (kvmtop + libvirtd) / (virsh + libvirtd): "
          f"{(kvmtop_ms + kvmtop_daemon_ms) / (virsh_ms + virsh_daemon_ms):.2f}")


if __name__ == "__main__":
    main()
