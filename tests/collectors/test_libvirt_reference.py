"""The generated libvirt stats parser against the plain reference parser (issue #18).

`kvmtop.collectors.libvirt.domstats` reads each `getAllDomainStats` record through a
plan: Python code generated for the record's key set and value types, cached per
domain. tests/collectors/reference_domstats.py reads the same record with plain dict
lookups. Here both read every domain record of every captured fixture
(tests/fixtures/libvirt/*/stats.json, with the domain XML of domains/<name>.xml), with
a fresh parser per record and with one parser per domain reused over the records in
order (the plans cached, and the balloon carried over ticks without the balloon group
as the collector does), then the hand-made records of
test_libvirt_parse.py::test_parser_follows_changing_records and hostile ones. Every
sample must be equal, field for field.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kvmtop.collectors.libvirt import domstats
from kvmtop.collectors.libvirt.domstats import DomainLinks, DomainStatsParser, parse_domain_stats
from kvmtop.collectors.libvirt.domxml import DomainInfo, parse_domain_xml
from kvmtop.model.sample import BalloonSample, GuestSample
from tests.collectors.reference_domstats import reference_sample
from tests.collectors.test_libvirt_parse import CHANGING_RECORDS
from tests.records import field_names

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt"
CAPTURES = sorted(p for p in FIXTURES.iterdir() if (p / "stats.json").is_file())
PID = 4242
ACCEL = "kvm"
"""What the collector would know without the XML; the XML's accelerator wins."""
VIR_DOMAIN_STATS_BALLOON = 1 << 2
"""virDomainStatsTypes (include/libvirt/libvirt-domain.h)."""


@dataclass(frozen=True)
class Record:
    """One domain record of one captured call."""

    where: str
    uuid: str
    name: str
    dom_id: int | None
    stats: dict[str, Any]
    info: DomainInfo | None
    with_balloon: bool


def captured_records(path: Path) -> list[Record]:
    """A capture's domain records in call order, each with its parsed domain XML
    (None for a domain the capture has no XML of)."""
    data = json.loads((path / "stats.json").read_text())
    infos = {p.stem: parse_domain_xml(p.read_text()) for p in (path / "domains").glob("*.xml")}
    return [
        Record(
            where=f"{path.name}/{call['label']}/{name}",
            uuid=uuid,
            name=name,
            dom_id=dom_id,
            stats=stats,
            info=infos.get(name),
            with_balloon=bool(call["groups"] & VIR_DOMAIN_STATS_BALLOON),
        )
        for call in data["calls"]
        for uuid, name, dom_id, stats in call["records"]
    ]


def reference(record: Record, carried: BalloonSample | None = None) -> GuestSample:
    """The reference parser's sample of a record."""
    return reference_sample(
        record.uuid,
        record.name,
        record.dom_id,
        record.stats,
        info=record.info,
        accel=ACCEL,
        pid=PID,
        carried_balloon=carried,
    )


def fresh_parser(info: DomainInfo | None) -> DomainStatsParser:
    """A parser as the collector makes one for a domain."""
    return DomainStatsParser(DomainLinks.of(info, ACCEL), PID)


def differences(got: GuestSample, want: GuestSample) -> str:
    """The fields in which two samples differ, one line each."""
    return "\n".join(
        f"  {name}: parser {getattr(got, name)!r}\n  {' ' * len(name)}  reference "
        f"{getattr(want, name)!r}"
        for name in field_names(GuestSample)
        if getattr(got, name) != getattr(want, name)
    )


def assert_same(pairs: Iterable[tuple[str, GuestSample, GuestSample]]) -> int:
    """Assert every (where, parser's, reference's) pair is equal; returns how many."""
    count = 0
    failures = []
    for where, got, want in pairs:
        count += 1
        if got != want:
            failures.append(f"{where}:\n{differences(got, want)}")
    assert not failures, f"{len(failures)} of {count} samples differ:\n" + "\n".join(failures)
    return count


