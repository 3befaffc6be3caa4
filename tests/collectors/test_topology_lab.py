"""Topology, vswitch, qdisc and RTT collectors against the running lab.

What the lab gives (tests/lab, manifest.json): guest images on this host's root
filesystem; lab-net on the Linux bridge labbr0 and lab-ovs on the OVS bridge labovs0
(userspace datapath); cgroup v1 CPU controller; the host at 10.213.1.1 and
10.213.2.1 on the bridges.

The host never talks to most lab guests, so neither libvirt's ARP source nor
/proc/net/arp knows their addresses until something does: the RTT test first sends
one ICMP echo to the manifest's address (as an operator's first ping would), then
checks that the net probe finds the address in the ARP table by itself.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from kvmtop.collectors.host import HostCollector
from kvmtop.collectors.libvirt.collector import LibvirtCollector
from kvmtop.collectors.netprobe import NetProbe
from kvmtop.collectors.sched import SchedCollector
from kvmtop.collectors.topology import TopologyCollector
from kvmtop.collectors.vswitch import VswitchCollector
from kvmtop.model.sample import GuestSample, NicSample
from tests.lab.fixture import Lab, warm_arp

pytest.importorskip("libvirt")
pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def libvirt_collector(lab: Lab) -> Iterator[LibvirtCollector]:
    collector = LibvirtCollector("qemu:///system")
    try:
        yield collector
    finally:
        collector.close()


def lab_guests(collector: LibvirtCollector) -> dict[str, GuestSample]:
    """Running lab guests, enriched by sched then topology (the sampler's order)."""
    guests = collector.collect(0)
    guests = SchedCollector().enrich(guests)
    guests = TopologyCollector().enrich(guests)
    return {g.name: g for g in guests if g.name.startswith("lab-") and g.state == "running"}


def disk_of(path: str) -> str:
    """The whole disk holding `path`, found another way: the kernel's own
    /sys/dev/block/MAJ:MIN symlink, and its parent directory for a partition."""
    dev = os.stat(path).st_dev
    real = os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if os.path.exists(f"{real}/partition"):
        real = os.path.dirname(real)
    return os.path.basename(real)


def test_guest_disks_resolve_to_the_host_disk(
    lab: Lab, libvirt_collector: LibvirtCollector
) -> None:
    guests = lab_guests(libvirt_collector)
    assert guests, "no running lab guest"
    for name, g in guests.items():
        disk = g.disks[0]
        assert disk.path is not None
        assert disk.host_dev == disk_of(disk.path), name
    print({name: g.disks[0].host_dev for name, g in guests.items()})


def test_cpu_stat_and_affinity_read(lab: Lab, libvirt_collector: LibvirtCollector) -> None:
    guests = lab_guests(libvirt_collector)
    for name, g in guests.items():
        assert g.cpu_nr_periods is not None and g.cpu_nr_throttled is not None, name
        assert g.cpu_throttled_ns is not None
        assert g.cpu_nr_throttled <= g.cpu_nr_periods
        allowed = os.sched_getaffinity(g.vcpus[0].tid or 0)
        assert g.vcpus[0].affinity == tuple(sorted(allowed)), name


def test_vnics_on_their_bridges(lab: Lab, libvirt_collector: LibvirtCollector) -> None:
    guests = lab_guests(libvirt_collector)
    net, ovs = guests["lab-net"].nics[0], guests["lab-ovs"].nics[0]
    assert (net.bridge, net.switch) == (lab.manifest["bridges"]["linux"]["name"], "linux")
    assert (ovs.bridge, ovs.switch) == (lab.manifest["bridges"]["ovs"]["name"], "ovs")
    host = VswitchCollector().enrich_host(HostCollector().collect())
    masters = {n.name: n.master for n in host.netdevs}
    assert masters[net.name] == net.bridge  # the tap is a port of the Linux bridge
    ports = {p.name: p.bridge for p in host.ovs_ports}
    assert ports[ovs.name] == ovs.bridge  # and the other one a port of the OVS bridge
    assert ports[lab.manifest["bridges"]["ovs"]["uplink_veth"]] == ovs.bridge


def test_ovs_datapath_and_qdisc_counters(lab: Lab) -> None:
    vswitch = VswitchCollector()
    probe = vswitch.probe()
    assert probe.available, probe.reason
    host = vswitch.enrich_host(HostCollector().collect())
    (dp,) = [d for d in host.ovs_datapaths if "labovs0" in d.bridges]
    assert dp.name == "netdev@ovs-netdev"  # the userspace datapath
    assert dp.hit is not None and dp.missed is not None and dp.lost is not None
    assert dp.hit + dp.missed > 0  # lab-ovs sends UDP through it all the time
    assert host.ovs_mono_ns is not None
    nets = {n.name: n for n in host.netdevs}
    uplink = nets[lab.manifest["bridges"]["linux"]["uplink_veth"]]
    assert uplink.qdisc_drops is not None and uplink.qdisc_backlog_bytes is not None
    assert {d.name: d.scheduler for d in host.blockdevs if not d.is_partition}
    assert host.thp_enabled in ("always", "madvise", "never")


def probe_nics(
    collector: LibvirtCollector, names: tuple[str, ...], *, timeout_s: float, ticks: int = 8
) -> dict[str, NicSample]:
    """The first vNIC of each named guest after `ticks` 1 s ticks of a real NetProbe."""
    collector.collect(0)  # the domain XML (MACs) is read on first sight
    probe = NetProbe(domain_info=collector.domain_info, every_s=1, timeout_s=timeout_s)
    assert probe.probe().available
    nics: dict[str, NicSample] = {}
    try:
        for tick in range(ticks):
            guests = probe.enrich(collector.collect(tick))
            nics = {g.name: g.nics[0] for g in guests if g.name in names}
            time.sleep(1.0)
    finally:
        probe.close()
    return nics


def test_rtt_to_lab_guests_above_the_bridge_baseline(
    lab: Lab, libvirt_collector: LibvirtCollector
) -> None:
    idle, ovs = lab.guests["lab-idle"], lab.guests["lab-ovs"]
    assert idle.ip is not None and ovs.ip is not None
    warm_arp(idle.ip, ovs.ip)
    nics = probe_nics(libvirt_collector, ("lab-idle", "lab-ovs"), timeout_s=3)
    for name, addr in (("lab-idle", idle.ip), ("lab-ovs", ovs.ip)):
        nic = nics[name]
        assert nic.addr == addr, (name, nic.rtt_reason)  # found in ARP, not configured
        assert nic.rtt_ns is not None and nic.host_rtt_ns is not None, (name, nic.rtt_reason)
        assert nic.rtt_ns > nic.host_rtt_ns, name
        assert nic.rtt_p95_ns is not None and nic.rtt_p95_ns >= nic.rtt_ns
        print(name, nic.rtt_ns, nic.rtt_p95_ns, nic.host_rtt_ns, nic.rtt_lost)


def test_guest_that_drops_icmp_has_unknown_rtt_with_the_reason(
    lab: Lab, libvirt_collector: LibvirtCollector
) -> None:
    """An OpenFlow rule on labovs0 drops ICMP to lab-ovs (ARP still passes): to the
    host the guest never answers an echo, so its RTT is unknown with the reason,
    never 0, while the bridge's own address still gives the baseline."""
    ovs = lab.guests["lab-ovs"]
    assert ovs.ip is not None and ovs.bridge is not None
    match = f"priority=60000,icmp,nw_dst={ovs.ip}"
    subprocess.run(["ovs-ofctl", "add-flow", ovs.bridge, f"{match},actions=drop"], check=True)
    try:
        warm_arp(ovs.ip)  # the echo is dropped, the ARP exchange before it is not
        nic = probe_nics(libvirt_collector, ("lab-ovs",), timeout_s=1)["lab-ovs"]
    finally:
        subprocess.run(["ovs-ofctl", "--strict", "del-flows", ovs.bridge, match], check=True)
    assert nic.addr == ovs.ip, nic.rtt_reason
    assert nic.rtt_ns is None and nic.rtt_p95_ns is None  # unknown, never 0
    assert nic.rtt_lost >= 3
    assert nic.rtt_reason is not None and nic.rtt_reason.startswith("no ICMP echo reply")
    assert nic.host_rtt_ns is not None and nic.host_rtt_ns > 0
