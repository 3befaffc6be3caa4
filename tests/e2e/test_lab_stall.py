"""A stuck guest, a restarted libvirtd, guests coming and going, against the running
lab: `kvmtop --batch --format json --interval 1` keeps its cadence for every other
guest and never shows a spike (issue #16).

Each test runs the real command line as a subprocess, notes when each JSON line
arrives, and acts on the lab from here (SIGSTOP/SIGCONT of a QEMU, libvirtd killed and
started again the way tests/lab/lab starts it, a transient domain created and
destroyed). Whatever it does is undone in a `finally`, so the lab is left as it was.

Timing is judged against kvmtop's own interval only (the machine has 2 CPUs and other
work on it): the gap between consecutive lines, and between their `time` stamps,
within 20 % of the interval.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.fixture import Lab

pytest.importorskip("libvirt")
pytestmark = pytest.mark.lab

INTERVAL = 1.0
CADENCE = 0.2
"""Consecutive lines arrive (and are stamped) within this share of the interval."""
STUCK = "lab-net"
"""A guest with a steady workload whose rate the manifest states."""
ROOT = Path(__file__).resolve().parents[2]
VIRSH = ["virsh", "-c", "qemu:///system"]


class Batch:
    """`kvmtop --batch --format json` as a subprocess; its lines with arrival times."""

    def __init__(self, config: Path, count: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kvmtop",
                "--config",
                str(config),
                "--batch",
                "--format",
                "json",
                "--interval",
                f"{INTERVAL:g}",
                "--count",
                str(count),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append((time.monotonic(), json.loads(line)))
                self._seen.notify_all()

    def wait_lines(self, n: int, timeout_s: float = 60) -> None:
        """Until `n` lines have arrived."""
        with self._seen:
            assert self._seen.wait_for(lambda: len(self.lines) >= n, timeout_s), (
                f"{len(self.lines)} lines after {timeout_s} s"
            )

    def finish(self, timeout_s: float = 90) -> list[tuple[float, dict[str, Any]]]:
        """Wait for the process to print its last line and exit."""
        try:
            self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(5)
        assert self.proc.returncode == 0, self.proc.stderr.read() if self.proc.stderr else ""
        return self.lines

    def kill(self) -> None:
        """Stop it (a test that failed half-way)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """An empty config: the defaults, whatever the user's own file says."""
    path = tmp_path / "kvmtop.toml"
    path.write_text("")
    return path


@pytest.fixture
def batch(config: Path) -> Iterator[list[Batch]]:
    """Started batches, killed at the end if still running."""
    started: list[Batch] = []
    yield started
    for b in started:
        b.kill()


def qemu_pid(name: str) -> int:
    """The QEMU pid libvirt wrote for a domain (qemu:///system); libvirtd rewrites
    the file when it starts, so it is waited for a little."""
    path = Path(f"/run/libvirt/qemu/{name}.pid")
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    return int(path.read_text().strip())


def guests_of(line: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in line["guests"]}


