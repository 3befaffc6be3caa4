"""End to end on the real lab: kvmtop's own collectors and pipeline against the
workloads' known parameters (tests/lab/README.md, /var/lib/kvmtop-lab/manifest.json).

Each assertion compares a measured value with the parameter the lab guest was
started with, not with another reading of the same counter.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kvmtop.app.main import KvmtopApp
from kvmtop.config import Settings
from kvmtop.feed.replay import ReplayFeed
from kvmtop.model.rates.guest import NA_NOT_KVM, GuestRates
from kvmtop.model.rates.kvm import (
    EXIT_SOURCE_BINARY,
    EXIT_SOURCE_TRACEPOINTS,
    NA_KVM_EXIT_SILENT,
    TRACE_ATTACHED,
    TRACE_FDS,
    TRACE_SOURCE,
)
from kvmtop.model.sample import SourceStatus
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.units import MIB
from kvmtop.store.reader import StoreReader
from kvmtop.views.guest_detail import GuestDetailScreen, tracing_text
from kvmtop.views.sources import NO_REASON, blank_reasons
from kvmtop.wiring import build_live_feed, build_pipeline
from tests.app.builders import wait_until
from tests.e2e.lab_watch import Observation, watch
from tests.hostfacts import kvm_exit_events, kvm_exit_reason_names
from tests.lab.fixture import Lab, kvmtop_interval_s

# Every test here holds on any KVM host (this project's PVM machines, and the nested
# lab's SVM host, where `tests/lab/lab nested test` runs them against the `kvm` scenario).
pytestmark = [pytest.mark.lab, pytest.mark.nested]

OBSERVE_S = 70.0


@pytest.fixture(scope="module")
def observed(lab: Lab) -> Iterator[Observation]:
    """The lab (`test` scenario, or `kvm` in the nested lab) with no fault applied,
    watched once for every test here."""
    lab.fault("reset")
    # Balloon stats every 10 s, as kvmtop's defaults give at 2 s (every 5th tick): at the
    # nested lab's 5 s the default would leave 3 balloon points in the window.
    interval = kvmtop_interval_s()
    yield watch(
        OBSERVE_S,
        replace(Settings(interval_s=interval), balloon_every=max(1, round(10.0 / interval))),
    )


def test_every_lab_guest_is_seen_with_name_and_uuid(lab: Lab, observed: Observation) -> None:
    last = observed.snapshots[-1]
    seen = {g.name: g for g in last.guests}
    for name, guest in lab.guests.items():
        assert name in seen, f"{name} missing from kvmtop's guests"
        assert seen[name].uuid == guest.uuid
        assert seen[name].state == "running"
        assert seen[name].accel == ("kvm" if guest.is_kvm else "tcg")


def test_every_blank_cell_of_a_lab_guest_says_why(observed: Observation) -> None:
    """No guest column of any lab guest is blank without its reason (`GuestRates.na`,
    which the sources view lists), on any frame of the watch. The boot-sector probes'
    network cells were (they have no vNIC), and so were a KVM guest's exits on its
    first frame."""
    unexplained = {
        (col.header, name)
        for snap in observed.snapshots
        for col, reason, names in blank_reasons(snap)
        if reason == NO_REASON
        for name in names
    }
    assert not unexplained, sorted(unexplained)


def test_rates_match_raw_libvirt_arithmetic(observed: Observation) -> None:
    """CPU% and vNIC bytes/s from kvmtop equal Δ/Δt of the raw getAllDomainStats values."""
    n = observed.last_clean_pair()
    prev, cur = observed.raw_stats(n - 1), observed.raw_stats(n)
    last = observed.snapshots[n]
    dt_s = observed.interval_s(n)
    checked = 0
    for g in last.guests:
        p, c = prev.get(g.uuid), cur.get(g.uuid)
        if not p or not c or "cpu.time" not in c:
            continue
        expected_cpu = 100.0 * (c["cpu.time"] - p["cpu.time"]) / 1e9 / dt_s
        assert g.cpu_pct == pytest.approx(expected_cpu, rel=1e-6), g.name
        if "net.0.rx.bytes" in c:
            expected_rx = 8.0 * (c["net.0.rx.bytes"] - p["net.0.rx.bytes"]) / dt_s
            assert g.nics[0].rx_bps == pytest.approx(expected_rx, rel=1e-6, abs=1e-9), g.name
        checked += 1
    assert checked >= 5


def test_cpu_guest_shows_its_duty_cycle(lab: Lab, observed: Observation) -> None:
    expected = lab.guests["lab-cpu"].expected["expected_cpu_pct"]
    idle = observed.median("lab-idle", lambda g: g.cpu_pct)
    busy = observed.median("lab-cpu", lambda g: g.cpu_pct)
    # The loop is busy `duty` % of the guest's wall clock. On a loaded host the vCPU
    # waits for a CPU part of that time, which kvmtop shows as steal: the demand (CPU +
    # steal) is the duty, plus emulation overhead and, on a saturated host, the wait for
    # a CPU after each wake-up, which is steal too.
    demand = observed.median("lab-cpu", lambda g: _plus(g.cpu_pct, g.steal_pct))
    spare = _host_idle_share(observed)
    print(
        f"\nlab-cpu: duty {expected:g} %, CPU {busy:.1f} %, CPU + steal {demand:.1f} %; "
        f"host idle {100 * spare:.0f} % during the observation"
    )
    idle_demand = observed.median("lab-idle", lambda g: _plus(g.cpu_pct, g.steal_pct))
    assert demand >= expected * 0.7, (busy, demand)
    assert demand > idle_demand + expected * 0.3, (demand, idle_demand)
    assert busy <= expected * 1.6
    assert busy > idle, (busy, idle)
    if spare >= SPARE_HOST_SHARE:
        # With CPUs to spare the vCPU runs when it wants to: its CPU alone shows the
        # duty. On a saturated host it waits for a CPU most of that time, and what it
        # wanted shows as CPU + steal: a nested CI run (host idle 15 %) saw CPU 8.1 %,
        # CPU + steal 31.3 % for a 20 % duty, and lab-idle at 2.5 % CPU.
        assert busy > idle + expected * 0.3, (busy, idle)
        assert demand <= expected * 1.6, (busy, demand, spare)


# Above this idle share of the host's CPUs a runnable vCPU gets a CPU soon after it
# wakes, so its steal stays within its duty (the nested lab's one emulated CPU, with
# the lab and the observing test on it, has far less).
SPARE_HOST_SHARE = 0.25


def _host_idle_share(observed: Observation) -> float:
    """Idle share of the host's CPU time between the first and last sample (the
    `cpu` line of /proc/stat as the samples carry it)."""
    first, last = observed.samples[0].host.cpu, observed.samples[-1].host.cpu
    fields = (
        "user_ns",
        "nice_ns",
        "system_ns",
        "idle_ns",
        "iowait_ns",
        "irq_ns",
        "softirq_ns",
        "steal_ns",
    )
    total = sum(getattr(last, f) - getattr(first, f) for f in fields)
    idle = (last.idle_ns - first.idle_ns) + (last.iowait_ns - first.iowait_ns)
    return idle / total if total > 0 else 0.0


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def test_disk_guest_shows_iops_and_latency(lab: Lab, observed: Observation) -> None:
    expected = lab.guests["lab-disk"].expected["disk_iops"]
    iops = observed.median("lab-disk", lambda g: g.disk_iops)
    assert iops == pytest.approx(expected, rel=0.2)
    assert observed.series("lab-disk", lambda g: g.disk_write_ms)
    assert observed.series("lab-disk", lambda g: g.disk_read_ms)


def test_net_guest_throughput_on_vnic_and_bridge(lab: Lab, observed: Observation) -> None:
    guest = lab.guests["lab-net"]
    expected_bps = 8 * guest.expected["tx_wire_bytes_per_s"]
    tx = observed.median("lab-net", lambda g: g.net_tx_bps)
    assert tx == pytest.approx(expected_bps, rel=0.2)
    peer_rx = observed.median("lab-netpeer", lambda g: g.net_rx_pps)
    assert peer_rx == pytest.approx(lab.guests["lab-netpeer"].expected["rx_pps"], rel=0.2)
    # The host sees the same traffic on the guest's tap, a port of the lab bridge. Its
    # vNIC from a frame read by clean ticks: the last one had none in a CI run, on a
    # slow L1 whose tick overran its libvirt deadline.
    nic = (
        observed.snapshots[observed.last_clean_pair()]
        .guest(  # type: ignore[union-attr]
            guest.uuid
        )
        .nics[0]
    )
    assert nic.bridge == guest.bridge and nic.switch == "linux"
    taps = [
        statistics.median(
            n.rx_bps
            for s in observed.snapshots[1:]
            for n in s.host.nets
            if n.name == nic.name and n.rx_bps is not None
        )
    ]
    assert taps[0] == pytest.approx(expected_bps, rel=0.2)


def _longest_ramp(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The longest run without a drop (the lab leaker frees everything at its cap)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in points:
        if runs[-1] and v < runs[-1][-1][1] - 4 * MIB:
            runs.append([])
        runs[-1].append((t, v))
    return max(runs, key=len)


def test_memleak_guest_grows_at_its_rate_and_idle_stays_flat(
    lab: Lab, observed: Observation
) -> None:
    from kvmtop.detectors.stats import theil_sen

    def used(name: str) -> list[tuple[float, float]]:
        seen: dict[int, float] = {}
        for s in observed.samples:
            for g in s.guests:
                b = g.balloon
                if (
                    g.name == name
                    and b
                    and b.last_update_s
                    and b.usable_bytes is not None
                    and b.available_bytes is not None
                ):
                    seen[b.last_update_s] = float(b.available_bytes - b.usable_bytes)
        return sorted(seen.items())

    ramp = _longest_ramp(used("lab-memleak"))
    assert len(ramp) >= 4 and ramp[-1][0] - ramp[0][0] >= 30, ramp
    slope = theil_sen([t for t, _ in ramp], [v for _, v in ramp]).slope
    assert slope == pytest.approx(lab.guests["lab-memleak"].expected["leak_bytes_per_s"], rel=0.2)
    idle = used("lab-idle")
    idle_slope = theil_sen([t for t, _ in idle], [v for _, v in idle]).slope
    assert abs(idle_slope) < 0.1 * slope


def test_kvm_probes_show_exits_at_their_loop_rate(lab: Lab, observed: Observation) -> None:
    """Each probe halts once per timer wake-up, and the port-I/O probe makes its port
    writes: the exit categories KVM counts for exactly those are within 15 % of the
    design. Where port writes are not counted as I/O exits (PVM: expected io_exits 0),
    the total is compared instead; elsewhere the total is at least the designed exits
    (it also counts the host's own interrupts while the guest runs, which vary with the
    host's load: measured 2.2-2.6 exits per wake-up beyond the design in the nested
    lab's L1, 1.3 here)."""
    probes = [name for name, g in lab.guests.items() if g.kind == "probe"]
    assert "lab-probe-hlt" in probes and "lab-probe-pio" in probes
    for name in probes:
        exp = lab.guests[name].expected
        halt = observed.median(name, lambda g: g.exit_categories.get("halt_exits"))
        assert halt == pytest.approx(exp["halt_exits_per_s"], rel=0.15), name
        total = observed.median(name, lambda g: g.exits_per_s)
        if exp["io_exits_per_s"] > 0:
            io = observed.median(name, lambda g: g.exit_categories.get("io_exits"))
            assert io == pytest.approx(exp["io_exits_per_s"], rel=0.15), name
            assert total >= 0.85 * (exp["halt_exits_per_s"] + exp["io_exits_per_s"]), name
        else:
            assert total == pytest.approx(exp["exits_per_s"], rel=0.15), name


def test_kvm_columns_follow_each_guests_accelerator(lab: Lab, observed: Observation) -> None:
    """A TCG guest's KVM columns are "not KVM", never 0; a KVM guest's exits per vCPU
    are Δ of KVM's own counter (libvirt's binary stat `vcpu.N.exits.sum`, read by the
    same calls) over the interval, whatever the guest runs (boot sector or Linux)."""
    n = observed.last_clean_pair()
    prev, cur = observed.raw_stats(n - 1), observed.raw_stats(n)
    dt_s = observed.interval_s(n)
    kinds = set()
    for g in observed.snapshots[n].guests:
        guest = lab.guests.get(g.name)
        if guest is None:
            continue
        if not guest.is_kvm:
            assert g.exits_per_s is None
            assert g.na["exits_per_s"] == NA_NOT_KVM
            continue
        kinds.add(guest.kind)
        p, c = prev[g.uuid], cur[g.uuid]
        assert g.exit_source == EXIT_SOURCE_BINARY, g.name
        for v in g.vcpu:
            key = f"vcpu.{v.index}.exits.sum"
            assert v.exits_per_s == pytest.approx((c[key] - p[key]) / dt_s, rel=1e-6), g.name
        assert g.exits_per_s == pytest.approx(sum(v.exits_per_s or 0 for v in g.vcpu))
    # Where the manifest runs Linux guests under KVM (an SVM or VMX host), they were
    # checked too, not only the probes.
    if any(g.is_kvm and g.kind == "linux" for g in lab.guests.values()):
        assert "linux" in kinds


def test_contended_guests_steal_far_more_than_idle(lab: Lab, observed: Observation) -> None:
    group = lab.contention_group("steal")
    assert len(group) >= 2
    lab.fault("contend")
    try:
        time.sleep(4)  # the workloads switch to their contention duty
        contended = watch(20.0, replace(Settings(interval_s=kvmtop_interval_s()), balloon_every=50))
    finally:
        lab.fault("uncontend")
    idle = contended.median("lab-idle", lambda g: g.steal_pct)
    for guest in group:
        steal = contended.median(guest.name, lambda g: g.steal_pct)
        assert steal > 20.0, (guest.name, steal)
        assert steal > idle + 15.0, (guest.name, steal, idle)


# --------------------------------------------------------------------------- tracing


def _tracing(snap: Snapshot) -> SourceStatus:
    (status,) = [s for s in snap.sources if s.name == TRACE_SOURCE]
    return status


def test_traced_pio_probe_reasons_as_this_hosts_kvm_exit_allows(lab: Lab) -> None:
    """Traced through kvmtop's sampler (`trace` by name, as `record --trace` does), the
    port-I/O probe's kvm_pio rate equals its binary-stat exits minus halt exits within
    15 %, and its exits by reason come from where this host allows.

    Whether kvm:kvm_exit fires here the test counts itself, in a tracefs instance of its
    own. Where it fires (VMX, SVM), the reasons are kvm_exit's, named as in this
    kernel's format file, the top one port I/O, and their total is within 10 % of KVM's
    binary `exits` counter over the same frames. Where it is silent (PVM), exits are
    split by category with `na` naming the silent tracepoint; PVM also leaves the binary
    `io_exits` at 0 (port writes go through KVM's instruction emulator), so the port-I/O
    category is filled from kvm_pio.
    """
    name = "lab-probe-pio"
    guest = lab.guests[name]
    assert guest.is_kvm
    kvm_exit_fires = kvm_exit_events() > 0

    def traced_frames(obs: Observation) -> list[GuestRates]:
        return [
            g
            for snap in obs.snapshots
            for g in snap.guests
            if g.name == name and "kvm_pio:total" in g.tracepoint_rates
        ]

    def enough(obs: Observation) -> bool:
        # On a loaded host (the nested lab's emulated L1) a tick can overrun and
        # abandon its call, which leaves that frame without rates: watch on until
        # there are enough frames that have them, pairs of clean ticks among them.
        clean = sum(1 for i in range(1, len(obs.samples)) if obs.clean(i - 1) and obs.clean(i))
        return len(traced_frames(obs)) >= 6 and clean >= 6

    # Tracing is attached from the second sample, so its first rates come with the third.
    obs = watch(24.0, trace=(name,), min_samples=9, enough=enough)
    status = _tracing(obs.snapshots[-1])
    assert status.detail[TRACE_ATTACHED] == guest.uuid, status.reason
    assert int(status.detail[TRACE_FDS]) > 0
    traced = traced_frames(obs)
    assert len(traced) >= 5, "kvmtop produced too few traced frames"
    pio = statistics.median(g.tracepoint_rates["kvm_pio:total"] for g in traced)
    other = statistics.median(
        exits - g.exit_categories.get("halt_exits", 0.0)
        for g in traced
        if (exits := g.exits_per_s) is not None
    )
    assert pio == pytest.approx(other, rel=0.15), (pio, other)
    expected = guest.expected["pio_exits_per_s"]
    assert pio == pytest.approx(expected, rel=0.15), (pio, expected)
    last = traced[-1]
    assert last.exits_by_reason is not None
    top = max(last.exits_by_reason, key=last.exits_by_reason.__getitem__)
    if not kvm_exit_fires:
        assert last.tracepoint_rates["kvm_exit:total"] == 0
        assert last.exit_source == EXIT_SOURCE_BINARY
        assert last.na["exits_by_reason"] == NA_KVM_EXIT_SILENT
        assert top == "io_exits"  # filled from kvm_pio, since io_exits stays 0
    else:
        assert last.exit_source == EXIT_SOURCE_TRACEPOINTS
        assert top in ("IO_INSTRUCTION", "io"), last.exits_by_reason
        assert set(last.exits_by_reason) - {"other"} <= kvm_exit_reason_names()
        # KVM's own counter, from the raw replies of the same calls: Δexits / Δt.
        ratios = []
        key = "vcpu.0.exits.sum"
        for i, snap in enumerate(obs.snapshots[1:], start=1):
            g = snap.guest(guest.uuid)
            if (
                g is None
                or "kvm_exit:total" not in g.tracepoint_rates
                or not (obs.clean(i - 1) and obs.clean(i))
            ):
                continue
            grew = obs.raw_stats(i)[guest.uuid][key] - obs.raw_stats(i - 1)[guest.uuid][key]
            ratios.append(g.tracepoint_rates["kvm_exit:total"] / (grew / obs.interval_s(i)))
        assert len(ratios) >= 5
        assert statistics.median(ratios) == pytest.approx(1.0, abs=0.10), ratios
    untraced = [g for g in obs.snapshots[-1].guests if g.name != name]
    assert all(not g.tracepoint_rates for g in untraced)


# What a libvirt client connection holds (its socket, its wakeup pipe, event fds).
# The collector opens one at any tick: a second connection ahead of the first stall
# check, a new one after it abandons a call (kvmtop/collectors/libvirt/collector.py).
_CONNECTION_FD = ("socket:", "pipe:", "anon_inode:[eventfd]", "anon_inode:[eventpoll]")


def _fds() -> tuple[int, int]:
    """(open fds other than connections', perf fds) of this process, the lowest of a
    few reads.

    Reads race with the collection thread's short-lived /proc files; a leaked fd
    stays, so the lowest count still shows it.
    """
    counts = []
    for _ in range(5):
        files = perf = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/self/fd/{fd}")
                perf += link == "anon_inode:[perf_event]"
                files += not link.startswith(_CONNECTION_FD)
        counts.append((files, perf))
        time.sleep(0.02)
    return min(counts)


SCREEN_CYCLES = 5


async def test_detail_screen_traces_its_guest_and_leaks_no_fd(lab: Lab, tmp_path: Path) -> None:
    """Opening and closing the detail screen in the real app over the real live feed
    attaches tracing to the guest and detaches it, leaving the fd count unchanged.

    Only SCREEN_CYCLES cycles here: each waits for two samples (attach, then detach)
    and a detach alone takes 0.35-0.7 s (RCU grace period when the last event of a
    tracepoint closes), so 100 cycles would take minutes. The 100 cycles of the
    issue run on the collector itself, with the same attach/detach and the same
    guest, in tests/collectors/test_tracepoints.py::test_lab_no_fd_leak_on_probe_guest;
    this test proves the screen → app → feed → sampler → collector path closes
    what it opens.
    """
    name = "lab-probe-pio"
    uuid = lab.guests[name].uuid
    feed = build_live_feed(Settings(interval_s=1.0))
    app = KvmtopApp(feed, user_theme_dir=tmp_path)
    try:
        async with app.run_test(size=(120, 40)) as pilot:

            async def frame(condition: Callable[[Snapshot], bool]) -> Snapshot:
                seq = app.latest.seq if app.latest is not None else 0
                await wait_until(
                    pilot,
                    lambda: (
                        app.latest is not None and app.latest.seq > seq and condition(app.latest)
                    ),
                    timeout=30.0,
                )
                assert app.latest is not None
                return app.latest

            first = await frame(lambda s: s.guest(uuid) is not None)
            # As root with tracefs, as every lab host runs this.
            assert _tracing(first).ok, _tracing(first).reason
            await frame(lambda s: True)  # every collector opened what it keeps open
            before = _fds()
            assert before[1] == 0
            for _ in range(SCREEN_CYCLES):
                app.open_guest(uuid)
                snap = await frame(lambda s: _tracing(s).detail[TRACE_ATTACHED] == uuid)
                await pilot.pause()
                screen = app.screen
                assert isinstance(screen, GuestDetailScreen)
                text = str(screen.query_one("#tracing").render())
                fds = int(_tracing(snap).detail[TRACE_FDS])
                assert text.startswith(f"tracing exits by reason for this guest ({fds} counters)")
                assert _fds()[1] == fds > 0
                await pilot.press("escape")
                await frame(lambda s: _tracing(s).detail[TRACE_ATTACHED] == "")
                assert _fds()[1] == 0
            assert _fds() == before
    finally:
        feed.close()


def test_record_trace_keeps_exits_by_reason_for_replay(lab: Lab, tmp_path: Path) -> None:
    """`kvmtop record --trace GUEST` traces that guest for the whole recording; its
    replay shows the tracepoint rates and the detail text says so, while another
    guest's says the recording has none."""
    name = "lab-probe-pio"
    path = tmp_path / "traced.kvmtop"
    interval = kvmtop_interval_s()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvmtop",
            "record",
            "-o",
            str(path),
            "--interval",
            f"{interval:g}",
            "--duration",
            f"{5 * interval:g}",
            "--trace",
            name,
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"exits by reason of {name}" in proc.stderr
    reader = StoreReader(path)
    feed = ReplayFeed(reader, build_pipeline(Settings()))
    frames = []
    try:
        while (snap := feed.next()) is not None:
            frames.append(snap)
    finally:
        feed.close()
    # The frames with rates for the traced guest (on a slow host, as the nested lab's
    # L1, a tick can overrun and leave one without: its interval is unknown).
    uuid = lab.guests[name].uuid
    rated = [f for f in frames if (g := f.guest(uuid)) and "kvm_pio:total" in g.tracepoint_rates]
    assert rated, "no frame with the traced guest's tracepoint rates"
    last = rated[-1]
    status = _tracing(last)
    assert status.detail.get(TRACE_ATTACHED), status.reason
    traced = last.guest(uuid)
    assert traced is not None and traced.tracepoint_rates["kvm_pio:total"] > 0
    assert tracing_text(last, traced).startswith("tracing exits by reason for this guest (")
    other = next(g for g in last.guests if g.name == "lab-probe-hlt")
    assert not other.tracepoint_rates
    assert tracing_text(last, other).startswith(
        "per-reason tracing not in this recording for this guest"
    )