class CountingPlans:
    """Counts the plans `domstats` builds, to tell a cached read from a new plan
    (starting with no plan shared by earlier tests)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built = 0
        build = domstats._Plan

        def counted(keys: Any, types: Any) -> Any:
            self.built += 1
            return build(keys, types)

        monkeypatch.setattr(domstats, "_Plan", counted)
        domstats._shared_plan.cache_clear()


# --------------------------------------------------------------------------- captures


def test_every_capture_has_records_and_xml() -> None:
    """The comparison below covers something: each capture has records, and the
    domain XML of each captured domain."""
    assert CAPTURES, f"no capture under {FIXTURES}"
    for path in CAPTURES:
        records = captured_records(path)
        assert records, path
        assert all(r.info is not None for r in records), path


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_fresh_parser_matches_reference_on_captures(path: Path) -> None:
    """Each record with a new parser (one plan built for it), and through the
    `parse_domain_stats` wrapper."""
    records = captured_records(path)
    compared = assert_same(
        (r.where, fresh_parser(r.info).parse(r.uuid, r.name, r.dom_id, r.stats), reference(r))
        for r in records
    )
    compared += assert_same(
        (
            f"{r.where} (parse_domain_stats)",
            parse_domain_stats(
                r.uuid, r.name, r.dom_id, r.stats, accel=ACCEL, pid=PID, info=r.info
            ),
            reference(r),
        )
        for r in records
    )
    assert compared == 2 * len(records)


@pytest.mark.parametrize("carry_balloon", [False, True], ids=["balloon-as-sent", "carried"])
@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_reused_parser_matches_reference_on_captures(
    path: Path, carry_balloon: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One parser per domain over the capture's calls in order, twice: most records
    are read with a plan cached from an earlier one. With `carry_balloon`, a call
    without the balloon group gets the balloon of the domain's last call with it, as
    the collector passes it."""
    plans = CountingPlans(monkeypatch)
    records = captured_records(path)
    parsers: dict[str, DomainStatsParser] = {}
    balloons: dict[str, BalloonSample | None] = {}

    def pairs() -> Iterator[tuple[str, GuestSample, GuestSample]]:
        for round_ in (1, 2):
            for r in records:
                parser = parsers.setdefault(r.uuid, fresh_parser(r.info))
                carried = None
                if carry_balloon and not r.with_balloon:
                    carried = balloons.get(r.uuid)
                got = parser.parse(r.uuid, r.name, r.dom_id, r.stats, carried)
                if r.with_balloon:
                    balloons[r.uuid] = got.balloon
                yield f"{r.where} (round {round_})", got, reference(r, carried)

    compared = assert_same(pairs())
    assert compared == 2 * len(records)
    # The cache did its work: one plan per layout (keys in their order, with their
    # value types), shared by the domains that send it; every other record read with
    # a cached one (fast-1 and fast-2 share a layout, so do fast+balloon-1 and
    # fast+balloon-2).
    layouts = {(tuple(r.stats), tuple(map(type, r.stats.values()))) for r in records}
    assert plans.built == len(layouts) < len(records)
    if carry_balloon:
        assert any(b is not None for b in balloons.values())


# --------------------------------------------------------------------------- hand-made

UUID = "0b9c7b3e-8a52-4c55-9d1e-000000000001"

XML = """<domain type='kvm'>
  <name>g1</name>
  <memory unit='MiB'>256</memory>
  <devices>
    <disk type='file' device='disk'>
      <source file='/var/lib/images/g1-vda.qcow2'/><target dev='vda'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='pool/g1-vdd'/><target dev='vdd'/>
    </disk>
    <disk type='file' device='cdrom'><target dev='sda'/></disk>
    <interface type='bridge'><source bridge='br0'/><target dev='vnet0'/></interface>
    <interface type='bridge'>
      <source bridge='ovs0'/><virtualport type='openvswitch'/><target dev='vnet1'/>
    </interface>
    <interface type='user'><target dev='vnet2'/></interface>
    <memballoon model='virtio'><stats period='5'/></memballoon>
  </devices>
</domain>"""
INFO = parse_domain_xml(XML)

