"""`kvmtop report` over a day-long recording: wall time, and the file's bytes per guest-sample.

    python bench/bench_report.py [--guests 50] [--hours 24] [--path FILE]
                                 [--full-hours H] [--steps 60 300] [--full] [--seeks N]
    from bench import bench_report; figures = bench_report.run(path, guests=50, hours=24)

1. The recording: `--hours` of samples at 2 s from `--guests` synthetic guests
   (tests/store/synth.py: the ~40 KVM stats per vCPU libvirt re-exports, a disk, a
   NIC, balloon stats, host devices; guest 0 leaks memory) plus a 30-minute steal
   episode (30 %) on guest 1 from hour 3, written once as `kvmtop record` writes it
   (`IndexedWriter`: the raw samples and the report's index) to `--path`, and reused
   while its sample count and guests match. A reused file whose index does not cover
   it (an older format, an interrupted run) is reindexed (`kvmtop.report.index.reindex`);
   one whose minutes are indexed but not its hours gets its hours merged from the
   minutes (`HourRoller`, what the recorder does as it goes). Generating 24 h × 50
   guests takes about an hour on an idle 2-CPU host (the writer's ~12 ms and the
   index's ~40 ms per sample); far more on a loaded one.
2. Where the time goes, over the first `--breakdown` samples: read + decode
   (`StoreReader.iter`), the shared pipeline (rates, detectors, snapshot; a
   two-sample window as the CLI uses), and the report's own accumulation
   (`Accumulator.add`), in CPU ms per sample.
3. `kvmtop report` through the CLI (`kvmtop.commands.main.main`, HTML to a temporary file):
   from the index over the whole file (and over the indexed part when the index
   does not reach the end yet, said so); with `--exact` over the first
   `--full-hours` (every sample through the shared pipeline; the whole file only
   with `--full`, extrapolated otherwise, and said so), and over the whole file at
   each `--steps` resolution (rates over the step). Each figure is wall time
   (`time.perf_counter`) and CPU time (`time.process_time`).
4. Seek: `bench_store.seek_times` on the file (`--seeks` random times).

Figures of 2026-11-26 (the lab host: 2 vCPUs, load average 5-7 from the lab's
guests and other work, so wall time is about twice CPU time), 24 h × 50 guests:
- file format 1 (samples only), 454 MB: 210 B per guest-sample; format 2 with the
  index: 213 B at 8.2 h of 24 indexed (index blobs 3.2 B), so about 219 B indexed
  whole (the synthetic 600-sample file of bench_store: 208 → 219 B).
- report from the index over the first 8.16 h: 2.7 s wall, 1.5 s CPU; 8.0 s wall
  for 24 h extrapolated (the merge is linear in hours). --exact over the first
  0.25 h: 31.3 s wall, 14.3 s CPU; 3,003 s for 24 h extrapolated (1,642 s measured
  whole on the same host earlier, at a lower load). --step 300: 22.0 s wall.
- seek (format 1 file; samples are stored alike in format 2), 100 random times:
  StoreReader.seek + read median 25 ms, p95 56 ms; ReplayFeed.seek (prime + target
  through the pipeline) median 100 ms, p95 197 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_store import seek_times, table_bytes
from kvmtop.commands.main import main as kvmtop_main
from kvmtop.config import Settings
from kvmtop.detectors.settings import VswitchSettings
from kvmtop.model.sample import Sample
from kvmtop.model.units import NS_PER_S
from kvmtop.report.accumulate import Accumulator
from kvmtop.report.index import VERSION, HourRoller, IndexedWriter, reindex
from kvmtop.store.meta import FORMAT_VERSION, StoreError
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from kvmtop.wiring import build_pipeline
from tests.store.synth import SyntheticHost

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
            extra_ns += int(STEAL_SHARE * INTERVAL_S * NS_PER_S)
        if extra_ns and guests > 1:
            g = sample.guests[1]
            vcpus = tuple(
                msgspec.structs.replace(
                    v,
                    delay_ns=(v.delay_ns or 0) + extra_ns,
                    sched_delay_ns=(v.sched_delay_ns or 0) + extra_ns,
                )
                for v in g.vcpus
            )
            g = msgspec.structs.replace(g, vcpus=vcpus)
            sample = replace(sample, guests=(sample.guests[0], g, *sample.guests[2:]))
        yield sample


def index_pipeline() -> Any:
    """The pipeline `kvmtop record` indexes with."""
    return build_pipeline(replace(Settings(), window_size=2))


def indexed(reader: StoreReader, *, hours: bool = False) -> int:
    """Samples the minute (or hour) rollups cover, 0 when they are of another layout
    than this kvmtop's (`kvmtop.report.index.VERSION`): a report would ignore them."""
    rows = reader.rollups(hours=hours)
    data = rows[0][3] if rows else None
    current = data is not None and json.loads(data).get("v") == VERSION
    return sum(r[2] for r in rows) if current else 0


