"""disk_latency, vnic_drops and vswitch_saturation: trigger, near miss, verdicts, topology."""

from __future__ import annotations

import pytest

from kvmtop.detectors.settings import DetectorSettings, VswitchSettings
from tests.detectors.builders import (
    DiskSpec,
    GuestSpec,
    HostDiskSpec,
    HostSpec,
    NetDevSpec,
    NicSpec,
    VcpuSpec,
    World,
    active,
)

# ------------------------------------------------------------------ disk_latency


def disk_world(
    guest_ms: float,
    iops: float = 50.0,
    *,
    host_ms: float = 0.3,
    util: float = 10.0,
    rotational: bool | None = False,
    kind: str = "rd",
    resolved: bool = True,
    host_disks: int = 1,
) -> World:
    disk = DiskSpec(**{f"{kind}_iops": iops, f"{kind}_ms": guest_ms})  # type: ignore[arg-type]
    disk.host_dev = "sda" if resolved else None
    disks = [
        HostDiskSpec(name, ms=host_ms, util_pct=util, rotational=rotational)
        for name in ("sda", "sdb")[:host_disks]
    ]
    return World([GuestSpec("u1", "d", disks=[disk])], HostSpec(disks=disks))


@pytest.mark.parametrize(
    ("world", "expect"),
    [
        (disk_world(60.0), "vda read 60.0 ms/req (100 reqs in 2 s; limit 2.0 ms): above the"),
        (disk_world(1.5), None),  # near miss: SSD floor 2 ms
        (disk_world(15.0, rotational=True), None),  # near miss: spinning floor 20 ms
        (disk_world(25.0, rotational=True), "limit 20.0 ms): above the device"),
        (disk_world(40.0, host_ms=35.0, util=95.0), "storage (host sda 35.0 ms, 95% busy)"),
        (disk_world(30.0, kind="fl"), "flush 30.0 ms/req"),
        (disk_world(500.0, iops=2.0), "(20 reqs in 10 s;"),  # throttled: accumulated
        (disk_world(500.0, iops=0.5), None),  # 10 reqs in the 20 s span: never judged
        (disk_world(60.0, resolved=False), "above the device (host sda"),  # only disk
        (disk_world(60.0, resolved=False, host_disks=2), "host device unknown"),
    ],
)
def test_disk_latency_cases(world: World, expect: str | None) -> None:
    found = active(world.run(8), "disk_latency")
    if expect is None:
        assert not found
    else:
        assert len(found) == 1 and expect in found[0].message, found[0].message
        assert found[0].subject == "vda" and found[0].guest == "d"
        assert "host_psi_cpu_some_pct" in found[0].baseline


def test_disk_latency_few_requests_still_raise_when_accumulated() -> None:
    w = disk_world(60.0, iops=5.0)
    found = active(w.run(10), "disk_latency")
    assert found and "(20 reqs in 4 s;" in found[0].message


def test_disk_latency_judges_an_idle_disk_while_requests_are_pending() -> None:
    """A disk that completes nothing this tick is still judged while the requests of
    the last ticks are within `accumulate_s` (idle disks are skipped only when
    nothing is pending)."""
    w = disk_world(60.0, iops=5.0)
    assert not active(w.run(3), "disk_latency")  # one bad verdict: 20 reqs in 4 s
    w.guest("d").disks[0].rd_iops = 0.0
    found = active(w.run(2), "disk_latency")  # the same 20 reqs, judged twice more
    assert found and "(20 reqs in 8 s;" in found[0].message, found


def test_disk_latency_crit_and_flush_only_hint() -> None:
    found = active(disk_world(150.0).run(5), "disk_latency")
    assert found[0].severity == "critical"
    w = disk_world(30.0, kind="fl")
    assert "fsync storm or writeback" in active(w.run(5), "disk_latency")[0].message


def test_disk_latency_own_median_and_hysteresis() -> None:
    w = disk_world(15.0, rotational=True)
    w.run(40)  # 80 s at 15 ms: median 15, limit max(20, 45) = 45 ms
    spec = w.guest("d").disks[0]
    spec.rd_ms = 40.0
    assert not active(w.run(5), "disk_latency")  # near miss on the relative rule
    spec.rd_ms = 50.0
    seen = [bool(active(w.engine(w.push()), "disk_latency")) for _ in range(3)]
    assert seen == [False, False, True]
    spec.rd_ms = 15.0
    seen = [bool(active(w.engine(w.push()), "disk_latency")) for _ in range(3)]
    assert seen == [True, True, False]


