"""The benchmark suite (issue #9): one command, a table, a JSON file, budgets.

    make bench                       # = .venv/bin/python -m bench
    python -m bench [--only collection pipeline ui tracing fleet store] [--ticks 40]
    python -m bench --check          # CI: short pipeline run against bench/baseline.json
    python -m bench --check --write-baseline
    python -m bench --budgets bench/results/FILE.json   # the README's budget table

Sections (each row: figure, budget, met or missed, ratio to its peer from this run):
- collection: kvmtop's and libvirtd's CPU per tick on the lab's running guests, vs
  `virsh domstats` (same groups) and `prometheus-libvirt-exporter` per scrape
  (bench_collect); budget kvmtop + libvirtd ≤ 1.2 × virsh + libvirtd; `kvmtop serve`
  (+ libvirtd) per scrape and `kvmtop record`'s process per tick at or below the
  exporter. The clients take turns in 4 rounds, so each sees the same minutes of
  the lab. CPU time is read in clock ticks (10 ms), so at 40 ticks a figure moves
  in steps of 0.25 ms.
- pipeline: a synthetic feed of captured lab stats at 10, 50, 100 and 500 guests
  through the real sampler and pipeline, one subprocess per size (bench_pipeline);
  budgets ≤ 20 ms CPU per tick and ≤ 150 MB peak RSS at 500 guests.
- ui: snapshot to painted frame, sort and filter, headless at 200×60 (bench_ui);
  budget frame ≤ 50 ms at 500 guests.
- tracing: CPU per tick with per-reason exit tracing on for one lab guest vs off
  (bench_tracepoints).
- fleet: one `kvmtop fleet` refresh and one host's guests against a query of every
  series, on a real Prometheus holding 500 hosts × 50 guests of kvmtop series
  (bench_fleet; about 5 minutes, 2 GB of disk in /var/tmp for a while).
- store: record CPU per tick at 50 guests (≤ 1 % of a core at 2 s: 20 ms), and on a
  24 h × 50-guest recording (bench_report; generated once, about 45 minutes, then
  reused): bytes per guest-sample (≤ 150), seek (≤ 50 ms), report (≤ 10 s).

Exit status 1 when a budget is missed or a section could not run; the test suite is
not affected. Results go to bench/results/<host>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import bench_collect, bench_fleet, bench_pipeline
from bench.suite import Row, budget_table, failed, normalised, regression, rows_of, table

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "baseline.json"
RESULTS = HERE / "results"
SIZES = (10, 50, 100, 500)
RECORD_GUESTS = 50
FLEET_HOSTS = 500
SCALE_GUESTS = 500
UI_SIZES = [10, 100, 500]
UI_TIMEOUT_S = 900
CHECK_GUESTS, CHECK_TICKS, CHECK_REPEATS = 100, 15, 3
TRACED_GUEST = "lab-probe-pio"
RECORDING = Path(tempfile.gettempdir()) / "kvmtop-bench" / "report-24h-50g.kvmtop"
"""bench_report's default path: the recording is generated once and reused."""