FULL: dict[str, Any] = {
    "state.state": 1,
    "state.reason": 1,
    "cpu.time": 900,
    "cpu.user": 500,
    "cpu.system": 300,
    "vcpu.current": 2,
    "vcpu.maximum": 2,
    "vcpu.0.state": 1,
    "vcpu.0.time": 400,
    "vcpu.0.wait": 0,
    "vcpu.0.delay": 12,
    "vcpu.0.exits.sum": 1000,
    "vcpu.0.halt_wait_ns.sum": 77,
    "vcpu.0.blocking.cur": True,
    "vcpu.1.state": 1,
    "vcpu.1.time": 300,
    "vcpu.1.delay": 9,
    "vcpu.1.exits.sum": 800,
    "vcpu.1.guest_mode.cur": False,
    "vcpu.1.max_mmu_rmap_size.max": 3,
    "vm.pages_4k.cur": 484,
    "vm.remote_tlb_flush.sum": 5,
    "vm.max_mmu_page_hash_collisions.max": 0,
    "block.count": 2,
    "block.0.name": "vda",
    "block.0.path": "/var/lib/images/g1-vda.qcow2",
    "block.0.backingIndex": 1,
    "block.0.rd.reqs": 4,
    "block.0.rd.bytes": 12800,
    "block.0.rd.times": 2982582,
    "block.0.wr.reqs": 3,
    "block.0.wr.bytes": 4096,
    "block.0.wr.times": 1000,
    "block.0.fl.reqs": 2,
    "block.0.fl.times": 500,
    "block.0.allocation": 0,
    "block.0.capacity": 67108864,
    "block.0.physical": 204800,
    "block.1.name": "vdd",
    "block.1.rd.reqs": 1,
    "net.count": 2,
    "net.0.name": "vnet0",
    "net.0.rx.bytes": 10468197,
    "net.0.rx.pkts": 10180,
    "net.0.rx.errs": 0,
    "net.0.rx.drop": 3,
    "net.0.tx.bytes": 1076,
    "net.0.tx.pkts": 14,
    "net.0.tx.errs": 0,
    "net.0.tx.drop": 0,
    "net.1.name": "vnet1",
    "net.1.rx.bytes": 5,
    "balloon.current": 131072,
    "balloon.maximum": 262144,
    "balloon.swap_in": 1,
    "balloon.swap_out": 2,
    "balloon.major_fault": 3,
    "balloon.minor_fault": 1147,
    "balloon.unused": 52160,
    "balloon.available": 81908,
    "balloon.usable": 57892,
    "balloon.last-update": 1795666172,
    "balloon.disk_caches": 3208,
    "balloon.hugetlb_pgalloc": 0,
    "balloon.hugetlb_pgfail": 0,
    "balloon.rss": 219016,
}


def _big() -> dict[str, Any]:
    """A large guest: 64 vCPUs with KVM stats, 40 disks, 16 NICs."""
    stats: dict[str, Any] = {"state.state": 1, "vcpu.current": 64, "vcpu.maximum": 64}
    for n in range(64):
        stats |= {f"vcpu.{n}.time": n, f"vcpu.{n}.exits.sum": 10 * n, f"vcpu.{n}.x.cur": n % 2}
    for n in range(40):
        stats |= {f"block.{n}.name": f"vd{n}", f"block.{n}.rd.reqs": n}
    for n in range(16):
        stats |= {f"net.{n}.name": f"vnet{n}", f"net.{n}.tx.bytes": n}
    return stats


HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("full", FULL),
    ("empty", {}),
    ("state-only", {"state.state": 5, "state.reason": 0}),
    ("state-out-of-range", {"state.state": 99}),
    ("state-negative", {"state.state": -1}),
    ("state-bool", {"state.state": True, "state.reason": False}),
    ("cpu-only", {"cpu.time": 1}),
    ("balloon-only", {"balloon.current": 16384, "balloon.maximum": 16384}),
    ("balloon-unknown-key-only", {"balloon.hugetlb_pgalloc": 0}),
    ("vm-only", {"vm.pages_2m.cur": 51}),
    (
        "non-int-values",
        {
            "state.state": 1.0,
            "state.reason": "1",
            "cpu.time": "12",
            "cpu.user": 1.5,
            "cpu.system": None,
            "vcpu.current": "1",
            "vcpu.maximum": b"1",
            "vcpu.0.state": "running",
            "vcpu.0.time": True,
            "vcpu.0.delay": 2.0,
            "block.0.name": "vda",
            "block.0.path": 7,
            "block.0.rd.reqs": "3",
            "block.0.wr.bytes": None,
            "block.0.capacity": 1.0,
            "block.0.fl.times": [1],
            "net.0.name": "vnet0",
            "net.0.rx.bytes": "1",
            "net.0.tx.pkts": False,
            "balloon.current": "4",
            "balloon.rss": 8.0,
            "balloon.major_fault": None,
            "balloon.last-update": True,
        },
    ),
    (
        "kvm-stat-types",
        {
            "vcpu.0.exits.sum": 5,
            "vcpu.0.blocking.cur": True,
            "vcpu.0.guest_mode.cur": False,
            "vcpu.0.halt_wait_hist.sum": [1, 2, 3],
            "vcpu.0.halt_poll_hist.bucket.3": 4,
            "vcpu.0.ratio.cur": 0.5,
            "vcpu.0.text.max": "x",
            "vcpu.0.weird.avg": 3,
            "vcpu.0.sum": 4,
            "vcpu.0..sum": 6,
            "vcpu.0.a.b.max": 8,
            "vm.pages_4k.cur": 100,
            "vm.flag.cur": False,
            "vm.nonsense": 1,
            "vm.hist.sum": [1],
            "vm.sum": 7,
            "vm..cur": 2,
            "vm": 3,
        },
    ),
    (
        "nameless-and-odd-entries",
        {
            "block.count": 4,
            "block.0.rd.reqs": 1,
            "block.1.name": 5,
            "block.2.name": "vdb",
            "block.2.wr.reqs": 2,
            "block..name": "vdz",
            "block.x.name": "vdy",
            "block.-1.name": "vdw",
            "block.3": "x",
            "block.4.": "y",
            "net.0.rx.bytes": 1,
            "net.1.name": None,
            "net.2.name": "vnet2",
            "net.3": 5,
            "vcpu.x.time": 1,
            "vcpu.2.": 1,
            "vcpu. 3.time": 1,
            "balloon": 3,
            "cpu": 4,
            "state": 1,
        },
    ),
    (
        "backing-chain",
        {
            "block.count": 4,
            "block.0.name": "vda",
            "block.0.backingIndex": 2,
            "block.0.rd.reqs": 5,
            "block.1.name": "vda",
            "block.1.backingIndex": 1,
            "block.1.path": "/var/lib/images/base.qcow2",
            "block.1.rd.reqs": 99,
            "block.2.name": "vdd",
            "block.2.rd.reqs": 7,
            "block.3.name": "vdd",
            "block.3.path": "/backing/of/vdd",
        },
    ),
    (
        "disk-sources",
        {
            "block.0.name": "vdd",  # network source: no path, the XML's rbd name
            "block.1.name": "sda",  # empty CD-ROM: no path, no XML source
            "block.2.name": "vda",
            "block.2.path": "/elsewhere/vda.img",  # the stats' path wins
            "block.3.name": "vdq",  # not in the XML
        },
    ),
    (
        "nic-switches",
        {
            "net.count": 4,
            "net.0.name": "vnet1",
            "net.1.name": "vnet0",
            "net.2.name": "vnet2",
            "net.3.name": "vnet9",
            "net.4.name": "",
        },
    ),
    (
        "sparse-vcpus",
        {
            "vcpu.current": 3,
            "vcpu.maximum": 16,
            "vcpu.12.state": 1,
            "vcpu.0.time": 1,
            "vcpu.5.time": 2,
            "vcpu.5.delay": 3,
        },
    ),
    (
        "quotes-in-keys-and-names",
        {
            "vm.a'b\"c\\.sum": 1,
            "vm.\n.cur": 2,
            "vcpu.0.x'); raise SystemExit('#.sum": 3,
            "vcpu.0.{}\\\"'.max": 4,
            "block.0.name": "vd'a\"",
            "block.0.path": "/a'b\"\\c",
            "net.0.name": "v\"n\\et'",
        },
    ),
    # libvirt prints <num> in ASCII decimal: a key with other digits is no entry.
    ("non-ascii-index", {"vcpu.².time": 1, "vcpu.٣.time": 2, "block.¹.name": "vdx"}),
    ("big", _big()),
]