def test_disk_latency_counter_reset_is_no_data() -> None:
    w = disk_world(60.0)
    assert active(w.run(5), "disk_latency")
    w.reset_counters("u1:d:")  # counters went backwards (block node renumbered)
    assert active(w.engine(w.push()), "disk_latency")  # unknown: held, not cleared


# ------------------------------------------------------------------ network


def net_world(
    rx_drops: dict[str, float],
    *,
    uplink: NetDevSpec | None = None,
    settings: DetectorSettings | None = None,
    **host: object,
) -> World:
    guests = [
        GuestSpec(
            f"u{i}",
            name,
            vcpus=[VcpuSpec(steal_pct=12.0 if name == "a" else 0.0)],
            nics=[NicSpec(f"vnet{i}", rx_pps=1000.0, rx_drops=drops)],
            vhost_cpu_pct=97.0 if name == "a" else None,
        )
        for i, (name, drops) in enumerate(rx_drops.items())
    ]
    netdevs = [NetDevSpec("br0", "bridge")]
    netdevs += [NetDevSpec(f"vnet{i}", "tap", master="br0") for i in range(len(rx_drops))]
    if uplink is not None:
        netdevs.append(uplink)
    return World(
        guests,
        HostSpec(netdevs=netdevs, **host),
        settings=settings,  # type: ignore[arg-type]
    )


def test_vnic_drops_one_guest_not_draining() -> None:
    w = net_world({"a": 5.0, "b": 0.0})
    found = active(w.run(5), "vnic_drops")
    assert [(f.guest, f.subject) for f in found] == [("a", "vnet0")]
    assert found[0].message == (
        "vnet0 RX drops 5/s (0.5% of packets): guest not draining its RX ring "
        "(steal max 12%, vhost 97% of a core)"
    )
    assert found[0].severity == "warning"
    assert not active(w.engine(w.window), "vswitch_saturation")  # guest-local only


@pytest.mark.parametrize(
    ("drops", "severity"),
    [(0.5, None), (1.5, "warning"), (25.0, "critical")],  # 0.05 %, 0.15 %, 2.4 %
)
def test_vnic_drop_ratio_thresholds(drops: float, severity: str | None) -> None:
    found = active(net_world({"a": drops}).run(5), "vnic_drops")
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_vnic_drops_clear_after_k_good_verdicts() -> None:
    w = net_world({"a": 5.0, "b": 0.0})
    assert active(w.run(5), "vnic_drops")
    w.guest("a").nics[0].rx_drops = 0.0
    seen = [bool(active(w.engine(w.push()), "vnic_drops")) for _ in range(4)]
    assert seen == [True, True, False, False]  # K = 3 good verdicts clear it


def test_vnic_tx_drops_mean_the_host_drops_guest_tx() -> None:
    w = net_world({"a": 0.0})
    w.guest("a").nics[0].tx_drops = 3.0
    assert "TX drops 3/s: host dropping guest TX" in active(w.run(5), "vnic_drops")[0].message


def test_several_guests_dropping_is_the_switch_not_the_guests() -> None:
    w = net_world({"a": 5.0, "b": 8.0, "c": 0.0})
    findings = w.run(5)
    assert not active(findings, "vnic_drops")
    sw = active(findings, "vswitch_saturation")
    assert [f.subject for f in sw] == ["br0"] and sw[0].severity == "critical"
    assert "2 guests dropping RX at once (a, b); guests behind it: a, b, c" in sw[0].message


