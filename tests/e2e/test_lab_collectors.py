"""End to end on the real lab: kvmtop's own collectors and pipeline against the
workloads' known parameters (tests/lab/README.md, /var/lib/kvmtop-lab/manifest.json).

Each assertion compares a measured value with the parameter the lab guest was
started with, not with another reading of the same counter.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from kvmtop.cli import build_pipeline, build_sampler
from kvmtop.collectors.libvirt import LibvirtCollector
from kvmtop.config import Settings
from kvmtop.model.rates import NA_NOT_KVM, GuestRates
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot
from tests.lab.fixture import Lab

pytestmark = pytest.mark.lab

INTERVAL_S = 2.0
OBSERVE_S = 70.0
MIB = 1 << 20


class RecordingConnection:
    """A libvirt connection that keeps every raw getAllDomainStats reply."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.replies: list[tuple[int, dict[str, dict[str, Any]]]] = []

    def getAllDomainStats(self, stats: int, flags: int) -> Any:
        reply = self._conn.getAllDomainStats(stats, flags)
        self.replies.append((time.monotonic_ns(), {d.UUIDString(): dict(s) for d, s in reply}))
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@dataclass
class Observation:
    """Everything kvmtop produced while watching the lab for OBSERVE_S seconds."""

    samples: list[Sample] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    raw: list[RecordingConnection] = field(default_factory=list)

    def series(self, name: str, value: Callable[[GuestRates], float | None]) -> list[float]:
        """Known values of one guest's figure, frame by frame (first frame has none)."""
        out = []
        for snap in self.snapshots:
            for g in snap.guests:
                if g.name == name and (v := value(g)) is not None:
                    out.append(v)
        return out

    def median(self, name: str, value: Callable[[GuestRates], float | None]) -> float:
        """Median over the run; fails when kvmtop never produced the figure."""
        values = self.series(name, value)
        assert values, f"kvmtop produced no value for {name}"
        return statistics.median(values)


def watch(seconds: float, settings: Settings | None = None) -> Observation:
    """Run the real sampler and pipeline at INTERVAL_S for `seconds`."""
    import libvirt

    settings = settings or Settings(interval_s=INTERVAL_S)
    obs = Observation()

    def open_recording(uri: str | None) -> RecordingConnection:
        conn = RecordingConnection(libvirt.openReadOnly(uri))
        obs.raw.append(conn)
        return conn

    sampler = build_sampler(settings)
    sampler.guests = LibvirtCollector(settings.uri, balloon_every=settings.balloon_every,
                                      open_fn=open_recording)
    pipeline = build_pipeline(settings)
    deadline = time.monotonic()
    end = deadline + seconds
    try:
        while time.monotonic() < end:
            sample = sampler.sample()
            obs.samples.append(sample)
            obs.snapshots.append(pipeline.push(sample, mode="live"))
            deadline += INTERVAL_S
            time.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        sampler.close()
    return obs


@pytest.fixture(scope="module")
def observed(lab: Lab) -> Iterator[Observation]:
    """The `test` scenario with no fault applied, watched once for every test here."""
    lab.fault("reset")
    yield watch(OBSERVE_S)


def test_every_lab_guest_is_seen_with_name_and_uuid(lab: Lab, observed: Observation) -> None:
    last = observed.snapshots[-1]
    seen = {g.name: g for g in last.guests}
    for name, guest in lab.guests.items():
        assert name in seen, f"{name} missing from kvmtop's guests"
        assert seen[name].uuid == guest.uuid
        assert seen[name].state == "running"
        assert seen[name].accel == ("kvm" if guest.is_kvm else "tcg")


def test_rates_match_raw_libvirt_arithmetic(observed: Observation) -> None:
    """CPU% and vNIC bytes/s from kvmtop equal Δ/Δt of the raw getAllDomainStats values."""
    replies = [r for conn in observed.raw for r in conn.replies]
    assert len(replies) >= 3
    (t0, prev), (t1, cur) = replies[-2], replies[-1]
    last = observed.snapshots[-1]
    dt_s = (observed.samples[-1].mono_ns - observed.samples[-2].mono_ns) / 1e9
    # The sampler stamps after the call returns; the raw stamps are the same instant
    # up to the parsing time, so compare against kvmtop's own interval.
    assert abs((t1 - t0) / 1e9 - dt_s) < 0.05
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
    # TCG adds emulation overhead on top of the guest's own duty cycle, and the host
    # is shared, so allow a band around the configured duty.
    assert expected * 0.7 <= busy <= expected * 1.6, busy
    assert busy > idle + 25


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
    # The host sees the same traffic on the guest's tap, a port of the lab bridge.
    nic = observed.snapshots[-1].guest(guest.uuid).nics[0]  # type: ignore[union-attr]
    assert nic.bridge == guest.bridge and nic.switch == "linux"
    taps = [
        statistics.median(
            n.rx_bps for s in observed.snapshots[1:] for n in s.host.nets
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
                if g.name == name and b and b.last_update_s and b.usable_bytes is not None \
                        and b.available_bytes is not None:
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
    for name in ("lab-probe-pio", "lab-probe-mmio", "lab-probe-hlt"):
        expected = lab.guests[name].expected["exits_per_s"]
        measured = observed.median(name, lambda g: g.exits_per_s)
        assert measured == pytest.approx(expected, rel=0.15), name
    halt = observed.median("lab-probe-hlt", lambda g: g.exit_categories.get("halt_exits"))
    assert halt == pytest.approx(lab.guests["lab-probe-hlt"].expected["halt_exits_per_s"],
                                 rel=0.15)


def test_tcg_guests_show_kvm_columns_not_applicable(lab: Lab, observed: Observation) -> None:
    last = observed.snapshots[-1]
    for g in last.guests:
        if g.name in lab.guests and not lab.guests[g.name].is_kvm:
            assert g.exits_per_s is None
            assert g.na["exits_per_s"] == NA_NOT_KVM


def test_contended_guests_steal_far_more_than_idle(lab: Lab, observed: Observation) -> None:
    group = lab.contention_group("steal")
    assert len(group) >= 2
    lab.fault("contend")
    try:
        time.sleep(4)  # the workloads switch to their contention duty
        contended = watch(20.0, replace(Settings(interval_s=INTERVAL_S), balloon_every=50))
    finally:
        lab.fault("uncontend")
    idle = contended.median("lab-idle", lambda g: g.steal_pct)
    for guest in group:
        steal = contended.median(guest.name, lambda g: g.steal_pct)
        assert steal > 20.0, (guest.name, steal)
        assert steal > idle + 15.0, (guest.name, steal, idle)
