"""Batch JSON against the running lab: each guest's disks next to the host device
under their image, vNICs next to their bridge, uplink and RTTs (tests/lab/README.md).

Observes only: the real collectors, with the opt-in net probe switched on, through
the shared pipeline and `run_batch`, as `kvmtop --batch --format json` prints them.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest

from kvmtop.collectors.host import HostCollector
from kvmtop.collectors.libvirt.collector import LibvirtCollector
from kvmtop.collectors.netprobe import NetProbe
from kvmtop.collectors.sched import SchedCollector
from kvmtop.collectors.topology import TopologyCollector
from kvmtop.collectors.vswitch import VswitchCollector
from kvmtop.config import Settings
from kvmtop.feed.live import LiveFeed
from kvmtop.headless.batch import run_batch
from kvmtop.sampler import Sampler
from kvmtop.wiring import build_pipeline
from tests.lab.fixture import Lab, warm_arp

pytest.importorskip("libvirt")
pytestmark = pytest.mark.lab

LINES = 6
"""Batch lines read, one second apart (the probe sends one echo per vNIC a second)."""


def batch_lines(count: int) -> list[dict[str, Any]]:
    """`count` batch JSON lines from the real collectors with RTT probing on."""
    libvirt = LibvirtCollector("qemu:///system")
    probe = NetProbe(domain_info=libvirt.domain_info, every_s=1, timeout_s=3)
    sampler = Sampler(
        HostCollector(),
        libvirt,
        [SchedCollector(), TopologyCollector(), probe],
        host_enrichers=[VswitchCollector()],
        interval_s=1.0,
    )
    feed = LiveFeed(sampler, build_pipeline(Settings(interval_s=1.0)))
    out = io.StringIO()
    try:
        run_batch(feed, out, count=count, fmt="json")
    finally:
        feed.close()
        probe.close()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def disk_of(path: str) -> str:
    """The whole disk holding `path`, from the kernel's /sys/dev/block link."""
    dev = os.stat(path).st_dev
    real = os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if os.path.exists(f"{real}/partition"):
        real = os.path.dirname(real)
    return os.path.basename(real)


def test_batch_json_per_guest_disks_and_nics(lab: Lab) -> None:
    idle = lab.guests["lab-idle"]
    assert idle.ip is not None
    warm_arp(idle.ip)
    lines = batch_lines(LINES)
    assert len(lines) == LINES
    guests = {g["name"]: g for g in lines[-1]["guests"]}
    bridges = lab.manifest["bridges"]

    (disk,) = guests["lab-disk"]["disks"]
    assert disk["target"] == "vda"
    assert disk["host_device"] == disk_of(lab.guests["lab-disk"].disk)
    assert disk["host_util_pct"] is not None  # the host device is in /proc/diskstats

    (net,) = guests["lab-net"]["nics"]
    assert net["bridge"] == bridges["linux"]["name"] == "labbr0"
    assert net["uplink"] == bridges["linux"]["uplink_veth"] == "labup0"
    assert net["tx_bps"] is not None and net["tx_bps"] > 0  # the UDP flood

    (ovs,) = guests["lab-ovs"]["nics"]
    assert ovs["bridge"] == bridges["ovs"]["name"] == "labovs0"
    assert ovs["uplink"] == bridges["ovs"]["uplink_veth"]

    # RTT: measured to lab-idle (its address found in ARP) and above the bridge's.
    (nic,) = guests["lab-idle"]["nics"]
    assert nic["rtt_ms"] is not None and nic["host_rtt_ms"] is not None, nic["rtt_reason"]
    assert nic["rtt_ms"] > nic["host_rtt_ms"]
    assert guests["lab-idle"]["net_rtt_ms"] == nic["rtt_ms"]
    # Unknown is null with a reason, never 0: a probe guest has no NIC at all, and
    # every guest without an answered probe says why.
    for name, g in guests.items():
        if g["nics"] and g["net_rtt_ms"] is None:
            assert g["na"]["net_rtt_ms"], name
    print({n: (g["net_rtt_ms"], g["na"].get("net_rtt_ms")) for n, g in guests.items()})