@pytest.mark.parametrize(
    ("uplink", "capacity", "expect"),
    [
        (NetDevSpec("eth0", "physical", "br0", 1000, tx_bps=9.5e8), {}, "eth0 at 95% of 1000"),
        (NetDevSpec("eth0", "physical", "br0", 1000, tx_bps=8.5e8), {}, None),  # near miss
        # The lab: a veth shaped with tbf; its speed is made up, its capacity configured.
        (NetDevSpec("labup0", "veth", "br0", tx_bps=9.8e6), {"labup0": 10.0}, "at 98% of 10"),
        (NetDevSpec("labup0", "veth", "br0", tx_bps=9.8e6), {}, None),
        (NetDevSpec("eth0", "physical", "br0", 1000, rx_drops=40.0), {}, "uplink drops 40/s"),
    ],
)
def test_vswitch_uplink(uplink: NetDevSpec, capacity: dict[str, float], expect: str | None) -> None:
    settings = DetectorSettings(vswitch_saturation=VswitchSettings(uplink_capacity_mbps=capacity))
    w = net_world({"a": 0.0}, uplink=uplink, settings=settings)
    found = active(w.run(5), "vswitch_saturation")
    if expect is None:
        assert not found
    else:
        assert [f.subject for f in found] == ["br0"]
        assert found[0].message.startswith("br0 saturated: ") and expect in found[0].message
        assert found[0].message.endswith("guests behind it: a")
        assert found[0].severity == ("critical" if "drops" in expect else "warning")


@pytest.mark.parametrize(
    ("uplink", "capacity", "expect", "shaped"),
    [
        # A veth shaped by tbf, nothing configured: judged against the tbf rate.
        (
            NetDevSpec("labup0", "veth", "br0", tx_bps=11.5e6, shaped_mbps=12.0, shaped_by="tbf"),
            {},
            "uplink labup0 at 96% of 12 Mbit/s (tbf rate): 11.5 Mbit/s",
            12.0,
        ),
        (
            NetDevSpec("labup0", "veth", "br0", tx_bps=9e6, shaped_mbps=12.0, shaped_by="tbf"),
            {},
            None,
            None,
        ),  # 75 %: near miss
        # A bond without a speed (its slaves report none), shaped by htb.
        (
            NetDevSpec("bond0", "bond", "br0", rx_bps=19e6, shaped_mbps=20.0, shaped_by="htb"),
            {},
            "uplink bond0 at 95% of 20 Mbit/s (htb rate)",
            20.0,
        ),
        # The configured capacity wins over the shaping rate, either way.
        (
            NetDevSpec("labup0", "veth", "br0", tx_bps=9.5e6, shaped_mbps=100.0, shaped_by="tbf"),
            {"labup0": 10.0},
            "uplink labup0 at 95% of 10 Mbit/s (configured)",
            None,
        ),
        (
            NetDevSpec("labup0", "veth", "br0", tx_bps=11.5e6, shaped_mbps=12.0, shaped_by="tbf"),
            {"labup0": 100.0},
            None,
            None,
        ),
        # A physical NIC with a speed is judged against it, not against its htb.
        (
            NetDevSpec(
                "eth0", "physical", "br0", 1000, tx_bps=9.5e8, shaped_mbps=50.0, shaped_by="htb"
            ),
            {},
            "uplink eth0 at 95% of 1000 Mbit/s (link speed)",
            None,
        ),
        (
            NetDevSpec(
                "eth0", "physical", "br0", 1000, tx_bps=4.9e7, shaped_mbps=50.0, shaped_by="htb"
            ),
            {},
            None,
            None,
        ),
        # A physical NIC that reports no speed (virtio-net) falls back to its tbf.
        (
            NetDevSpec("eth0", "physical", "br0", tx_bps=4.9e7, shaped_mbps=50.0, shaped_by="tbf"),
            {},
            "uplink eth0 at 98% of 50 Mbit/s (tbf rate)",
            50.0,
        ),
    ],
)
def test_vswitch_uplink_capacity_from_shaping(
    uplink: NetDevSpec, capacity: dict[str, float], expect: str | None, shaped: float | None
) -> None:
    settings = DetectorSettings(vswitch_saturation=VswitchSettings(uplink_capacity_mbps=capacity))
    w = net_world({"a": 0.0}, uplink=uplink, settings=settings)
    found = active(w.run(5), "vswitch_saturation")
    if expect is None:
        assert not found
        return
    assert [f.subject for f in found] == ["br0"] and found[0].severity == "warning"
    assert expect in found[0].message, found[0].message
    evidence = found[0].evidence
    assert evidence["uplink_capacity_mbps"] == float(expect.split(" of ")[1].split()[0])
    assert evidence.get("uplink_shaped_mbps") == shaped


