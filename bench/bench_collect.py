"""CPU cost of one live tick on this host, against `virsh domstats` for the same groups
and Debian's `prometheus-libvirt-exporter` per scrape.

    python -m bench.bench_collect [--ticks 40] [--rounds 4]

Runs the real sampler and pipeline (collectors → rates → detectors → snapshot) at a
2 s interval for TICKS ticks against qemu:///system and reports, per tick: kvmtop's
own CPU (process time) and libvirtd's CPU during kvmtop's ticks. At the same pace,
the same two numbers for `virsh domstats` asking the groups kvmtop asks (libvirt's
own C client, the floor for a libvirt consumer), and for
`prometheus-libvirt-exporter` (Debian's package, run by hand on loopback, its
/metrics scraped with urllib): the exporter's CPU and libvirtd's per scrape. Also
`kvmtop serve` scraped at that pace and `kvmtop record` (with its index, as run by
default) as processes of their own: their CPU and libvirtd's per tick. The clients
take turns in ROUNDS rounds of TICKS / ROUNDS ticks (`run`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from kvmtop.config import Settings
from kvmtop.store.meta import StoreError
from kvmtop.store.reader import StoreReader
from kvmtop.wiring import build_pipeline, build_sampler

CLK = os.sysconf("SC_CLK_TCK")
EXPORTER = "prometheus-libvirt-exporter"
URI = "qemu:///system"


def proc_cpu_ticks(pid: int) -> int:
    """utime + stime of a process (and its reaped children), in clock ticks
    (proc(5): fields 14-17, in units of sysconf(_SC_CLK_TCK))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15])


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (and its reaped children), in seconds."""
    return proc_cpu_ticks(pid) / CLK


def libvirtd_pid() -> int:
    """The running libvirtd's pid."""
    out = subprocess.run(["pidof", "libvirtd"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def paced(ticks: int, interval_s: float, body: Callable[[int], object]) -> None:
    """Call `body(i)` `ticks` times, one interval apart."""
    deadline = time.monotonic()
    for i in range(ticks):
        body(i)
        deadline += interval_s
        time.sleep(max(0.0, deadline - time.monotonic()))


def install_exporter() -> str | None:
    """The exporter's path, installed with apt when missing (as root); None if it cannot be."""
    found = shutil.which(EXPORTER)
    if found is None and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", EXPORTER],
            capture_output=True,
            check=False,
            env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which(EXPORTER)
    return found


# What Prometheus 2.42 sends with a scrape (scrape/scrape.go, scrapeAcceptHeader and
# the gzip it asks for): both endpoints answer as they would answer it.
SCRAPE_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def scrape(url: str) -> bytes:
    """One scrape of `url` as Prometheus makes it (the body as sent, compressed)."""
    request = urllib.request.Request(url, headers=SCRAPE_HEADERS)
    with urllib.request.urlopen(request, timeout=30) as reply:
        body: bytes = reply.read()
        return body


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running(cmd: Sequence[str], ready: Callable[[], bool], polls: int = 150) -> Iterator[int]:
    """A process started from `cmd` (its pid), once `ready()` says so (polled every
    0.2 s, `polls` times at most; OSError and StoreError count as not yet);
    terminated afterwards."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(polls):
            with contextlib.suppress(OSError, StoreError):
                if ready():
                    break
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def listening(cmd: Sequence[str], url: str, ready: bytes = b"") -> Iterator[int]:
    """A process serving `url` on loopback (its pid), once a GET of it answers and
    holds `ready` (also the warm-up scrape); terminated afterwards."""
    with running(cmd, lambda: ready in urllib.request.urlopen(url, timeout=30).read()) as pid:
        yield pid


@contextlib.contextmanager
def exporter(path: str) -> Iterator[tuple[int, str]]:
    """The exporter running on loopback: (pid, metrics URL)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with listening(
        [path, f"--web.listen-address=127.0.0.1:{port}", f"--libvirt.uri={URI}"], url
    ) as pid:
        yield pid, url


@contextlib.contextmanager
def serve(interval_s: float) -> Iterator[tuple[int, str]]:
    """`kvmtop serve` collecting every `interval_s` on loopback: (pid, metrics URL),
    once it has published a tick."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with listening(
        [
            sys.executable,
            "-m",
            "kvmtop",
            "serve",
            "-d",
            f"{interval_s:g}",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        url,
        b"kvmtop_guest_info",
    ) as pid:
        yield pid, url


@contextlib.contextmanager
def recorder(interval_s: float) -> Iterator[int]:
    """`kvmtop record` writing a recording (with its index, as by default) every
    `interval_s`: its pid, once it has written two samples (the first tick's domain
    XML and discovery are behind it)."""

    def two_samples() -> bool:
        with StoreReader(path) as reader:
            return reader.count() >= 2

    with tempfile.TemporaryDirectory(prefix="kvmtop-bench-") as tmp:
        path = Path(tmp) / "bench.kvmtop"
        cmd = [sys.executable, "-m", "kvmtop", "record", "-d", f"{interval_s:g}", "-o", str(path)]
        with running(cmd, two_samples, polls=300) as pid:
            yield pid


Measure = Callable[[], contextlib.AbstractContextManager[tuple[int, Callable[[int], object]]]]
"""A measured client: a context giving the pid whose CPU counts and the body of one
tick (the client started, warm, until the context ends)."""


def rounds_of(ticks: int, rounds: int) -> list[int]:
    """`ticks` split into `rounds` near-equal rounds (none empty)."""
    rounds = max(1, min(rounds, ticks))
    return [ticks // rounds + (r < ticks % rounds) for r in range(rounds)]


def run(ticks: int = 40, interval_s: float = 2.0, rounds: int = 4) -> dict[str, float]:
    """ms of CPU per tick (or scrape) of kvmtop, virsh, the exporter and libvirtd for each.

    The clients are measured in `rounds` interleaved rounds, each client's order
    rotated every round, so that the lab's guests, whose load changes over the
    minutes a run takes, weigh on every client alike: a ratio of two clients
    measured one after the other compared two different minutes of the lab.
    """
    daemon = libvirtd_pid()
    settings = Settings(interval_s=interval_s)
    sampler = build_sampler(settings)
    pipeline = build_pipeline(settings)
    guests = len(pipeline.push(sampler.sample(), mode="live").guests)  # warm-up: XML, probes
    self_pid = os.getpid()

    @contextlib.contextmanager
    def in_process() -> Iterator[tuple[int, Callable[[int], object]]]:
        yield self_pid, lambda _i: pipeline.push(sampler.sample(), mode="live")

    def virsh(i: int) -> None:
        # The fast-tier groups, and balloon every balloon_every-th call, as kvmtop.
        args = [
            "virsh",
            "-r",
            "-c",
            URI,
            "domstats",
            "--state",
            "--cpu-total",
            "--vcpu",
            "--interface",
            "--block",
            "--nowait",
        ]
        if i % settings.balloon_every == 0:
            args.append("--balloon")
        subprocess.run(args, capture_output=True, check=True)

    @contextlib.contextmanager
    def virsh_client() -> Iterator[tuple[int, Callable[[int], object]]]:
        yield self_pid, virsh  # children's CPU shows in our cutime/cstime once reaped

    @contextlib.contextmanager
    def serve_client() -> Iterator[tuple[int, Callable[[int], object]]]:
        # Scraped once per tick, as the exporter: its process (which collects every
        # interval on its own thread and renders each scrape) and libvirtd.
        with serve(interval_s) as (pid, url):
            yield pid, lambda _i: scrape(url)

    @contextlib.contextmanager
    def record_client() -> Iterator[tuple[int, Callable[[int], object]]]:
        # As an operator runs it: sampling, pipeline, store and index (issue #18's
        # target: at or below the exporter).
        with recorder(interval_s) as pid:
            yield pid, lambda _i: None

    measures: dict[str, Measure] = {
        "kvmtop": in_process,
        "virsh": virsh_client,
        "serve": serve_client,
        "record": record_client,
    }
    path = install_exporter()
    if path is not None:

        @contextlib.contextmanager
        def exporter_client() -> Iterator[tuple[int, Callable[[int], object]]]:
            with exporter(path) as (pid, url):
                yield pid, lambda _i: scrape(url)

        measures["exporter"] = exporter_client
    used = {key: [0, 0] for key in measures}
    """Clock ticks of each client and of libvirtd during its ticks."""
    keys = list(measures)
    try:
        for r, count in enumerate(rounds_of(ticks, rounds)):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                with measures[key]() as (pid, body):
                    pids = (pid, daemon)
                    before = [proc_cpu_ticks(p) for p in pids]
                    paced(count, interval_s, body)
                    for n, (p, b) in enumerate(zip(pids, before, strict=True)):
                        used[key][n] += proc_cpu_ticks(p) - b
    finally:
        sampler.close()
    out = {"guests": float(guests), "ticks": float(ticks)}
    for key, (client, lv) in used.items():
        # From whole clock ticks: equal counts give equal figures.
        out[f"{key}_ms"] = client * 1000 / CLK / ticks
        out[f"{key}_libvirtd_ms"] = lv * 1000 / CLK / ticks
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Measure and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ticks", type=int, default=40)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    r = run(args.ticks, rounds=args.rounds)
    print(f"guests: {r['guests']:.0f}, ticks: {args.ticks} in {args.rounds} rounds, interval 2 s")
    print(f"{'':38}{'client ms/tick':>16}{'libvirtd ms/tick':>18}{'total':>10}")
    for label, key in (
        ("kvmtop (all collectors)", "kvmtop"),
        ("virsh domstats (same groups)", "virsh"),
        ("kvmtop serve (scrape)", "serve"),
        ("kvmtop record (tick)", "record"),
        (f"{EXPORTER} (scrape)", "exporter"),
    ):
        if f"{key}_ms" in r:
            client, daemon = r[f"{key}_ms"], r[f"{key}_libvirtd_ms"]
            print(f"{label:38}{client:16.1f}{daemon:18.1f}{client + daemon:10.1f}")


if __name__ == "__main__":
    main()