def collection(ticks: int) -> list[Row]:
    """kvmtop vs virsh vs the exporter on the lab's guests."""
    r = bench_collect.run(ticks)
    kvmtop = r["kvmtop_ms"] + r["kvmtop_libvirtd_ms"]
    virsh = r["virsh_ms"] + r["virsh_libvirtd_ms"]
    on = f"{r['guests']:.0f} guests, {r['ticks']:.0f} ticks at 2 s"
    rows = [
        Row(
            "collection",
            "kvmtop + libvirtd CPU per tick",
            kvmtop,
            "ms",
            1.2 * virsh,
            "virsh domstats + libvirtd",
            virsh,
            f"{on}; budget 1.2 × the peer",
        ),
        Row(
            "collection",
            "kvmtop process CPU per tick",
            r["kvmtop_ms"],
            "ms",
            peer="virsh process",
            peer_value=r["virsh_ms"],
        ),
        Row(
            "collection",
            "libvirtd CPU per kvmtop tick",
            r["kvmtop_libvirtd_ms"],
            "ms",
            peer="per virsh call",
            peer_value=r["virsh_libvirtd_ms"],
        ),
    ]
    if "exporter_ms" in r:
        exporter = r["exporter_ms"] + r["exporter_libvirtd_ms"]
        serve = r["serve_ms"] + r["serve_libvirtd_ms"]
        rows += [
            Row(
                "collection",
                "kvmtop serve + libvirtd CPU per scrape",
                serve,
                "ms",
                exporter,
                "exporter + libvirtd",
                exporter,
                f"{on}; scraped once per tick as Prometheus scrapes (OpenMetrics, gzip); "
                "budget: at or below the exporter",
            ),
            Row(
                "collection",
                "kvmtop serve process CPU per scrape",
                r["serve_ms"],
                "ms",
                peer="exporter process",
                peer_value=r["exporter_ms"],
            ),
            Row(
                "collection",
                "kvmtop record process CPU per tick",
                r["record_ms"],
                "ms",
                r["exporter_ms"],
                "exporter process per scrape",
                r["exporter_ms"],
                f"{on}; `kvmtop record` with its index, as run by default; with "
                f"libvirtd {r['record_ms'] + r['record_libvirtd_ms']:.1f} ms against "
                f"{exporter:.1f}; budget: at or below the exporter (issue #18)",
            ),
            Row(
                "collection",
                "kvmtop + libvirtd vs the exporter",
                kvmtop,
                "ms",
                peer="exporter + libvirtd",
                peer_value=exporter,
                note="prometheus-libvirt-exporter scraped once per tick",
            ),
            Row(
                "collection",
                "libvirtd CPU per kvmtop tick vs exporter",
                r["kvmtop_libvirtd_ms"],
                "ms",
                peer="per scrape",
                peer_value=r["exporter_libvirtd_ms"],
            ),
        ]
    else:
        rows.append(
            Row(
                "collection",
                "prometheus-libvirt-exporter",
                None,
                "ms",
                note="not installed and apt could not install it",
            )
        )
    return rows


def fleet() -> list[Row]:
    """`kvmtop fleet`'s queries on a fleet of FLEET_HOSTS × RECORD_GUESTS in Prometheus."""
    r = bench_fleet.run(FLEET_HOSTS, RECORD_GUESTS, Path("/var/tmp"))
    on = (
        f"{r['hosts']} hosts × {r['guests']} guests, {r['series']:,} series in "
        f"Prometheus {bench_fleet.prometheus_version()}"
    )
    naive, refresh, guests = r["naive"], r["fleet"], r["host_guests"]
    peer = "one query of every series"
    return [
        Row(
            "fleet",
            "fleet refresh: Prometheus CPU",
            refresh["prometheus_cpu_ms"],
            "ms",
            peer=peer,
            peer_value=naive["prometheus_cpu_ms"],
            note=f"{on}; {refresh['queries']} instant queries (kvmtop.model.fleet.QUERIES); "
            f"{refresh['samples']:,} samples touched against {naive['samples']:,}",
        ),
        Row(
            "fleet",
            "fleet refresh: wall time",
            refresh["wall_ms"],
            "ms",
            peer=peer,
            peer_value=naive["wall_ms"],
            note="median of 5, queries in turn",
        ),
        Row(
            "fleet",
            "fleet refresh: bytes received",
            refresh["bytes"] / 1e6,
            "MB",
            peer=peer,
            peer_value=naive["bytes"] / 1e6,
            note=f"{refresh['series']:,} series against {naive['series']:,}",
        ),
        Row(
            "fleet",
            "one host's guests: Prometheus CPU",
            guests["prometheus_cpu_ms"],
            "ms",
            peer=peer,
            peer_value=naive["prometheus_cpu_ms"],
            note=f"{guests['queries']} queries, {guests['series']} series, "
            f"{guests['wall_ms']:.0f} ms wall",
        ),
    ]


