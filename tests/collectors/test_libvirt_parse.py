"""Pure parsing of libvirt bulk stats and domain XML (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from kvmtop.collectors.libvirt.domstats import (
    DOMAIN_STATES,
    domain_state_name,
    parse_balloon,
    parse_domain_stats,
)
from kvmtop.collectors.libvirt.domxml import DomainInfo, parse_domain_xml
from kvmtop.model.sample import BalloonSample, DiskSample, NicSample, VcpuSample

UUID = "0b9c7b3e-8a52-4c55-9d1e-000000000001"


def parse(stats: dict[str, Any], **kw: Any) -> Any:
    """parse_domain_stats with fixed identity."""
    return parse_domain_stats(
        UUID, "g1", 7, stats, accel=kw.get("accel", "kvm"), pid=kw.get("pid", 1234)
    )


# --------------------------------------------------------------------------- state


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (0, "nostate"),
        (1, "running"),
        (2, "blocked"),
        (3, "paused"),
        (4, "shutdown"),
        (5, "shutoff"),
        (6, "crashed"),
        (7, "pmsuspended"),
        (8, "nostate"),
        (-1, "nostate"),
        (None, "nostate"),
    ],
)
def test_state_names(value: int | None, name: str) -> None:
    assert domain_state_name(value) == name


def test_state_and_identity() -> None:
    g = parse({"state.state": 3, "state.reason": 1}, accel="tcg", pid=None)
    assert (g.uuid, g.name, g.dom_id, g.state, g.state_reason) == (UUID, "g1", 7, "paused", 1)
    assert g.accel == "tcg"
    assert g.pid is None
    assert len(DOMAIN_STATES) == 8


def test_empty_stats_are_unknown_not_zero() -> None:
    g = parse({})
    assert g.state == "nostate"
    assert g.state_reason is None
    assert g.cpu_time_ns is None
    assert g.vcpus_current is None
    assert g.vcpus == g.disks == g.nics == ()
    assert g.balloon is None
    assert g.vm_kvm == {}


# --------------------------------------------------------------------------- cpu/vcpu


def test_cpu_totals() -> None:
    g = parse({"cpu.time": 10, "cpu.user": 4, "cpu.system": 5})
    assert (g.cpu_time_ns, g.cpu_user_ns, g.cpu_system_ns) == (10, 4, 5)


def test_cpu_partial() -> None:
    g = parse({"cpu.time": 10})
    assert (g.cpu_time_ns, g.cpu_user_ns, g.cpu_system_ns) == (10, None, None)


VCPU_CASES: list[tuple[str, dict[str, Any], tuple[VcpuSample, ...]]] = [
    (
        "tcg-no-kvm-stats",
        {
            "vcpu.current": 1,
            "vcpu.maximum": 2,
            "vcpu.0.state": 1,
            "vcpu.0.time": 500,
            "vcpu.0.wait": 0,
            "vcpu.0.delay": 42,
            "vcpu.0.halted": True,
        },
        (VcpuSample(index=0, state=1, time_ns=500, delay_ns=42),),
    ),
    (
        "kvm-stats",
        {
            "vcpu.0.state": 1,
            "vcpu.0.time": 9,
            "vcpu.0.exits.sum": 1000,
            "vcpu.0.halt_exits.sum": 600,
            "vcpu.0.blocking.cur": True,  # KVM_STATS_UNIT_BOOLEAN: 0/1
            "vcpu.0.guest_mode.cur": False,
            "vcpu.0.halt_poll_fail_hist.sum": [1, 2, 3],  # histogram: skipped
            "vcpu.0.max_mmu_rmap_size.max": 3,
            "vcpu.0.weird.avg": 5,  # unknown type suffix: skipped
        },
        (
            VcpuSample(
                index=0,
                state=1,
                time_ns=9,
                kvm={
                    "exits.sum": 1000,
                    "halt_exits.sum": 600,
                    "blocking.cur": 1,
                    "guest_mode.cur": 0,
                    "max_mmu_rmap_size.max": 3,
                },
            ),
        ),
    ),
    (
        "sorted-by-index-with-gaps",
        {"vcpu.10.time": 3, "vcpu.2.time": 2, "vcpu.0.time": 1},
        (
            VcpuSample(index=0, time_ns=1),
            VcpuSample(index=2, time_ns=2),
            VcpuSample(index=10, time_ns=3),
        ),
    ),
    (
        "no-delay-before-libvirt-7.2",
        {"vcpu.0.state": 1, "vcpu.0.time": 1},
        (VcpuSample(index=0, state=1, time_ns=1, delay_ns=None),),
    ),
]


@pytest.mark.parametrize(
    ("stats", "expected"), [c[1:] for c in VCPU_CASES], ids=[c[0] for c in VCPU_CASES]
)
def test_vcpus(stats: dict[str, Any], expected: tuple[VcpuSample, ...]) -> None:
    assert parse(stats).vcpus == expected


def test_vcpu_counts() -> None:
    g = parse({"vcpu.current": 2, "vcpu.maximum": 4})
    assert (g.vcpus_current, g.vcpus_maximum) == (2, 4)
    assert g.vcpus == ()


def test_vm_kvm_stats() -> None:
    g = parse(
        {
            "vm.remote_tlb_flush.sum": 5,
            "vm.pages_4k.cur": 100,
            "vm.max_mmu_page_hash_collisions.max": 2,
            "vm.nonsense": 1,
            "vm.flag.cur": "no",
        }
    )
    assert g.vm_kvm == {
        "remote_tlb_flush.sum": 5,
        "pages_4k.cur": 100,
        "max_mmu_page_hash_collisions.max": 2,
    }


# --------------------------------------------------------------------------- block

BLOCK_CASES: list[tuple[str, dict[str, Any], tuple[DiskSample, ...]]] = [
    (
        "full",
        {
            "block.count": 1,
            "block.0.name": "vda",
            "block.0.path": "/var/lib/libvirt/images/a.qcow2",
            "block.0.rd.reqs": 1,
            "block.0.rd.bytes": 512,
            "block.0.rd.times": 1000,
            "block.0.wr.reqs": 2,
            "block.0.wr.bytes": 1024,
            "block.0.wr.times": 2000,
            "block.0.fl.reqs": 3,
            "block.0.fl.times": 3000,
            "block.0.allocation": 10,
            "block.0.capacity": 20,
            "block.0.physical": 30,
        },
        (
            DiskSample(
                target="vda",
                path="/var/lib/libvirt/images/a.qcow2",
                rd_reqs=1,
                rd_bytes=512,
                rd_times_ns=1000,
                wr_reqs=2,
                wr_bytes=1024,
                wr_times_ns=2000,
                fl_reqs=3,
                fl_times_ns=3000,
                allocation_bytes=10,
                capacity_bytes=20,
                physical_bytes=30,
            ),
        ),
    ),
    (
        # libvirt 9.0 (-blockdev): the top image has backingIndex 1, not 0.
        "top-image-has-backing-index",
        {"block.count": 1, "block.0.name": "vda", "block.0.backingIndex": 1, "block.0.rd.reqs": 5},
        (DiskSample(target="vda", rd_reqs=5),),
    ),
    (
        # With VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING: top first, then the chain.
        "backing-chain-top-only",
        {
            "block.count": 4,
            "block.0.name": "vda",
            "block.0.backingIndex": 2,
            "block.0.rd.reqs": 5,
            "block.1.name": "vda",
            "block.1.backingIndex": 1,
            "block.1.rd.reqs": 99,
            "block.2.name": "vdb",
            "block.2.backingIndex": 3,
            "block.2.rd.reqs": 7,
            "block.3.name": "vdb",
            "block.3.backingIndex": 4,
            "block.3.rd.reqs": 70,
        },
        (DiskSample(target="vda", rd_reqs=5), DiskSample(target="vdb", rd_reqs=7)),
    ),
    (
        "empty-cdrom-no-counters",
        {"block.count": 1, "block.0.name": "sda"},
        (DiskSample(target="sda"),),
    ),
    ("nameless-entry-dropped", {"block.count": 1, "block.0.rd.reqs": 1}, ()),
    ("no-disks", {"block.count": 0}, ()),
]


@pytest.mark.parametrize(
    ("stats", "expected"), [c[1:] for c in BLOCK_CASES], ids=[c[0] for c in BLOCK_CASES]
)
def test_disks(stats: dict[str, Any], expected: tuple[DiskSample, ...]) -> None:
    assert parse(stats).disks == expected


# --------------------------------------------------------------------------- net


def test_nics_guest_point_of_view_as_given() -> None:
    stats = {
        "net.count": 2,
        "net.0.name": "vnet0",
        "net.0.rx.bytes": 1,
        "net.0.rx.pkts": 2,
        "net.0.rx.errs": 3,
        "net.0.rx.drop": 4,
        "net.0.tx.bytes": 5,
        "net.0.tx.pkts": 6,
        "net.0.tx.errs": 7,
        "net.0.tx.drop": 8,
        "net.1.name": "vnet1",
    }
    assert parse(stats).nics == (
        NicSample(
            "vnet0",
            rx_bytes=1,
            rx_pkts=2,
            rx_errs=3,
            rx_drop=4,
            tx_bytes=5,
            tx_pkts=6,
            tx_errs=7,
            tx_drop=8,
        ),
        NicSample("vnet1"),
    )


# --------------------------------------------------------------------------- balloon

BALLOON_CASES: list[tuple[str, dict[str, Any], BalloonSample | None]] = [
    ("absent", {"state.state": 1}, None),
    (
        "full-kib-to-bytes",
        {
            "balloon.current": 131072,
            "balloon.maximum": 131072,
            "balloon.swap_in": 1,
            "balloon.swap_out": 2,
            "balloon.major_fault": 3,
            "balloon.minor_fault": 4,
            "balloon.unused": 50000,
            "balloon.available": 80000,
            "balloon.usable": 60000,
            "balloon.last-update": 1764129000,
            "balloon.disk_caches": 7000,
            "balloon.rss": 180000,
            "balloon.hugetlb_pgalloc": 0,
        },
        BalloonSample(
            current_bytes=131072 * 1024,
            maximum_bytes=131072 * 1024,
            swap_in_bytes=1024,
            swap_out_bytes=2048,
            major_fault=3,
            minor_fault=4,
            unused_bytes=50000 * 1024,
            available_bytes=80000 * 1024,
            usable_bytes=60000 * 1024,
            last_update_s=1764129000,
            disk_caches_bytes=7000 * 1024,
            rss_bytes=180000 * 1024,
        ),
    ),
    (
        "no-stats-period-only-current-maximum",
        {"balloon.current": 16384, "balloon.maximum": 16384},
        BalloonSample(current_bytes=16384 * 1024, maximum_bytes=16384 * 1024),
    ),
]


@pytest.mark.parametrize(
    ("stats", "expected"), [c[1:] for c in BALLOON_CASES], ids=[c[0] for c in BALLOON_CASES]
)
def test_balloon(stats: dict[str, Any], expected: BalloonSample | None) -> None:
    assert parse_balloon(stats) == expected
    assert parse(stats).balloon == expected


def test_non_int_values_are_unknown() -> None:
    g = parse({"cpu.time": "12", "state.state": 1.0, "block.count": 1, "block.0.name": 5})
    assert g.cpu_time_ns is None
    assert g.state == "nostate"
    assert g.disks == ()


# --------------------------------------------------------------------------- XML

KVM_XML = """
<domain type='kvm' id='3'>
  <name>lab-kvm-probe</name>
  <memory unit='KiB'>16384</memory>
  <currentMemory unit='KiB'>16384</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/lab/probe.img' index='1'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/sdb'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='volume' device='disk'>
      <source pool='default' volume='v1.qcow2'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='pool/image'/>
      <target dev='vdd' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/no/target.img'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
