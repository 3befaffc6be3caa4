"""CPU per tick and peak RSS of the live path at 10 to 500 guests, without real guests.

    python -m bench.bench_pipeline [--guests 500] [--ticks 60] [--record] [--profile]

A synthetic libvirt (bench/synthetic.py: the captured lab stats multiplied to N guests
with new names and UUIDs, counters moving at their captured rates) feeds the real
`LibvirtCollector`, the host collector reads a captured lab host tree, and each tick
goes through the real `Sampler` and the shared `Pipeline` (rates, window, the detector
engine, snapshot) as `kvmtop` builds them (`wiring.build_pipeline`). Guest enrichers
that read a QEMU process's threads (sched, topology, debugfs, tracepoints) have no
process to read here and are left out: bench_collect measures them on the lab.

The clock is injected and moves `interval` seconds per tick, so rates and detectors
see the intervals a live run sees, while ticks run back to back. Figures are process
time per tick (less the time the synthetic libvirt spends building its replies) and
the process's peak RSS (`ru_maxrss`), which is why `run()` measures each size in a
subprocess of its own. With `--record` each sample is also appended with the real
writer `kvmtop record` uses (with its index, and without as `--no-index`), timed
apart.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from bench.bench_report import index_pipeline
from bench.synthetic import HOST_TREE, SyntheticConnection
from kvmtop.collectors.host import HostCollector
from kvmtop.collectors.libvirt.collector import LibvirtCollector
from kvmtop.config import Settings
from kvmtop.detectors.settings import VswitchSettings
from kvmtop.exposition.encode import Encoder, Prepared, families
from kvmtop.exposition.points import tick_points
from kvmtop.feed.pipeline import Pipeline
from kvmtop.headless.exporter import GZIP_LEVEL
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.units import NS_PER_S
from kvmtop.model.window import GUEST_FRAMES
from kvmtop.report.index import IndexedWriter
from kvmtop.sampler import Sampler
from kvmtop.store.writer import StoreWriter
from kvmtop.wiring import build_pipeline

INTERVAL_S = 2.0
WARMUP_TICKS = 3
WINDOW_SIZE = Settings().window_size
CALIBRATION_ROUNDS = 1_000_000


class Clock:
    """A monotonic clock the bench moves on by one interval per tick."""

    def __init__(self) -> None:
        self.mono_ns = time.monotonic_ns()
        self._wall0, self._mono0 = time.time(), self.mono_ns

    def __call__(self) -> int:
        return self.mono_ns

    def wall(self) -> float:
        """Wall seconds matching the monotonic time."""
        return self._wall0 + (self.mono_ns - self._mono0) / NS_PER_S

    def advance(self, seconds: float) -> None:
        """Move on by `seconds`."""
        self.mono_ns += int(seconds * NS_PER_S)


def synthetic_sampler(guests: int, clock: Clock) -> tuple[Sampler, SyntheticConnection]:
    """The real sampler over a synthetic libvirt with `guests` domains."""
    settings = Settings(interval_s=INTERVAL_S)
    conn = SyntheticConnection(guests, clock, clock.wall)
    sampler = Sampler(
        HostCollector(root=HOST_TREE, clock=clock),
        LibvirtCollector(
            "test://bench/default",
            root=HOST_TREE,
            balloon_every=settings.balloon_every,
            open_fn=lambda _uri: conn,
        ),
        interval_s=INTERVAL_S,
        clock=clock,
        wall=clock.wall,
    )
    return sampler, conn


def calibrate() -> float:
    """CPU ms of a fixed pure-Python loop (dict and float work, as the pipeline does):
    the unit the CI regression check divides by, so a slower or busier machine
    does not read as a regression."""
    t0 = time.process_time()
    acc: dict[int, float] = {}
    for i in range(CALIBRATION_ROUNDS):
        acc[i & 1023] = acc.get(i & 1023, 0.0) + i * 0.5
    return (time.process_time() - t0) * 1000


def measure(
    guests: int, ticks: int, *, record: bool = False, profile: cProfile.Profile | None = None
) -> dict[str, Any]:
    """CPU ms per tick of sample + pipeline (and of sample + store append with
    `record`) over `ticks` ticks after a warm-up, in this process."""
    clock = Clock()
    sampler, conn = synthetic_sampler(guests, clock)
    pipeline: Pipeline = build_pipeline(Settings(interval_s=INTERVAL_S))
    snap = None
    for _ in range(WARMUP_TICKS):
        snap = pipeline.push(sampler.sample(), mode="live")
        clock.advance(INTERVAL_S)
    spent0, t0, rss0 = conn.spent_s, time.process_time(), peak_rss_mb()
    if profile is not None:
        profile.enable()
    tick_s: list[float] = []
    for _ in range(ticks):
        tick_spent, tick_t0 = conn.spent_s, time.process_time()
        sample = sampler.sample()
        snap = pipeline.push(sample, mode="live")
        tick_s.append(time.process_time() - tick_t0 - (conn.spent_s - tick_spent))
        clock.advance(INTERVAL_S)
    if profile is not None:
        profile.disable()
    pipeline_ms = (time.process_time() - t0 - (conn.spent_s - spent0)) / ticks * 1000
    assert snap is not None and len(snap.guests) == guests, "synthetic guests missing"
    # The window keeps frames until it holds window_size of them or GUEST_FRAMES guest
    # entries (kvmtop.model.window), so memory grows by the same amount each tick until
    # then: project the full window (nothing more once the run has filled it).
    rss1 = peak_rss_mb()
    per_tick = (rss1 - rss0) / ticks
    full = min(WINDOW_SIZE, max(2, GUEST_FRAMES // guests))
    more = max(0, full - ticks - WARMUP_TICKS)
    # The mean is the figure (it includes the garbage collector's passes, which land
    # on some ticks); the median and the fastest tick show how much of the spread is
    # the machine (this VM's speed varies by up to 2x from minute to minute).
    out: dict[str, Any] = {
        "guests": guests,
        "ticks": ticks,
        "pipeline_ms": pipeline_ms,
        "median_tick_ms": statistics.median(tick_s) * 1000,
        "min_tick_ms": min(tick_s) * 1000,
        "findings": len(snap.findings),
        "rss_per_tick_mb": per_tick,
        "window_size": full,
        "full_window_rss_mb": rss1 + per_tick * more,
    }
    out["exposition_ms"], out["exposition_library_ms"] = _exposition_ms(sample, snap)
    if record:
        out["record_ms"] = _record_ms(sampler, conn, clock, ticks)
        out["record_no_index_ms"] = _record_ms(sampler, conn, clock, ticks, index=False)
    sampler.close()
    return out


def _exposition_ms(sample: Sample, snap: Snapshot, rounds: int = 10) -> tuple[float, float]:
    """CPU ms to write one tick as `kvmtop serve` does for a Prometheus scrape
    (OpenMetrics, gzip), and the same with prometheus_client's families and encoder in
    place of kvmtop's `Encoder`."""
    encoder = Encoder()

    def own() -> bytes:
        text = encoder.render(tick_points(sample, snap, 0.1), openmetrics=True) + "# EOF\n"
        return zlib.compress(text.encode(), GZIP_LEVEL)

    def library() -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Prepared(families(tick_points(sample, snap, 0.1))))
        return zlib.compress(generate_latest(registry), GZIP_LEVEL)

    out = []
    for write in (own, library):
        write()  # warm: the encoder's headers and label sets, as on an endpoint's 2nd tick
        t0 = time.process_time()
        for _ in range(rounds):
            write()
        out.append((time.process_time() - t0) / rounds * 1000)
    return out[0], out[1]


