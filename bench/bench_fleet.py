"""What one `kvmtop fleet` refresh costs Prometheus at 500 hosts × 50 guests, against
pulling every series of the fleet.

    python -m bench.bench_fleet [--hosts 500] [--guests 50]

A real Prometheus (Debian's 2.42, run by hand on loopback) holds a fleet's worth of
kvmtop series: the exposition `kvmtop serve` writes for the synthetic host of
`bench.synthetic` (captured lab stats, `--guests` guests) over nine 15 s scrapes, copied
to `--hosts` instances, written as OpenMetrics and loaded with `promtool tsdb
create-blocks-from openmetrics`. At the last scrape's time it measures:

- one fleet refresh: the `kvmtop.model.fleet.QUERIES` run by `PrometheusClient.fleet`
  as `kvmtop fleet` runs them;
- one host's guests (Enter on a host): `GUEST_QUERIES` through `PrometheusClient.guests`;
- the naive way: one instant query for every kvmtop series of the job.

For each: Prometheus's CPU (its /proc stat), the wall time, the samples its engine
touched (`stats=all`: totalQueryableSamples) and the series and bytes it sent back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.bench_collect import free_port, proc_cpu_s
from bench.bench_pipeline import Clock, synthetic_sampler
from kvmtop.collectors.prometheus import PrometheusClient
from kvmtop.config import Settings
from kvmtop.exposition.metrics import SPECS
from kvmtop.exposition.points import tick_points
from kvmtop.model.fleet import queries
from kvmtop.wiring import build_pipeline

JOB = "kvmtop"
SCRAPE_S = 15
SCRAPES = 9
"""Two minutes of scrapes: the 1 m rate window of the fleet queries holds four."""
ROUNDS = 5


def series(guests: int) -> dict[str, dict[str, dict[int, float]]]:
    """One host's series over SCRAPES scrapes: family → label text → scrape → value."""
    clock = Clock()
    sampler, _conn = synthetic_sampler(guests, clock)
    pipeline = build_pipeline(Settings(interval_s=SCRAPE_S))
    out: dict[str, dict[str, dict[int, float]]] = {}
    try:
        for tick in range(SCRAPES):
            sample = sampler.sample()
            points = tick_points(sample, pipeline.push(sample, mode="live"), 0.1)
            for name, found in points.by_name.items():
                family = out.setdefault(name, {})
                for labels, value in found:
                    text = ",".join(
                        f'{k}="{v}"' for k, v in zip(SPECS[name].labels, labels, strict=True)
                    )
                    family.setdefault(text, {})[tick] = value
            clock.advance(SCRAPE_S)
    finally:
        sampler.close()
    return out


def openmetrics(
    host: dict[str, dict[str, dict[int, float]]], hosts: int, end_s: int
) -> Iterator[str]:
    """The fleet's lines: each family's series for every instance, in time order."""
    stamps = [end_s - SCRAPE_S * (SCRAPES - 1 - i) for i in range(SCRAPES)]
    instances = [f'instance="host-{h:04d}:9177",job="{JOB}"' for h in range(hosts)]
    for instance in instances:
        yield "".join(f"up{{{instance}}} 1 {t}\n" for t in stamps)
    for name, family in host.items():
        for instance in instances:
            for labels, values in family.items():
                head = f"{name}{{{instance},{labels}}} " if labels else f"{name}{{{instance}}} "
                yield "".join(f"{head}{v!r} {stamps[i]}\n" for i, v in values.items())
    yield "# EOF\n"


def prometheus_version() -> str:
    """`prometheus --version`'s version number."""
    out = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, check=False)
    words = (out.stdout + out.stderr).split()
    return words[2] if len(words) > 2 else "?"


class Prometheus:
    """Debian's prometheus on loopback over the TSDB in `data`."""

    def __init__(self, data: Path) -> None:
        config = data.parent / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\n")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                "--storage.tsdb.retention.time=10y",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("prometheus did not become ready")

    def stats(self, expr: str, at_s: float) -> tuple[int, int, int]:
        """(samples the engine touched, series returned, bytes returned) of `expr`."""
        params = urllib.parse.urlencode({"query": expr, "time": f"{at_s}", "stats": "all"})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=600) as reply:
            body = reply.read()
        data = json.loads(body)["data"]
        return (
            int(data["stats"]["samples"]["totalQueryableSamples"]),
            len(data["result"]),
            len(body),
        )

    def close(self) -> None:
        """Stop it."""
        self.proc.terminate()
        self.proc.wait(timeout=60)


