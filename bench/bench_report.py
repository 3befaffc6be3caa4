"""`kvmtop report` over a day-long recording: wall time, and the file's bytes per guest-sample.

    python bench/bench_report.py [--guests 50] [--hours 24] [--path FILE]
                                 [--full-hours H] [--steps 60 300] [--full]

1. The recording: `--hours` of samples at 2 s from `--guests` synthetic guests
   (tests/store/synth.py: the ~40 KVM stats per vCPU libvirt re-exports, a disk, a
   NIC, balloon stats, host devices; guest 0 leaks memory) plus a 30-minute steal
   episode (30 %) on guest 1 from hour 3, written once through the real
   `StoreWriter` to `--path` and reused while its sample count and guests match.
   Generating 24 h × 50 guests takes about 25 minutes (sample building plus the
   writer's ~12 ms per sample).
2. Where the time goes, over the first `--breakdown` samples: read + decode
   (`StoreReader.iter`), the shared pipeline (rates, detectors, snapshot; a
   two-sample window as the CLI uses), and the report's own accumulation
   (`Accumulator.add`), in CPU ms per sample.
3. `kvmtop report` through the CLI (`kvmtop.cli.main`, HTML to a temporary file):
   at full resolution over the first `--full-hours` (every sample through the shared
   pipeline; the whole file only with `--full`, extrapolated otherwise, and said so),
   and over the whole file at each `--steps` resolution (rates over the step).
   Each figure is wall time (`time.perf_counter`) and CPU time (`time.process_time`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvmtop.cli import build_pipeline
from kvmtop.cli import main as kvmtop_main
from kvmtop.config import Settings
from kvmtop.detectors.settings import VswitchSettings
from kvmtop.model.sample import Sample
from kvmtop.report import Accumulator
from kvmtop.store.meta import StoreError
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from tests.store.synth import SyntheticHost

S = 1_000_000_000
INTERVAL_S = 2.0
STEAL_FROM_S = 3 * 3600.0
STEAL_FOR_S = 1800.0
STEAL_SHARE = 0.3


def samples(guests: int, n: int) -> Iterator[Sample]:
    """`n` synthetic samples; guest 1's vCPUs wait `STEAL_SHARE` of the time in the episode."""
    host = SyntheticHost(guests, interval_s=INTERVAL_S)
    extra_ns = 0
    for i in range(n):
        sample = host.sample()
        if STEAL_FROM_S <= i * INTERVAL_S < STEAL_FROM_S + STEAL_FOR_S:
            extra_ns += int(STEAL_SHARE * INTERVAL_S * S)
        if extra_ns and guests > 1:
            g = sample.guests[1]
            vcpus = tuple(replace(v, delay_ns=(v.delay_ns or 0) + extra_ns,
                                  sched_delay_ns=(v.sched_delay_ns or 0) + extra_ns)
                          for v in g.vcpus)
            sample = replace(sample, guests=(sample.guests[0], replace(g, vcpus=vcpus),
                                             *sample.guests[2:]))
        yield sample


def recording(path: Path, guests: int, hours: float) -> Path:
    """The recording at `path`, written unless it already holds the right samples."""
    n = int(hours * 3600 / INTERVAL_S)
    try:
        with StoreReader(path) as reader:
            first = reader.first_index()
            sample = reader.read(first) if first is not None else None
            if reader.count() == n and sample is not None and len(sample.guests) == guests:
                print(f"reusing {path}: {n} samples, {guests} guests")
                return path
    except StoreError:
        pass
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    writer = StoreWriter(path)
    for i, sample in enumerate(samples(guests, n)):
        writer.append(sample)
        if i % 3600 == 0:
            print(f"  {i}/{n} samples written ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    writer.close()
    print(f"written {n} samples in {time.perf_counter() - started:.0f} s")
    return path


def breakdown(path: Path, n: int) -> None:
    """CPU ms per sample of decoding, of the pipeline and of the report's accumulation."""
    with StoreReader(path) as reader:
        first = reader.first_time()
        assert first is not None
        span = (first, first + (n - 1) * INTERVAL_S)
        cpu = time.process_time()
        decoded = list(reader.iter(*span))
        decode = time.process_time() - cpu
    pipeline = build_pipeline(replace(Settings(), window_size=2))
    cpu = time.process_time()
    snapshots = [pipeline.push(sample, mode="replay") for sample in decoded]
    push = time.process_time() - cpu
    acc = Accumulator(span, VswitchSettings().uplink_kinds)
    cpu = time.process_time()
    for snap in snapshots:
        acc.add(snap)
    fold = time.process_time() - cpu
    ms = 1000 / len(decoded)
    print(f"CPU per sample (first {len(decoded)}): read + decode {decode * ms:5.1f} ms, "
          f"pipeline {push * ms:5.1f} ms, report accumulation {fold * ms:5.1f} ms")


def time_report(path: Path, *extra: str) -> tuple[float, float]:
    """(wall s, CPU s) of `kvmtop report FILE --format html -o TMP ...`."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "report.html"
        wall, cpu = time.perf_counter(), time.process_time()
        status = kvmtop_main(["report", str(path), "--format", "html", "-o", str(out), *extra])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert status == 0 and out.stat().st_size > 0, status
    return wall, cpu


def main() -> None:
    """Make (or reuse) the recording, then time the report and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--guests", type=int, default=50)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--path", type=Path,
                   default=Path(tempfile.gettempdir()) / "kvmtop-bench" / "report-24h-50g.kvmtop")
    p.add_argument("--full-hours", type=float, default=1.0,
                   help="hours timed at full resolution (then extrapolated to --hours)")
    p.add_argument("--full", action="store_true",
                   help="also time the whole file at full resolution")
    p.add_argument("--steps", type=float, nargs="*", default=[60.0, 300.0])
    p.add_argument("--breakdown", type=int, default=300, metavar="N",
                   help="samples for the per-stage breakdown (0: skip)")
    args = p.parse_args()

    path = recording(args.path, args.guests, args.hours)
    with StoreReader(path) as reader:
        n = reader.count()
    size = path.stat().st_size
    print(f"\n== {args.hours:g} h × {args.guests} guests at {INTERVAL_S:g} s: {n} samples ==")
    print(f"file {size / 1e6:.0f} MB, {size / n / args.guests:.0f} B per guest-sample")

    if args.breakdown:
        breakdown(path, args.breakdown)
    wall, cpu = time_report(path, "--to", f"+{args.full_hours * 3600:g}s")
    per_hour = wall / args.full_hours
    print(f"full resolution, first {args.full_hours:g} h: {wall:6.1f} s wall, {cpu:6.1f} s CPU"
          f" → {per_hour * args.hours:6.0f} s for {args.hours:g} h (extrapolated)")
    if args.full:
        wall, cpu = time_report(path)
        print(f"full resolution, whole file:  {wall:6.1f} s wall, {cpu:6.1f} s CPU (measured)")
    for step in args.steps:
        wall, cpu = time_report(path, "--step", f"{step:g}")
        print(f"--step {step:g} s, whole file:    {wall:6.1f} s wall, {cpu:6.1f} s CPU")


if __name__ == "__main__":
    main()
