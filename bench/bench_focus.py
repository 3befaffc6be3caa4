"""CPU per live tick with per-reason tracing on for one guest against off, through the
real sampler (the path the detail screen switches).

    python bench/bench_focus.py [--guest lab-probe-pio] [--ticks 30] [--interval 1]

Needs root and a running KVM guest (the lab's port-I/O probe by default). Runs
`build_sampler` and the pipeline at `--interval` in three phases of `--ticks` ticks:
off, on (`Sampler.trace([guest])`, the tick that attaches measured apart), off again
(the tick that detaches measured apart). Per phase: kvmtop's process time per tick,
the tracepoint source's wall time per tick, and the guest's CPU % as kvmtop shows it
(the filters run in the vCPU thread when a traced event fires, so that is where the
guest-side cost lands). bench/bench_tracepoints.py measures the collector alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvmtop.config import Settings
from kvmtop.feed.pipeline import Pipeline
from kvmtop.model.rates.kvm import TRACE_ATTACHED, TRACE_FDS, TRACE_SOURCE
from kvmtop.model.snapshot import Snapshot
from kvmtop.sampler import Sampler
from kvmtop.wiring import build_pipeline, build_sampler


def tick(sampler: Sampler, pipeline: Pipeline) -> tuple[Snapshot, float]:
    """One sample through the pipeline, and the process time it took (s)."""
    cpu0 = time.process_time()
    snap = pipeline.push(sampler.sample(), mode="live")
    return snap, time.process_time() - cpu0


def phase(
    label: str, sampler: Sampler, pipeline: Pipeline, guest: str, ticks: int, interval_s: float
) -> None:
    """Run `ticks` paced ticks and print one row."""
    cpu, trace_ms, guest_cpu = [], [], []
    fds = attached = ""
    deadline = time.monotonic()
    for _ in range(ticks):
        snap, spent = tick(sampler, pipeline)
        cpu.append(spent * 1e3)
        (status,) = [s for s in snap.sources if s.name == TRACE_SOURCE]
        trace_ms.append(status.duration_ns / 1e6)
        fds, attached = status.detail.get(TRACE_FDS, ""), status.detail.get(TRACE_ATTACHED, "")
        g = next((g for g in snap.guests if g.name == guest), None)
        if g is not None and g.cpu_pct is not None:
            guest_cpu.append(g.cpu_pct)
        deadline += interval_s
        time.sleep(max(0.0, deadline - time.monotonic()))
    print(
        f"{label:4} {statistics.mean(cpu):9.2f} {statistics.median(cpu):8.2f} "
        f"{statistics.median(trace_ms):9.3f} "
        f"{statistics.median(guest_cpu) if guest_cpu else float('nan'):9.2f} "
        f"{fds:>5} {'yes' if attached else 'no'}"
    )


def main() -> None:
    """Measure the three phases and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guest", default="lab-probe-pio")
    p.add_argument("--ticks", type=int, default=30)
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args()
    settings = Settings(interval_s=args.interval)
    sampler, pipeline = build_sampler(settings), build_pipeline(settings)
    try:
        for _ in range(2):  # warm up: XML, thread maps, probes (tracepoints: ~0.5 s)
            tick(sampler, pipeline)
        print(
            f"{'':4} {'ms CPU/tick':>9} {'median':>8} {'trace ms':>9} {'guest CPU%':>9} "
            f"{'fds':>5} traced"
        )
        phase("off", sampler, pipeline, args.guest, args.ticks, args.interval)
        for label, wanted in (("on", [args.guest]), ("off", [])):
            sampler.trace(wanted)
            w0 = time.monotonic()
            snap, spent = tick(sampler, pipeline)
            (status,) = [s for s in snap.sources if s.name == TRACE_SOURCE]
            print(
                f"  {'attach' if wanted else 'detach'} tick: {spent * 1e3:.1f} ms CPU, "
                f"{(time.monotonic() - w0) * 1e3:.0f} ms wall; tracepoints ok={status.ok}"
                f"{'' if status.ok else ': ' + (status.reason or '')}"
            )
            phase(label, sampler, pipeline, args.guest, args.ticks, args.interval)
    finally:
        sampler.close()


if __name__ == "__main__":
    main()