"""

TCG_XML = """
<domain type='qemu'>
  <name>lab-tcg</name>
  <memory unit='MiB'>128</memory>
  <currentMemory>98304</currentMemory>
  <vcpu>2</vcpu>
  <devices>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:01'/>
      <source bridge='labbr0'/>
      <target dev='vnet0'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:02'/>
      <source bridge='labovs0'/>
      <virtualport type='openvswitch'>
        <parameters interfaceid='0c7e0cf1-0000-0000-0000-000000000000'/>
      </virtualport>
      <target dev='vnet1'/>
      <model type='virtio'/>
    </interface>
    <interface type='network'>
      <source network='isolated' bridge='virbr9'/>
      <model type='e1000'/>
    </interface>
    <memballoon model='virtio'>
      <stats period='2'/>
    </memballoon>
  </devices>
</domain>
"""


def test_xml_kvm_guest() -> None:
    info = parse_domain_xml(KVM_XML)
    assert (info.domain_type, info.accel) == ("kvm", "kvm")
    assert info.max_memory_bytes == info.current_memory_bytes == 16 * 1024 * 1024
    assert info.vcpus == 1
    assert [(d.target, d.device, d.source, d.source_type) for d in info.disks] == [
        ("vda", "disk", "/var/lib/lab/probe.img", "file"),
        ("sda", "cdrom", None, "file"),
        ("vdb", "disk", "/dev/sdb", "block"),
        ("vdc", "disk", "default/v1.qcow2", "volume"),
        ("vdd", "disk", "rbd:pool/image", "network"),
    ]
    assert info.interfaces == ()
    assert (info.memballoon_model, info.balloon_period_s) == ("none", None)


def test_xml_tcg_guest() -> None:
    info = parse_domain_xml(TCG_XML)
    assert (info.domain_type, info.accel) == ("qemu", "tcg")
    assert info.max_memory_bytes == 128 * 1024 * 1024
    assert info.current_memory_bytes == 96 * 1024 * 1024  # no unit: KiB
    assert [
        (i.target, i.type, i.mac, i.model, i.bridge, i.network, i.virtualport)
        for i in info.interfaces
    ] == [
        ("vnet0", "bridge", "52:54:00:aa:bb:01", "virtio", "labbr0", None, None),
        ("vnet1", "bridge", "52:54:00:aa:bb:02", "virtio", "labovs0", None, "openvswitch"),
        (None, "network", None, "e1000", "virbr9", "isolated", None),
    ]
    assert (info.memballoon_model, info.balloon_period_s) == ("virtio", 2)


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ("<domain type='test'><name>t</name></domain>", DomainInfo("test", None)),
        ("<domain><name>t</name></domain>", DomainInfo(None, None)),
        (
            "<domain type='kvm'><memory unit='GiB'>2</memory><memory unit='x'/></domain>",
            DomainInfo("kvm", "kvm", max_memory_bytes=2 << 30),
        ),
        (
            "<domain type='kvm'><memory unit='bogus'>2</memory><vcpu>x</vcpu></domain>",
            DomainInfo("kvm", "kvm"),
        ),
        (
            "<domain type='qemu'><devices><memballoon model='virtio'/></devices></domain>",
            DomainInfo("qemu", "tcg", memballoon_model="virtio"),
        ),
    ],
)
def test_xml_edge_cases(xml: str, expected: DomainInfo) -> None:
    assert parse_domain_xml(xml) == expected


@pytest.mark.parametrize("xml", ["", "<domain", "<network/>"])
def test_xml_rejects_garbage(xml: str) -> None:
    with pytest.raises(ValueError):
        parse_domain_xml(xml)


def test_domain_info_adds_switch_paths_and_memory() -> None:
    xml = """<domain type='qemu'><memory unit='KiB'>131072</memory>
      <devices>
        <disk type='file' device='disk'><source file='/var/lib/x.qcow2'/><target dev='vda'/></disk>
        <interface type='bridge'><source bridge='labbr0'/><target dev='vnet0'/></interface>
        <interface type='bridge'><source bridge='labovs0'/><virtualport type='openvswitch'/>
          <target dev='vnet1'/></interface>
        <interface type='user'><target dev='vnet2'/></interface>
        <memballoon model='virtio'><stats period='2'/></memballoon>
      </devices></domain>"""
    stats = {
        "block.0.name": "vda",
        "net.0.name": "vnet0",
        "net.1.name": "vnet1",
        "net.2.name": "vnet2",
    }
    out = parse_domain_stats(UUID, "g", 1, stats, accel="kvm", pid=None, info=parse_domain_xml(xml))
    assert out.accel == "tcg"  # the XML's
    assert out.disks[0].path == "/var/lib/x.qcow2"
    assert [(n.bridge, n.switch) for n in out.nics] == [
        ("labbr0", "linux"),
        ("labovs0", "ovs"),
        (None, None),
    ]
    assert out.max_memory_bytes == 128 << 20
    assert out.balloon_period_s == 2


_BASE = {"state.state": 1, "cpu.time": 10, "block.0.name": "vda", "block.0.rd.reqs": 1}
CHANGING_RECORDS: list[dict[str, Any]] = [
    _BASE,
    _BASE | {"cpu.time": 20, "block.0.rd.reqs": 2},
    _BASE | {"balloon.current": 4, "balloon.rss": 8},
    _BASE | {"block.1.name": "vdb", "block.1.rd.reqs": 7},
    _BASE | {"cpu.time": "30"},
    _BASE | {"block.0.name": "vdc", "cpu.time": 40},
    _BASE,
    # As many keys as `_BASE`, one of them another: a plan is by key set.
    {k.replace("rd.reqs", "wr.reqs"): v for k, v in _BASE.items()},
    # The generated code reads positions: a record with the same keys in
    # another order reads each field from its own key.
    dict(reversed(_BASE.items())),
]
"""One domain's successive records, each changing what the one before had: values, a
stats group, a hot-plugged disk, a type (also tests/collectors/test_libvirt_reference.py)."""


def test_parser_follows_changing_records() -> None:
    """One parser over a domain's successive records gives what a fresh parse gives,
    whatever changed between them: values, a stats group, a hot-plugged disk, a type."""
    from kvmtop.collectors.libvirt.domstats import DomainLinks, DomainStatsParser

    parser = DomainStatsParser(DomainLinks(accel="kvm"), 1234)
    for stats in CHANGING_RECORDS:
        assert parser.parse(UUID, "g1", 7, stats) == parse(stats)