def measure(prom: Prometheus, named: dict[str, str], run: Any, at_s: float) -> dict[str, float]:
    """Prometheus CPU and wall ms per call of `run` (ROUNDS calls, after one warm-up),
    and the samples, series and bytes of the queries in `named`."""
    run()
    cpu0, wall = proc_cpu_s(prom.proc.pid), []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        run()
        wall.append((time.perf_counter() - t0) * 1000)
    cpu_ms = (proc_cpu_s(prom.proc.pid) - cpu0) / ROUNDS * 1000
    figures = [prom.stats(expr, at_s) for expr in named.values()]
    return {
        "queries": len(named),
        "prometheus_cpu_ms": cpu_ms,
        "wall_ms": statistics.median(wall),
        "samples": sum(f[0] for f in figures),
        "series": sum(f[1] for f in figures),
        "bytes": sum(f[2] for f in figures),
    }


def run(hosts: int = 500, guests: int = 50, workdir: Path | None = None) -> dict[str, Any]:
    """Build the fleet's TSDB, start Prometheus on it, measure the three ways."""
    if shutil.which("promtool") is None or shutil.which("prometheus") is None:
        raise RuntimeError("prometheus and promtool are needed: tests/lab/lab install")
    top = Path(tempfile.mkdtemp(prefix="kvmtop-fleet-", dir=workdir))
    try:
        host = series(guests)
        per_host = 1 + sum(len(f) for f in host.values())
        end_s = int(time.time()) // SCRAPE_S * SCRAPE_S - 60
        text = top / "fleet.om"
        t0 = time.monotonic()
        with text.open("w") as out:
            out.writelines(openmetrics(host, hosts, end_s))
        written_s = time.monotonic() - t0
        t0 = time.monotonic()
        subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(text), str(top / "data")],
            check=True,
            capture_output=True,
        )
        backfill_s = time.monotonic() - t0
        om_bytes = text.stat().st_size
        text.unlink()
        prom = Prometheus(top / "data")
        try:
            client = PrometheusClient(prom.url, timeout_s=600)
            instance = "host-0000:9177"
            rows = client.fleet(JOB, at_s=end_s)
            assert len(rows) == hosts and rows[0].guests == guests, rows[:1]
            naive = {"every series": f'{{job="{JOB}"}}'}
            out: dict[str, Any] = {
                "hosts": hosts,
                "guests": guests,
                "series_per_host": per_host,
                "series": per_host * hosts,
                "openmetrics_bytes": om_bytes,
                "write_s": written_s,
                "backfill_s": backfill_s,
                "fleet": measure(prom, queries(JOB), lambda: client.fleet(JOB, at_s=end_s), end_s),
                "host_guests": measure(
                    prom,
                    queries(JOB, instance),
                    lambda: client.guests(JOB, instance, at_s=end_s),
                    end_s,
                ),
                "naive": measure(
                    prom, naive, lambda: client.query(naive["every series"], at_s=end_s), end_s
                ),
            }
        finally:
            prom.close()
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Measure and print the table."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--hosts", type=int, default=500)
    p.add_argument("--guests", type=int, default=50)
    p.add_argument("--workdir", type=Path, help="where the OpenMetrics file and TSDB go")
    args = p.parse_args(argv)
    r = run(args.hosts, args.guests, args.workdir)
    print(
        f"{r['hosts']} hosts × {r['guests']} guests: {r['series']:,} series "
        f"({r['series_per_host']:,} per host), {SCRAPES} scrapes; OpenMetrics "
        f"{r['openmetrics_bytes'] / 1e6:.0f} MB written in {r['write_s']:.0f} s, "
        f"backfilled in {r['backfill_s']:.0f} s"
    )
    print(
        f"{'':22}{'queries':>8}{'prom CPU ms':>13}{'wall ms':>10}{'samples':>12}"
        f"{'series':>10}{'bytes':>13}"
    )
    for label, key in (
        ("fleet refresh", "fleet"),
        ("one host's guests", "host_guests"),
        ("every series (naive)", "naive"),
    ):
        m = r[key]
        print(
            f"{label:22}{m['queries']:8d}{m['prometheus_cpu_ms']:13.0f}{m['wall_ms']:10.0f}"
            f"{m['samples']:12,d}{m['series']:10,d}{m['bytes']:13,d}"
        )


if __name__ == "__main__":
    main()