def assert_cadence(
    lines: list[tuple[float, dict[str, Any]]],
    late_s: float,
    window: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Ticks on the interval's grid: consecutive stamps (`time`, when each tick began)
    within CADENCE of the interval (none skipped, none bunched), and each line printed
    at most `late_s` later after its tick began than the median line (only the lines
    that arrived within `window`, monotonic, when given). Returns the widest stamp
    deviation and lateness seen, in seconds."""
    stamps = [line["time"] for _, line in lines]
    stamp_gaps = [b - a for a, b in itertools.pairwise(stamps)]
    low, high = (1 - CADENCE) * INTERVAL, (1 + CADENCE) * INTERVAL
    # Arrival minus stamp, up to a constant (one clock is monotonic, the other wall).
    lags = [at - line["time"] for at, line in lines]
    usual = statistics.median(lags)
    judged = [
        lag - usual
        for lag, (at, _) in zip(lags, lines, strict=True)
        if window is None or window[0] <= at <= window[1]
    ]
    report = " | ".join(
        f"{line['time'] - stamps[0]:.2f}: late {lag - usual:+.3f} s, libvirt "
        f"{next(s['duration_ms'] for s in line['sources'] if s['name'] == 'libvirt'):.0f} ms"
        for lag, (_, line) in zip(lags, lines, strict=True)
    )
    assert all(low <= g <= high for g in stamp_gaps), report
    assert judged and max(judged) <= late_s, report
    return max(abs(g - INTERVAL) for g in stamp_gaps), max(judged)


def test_stopped_qemu_leaves_every_other_guest_on_time(
    lab: Lab, config: Path, batch: list[Batch]
) -> None:
    """lab-net's QEMU stopped for 3 intervals: its row says why it is blank, every other
    guest's ticks keep the interval, and nothing of lab-net is a spike after CONT."""
    expected = lab.guests[STUCK].expected
    tx_bps = 8 * float(expected["tx_wire_bytes_per_s"])
    tx_pps = float(expected["tx_pps"])
    pid = qemu_pid(STUCK)
    run = Batch(config, count=14)
    batch.append(run)
    run.wait_lines(4)
    stopped_at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3 * INTERVAL)
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed_at = time.monotonic()
    lines = run.finish()
    assert len(lines) == 14
    # The figure: while it is stopped (and the ticks around), every line within
    # 20 % of the interval of when it is due. Outside, libvirt's own jitter on this
    # shared 2-CPU machine (calls of 50-400 ms) is not what is judged here.
    stamp_dev, late = assert_cadence(
        lines, CADENCE * INTERVAL, (stopped_at - INTERVAL, resumed_at + 2 * INTERVAL)
    )

    during = [g for at, g in lines if stopped_at + INTERVAL < at < resumed_at]
    after = [g for at, g in lines if at > resumed_at]
    silent = [guests_of(line)[STUCK] for line in during]
    assert len(silent) >= 2
    for g in silent:
        assert g["not_responding_since"] is not None, g
        assert "not responding since" in g["not_responding"]
        assert g["cpu_pct"] is None and g["net_tx_bps"] is None
        assert g["na"]["net_rx_bps"] == g["not_responding"]  # why the row is blank
    for line in during:
        for name, g in guests_of(line).items():
            if name != STUCK:
                assert g["not_responding_since"] is None, (name, g["not_responding"])
        libvirt = next(s for s in line["sources"] if s["name"] == "libvirt")
        assert libvirt["ok"] and STUCK in libvirt["reason"]
        netpeer = guests_of(line)["lab-netpeer"]  # its own counters, every tick
        assert netpeer["cpu_pct"] is not None and netpeer["net_rx_bps"] is not None

    before = [guests_of(line)[STUCK]["cpu_pct"] for at, line in lines if at < stopped_at]
    cpu_before = max((v for v in before if v is not None), default=0.0)
    values = [guests_of(line)[STUCK] for line in after]
    assert all(g["not_responding_since"] is None for g in values[1:])
    peak_bps = max((g["net_tx_bps"] or 0.0) for g in values)
    peak_pps = max((g["net_tx_pps"] or 0.0) for g in values)
    peak_cpu = max((g["cpu_pct"] or 0.0) for g in values)
    assert peak_bps <= 2 * tx_bps, (peak_bps, tx_bps)
    assert peak_pps <= 2 * tx_pps, (peak_pps, tx_pps)
    # Its CPU: the manifest states none for a network workload, so against what it
    # used before the stop (the 0.1 s intervals gave 63 %).
    assert peak_cpu <= 2 * max(cpu_before, 5.0), (peak_cpu, cpu_before)
    assert any(g["net_tx_bps"] for g in values[-3:])  # it is measured again
    print(
        f"\ncadence: lines {late * 1000:.0f} ms late at most, stamps "
        f"{stamp_dev * 1000:.0f} ms off at most, interval {INTERVAL:g} s; {len(silent)} "
        f"ticks blank for {STUCK}; after CONT: tx {peak_bps / 1e6:.2f} Mbit/s "
        f"(workload {tx_bps / 1e6:.2f}), {peak_pps:.0f} pps (workload {tx_pps:.0f}), "
        f"cpu {peak_cpu:.1f} % ({cpu_before:.1f} % before the stop)"
    )