def recording(path: Path, guests: int, hours: float, *, index: bool = True) -> Path:
    """The recording at `path`, written unless it already holds the right samples in
    this kvmtop's file format;
    with `index`, its index completed as described in the module docstring."""
    n = int(hours * 3600 / INTERVAL_S)
    try:
        with StoreReader(path) as reader:
            first = reader.first_index()
            sample = reader.read(first) if first is not None else None
            reuse = (
                reader.count() == n
                and sample is not None
                and len(sample.guests) == guests
                and reader.meta.format_version == FORMAT_VERSION
            )
            minutes = indexed(reader) if reuse else 0
            hours_done = indexed(reader, hours=True) if reuse else 0
        if reuse:
            print(f"reusing {path}: {n} samples, {guests} guests")
            if index and minutes < n:
                started = time.perf_counter()
                reindex(str(path), index_pipeline(), VswitchSettings().uplink_kinds)
                print(f"reindexed in {time.perf_counter() - started:.0f} s")
            elif index and hours_done < n:
                roll_hours(path)
            return path
    except StoreError:
        pass
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    writer = IndexedWriter(StoreWriter(path), index_pipeline(), VswitchSettings().uplink_kinds)
    for i, sample in enumerate(samples(guests, n)):
        writer.append(sample)
        if i % 3600 == 0:
            print(f"  {i}/{n} samples written ({time.perf_counter() - started:.0f} s)", flush=True)
    writer.close()
    print(f"written {n} samples in {time.perf_counter() - started:.0f} s")
    return path


def roll_hours(path: Path) -> int:
    """Merge the minute rollups of `path` into hour rollups, as the recorder does."""
    with StoreReader(path) as reader:
        minutes = reader.rollups()
    writer = StoreWriter(path)
    roller = HourRoller(VswitchSettings().uplink_kinds, writer.append_rollup)
    try:
        for first_s, last_s, n, data in minutes:
            assert data is not None
            roller.add((first_s, last_s, n), json.loads(data))
        roller.flush()
    finally:
        writer.close()
    print(f"hours merged from {len(minutes)} minute rollups")
    return len(minutes)


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
    print(
        f"CPU per sample (first {len(decoded)}): read + decode {decode * ms:5.1f} ms, "
        f"pipeline {push * ms:5.1f} ms, report accumulation {fold * ms:5.1f} ms"
    )