def pipeline(ticks: int) -> tuple[list[Row], dict[str, Any]]:
    """Synthetic guests at each size; also returns the record figures for `store`."""
    before = bench_pipeline.calibrate()
    results = bench_pipeline.run(SIZES, ticks, record_at=RECORD_GUESTS)
    calibration = (before + bench_pipeline.calibrate()) / 2
    by = {r["guests"]: r for r in results}
    baseline = json.loads(BASELINE.read_text())
    rows = [
        Row(
            "pipeline",
            "machine speed: the calibration loop (less is faster)",
            calibration,
            "ms",
            peer="the baseline's run",
            peer_value=baseline["calibration_ms"],
            note="the CI check's unit, timed before and after this section; every CPU "
            "figure of this run scales with it",
        )
    ]
    for n in SIZES:
        at_scale = n == SCALE_GUESTS
        rows.append(
            Row(
                "pipeline",
                f"sample → snapshot CPU per tick, {n} guests",
                by[n]["pipeline_ms"],
                "ms",
                20.0 if at_scale else None,
                f"{SIZES[0]} guests",
                by[SIZES[0]]["pipeline_ms"],
                f"{by[n]['findings']} findings active; "
                * at_scale
                + f"median tick {by[n]['median_tick_ms']:.1f} ms, "
                f"fastest {by[n]['min_tick_ms']:.1f} ms",
            )
        )
    for n in SIZES:
        rows.append(
            Row(
                "pipeline",
                f"serve: one tick written for a scrape, {n} guests",
                by[n]["exposition_ms"],
                "ms",
                peer="prometheus_client's encoder",
                peer_value=by[n]["exposition_library_ms"],
                note="OpenMetrics + gzip, as Prometheus asks; kvmtop.exposition",
            )
        )
    for n in SIZES:
        rows.append(
            Row(
                "pipeline",
                f"peak RSS after {ticks} ticks, {n} guests",
                by[n]["peak_rss_mb"],
                "MB",
                peer=f"{SIZES[0]} guests",
                peer_value=by[SIZES[0]]["peak_rss_mb"],
            )
        )
    for n in SIZES:
        r = by[n]
        rows.append(
            Row(
                "pipeline",
                f"RSS with a full window, {n} guests",
                r["full_window_rss_mb"],
                "MB",
                150.0 if n == SCALE_GUESTS else None,
                f"{SIZES[0]} guests",
                by[SIZES[0]]["full_window_rss_mb"],
                f"projected: +{r['rss_per_tick_mb']:.2f} MB per tick until the window "
                f"holds {r['window_size']} samples",
            )
        )
    return rows, by[RECORD_GUESTS]


def ui() -> list[Row]:
    """Frame, sort and filter times from bench_ui, run through its command line in a
    subprocess with a time limit (a paint that never comes must not hang the suite)."""
    from bench import bench_ui  # Textual is imported only when this section runs

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "ui.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.bench_ui",
                "--sizes",
                *map(str, UI_SIZES),
                "--json",
                str(out),
            ],
            cwd=HERE.parent,
            check=True,
            timeout=UI_TIMEOUT_S,
            stdout=subprocess.DEVNULL,
        )
        results = json.loads(out.read_text())
    first = results[0]
    rows = []
    for key, label in (
        ("frame_wall", "snapshot → painted frame (wall, median)"),
        ("frame_cpu", "snapshot → painted frame (CPU, median)"),
        ("sort_wall", "sort → painted (wall, median)"),
        ("filter_wall", "filter keystroke → painted (wall, median)"),
    ):
        for r in results:
            budget = bench_ui.BUDGET_MS if key == "frame_wall" and r["guests"] == 500 else None
            rows.append(
                Row(
                    "ui",
                    f"{label}, {r['guests']} guests",
                    r[f"{key}_median_ms"],
                    "ms",
                    budget,
                    f"{first['guests']} guests",
                    first[f"{key}_median_ms"],
                    f"p95 {r[f'{key}_p95_ms']:.1f} ms",
                )
            )
    return rows


def tracing(ticks: int) -> list[Row]:
    """Per-reason exit tracing for one lab guest vs none (bench_tracepoints)."""
    from bench import bench_tracepoints
    from kvmtop.collectors.tracepoints import TracepointCollector

    guest = bench_tracepoints.lab_guest(TRACED_GUEST)
    tracer = TracepointCollector()
    probe = tracer.probe()
    if not probe.available:
        raise RuntimeError(f"tracepoints unavailable: {probe.reason}")
    off = bench_tracepoints.measure("off", None, guest, ticks * 5, 5.0)
    on = bench_tracepoints.measure("on", tracer, guest, ticks * 5, 5.0)
    return [
        Row(
            "tracing",
            f"tracer CPU per tick, {TRACED_GUEST} traced",
            on.mean_us / 1000,
            "ms",
            peer="none traced",
            peer_value=off.mean_us / 1000,
            note=f"{on.counters} counters; attach {on.attach_ms:.0f} ms, "
            f"detach {on.detach_ms:.0f} ms",
        ),
        Row(
            "tracing",
            f"{TRACED_GUEST} vCPU time while traced",
            on.vcpu_pct,
            "%",
            peer="not traced",
            peer_value=off.vcpu_pct,
            note="the filters run in the vCPU thread when a traced event fires",
        ),
    ]