def _record_ms(
    sampler: Sampler, conn: SyntheticConnection, clock: Clock, ticks: int, index: bool = True
) -> float:
    """CPU ms per tick of sampling and appending to a recording as `kvmtop record`
    does: with the report's index by default (`IndexedWriter`: the frameless shared
    pipeline and the rollups), or as `record --no-index` (`StoreWriter` alone)."""
    with tempfile.TemporaryDirectory() as d:
        writer: StoreWriter | IndexedWriter = StoreWriter(Path(d) / "bench.kvmtop")
        if index:
            writer = IndexedWriter(writer, index_pipeline(), VswitchSettings().uplink_kinds)
        writer.append(sampler.sample())  # the first sample writes the header and reference
        clock.advance(INTERVAL_S)
        spent0, t0 = conn.spent_s, time.process_time()
        for _ in range(ticks):
            writer.append(sampler.sample())
            clock.advance(INTERVAL_S)
        ms = (time.process_time() - t0 - (conn.spent_s - spent0)) / ticks * 1000
        writer.close()
    return ms


def peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(
    sizes: Sequence[int], ticks: int = 30, *, record_at: int | None = None
) -> list[dict[str, Any]]:
    """Measure each size in a fresh subprocess (so peak RSS is that size's own)."""
    results = []
    for guests in sizes:
        argv = [
            sys.executable,
            "-m",
            "bench.bench_pipeline",
            "--guests",
            str(guests),
            "--ticks",
            str(ticks),
            "--json",
        ]
        if guests == record_at:
            argv.append("--record")
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        results.append(json.loads(done.stdout.splitlines()[-1]))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Measure one size and print the figures (JSON with --json, a profile with --profile)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guests", type=int, default=500)
    p.add_argument("--ticks", type=int, default=60)
    p.add_argument("--record", action="store_true", help="also time StoreWriter.append")
    p.add_argument("--profile", action="store_true", help="cProfile the timed ticks")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    profile = cProfile.Profile() if args.profile else None
    out = measure(args.guests, args.ticks, record=args.record, profile=profile)
    out["peak_rss_mb"] = peak_rss_mb()
    if args.json:
        print(json.dumps(out))
        return
    print(", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()))
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
