"""CPU time per tick of the topology, vswitch, qdisc and RTT collectors on this host.

    python bench/bench_topology.py [--calls 100]

Needs the running lab (root, libvirt, OVS). Each figure is `time.process_time_ns`
over `--calls` calls, divided by the calls, after one warm-up call:
- host: `HostCollector.collect()` with and without the rtnetlink qdisc dump, the
  qdisc dump alone, and `tc -s -j qdisc show` (parent + child CPU) for comparison;
- topology: `TopologyCollector.enrich()` over the lab's guests (after sched);
- vswitch: one refresh (every call) and the carried-forward call of the slow tier;
  the OVS CLIs for comparison;
- netprobe: `enrich()` with a clock advancing 2 s per call (the default tick), so
  probes go out every third call as in real use; ARP warmed for every lab guest.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvmtop.collectors import rtnetlink
from kvmtop.collectors.host import HostCollector
from kvmtop.collectors.libvirt.collector import LibvirtCollector
from kvmtop.collectors.netprobe import NetProbe
from kvmtop.collectors.rtt_probers import IcmpProber
from kvmtop.collectors.sched import SchedCollector
from kvmtop.collectors.topology import TopologyCollector
from kvmtop.collectors.vswitch import VswitchCollector

MANIFEST = Path("/var/lib/kvmtop-lab/manifest.json")


def per_call_ms(fn: Callable[[], object], calls: int) -> float:
    """Mean process CPU per call in ms (one warm-up call first)."""
    fn()
    t0 = time.process_time_ns()
    for _ in range(calls):
        fn()
    return (time.process_time_ns() - t0) / calls / 1e6


def children_ms(argv: list[str], calls: int) -> float:
    """Mean CPU (this process + children) per run of a command, in ms."""

    def total() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    t0 = total()
    for _ in range(calls):
        subprocess.run(argv, capture_output=True, check=True)
    return (total() - t0) / calls * 1e3


def main() -> None:
    """Run the measurements and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    n = parser.parse_args().calls
    fig: dict[str, float] = {}

    fig["host.collect (with qdisc dump)"] = per_call_ms(HostCollector().collect, n)
    fig["host.collect (no qdisc)"] = per_call_ms(HostCollector(qdiscs=dict).collect, n)
    fig["rtnetlink root_qdiscs"] = per_call_ms(rtnetlink.root_qdiscs, n)
    fig["tc -s -j qdisc show (for comparison)"] = children_ms(
        ["tc", "-s", "-j", "qdisc", "show"], min(n, 30)
    )

    lv = LibvirtCollector("qemu:///system")
    guests = SchedCollector().enrich(lv.collect(0))
    running = [g for g in guests if g.state == "running"]
    topo = TopologyCollector()
    fig[f"topology.enrich ({len(running)} guests)"] = per_call_ms(lambda: topo.enrich(guests), n)

    base = HostCollector(qdiscs=dict).collect()
    fresh = VswitchCollector(every_s=0)
    slow = VswitchCollector()
    fig["vswitch refresh (2 JSON-RPC calls)"] = per_call_ms(lambda: fresh.enrich_host(base), n)
    fig["vswitch carried forward (slow tier)"] = per_call_ms(lambda: slow.enrich_host(base), n)
    fig["ovs-vsctl + ovs-appctl (for comparison)"] = children_ms(
        ["ovs-appctl", "dpctl/show", "-s"], min(n, 30)
    ) + children_ms(["ovs-vsctl", "--format=json", "list", "Interface"], min(n, 30))

    ips = [g["ip"] for g in json.loads(MANIFEST.read_text())["guests"].values() if g["ip"]]
    warm = IcmpProber()
    for ip in ips:
        warm.send(ip, ip, None, time.monotonic_ns())
    time.sleep(1.5)
    warm.collect(time.monotonic_ns(), 10**12)
    warm.close()
    clock = [time.monotonic_ns()]

    def tick() -> None:
        clock[0] += 2_000_000_000
        probe.enrich(guests)

    probe = NetProbe(domain_info=lv.domain_info, clock=lambda: clock[0])
    fig[f"netprobe.enrich ({len(running)} guests, 2 s ticks)"] = per_call_ms(tick, n)
    probe.close()
    lv.close()

    for name, ms in fig.items():
        print(f"{name:55s} {ms:8.3f} ms/call")


if __name__ == "__main__":
    main()
