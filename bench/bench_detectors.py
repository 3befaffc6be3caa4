"""CPU time of the detector engine per tick at 100 guests with a full window.

    python bench/bench_detectors.py [--guests 100] [--ticks 900]

Builds a fake host (test builders: real `Sample`s through the real `Window.push`),
fills the window (1800 samples) and then times only the engine call per tick with
`time.process_time_ns`. Guests have 2 vCPUs, a disk, a NIC on a bridge and balloon
stats refreshed every 5th tick (the collector's slow tier); one in ten leaks memory,
so the Mann–Kendall / Theil–Sen evaluations (every 30 s per guest, staggered) are in
the figures. Prints mean, median, p95 and max per tick, and per guest.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.detectors.builders import (
    DiskSpec,
    GuestSpec,
    HostSpec,
    NetDevSpec,
    NicSpec,
    VcpuSpec,
    World,
    balloon,
)


def build(guests: int) -> World:
    """A host with `guests` busy guests on one bridge."""
    specs = [
        GuestSpec(
            f"00000000-0000-0000-0000-{i:012d}",
            f"guest-{i:03d}",
            vcpus=[
                VcpuSpec(
                    cpu_pct=40.0,
                    steal_pct=1.0,
                    exits_per_s=2000.0,
                    categories={"halt_exits": 1500.0, "io_exits": 300.0},
                )
                for _ in range(2)
            ],
            disks=[DiskSpec(rd_iops=100.0, wr_iops=50.0, fl_iops=5.0)],
            nics=[NicSpec(f"vnet{i}", rx_pps=2000.0, rx_drops=0.0)],
        )
        for i in range(guests)
    ]
    netdevs = [NetDevSpec("br0", "bridge"), NetDevSpec("eth0", "physical", "br0", 10_000)]
    netdevs += [NetDevSpec(f"vnet{i}", "tap", master="br0") for i in range(guests)]
    return World(specs, HostSpec(ncpu=64, mem_total=512 << 30, netdevs=netdevs))


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=100)
    parser.add_argument("--ticks", type=int, default=900, help="timed ticks after warm-up")
    args = parser.parse_args()
    world = build(args.guests)
    window_size = 1800
    timings: list[int] = []
    total = window_size + args.ticks
    for tick in range(total):
        if tick % 5 == 0:
            for i, g in enumerate(world.guests):
                leak = 5.0 * tick * 2 / 60 if i % 10 == 0 else 0.0
                g.balloon = balloon(
                    200.0 + leak + (tick % 7) * 0.1,
                    total_mib=4000.0,
                    current_mib=4096.0,
                    last_update_s=world.wall_s + 1,
                )
        window = world.push()
        start = time.process_time_ns()
        world.engine(window)
        if tick >= window_size:
            timings.append(time.process_time_ns() - start)
    assert len(window) == window_size
    ms = sorted(t / 1e6 for t in timings)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    print(
        f"detector engine, {args.guests} guests, window {window_size} samples, "
        f"{len(ms)} timed ticks"
    )
    print(
        f"  CPU per tick: mean {statistics.mean(ms):.2f} ms, median {statistics.median(ms):.2f}"
        f" ms, p95 {p95:.2f} ms, max {ms[-1]:.2f} ms"
    )
    print(f"  per guest:    mean {1000 * statistics.mean(ms) / args.guests:.1f} µs")
    print(f"  at a 2 s tick: {statistics.mean(ms) / 2000 * 100:.2f} % of one core")


if __name__ == "__main__":
    main()