def _libvirtd_pidfile(lab: Lab) -> Path:
    return lab.state_dir / "run" / "libvirtd.pid"


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _start_libvirtd(lab: Lab) -> None:
    """As tests/lab/lab starts it: `libvirtd -d -p PIDFILE`, its log in the lab's logs."""
    env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{lab.state_dir}/logs/libvirtd.log")
    subprocess.run(
        ["libvirtd", "-d", "-p", str(_libvirtd_pidfile(lab))], env=env, check=True, timeout=60
    )
    deadline = time.monotonic() + 60
    while subprocess.run([*VIRSH, "version"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "libvirtd did not come back"
        time.sleep(0.5)


def test_libvirtd_restart_keeps_the_cadence_and_recovers(
    lab: Lab, config: Path, batch: list[Batch]
) -> None:
    pidfile = _libvirtd_pidfile(lab)
    pid = _pid_alive(pidfile)
    assert pid is not None, f"libvirtd not running from {pidfile}"
    run = Batch(config, count=20)
    batch.append(run)
    run.wait_lines(3)
    killed_at = time.monotonic()
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _pid_alive(pidfile) == pid and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2 * INTERVAL)
    finally:
        if _pid_alive(pidfile) is None:
            _start_libvirtd(lab)
    back_at = time.monotonic()
    lines = run.finish()
    # libvirtd starting answers late (it reconnects to the running QEMUs): a tick may
    # finish late, never after the next one is due.
    assert_cadence(lines, INTERVAL)
    down = [line for at, line in lines if killed_at + INTERVAL < at < back_at]
    assert down
    for line in down:
        libvirt = next(s for s in line["sources"] if s["name"] == "libvirt")
        assert not libvirt["ok"] and libvirt["reason"]
        assert line["host"]["cpu_busy_pct"] is not None  # the host strip goes on
        # Its guests still run: every one stays listed, values unknown, and says why
        # (they vanished before, and the detectors forgot them: the session
        # recording's leak lost its 5-minute span to this test).
        listed = guests_of(line)
        assert set(lab.guests) <= set(listed)
        for name in lab.guests:
            g = listed[name]
            assert g["not_responding_since"] is not None, (name, g)
            assert libvirt["reason"] in g["not_responding"], (name, g["not_responding"])
            assert g["cpu_pct"] is None
    # Back: libvirt is probed again (every tick after a failed call, every 5 while it
    # stays away) and every lab guest has its figures again.
    last = guests_of(lines[-1][1])
    assert set(lab.guests) <= set(last)
    assert last["lab-cpu"]["cpu_pct"] is not None
    assert all(g["not_responding_since"] is None for g in last.values())


CLONE = f"kvmtop-test-transient-{os.getpid()}"


def clone_xml(lab: Lab) -> str:
    """A transient copy of a probe guest: another name, no UUID (libvirt makes one),
    no disk and no console (nothing of the lab's files is shared)."""
    import xml.etree.ElementTree as ET

    source = subprocess.run(
        [*VIRSH, "dumpxml", "--inactive", "lab-probe-hlt"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    root = ET.fromstring(source)
    root.find("name").text = CLONE  # type: ignore[union-attr]
    for tag in ("uuid", "title", "metadata"):
        for element in root.findall(tag):
            root.remove(element)
    devices = root.find("devices")
    assert devices is not None
    for tag in ("disk", "serial", "console"):
        for element in devices.findall(tag):
            devices.remove(element)
    return ET.tostring(root, encoding="unicode")


def test_guest_created_and_destroyed_mid_run(
    lab: Lab, config: Path, batch: list[Batch], tmp_path: Path
) -> None:
    xml = tmp_path / "clone.xml"
    xml.write_text(clone_xml(lab))
    run = Batch(config, count=14)
    batch.append(run)
    try:
        run.wait_lines(3)
        subprocess.run([*VIRSH, "create", str(xml)], capture_output=True, check=True, timeout=60)
        created_at = time.monotonic()
        time.sleep(4 * INTERVAL)
        subprocess.run([*VIRSH, "destroy", CLONE], capture_output=True, check=True, timeout=60)
        destroyed_at = time.monotonic()
        lines = run.finish()
    finally:
        subprocess.run([*VIRSH, "destroy", CLONE], capture_output=True, timeout=60)
    # libvirtd answers slowly while a domain starts (0.3-0.9 s calls seen here): a
    # tick may finish late, never after the next one is due.
    assert_cadence(lines, INTERVAL)
    present = [
        guests_of(line).get(CLONE)
        for at, line in lines
        if created_at + INTERVAL < at < destroyed_at
    ]
    assert present and all(g is not None for g in present)
    assert any(g and g["state"] == "running" for g in present)  # created paused, resumed
    # A QEMU that has just started may answer its first monitor commands late (its
    # first query-stats-schemas), and a tick that overlaps `virsh destroy` waits for
    # the domain's lock: then it is shown as not responding, for a tick or two, not
    # waited for. In between it answers.
    late = [g["not_responding"] for g in present if g and g["not_responding_since"]]
    assert any(g and g["not_responding_since"] is None for g in present), late
    print(f"\n{CLONE}: {len(present)} ticks shown, {len(late)} not responding: {late}")
    gone = [line for at, line in lines if at > destroyed_at + INTERVAL]
    assert gone and all(CLONE not in guests_of(line) for line in gone)
    # libvirtd holds a domain's lock while it starts or stops its QEMU, and calls that
    # reach that domain wait for it: a tick or two may then get nothing in time and
    # show every guest as not read, saying so. Never more, and never a spike.
    for name in lab.guests:
        blank = [
            guests_of(line)[name]["not_responding"]
            for _, line in lines
            if guests_of(line)[name]["not_responding_since"] is not None
        ]
        assert len(blank) <= 3, (name, blank)
    assert all(g["not_responding_since"] is None for g in guests_of(lines[-1][1]).values())
    tx = 8 * float(lab.guests[STUCK].expected["tx_wire_bytes_per_s"])
    assert all((guests_of(line)[STUCK]["net_tx_bps"] or 0.0) <= 2 * tx for _, line in lines)