def store(record: dict[str, Any], seeks: int) -> list[Row]:
    """Record CPU, then bytes, seek and report on the 24 h × 50-guest recording."""
    from bench import bench_report
    from kvmtop.config import Settings
    from kvmtop.feed.replay import ReplayFeed
    from kvmtop.store.reader import StoreReader
    from kvmtop.wiring import build_pipeline

    rows = [
        Row(
            "store",
            f"record CPU per tick, {RECORD_GUESTS} guests",
            record["record_ms"],
            "ms",
            20.0,
            "monitoring pipeline",
            record["pipeline_ms"],
            "sample + append + index, as `kvmtop record`; "
            f"--no-index {record['record_no_index_ms']:.1f} ms; "
            "budget 1 % of one core at 2 s",
        )
    ]
    hours = 24.0
    path = bench_report.recording(RECORDING, RECORD_GUESTS, hours)
    with StoreReader(path) as reader:
        n = reader.count()
        extent = reader.first_time(), reader.last_time()
    rows.append(
        Row(
            "store",
            "bytes per guest-sample (24 h × 50 guests)",
            path.stat().st_size / n / RECORD_GUESTS,
            "B",
            150.0,
            note=f"{path.stat().st_size / 1e6:.0f} MB, {n} samples",
        )
    )
    rng = random.Random(9)
    first, last = extent
    assert first is not None and last is not None
    # Two readers: the feed's row and reference caches must not hold what the raw
    # read of the same target just decoded (a seek measured after it was warm: 26 ms
    # median where a cold one takes 70, measured this session).
    feed = ReplayFeed(StoreReader(path), build_pipeline(Settings()))
    raw_reader = StoreReader(path)
    raw, seek = [], []
    try:
        for _ in range(seeks):
            target = rng.uniform(first, last)
            t0 = time.perf_counter()
            assert feed.seek(target) is not None
            seek.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            index = raw_reader.seek(target)
            assert index is not None and raw_reader.read(index) is not None
            raw.append((time.perf_counter() - t0) * 1000)
    finally:
        feed.close()
        raw_reader.close()
    rows.append(
        Row(
            "store",
            "replay seek to a random time (p95)",
            _p95(seek),
            "ms",
            50.0,
            "StoreReader.seek + read",
            _p95(raw),
            f"median {statistics.median(seek):.1f} ms over {seeks} seeks",
        )
    )
    rows += incident_jumps()
    wall, _cpu = bench_report.time_report(path)
    exact_wall, _ = bench_report.time_report(path, "--exact", "--to", "+3600s")
    rows.append(
        Row(
            "store",
            "kvmtop report, 24 h (index written by the recorder)",
            wall,
            "s",
            10.0,
            "--exact, every sample replayed",
            exact_wall * hours,
            f"--exact: first hour measured ({exact_wall:.1f} s) × {hours:g}",
        )
    )
    return rows


def incident_jumps() -> list[Row]:
    """The replay scan's checkpoints (kvmtop.feed.replay) on one hour × 50 guests: their CPU
    per scanned sample against the scan's own, and a jump to each incident (`f`,
    resumed from a checkpoint) against a plain seek to the same frame and lead."""
    from bench import bench_report
    from kvmtop.config import Settings
    from kvmtop.feed.replay import CHECKPOINT_SPACING, ReplayFeed
    from kvmtop.store.reader import StoreReader
    from kvmtop.wiring import build_pipeline

    path = bench_report.recording(
        RECORDING.with_name("scan-1h-50g.kvmtop"), RECORD_GUESTS, 1.0, index=False
    )
    settings = Settings()
    scanner = build_pipeline(replace(settings, window_size=2))
    feed = ReplayFeed(StoreReader(path), build_pipeline(settings), scanner=scanner)
    plain = ReplayFeed(StoreReader(path), build_pipeline(settings))
    jumps, seeks = [], []
    try:
        t0 = time.process_time()
        while feed.scan(100):
            pass
        scan_ms = (time.process_time() - t0) * 1000 / feed.reader.count()
        t0 = time.process_time()
        for _ in range(10):
            scanner.checkpoint()
        checkpoint_ms = (time.process_time() - t0) * 1000 / 10
        for span in feed.incidents:
            lead = span.raised_s - span.incident.since_s
            t0 = time.perf_counter()
            assert feed.seek(span.raised_s, lead_s=lead) is not None
            jumps.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            assert plain.seek(span.raised_s, lead_s=lead) is not None
            seeks.append((time.perf_counter() - t0) * 1000)
    finally:
        feed.close()
        plain.close()
    return [
        Row(
            "store",
            f"replay scan: checkpoint CPU per sample, {RECORD_GUESTS} guests",
            checkpoint_ms / CHECKPOINT_SPACING,
            "ms",
            None,
            "the scan's CPU per sample",
            scan_ms,
            f"{checkpoint_ms:.1f} ms per checkpoint (after an hour), one every "
            f"{CHECKPOINT_SPACING} samples",
        ),
        Row(
            "store",
            "jump to an incident (p95)",
            _p95(jumps) if jumps else None,
            "ms",
            100.0,
            "plain seek, same frame and lead",
            _p95(seeks) if seeks else None,
            f"{len(jumps)} incidents; the jump resumes the scan's checkpoint",
        ),
    ]