def time_report(path: Path, *extra: str) -> tuple[float, float]:
    """(wall s, CPU s) of `kvmtop report FILE --format html -o TMP ...`."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "report.html"
        wall, cpu = time.perf_counter(), time.process_time()
        status = kvmtop_main(["report", str(path), "--format", "html", "-o", str(out), *extra])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert status == 0 and out.stat().st_size > 0, status
    return wall, cpu


def run(
    path: Path,
    guests: int = 50,
    hours: float = 24.0,
    *,
    full_hours: float = 1.0,
    full: bool = False,
    steps: Sequence[float] = (60.0, 300.0),
    breakdown_n: int = 300,
    seeks: int = 200,
    index: bool = True,
) -> dict[str, Any]:
    """Make (or reuse) the recording, time the report and seeks; the figures by name,
    also printed. Without `index`, a reused file's index is used as it is (the report
    from the index is then timed over the part it covers, and extrapolated)."""
    path = recording(path, guests, hours, index=index)
    with StoreReader(path) as reader:
        n = reader.count()
        first = reader.first_time()
        minutes = reader.rollups()
    assert first is not None
    size = path.stat().st_size
    tables = table_bytes(path)
    index = sum(v for k, v in tables.items() if k.endswith("rollups"))
    figures: dict[str, Any] = {
        "samples": n,
        "guests": guests,
        "hours": hours,
        "file_bytes": size,
        "bytes_per_guest_sample": size / n / guests,
        "index_bytes_per_guest_sample": index / n / guests,
    }
    print(f"\n== {hours:g} h × {guests} guests at {INTERVAL_S:g} s: {n} samples ==")
    print(
        f"file {size / 1e6:.0f} MB, {size / n / guests:.0f} B per guest-sample, of which "
        f"the index's blobs {index / n / guests:.1f}"
    )
    if breakdown_n:
        breakdown(path, breakdown_n)
    indexed = sum(r[2] for r in minutes)
    if indexed == n:
        wall, cpu = time_report(path)
        print(f"from the index, whole file:   {wall:6.1f} s wall, {cpu:6.1f} s CPU")
        figures |= {"report_index_s": wall, "report_index_cpu_s": cpu}
    elif minutes:
        covered_h = (minutes[-1][1] - first) / 3600
        wall, cpu = time_report(path, "--to", f"+{minutes[-1][1] - first:.3f}s")
        print(
            f"from the index, first {covered_h:.1f} h (indexed so far): {wall:6.1f} s wall, "
            f"{cpu:6.1f} s CPU → {wall / covered_h * hours:6.1f} s for {hours:g} h "
            "(extrapolated)"
        )
        figures |= {
            "report_index_partial_h": covered_h,
            "report_index_partial_s": wall,
            "report_index_s": wall / covered_h * hours,
        }
    wall, cpu = time_report(path, "--exact", "--to", f"+{full_hours * 3600:g}s")
    print(
        f"--exact, first {full_hours:g} h: {wall:6.1f} s wall, {cpu:6.1f} s CPU"
        f" → {wall / full_hours * hours:6.0f} s for {hours:g} h (extrapolated)"
    )
    figures["report_exact_s"] = wall / full_hours * hours
    if full:
        wall, cpu = time_report(path, "--exact")
        print(f"--exact, whole file:  {wall:6.1f} s wall, {cpu:6.1f} s CPU (measured)")
        figures["report_exact_whole_s"] = wall
    for step in steps:
        wall, cpu = time_report(path, "--step", f"{step:g}")
        print(f"--step {step:g} s, whole file:    {wall:6.1f} s wall, {cpu:6.1f} s CPU")
        figures[f"report_step_{step:g}_s"] = wall
    if seeks:
        print(f"\n== seek in {path} ==")
        figures["seek"] = seek_times(path, seeks)
    return figures


def main() -> None:
    """Parse the options, run, print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--guests", type=int, default=50)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument(
        "--path",
        type=Path,
        default=Path(tempfile.gettempdir()) / "kvmtop-bench" / "report-24h-50g.kvmtop",
    )
    p.add_argument(
        "--full-hours",
        type=float,
        default=1.0,
        help="hours timed with --exact (then extrapolated to --hours)",
    )
    p.add_argument("--full", action="store_true", help="also time the whole file with --exact")
    p.add_argument("--steps", type=float, nargs="*", default=[60.0, 300.0])
    p.add_argument(
        "--breakdown",
        type=int,
        default=300,
        metavar="N",
        help="samples for the per-stage breakdown (0: skip)",
    )
    p.add_argument("--seeks", type=int, default=200, help="random seeks timed (0: skip)")
    args = p.parse_args()
    run(
        args.path,
        args.guests,
        args.hours,
        full_hours=args.full_hours,
        full=args.full,
        steps=args.steps,
        breakdown_n=args.breakdown,
        seeks=args.seeks,
    )


if __name__ == "__main__":
    main()