def test_vswitch_shaped_guest_tap_is_not_an_uplink() -> None:
    """libvirt's <bandwidth> shapes a vNIC with an htb on its tap: a guest port, not an
    uplink, however close to its rate the guest runs."""
    w = net_world({"a": 0.0})
    tap = w.host.netdevs[1]
    tap.tx_bps, tap.shaped_mbps, tap.shaped_by = 9.9e6, 10.0, "htb"
    assert not active(w.run(5), "vswitch_saturation")


def test_vswitch_softnet_drops_blame_the_busiest_switch() -> None:
    w = net_world({"a": 0.0}, softnet_drops=30.0)
    w.host.netdevs.append(NetDevSpec("br1", "bridge"))
    w.host.netdevs[1].rx_pps = 5000.0  # vnet0 on br0 carries the traffic
    found = active(w.run(5), "vswitch_saturation")
    assert [f.subject for f in found] == ["br0"]
    assert "softnet backlog drops 30/s (CPU-bound switching)" in found[0].message


def test_vswitch_qdisc_drops_and_ovs_signals() -> None:
    up = NetDevSpec("labup0", "veth", "br0", qdisc_drops=120.0)
    settings = DetectorSettings(
        vswitch_saturation=VswitchSettings(uplink_capacity_mbps={"labup0": 10})
    )
    w = net_world({"a": 0.0}, uplink=up, settings=settings)
    found = active(w.run(5), "vswitch_saturation")
    assert "uplink qdisc drops 120/s" in found[0].message and found[0].severity == "critical"

    ovs_guest = GuestSpec("u9", "o", nics=[NicSpec("vnet9", bridge="ovsbr0")])
    host = HostSpec(
        netdevs=[
            NetDevSpec("ovsbr0", "ovs"),
            NetDevSpec("vnet9", "tap", ovs_bridge="ovsbr0"),
            NetDevSpec(
                "eth1", "physical", speed_mbps=1000, ovs_bridge="ovsbr0", ovs_rx_dropped=7.0
            ),
        ],
        ovs_lost=12.0,
        ovs_bridges=("ovsbr0",),
    )
    found = active(World([ovs_guest], host).run(5), "vswitch_saturation")
    assert [f.subject for f in found] == ["ovsbr0"]
    msg = found[0].message
    assert "OVS uplink port drops 7/s" in msg and "OVS datapath lost 12/s" in msg
    assert msg.endswith("guests behind it: o")


def test_vswitch_configured_uplink_without_known_switch_names_the_interface() -> None:
    settings = DetectorSettings(
        vswitch_saturation=VswitchSettings(uplink_capacity_mbps={"labov0": 10})
    )
    host = HostSpec(netdevs=[NetDevSpec("labov0", "veth", tx_bps=9.9e6)])
    found = active(World([], host, settings=settings).run(5), "vswitch_saturation")
    assert [f.subject for f in found] == ["labov0"]


def test_vswitch_hysteresis_clears_after_k_good() -> None:
    up = NetDevSpec("eth0", "physical", "br0", 1000, tx_bps=9.5e8)
    w = net_world({"a": 0.0}, uplink=up)
    assert active(w.run(5), "vswitch_saturation")
    up.tx_bps = 1e8
    seen = [bool(active(w.engine(w.push()), "vswitch_saturation")) for _ in range(3)]
    assert seen == [True, True, False]


def test_vswitch_rates_ovs_counters_between_slow_tier_reads() -> None:
    """OVS values are re-read every 10 s and carried forward between: the rate comes
    from two reads (Δ ovs_mono_ns) and holds until the next read, never 0 then 5x."""
    from kvmtop.detectors.vswitch_saturation import VswitchSaturation
    from kvmtop.model.sample import HostSample, OvsDatapathSample

    det = VswitchSaturation(DetectorSettings())

    def host(read_s: int, lost: int) -> HostSample:
        dp = OvsDatapathSample("netdev@ovs-netdev", lost=lost, bridges=("ovsbr0",))
        return HostSample(mono_ns=0, ovs_datapaths=(dp,), ovs_mono_ns=read_s * 10**9)

    rates = []
    for tick in range(12):  # 2 s ticks, a read every 10 s, 30 lost per read
        read = tick * 2 // 10 * 10
        rates.append(det._ovs(host(read, read * 3), tick * 2 * 10**9)[1].get("ovsbr0"))
    assert rates[:5] == [None] * 5
    assert rates[5:] == [3.0] * 7
