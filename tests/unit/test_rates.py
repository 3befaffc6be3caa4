"""Rates: resets, restarts, missing values and zero counters (table-driven)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmtop.model.rates.counters import counter_delta, latency_ms, rate
from kvmtop.model.rates.frame import derive
from kvmtop.model.rates.guest import (
    NA_FIRST,
    NA_NO_DISK,
    NA_NO_VNIC,
    NA_NOT_KVM,
    derive_guest,
    guest_used_bytes,
)
from kvmtop.model.rates.host import derive_host
from kvmtop.model.sample import (
    BalloonSample,
    BlockDevSample,
    CpuTimes,
    DiskSample,
    GuestSample,
    HostSample,
    NetDevSample,
    NicSample,
    PressureSample,
    Sample,
    VcpuSample,
)
from kvmtop.model.units import NS_PER_S


@pytest.mark.parametrize(
    ("prev", "cur", "dt", "expected"),
    [
        (100, 300, 2.0, 100.0),  # normal increase
        (0, 0, 2.0, 0.0),  # zero counters are a real zero, not "missing"
        (5, 5, 2.0, 0.0),  # no change
        (300, 100, 2.0, None),  # counter went backwards: reset
        (None, 100, 2.0, None),  # missing on the previous side
        (100, None, 2.0, None),  # missing now
        (100, 200, 0.0, None),  # zero interval
        (100, 200, -1.0, None),  # clock went backwards
    ],
)
def test_rate(prev: int | None, cur: int | None, dt: float, expected: float | None) -> None:
    assert rate(prev, cur, dt) == expected


@pytest.mark.parametrize(
    ("pt", "ct", "pr", "cr", "min_ops", "expected"),
    [
        (0, 50_000_000, 0, 10, 5, 5.0),  # 50 ms over 10 requests = 5 ms each
        (0, 50_000_000, 0, 4, 5, None),  # too few requests
        (0, 0, 0, 0, 5, None),  # idle disk: no latency, not 0 ms
        (100, 50, 0, 10, 5, None),  # time counter reset
        (0, 10_000_000, 20, 10, 5, None),  # request counter reset
        (0, 1_000_000, 0, 1, 0, 1.0),  # min_ops 0 still needs one request
    ],
)
def test_latency(pt: int, ct: int, pr: int, cr: int, min_ops: int, expected: float | None) -> None:
    assert latency_ms(pt, ct, pr, cr, min_ops) == expected


@given(
    a=st.integers(min_value=0, max_value=2**62),
    b=st.integers(min_value=0, max_value=2**40),
    c=st.integers(min_value=0, max_value=2**40),
)
def test_delta_additive_and_never_negative(a: int, b: int, c: int) -> None:
    d1 = counter_delta(a, a + b)
    d2 = counter_delta(a + b, a + b + c)
    assert d1 is not None and d2 is not None
    assert d1 >= 0 and d2 >= 0
    assert counter_delta(a, a + b + c) == d1 + d2


@given(prev=st.integers(0, 2**50), cur=st.integers(0, 2**50), dt=st.floats(0.01, 100))
def test_rate_never_negative(prev: int, cur: int, dt: float) -> None:
    r = rate(prev, cur, dt)
    assert r is None or r >= 0


def guest(**kw: object) -> GuestSample:
    base: dict[str, object] = {
        "uuid": "u1",
        "name": "g1",
        "dom_id": 1,
        "state": "running",
        "accel": "kvm",
        "pid": 100,
    }
    base.update(kw)
    return GuestSample(**base)  # type: ignore[arg-type]


def test_guest_cpu_steal_and_exits() -> None:
    prev = guest(
        cpu_time_ns=10 * NS_PER_S,
        vcpus=(
            VcpuSample(
                0,
                delay_ns=1 * NS_PER_S,
                time_ns=5 * NS_PER_S,
                kvm={"exits.sum": 1000, "io_exits.sum": 10},
            ),
            VcpuSample(
                1, delay_ns=0, time_ns=5 * NS_PER_S, kvm={"exits.sum": 0, "io_exits.sum": 0}
            ),
        ),
    )
    cur = guest(
        cpu_time_ns=11 * NS_PER_S,  # +1 s CPU over 2 s = 50 %
        vcpus=(
            VcpuSample(
                0,
                delay_ns=1 * NS_PER_S + NS_PER_S // 5,
                time_ns=5 * NS_PER_S + NS_PER_S // 2,
                kvm={"exits.sum": 3000, "io_exits.sum": 2010},
            ),  # 10 % steal
            VcpuSample(
                1,
                delay_ns=NS_PER_S // 10,
                time_ns=5 * NS_PER_S + NS_PER_S // 2,
                kvm={"exits.sum": 200, "io_exits.sum": 0},
            ),  # 5 % steal
        ),
    )
    g = derive_guest(prev, cur, 2.0, now_s=0)
    assert g.cpu_pct == pytest.approx(50.0)
    assert g.steal_max_pct == pytest.approx(10.0)
    assert g.steal_pct == pytest.approx(7.5)
    assert g.steal_source == "libvirt"
    assert g.exits_per_s == pytest.approx(1100.0)
    assert g.exit_categories["io_exits"] == pytest.approx(1000.0)
    assert g.dominant_exit == "io_exits"
    assert g.exits_by_reason == pytest.approx({"io_exits": 1000.0, "other": 100.0})
    assert g.vcpu[0].cpu_pct == pytest.approx(25.0)


def test_steal_falls_back_to_schedstat() -> None:
    prev = guest(vcpus=(VcpuSample(0, sched_delay_ns=0, sched_run_ns=0),))
    cur = guest(vcpus=(VcpuSample(0, sched_delay_ns=NS_PER_S // 2, sched_run_ns=NS_PER_S // 4),))
    g = derive_guest(prev, cur, 1.0, now_s=0)
    assert g.steal_pct == pytest.approx(50.0)
    assert g.steal_source == "schedstat"
    assert g.vcpu[0].cpu_pct == pytest.approx(25.0)


def test_a_vcpu_never_runs_and_waits_longer_than_the_time_that_passed() -> None:
    # 1.5 s run + 1.0 s waiting "in 2 s": libvirt read this domain later in its bulk
    # call than the stamp says (seen on the loaded lab: steal up to 127 %). The
    # counters' sum is the elapsed time: 60 % + 40 %, never over 100.
    prev = guest(vcpus=(VcpuSample(0, delay_ns=0, sched_run_ns=0),))
    cur = guest(vcpus=(VcpuSample(0, delay_ns=NS_PER_S, sched_run_ns=3 * NS_PER_S // 2),))
    v = derive_guest(prev, cur, 2.0, now_s=0).vcpu[0]
    assert (v.cpu_pct, v.steal_pct) == (pytest.approx(60.0), pytest.approx(40.0))
    # Within the interval, the interval is the measure: 0.5 + 0.25 s in 2 s.
    cur = guest(vcpus=(VcpuSample(0, delay_ns=NS_PER_S // 4, sched_run_ns=NS_PER_S // 2),))
    v = derive_guest(prev, cur, 2.0, now_s=0).vcpu[0]
    assert (v.cpu_pct, v.steal_pct) == (pytest.approx(25.0), pytest.approx(12.5))


def test_tcg_guest_has_no_exits_and_says_why() -> None:
    prev = guest(accel="tcg", vcpus=(VcpuSample(0, kvm={}),))
    cur = guest(accel="tcg", vcpus=(VcpuSample(0, kvm={}),))
    g = derive_guest(prev, cur, 1.0, now_s=0)
    assert g.exits_per_s is None
    assert g.na["exits_per_s"] == NA_NOT_KVM


def test_a_guest_without_vnic_or_disk_says_so_in_every_blank() -> None:
    """The lab's boot-sector probes have no vNIC: their network cells were blank with
    no reason in the sources view. A guest without a disk is the same case."""
    bare = guest()
    for prev in (None, bare):
        na = derive_guest(prev, bare, 2.0, now_s=0).na
        assert [na[k] for k in ("net_rx_bps", "net_rtt_ms")] == [NA_NO_VNIC] * 2
        assert [na[k] for k in ("disk_iops", "disk_read_ms", "disk_write_ms")] == [NA_NO_DISK] * 3
    full = guest(nics=(NicSample("vnet0", rx_bytes=0),), disks=(DiskSample("vda", rd_reqs=0),))
    na = derive_guest(None, full, 2.0, now_s=0).na
    assert na["net_rx_bps"] == na["disk_iops"] == na["exits_per_s"] == NA_FIRST


@pytest.mark.parametrize(
    "change",
    [
        {"dom_id": 2},  # domain restarted: new ID
        {"pid": 999},  # QEMU process replaced
        {"state": "paused"},
    ],
)
def test_restart_or_not_running_gives_unknown(change: dict[str, object]) -> None:
    prev = guest(cpu_time_ns=10 * NS_PER_S)
    cur = guest(cpu_time_ns=1 * NS_PER_S, **change)
    g = derive_guest(prev, cur, 2.0, now_s=0)
    assert g.cpu_pct is None


def test_counter_reset_without_restart_is_unknown_not_negative() -> None:
    prev = guest(nics=(NicSample("vnet0", rx_bytes=1000, rx_drop=5),))
    cur = guest(nics=(NicSample("vnet0", rx_bytes=10, rx_drop=5),))
    g = derive_guest(prev, cur, 1.0, now_s=0)
    assert g.net_rx_bps is None
    assert g.net_rx_drops_per_s == 0.0


def test_disk_latency_weighted_over_disks() -> None:
    prev = guest(
        disks=(
            DiskSample("vda", rd_reqs=0, rd_times_ns=0),
            DiskSample("vdb", rd_reqs=0, rd_times_ns=0),
        )
    )
    cur = guest(
        disks=(
            DiskSample("vda", rd_reqs=90, rd_times_ns=90 * 1_000_000),  # 1 ms each
            DiskSample("vdb", rd_reqs=10, rd_times_ns=10 * 10_000_000),  # 10 ms each
        )
    )
    g = derive_guest(prev, cur, 1.0, now_s=0)
    assert g.disk_read_ms == pytest.approx(1.9)  # Σtime/Σreqs, not the mean of means (5.5)
    assert g.disk_iops == pytest.approx(100.0)
    assert g.disks[1].read_ms == pytest.approx(10.0)


def test_new_disk_appears() -> None:
    prev = guest(disks=(DiskSample("vda", rd_reqs=0),))
    cur = guest(disks=(DiskSample("vda", rd_reqs=10), DiskSample("vdb", rd_reqs=7)))
    g = derive_guest(prev, cur, 1.0, now_s=0)
    assert g.disks[0].read_iops == 10.0
    assert g.disks[1].read_iops is None


@pytest.mark.parametrize(
    ("balloon", "expected"),
    [
        (BalloonSample(available_bytes=1000, usable_bytes=600), 400),
        (BalloonSample(available_bytes=1000, unused_bytes=500, disk_caches_bytes=100), 400),
        (BalloonSample(available_bytes=1000, unused_bytes=500), None),  # page cache unknown
        (BalloonSample(available_bytes=1000), None),
        (BalloonSample(current_bytes=1000), None),
        (None, None),
    ],
)
def test_guest_used(balloon: BalloonSample | None, expected: int | None) -> None:
    assert guest_used_bytes(balloon) == expected


def test_balloon_age() -> None:
    cur = guest(balloon=BalloonSample(available_bytes=10, usable_bytes=5, last_update_s=990))
    g = derive_guest(None, cur, 0.0, now_s=1000.0)
    assert g.mem_used_bytes == 5
    assert g.balloon_age_s == 10.0


def host(mono: int, **kw: object) -> HostSample:
    base: dict[str, object] = {"mono_ns": mono, "ncpu": 2}
    base.update(kw)
    return HostSample(**base)  # type: ignore[arg-type]


def cpu(busy: int, idle: int, steal: int = 0) -> CpuTimes:
    return CpuTimes(busy, 0, 0, idle, 0, 0, 0, steal)


def test_host_cpu_psi_disk_net() -> None:
    dev = dict(read_bytes=0, write_bytes=0, write_time_ns=0, in_flight=0)
    prev = host(
        0,
        cpu=cpu(0, 0),
        pressure={"cpu": PressureSample(some_total_ns=0)},
        blockdevs=(
            BlockDevSample(
                "sda", reads=0, read_time_ns=0, writes=0, io_ticks_ns=0, weighted_ns=0, **dev
            ),
        ),
        netdevs=(
            NetDevSample("eth0", 0, 0, 0, 0, 0, 0, 0, 0, kind="physical", speed_mbps=1000),
            NetDevSample("vnet0", 0, 0, 0, 0, 0, 0, 0, 0, kind="tap", speed_mbps=10),
        ),
        run_delay_ns=0,
    )
    cur = host(
        2 * NS_PER_S,
        cpu=cpu(NS_PER_S, 3 * NS_PER_S),
        pressure={"cpu": PressureSample(some_total_ns=NS_PER_S // 5)},
        blockdevs=(
            BlockDevSample(
                "sda",
                reads=100,
                read_time_ns=200_000_000,
                writes=0,
                io_ticks_ns=NS_PER_S,
                weighted_ns=4 * NS_PER_S,
                **dev,
            ),
        ),
        netdevs=(
            NetDevSample(
                "eth0", 125_000_000, 0, 0, 0, 0, 0, 0, 0, kind="physical", speed_mbps=1000
            ),
            NetDevSample("vnet0", 125_000_000, 0, 0, 0, 0, 0, 0, 0, kind="tap", speed_mbps=10),
        ),
        run_delay_ns=NS_PER_S,
    )
    h = derive_host(prev, cur)
    assert h.cpu_busy_pct == pytest.approx(25.0)
    assert h.psi_cpu_some_pct == pytest.approx(10.0)
    assert h.run_delay_pct == pytest.approx(25.0)  # 1 s over 2 s over 2 CPUs
    assert h.disks[0].read_ms == pytest.approx(2.0)
    assert h.disks[0].util_pct == pytest.approx(50.0)
    assert h.disks[0].queue_depth == pytest.approx(2.0)
    eth, tap = h.nets
    assert eth.util_pct == pytest.approx(50.0)  # 500 Mb/s on a 1 Gb/s link
    assert tap.util_pct is None  # tap speed is made up (drivers/net/tun.c)


def test_host_without_schedstat_says_why() -> None:
    h = derive_host(None, host(0))
    assert h.run_delay_pct is None
    assert "CONFIG_SCHEDSTATS" in h.na["run_delay_pct"]


def test_derive_matches_guests_by_uuid_and_handles_new_guest() -> None:
    a0 = guest(uuid="a", cpu_time_ns=0)
    a1 = guest(uuid="a", cpu_time_ns=NS_PER_S)
    b1 = guest(uuid="b", cpu_time_ns=5 * NS_PER_S)
    s0 = Sample(0.0, 0, None, (a0,), ())
    s1 = Sample(1.0, NS_PER_S, None, (b1, a1), ())
    f = derive(s0, s1)
    by = {g.uuid: g for g in f.guests}
    assert by["a"].cpu_pct == pytest.approx(100.0)
    assert by["b"].cpu_pct is None
    assert f.host.na["host"]


def test_balloon_rates_use_the_balloon_clock() -> None:
    b0 = BalloonSample(major_fault=100, last_update_s=1000)
    b1 = BalloonSample(major_fault=160, last_update_s=1010)
    refreshed = derive_guest(guest(balloon=b0), guest(balloon=b1), 2.0, now_s=1011)
    assert refreshed.major_faults_per_s == pytest.approx(6.0)  # 60 over 10 s, not over 2 s
    carried = derive_guest(guest(balloon=b1), guest(balloon=b1), 2.0, now_s=1012)
    assert carried.major_faults_per_s is None  # not refreshed: unknown, not 0


def test_state_column_marks_unmanaged_guests() -> None:
    from kvmtop.model.fields import cell_text, column

    managed = derive_guest(None, guest(), 0.0, now_s=0)
    unmanaged = derive_guest(None, guest(managed="unmanaged"), 0.0, now_s=0)
    assert cell_text(column("state"), managed) == "running"
    assert cell_text(column("state"), unmanaged) == "unmanaged"