def _p95(xs: Sequence[float]) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def check(write: bool) -> int:
    """The CI regression check: a short pipeline run against the committed baseline."""
    # Calibration before and after each pipeline run, so both see the same load
    # (steal on a virtual machine counts as process time); the median of the ratios.
    runs = []
    for _ in range(CHECK_REPEATS):
        before = bench_pipeline.calibrate()
        pipeline_ms = bench_pipeline.measure(CHECK_GUESTS, CHECK_TICKS)["pipeline_ms"]
        runs.append((pipeline_ms, (before + bench_pipeline.calibrate()) / 2))
    ms, calibration = sorted(runs, key=lambda r: normalised(*r))[len(runs) // 2]
    current = normalised(ms, calibration)
    figures = {
        "guests": CHECK_GUESTS,
        "ticks": CHECK_TICKS,
        "pipeline_ms": ms,
        "calibration_ms": calibration,
        "normalised": current,
        "host": platform.node(),
        "date": datetime.now().isoformat(timespec="seconds"),
    }
    print(
        f"pipeline {ms:.1f} ms/tick at {CHECK_GUESTS} guests, calibration {calibration:.1f} ms"
        f" → {current:.2f} units"
    )
    if write:
        BASELINE.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"baseline written to {BASELINE}")
        return 0
    baseline = json.loads(BASELINE.read_text())["normalised"]
    problem = regression(current, baseline)
    print(problem or f"within the limit: {current / baseline:.2f}× the baseline")
    return 1 if problem else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections, print the table, write the JSON; 1 if a budget is missed."""
    sections = ("collection", "pipeline", "ui", "tracing", "fleet", "store")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sections, default=list(sections))
    p.add_argument("--ticks", type=int, default=40, help="ticks per live measurement")
    p.add_argument("--out", type=Path, help="JSON output (default bench/results/HOST-DATE.json)")
    p.add_argument("--check", action="store_true", help="CI regression check only")
    p.add_argument("--write-baseline", action="store_true", help="with --check: record it")
    p.add_argument(
        "--budgets", type=Path, metavar="RESULTS", help="print a results file's budget table"
    )
    args = p.parse_args(argv)
    if args.check:
        return check(args.write_baseline)
    if args.budgets:
        print(budget_table(rows_of(args.budgets)))
        return 0
    rows: list[Row] = []
    errors: dict[str, str] = {}
    record: dict[str, Any] = {}

    def section(name: str, fn: Callable[[], list[Row]]) -> None:
        if name not in args.only:
            return
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(fn())
        except Exception as exc:  # one section failing must not lose the others' figures
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"

    def pipeline_rows() -> list[Row]:
        found, rec = pipeline(args.ticks * 3)
        record.update(rec)
        return found

    section("collection", lambda: collection(args.ticks))
    section("pipeline", pipeline_rows)
    section("ui", ui)
    section("tracing", lambda: tracing(args.ticks))
    section("fleet", fleet)
    if "store" in args.only and not record:
        record = bench_pipeline.run([RECORD_GUESTS], args.ticks * 3, record_at=RECORD_GUESTS)[0]
    section("store", lambda: store(record, 50))

    print(table(rows))
    for name, error in errors.items():
        print(f"section {name} could not run: {error}")
    missed = failed(rows)
    print(
        f"{len(rows)} figures, {sum(r.met is not None for r in rows)} budgets, "
        f"{len(missed)} missed, {len(errors)} sections failed"
    )
    out = args.out or RESULTS / f"{platform.node()}-{datetime.now():%Y-%m-%dT%H%M}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "host": platform.node(),
                "date": datetime.now().isoformat(),
                "python": platform.python_version(),
                "rows": [r.as_json() for r in rows],
                "errors": errors,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written {out}")
    return 1 if missed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