def _shuffled(stats: dict[str, Any], seed: int) -> dict[str, Any]:
    """The same record with its keys in another order."""
    items = list(stats.items())
    random.Random(seed).shuffle(items)
    return dict(items)


def _compare_sequence(
    records: list[tuple[str, dict[str, Any]]],
    info: DomainInfo | None,
    carried: BalloonSample | None = None,
) -> int:
    """One parser over the records in order, and a fresh one per record, against
    the reference; returns how many samples were compared."""
    parser = fresh_parser(info)

    def pairs() -> Iterator[tuple[str, GuestSample, GuestSample]]:
        for where, stats in records:
            want = reference_sample(
                UUID, "g1", 7, stats, info=info, accel=ACCEL, pid=PID, carried_balloon=carried
            )
            yield where, parser.parse(UUID, "g1", 7, stats, carried), want
            got = fresh_parser(info).parse(UUID, "g1", 7, stats, carried)
            yield f"{where} (fresh)", got, want

    return assert_same(pairs())


INFOS = [None, INFO]
INFO_IDS = ["no-xml", "xml"]


@pytest.mark.parametrize("info", INFOS, ids=INFO_IDS)
def test_changing_records_match_reference(info: DomainInfo | None) -> None:
    """The records of test_parser_follows_changing_records: values, a stats group, a
    hot-plugged disk, a type, the key set and the key order change between them."""
    records = [(f"changing[{i}]", stats) for i, stats in enumerate(CHANGING_RECORDS)]
    assert _compare_sequence(records, info) == 2 * len(CHANGING_RECORDS)


@pytest.mark.parametrize(("where", "stats"), HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("info", INFOS, ids=INFO_IDS)
def test_hostile_record_matches_reference(
    where: str, stats: dict[str, Any], info: DomainInfo | None
) -> None:
    """Each hostile record alone, then again with its keys reordered (the same key
    set: the cached plan reads each field from its own key)."""
    records = [(where, stats), (f"{where} reversed", dict(reversed(stats.items())))]
    records += [(f"{where} shuffled {seed}", _shuffled(stats, seed)) for seed in range(3)]
    assert _compare_sequence(records, info) == 2 * len(records)


@pytest.mark.parametrize("info", INFOS, ids=INFO_IDS)
def test_hostile_records_through_one_parser(info: DomainInfo | None) -> None:
    """All hostile records through one parser, forwards and back: more key sets than
    the parser keeps plans for, each met again after others."""
    records = [(where, stats) for where, stats in HOSTILE]
    records += [(f"{where} again", stats) for where, stats in reversed(HOSTILE)]
    assert _compare_sequence(records, info) == 2 * len(records)


def test_carried_balloon_wins_over_the_record() -> None:
    """A carried balloon replaces the record's, with or without balloon keys."""
    carried = BalloonSample(current_bytes=1 << 20, usable_bytes=1 << 19)
    records = [(where, stats) for where, stats in HOSTILE]
    assert _compare_sequence(records, INFO, carried) == 2 * len(records)


def test_hot_plug_and_type_changes_through_one_parser() -> None:
    """A disk and a NIC plugged and unplugged, and one key's type changing while the
    key set stays, through one parser."""
    base = {
        "state.state": 1,
        "block.count": 1,
        "block.0.name": "vda",
        "block.0.rd.reqs": 1,
        "net.count": 0,
    }
    plugged = base | {
        "block.count": 2,
        "block.1.name": "vdb",
        "block.1.rd.reqs": 2,
        "net.count": 1,
        "net.0.name": "vnet0",
        "net.0.rx.bytes": 3,
    }
    records = [
        ("base", base),
        ("plugged", plugged),
        ("unplugged", base),
        ("replugged as vdd", plugged | {"block.1.name": "vdd"}),
        ("rd.reqs a string", base | {"block.0.rd.reqs": "1"}),
        ("rd.reqs a bool", base | {"block.0.rd.reqs": True}),
        ("rd.reqs an int again", base | {"block.0.rd.reqs": 5}),
        ("name not a string", base | {"block.0.name": 0}),
        ("state a float", base | {"state.state": 1.0}),
        ("base again", base),
        ("plugged again", plugged),
    ]
    assert _compare_sequence(records, INFO) == 2 * len(records)
