"""LibvirtCollector against libvirt's embedded test driver, fake connections and
stats captured from the lab (tests/fixtures/libvirt/*/)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kvmtop.collectors.base import CollectorError
from kvmtop.collectors.libvirt.collector import LibvirtCollector
from kvmtop.collectors.libvirt.connect import (
    LIBVIRT_MISSING,
    describe_libvirt_error,
    format_version,
    is_local_uri,
)
from tests.lab.fixture import Lab

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt"
# The host lab's captures (TCG Linux guests, KVM probes, lab-ovs): the `capture` tests.
CAPTURES = sorted(p for p in FIXTURES.glob("lab-*") if (p / "stats.json").is_file())
# Inside the nested lab's SVM host: every guest, Linux included, under KVM.
NESTED_CAPTURE = FIXTURES / "nested-svm-2026-12-06"

NODE_XML = """<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>alpha</name><uuid>11111111-1111-1111-1111-111111111111</uuid>
    <memory>131072</memory><vcpu>2</vcpu><os><type>hvm</type></os>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>beta</name><uuid>22222222-2222-2222-2222-222222222222</uuid>
    <memory>131072</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <test:runstate>3</test:runstate>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>gamma</name><uuid>33333333-3333-3333-3333-333333333333</uuid>
    <memory>131072</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <test:runstate>5</test:runstate>
  </domain>
</node>
"""


@pytest.fixture
def lv() -> ModuleType:
    """The real libvirt-python module (skip when the optional extra is missing)."""
    module: ModuleType = pytest.importorskip("libvirt")
    return module


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("qemu:///system", True),
        ("qemu:///session", True),
        ("qemu+unix:///system", True),
        ("qemu+unix:///system?socket=/tmp/s", True),
        ("test:///default", True),
        ("test:///tmp/node.xml", True),
        ("qemu+ssh://root@host/system", False),
        ("qemu+tcp://10.0.0.1:16509/system", False),
        ("qemu://host/system", False),
        ("qemu+ssh:///system", False),
        ("qemu+tls://host.example/system", False),
    ],
)
def test_is_local_uri(uri: str, local: bool) -> None:
    assert is_local_uri(uri) is local


def test_format_version() -> None:
    assert format_version(9000000) == "9.0.0"
    assert format_version(7002000) == "7.2.0"
    assert format_version(12008001) == "12.8.1"


@pytest.mark.parametrize(
    ("message", "start"),
    [
        (
            "Failed to connect socket to '/var/run/libvirt/libvirt-sock-ro': "
            "No such file or directory",
            "libvirt daemon not running for qemu:///system (socket missing",
        ),
        ("unable to connect to server at 'h:16509': Connection refused", "libvirt daemon not"),
        (
            "Failed to connect socket to '/var/run/libvirt/libvirt-sock-ro': Permission denied",
            "permission denied opening qemu:///system",
        ),
        ("authentication failed: no agent", "authentication failed for qemu:///system"),
        ("something odd", "libvirt at qemu:///system unreachable: something odd"),
    ],
)
def test_describe_libvirt_error(message: str, start: str) -> None:
    assert describe_libvirt_error("qemu:///system", message).startswith(start)


def test_balloon_every_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LibvirtCollector(balloon_every=0)


# --------------------------------------------------------------------------- missing binding


def test_without_libvirt_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "libvirt", None)  # makes `import libvirt` fail
    collector = LibvirtCollector("test:///default")
    probe = collector.probe()
    assert (probe.name, probe.available, probe.reason) == ("libvirt", False, LIBVIRT_MISSING)
    with pytest.raises(CollectorError, match="libvirt-python not installed"):
        collector.collect(0)
    with pytest.raises(CollectorError, match="libvirt-python not installed"):
        collector.version_info()
    collector.close()


# --------------------------------------------------------------------------- test driver


class CountingConnection:
    """Wraps a real virConnect and records every getAllDomainStats call."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.stats_calls: list[tuple[int, int]] = []
        self.xml_calls = 0
        self.closed = False

    def getAllDomainStats(self, stats: int, flags: int) -> list[tuple[Any, dict[str, Any]]]:
        self.stats_calls.append((stats, flags))
        return [(CountingDomain(d, self), s) for d, s in self.conn.getAllDomainStats(stats, flags)]

    def close(self) -> int:
        self.closed = True
        return int(self.conn.close())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


class CountingDomain:
    """Wraps a virDomain and counts XMLDesc calls on its connection wrapper."""

    def __init__(self, dom: Any, owner: CountingConnection) -> None:
        self.dom = dom
        self.owner = owner

    def XMLDesc(self, flags: int = 0) -> str:
        self.owner.xml_calls += 1
        return str(self.dom.XMLDesc(flags))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dom, name)


@pytest.fixture
def node_uri(tmp_path: Path) -> str:
    """A test-driver URI with three domains: running, paused, shut off."""
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    return f"test://{node}"


@pytest.fixture
def counting(lv: ModuleType) -> tuple[list[CountingConnection], Callable[[str | None], Any]]:
    """An open_fn that wraps real read-only connections, and the list of them."""
    opened: list[CountingConnection] = []

    def open_fn(uri: str | None) -> Any:
        conn = CountingConnection(lv.openReadOnly(uri))
        opened.append(conn)
        return conn

    return opened, open_fn


def test_default_driver_inventory(lv: ModuleType) -> None:
    collector = LibvirtCollector("test:///default")
    guests = collector.collect(0)
    assert [(g.name, g.uuid, g.dom_id, g.state) for g in guests] == [
        ("test", "6695eb01-f6a4-8304-79aa-97f2502e193f", 1, "running")
    ]
    # The test driver's domain type is 'test': neither KVM nor TCG.
    assert guests[0].accel is None
    info = collector.domain_info(guests[0].uuid)
    assert info is not None
    assert info.domain_type == "test"
    assert [d.target for d in info.disks] == ["vda"]
    collector.close()


def test_inventory_states_and_identity(
    node_uri: str, counting: tuple[list[CountingConnection], Any], tmp_path: Path
) -> None:
    opened, open_fn = counting
    pids = tmp_path / "root" / "run" / "libvirt" / "qemu"
    pids.mkdir(parents=True)
    (pids / "alpha.pid").write_text("4242\n")
    (pids / "gamma.pid").write_text("999\n")  # stale file of a shut-off domain: ignored
    collector = LibvirtCollector(node_uri, tmp_path / "root", open_fn=open_fn)
    guests = {g.name: g for g in collector.collect(0)}
    assert {n: (g.uuid[:8], g.dom_id, g.state, g.pid) for n, g in guests.items()} == {
        "alpha": ("11111111", 1, "running", 4242),
        "beta": ("22222222", 2, "paused", None),
        "gamma": ("33333333", None, "shutoff", None),
    }
    assert collector.is_local
    assert collector.uri == node_uri
    assert len(opened) == 1
    assert opened[0].xml_calls == 3


def test_one_stats_call_per_collect_and_xml_once(
    lv: ModuleType, node_uri: str, counting: tuple[list[CountingConnection], Any]
) -> None:
    opened, open_fn = counting
    collector = LibvirtCollector(node_uri, open_fn=open_fn, balloon_every=3)
    for tick in range(7):
        assert len(collector.collect(tick)) == 3
    conn = opened[0]
    assert len(opened) == 1
    assert len(conn.stats_calls) == 7
    assert conn.xml_calls == 3  # once per domain, not per tick
    balloon_ticks = [
        tick
        for tick, (groups, _) in enumerate(conn.stats_calls)
        if groups & lv.VIR_DOMAIN_STATS_BALLOON
    ]
    assert balloon_ticks == [0, 3, 6]
    fast = (
        lv.VIR_DOMAIN_STATS_STATE
        | lv.VIR_DOMAIN_STATS_CPU_TOTAL
        | lv.VIR_DOMAIN_STATS_VCPU
        | lv.VIR_DOMAIN_STATS_INTERFACE
        | lv.VIR_DOMAIN_STATS_BLOCK
    )
    for groups, flags in conn.stats_calls:
        assert groups & ~lv.VIR_DOMAIN_STATS_BALLOON == fast
        # No state filter (shut-off domains are rows too); a call that is on time
        # waits for jobs like any client (NOWAIT only for the retry of an overdue one,
        # tests/collectors/test_libvirt_stall.py).
        assert flags == 0
    collector.close()
    assert conn.closed


def test_first_collect_fetches_balloon_whatever_the_tick(
    lv: ModuleType, node_uri: str, counting: tuple[list[CountingConnection], Any]
) -> None:
    opened, open_fn = counting
    collector = LibvirtCollector(node_uri, open_fn=open_fn, balloon_every=5)
    for tick in (3, 4, 5, 6):
        collector.collect(tick)
    with_balloon = [bool(g & lv.VIR_DOMAIN_STATS_BALLOON) for g, _ in opened[0].stats_calls]
    assert with_balloon == [True, False, True, False]


def test_probe_and_versions(lv: ModuleType, node_uri: str) -> None:
    collector = LibvirtCollector(node_uri)
    probe = collector.probe()
    assert probe.available
    assert probe.name == "libvirt"
    assert probe.reason is None
    assert probe.detail["uri"] == node_uri
    assert probe.detail["libvirt"] == format_version(lv.getVersion())
    assert probe.detail["libvirt_client"] == format_version(lv.getVersion())
    assert probe.detail["hypervisor"].startswith("TEST ")
    assert probe.detail["hostname"]
    assert collector.version_info() == probe.detail
    collector.close()


def test_probe_daemon_not_running(lv: ModuleType, tmp_path: Path) -> None:
    uri = f"qemu+unix:///system?socket={tmp_path}/absent-sock"
    collector = LibvirtCollector(uri)
    probe = collector.probe()
    assert not probe.available
    assert probe.reason is not None
    assert probe.reason.startswith(f"libvirt daemon not running for {uri}")
    with pytest.raises(CollectorError, match="libvirt daemon not running"):
        collector.collect(0)


def test_domain_restart_refetches_xml(lv: ModuleType, node_uri: str) -> None:
    opened: list[CountingConnection] = []

    def open_rw(uri: str | None) -> Any:
        # Read-write here only so the test can restart a domain over the same
        # connection (a test-driver file URI is private to its connection).
        conn = CountingConnection(lv.open(uri))
        opened.append(conn)
        return conn

    collector = LibvirtCollector(node_uri, open_fn=open_rw)
    assert {g.name: g.dom_id for g in collector.collect(0)}["alpha"] == 1
    collector.collect(1)
    assert opened[0].xml_calls == 3
    dom = opened[0].conn.lookupByName("alpha")
    dom.destroy()
    stopped = {g.name: g for g in collector.collect(2)}["alpha"]
    assert (stopped.state, stopped.dom_id) == ("shutoff", None)
    dom.create()
    restarted = {g.name: g for g in collector.collect(3)}["alpha"]
    assert restarted.state == "running"
    assert restarted.dom_id is not None and restarted.dom_id > 1
    assert opened[0].xml_calls == 5  # + stop, + restart of alpha
    collector.close()


# --------------------------------------------------------------------------- fakes


def make_error(lv: ModuleType, code: int, domain: int, message: str) -> Any:
    """A libvirtError carrying the given virError code/domain/message."""
    exc = lv.libvirtError(message)
    exc.err = (code, domain, message, 2, None, None, None, 0, 0)
    return exc


class FakeDomain:
    """The virDomain methods the collector uses."""

    def __init__(self, uuid: str, name: str, dom_id: int, xml: str) -> None:
        self._uuid, self._name, self._id, self.xml = uuid, name, dom_id, xml
        self.xml_error: Any = None
        self.xml_calls = 0

    def UUIDString(self) -> str:
        return self._uuid

    def name(self) -> str:
        return self._name

    def ID(self) -> int:
        return self._id

    def XMLDesc(self, flags: int = 0) -> str:
        self.xml_calls += 1
        if self.xml_error is not None:
            raise self.xml_error
        return self.xml


class FakeConnection:
    """A virConnect replaying stats records; `failures` are raised first, in order."""

    def __init__(
        self,
        records: list[list[tuple[FakeDomain, dict[str, Any]]]],
        failures: list[Any] | None = None,
        alive: bool = True,
    ) -> None:
        self.records = records
        self.failures = list(failures or [])
        self.alive = alive
        self.calls: list[tuple[int, int]] = []
        self.closed = False

    def getAllDomainStats(self, stats: int, flags: int) -> list[tuple[Any, dict[str, Any]]]:
        self.calls.append((stats, flags))
        if self.failures:
            raise self.failures.pop(0)
        return list(self.records[min(len(self.calls), len(self.records)) - 1])

    def isAlive(self) -> int:
        return int(self.alive)

    def close(self) -> int:
        self.closed = True
        return 0

    def getURI(self) -> str:
        return "qemu:///system"

    def getType(self) -> str:
        return "QEMU"

    def getLibVersion(self) -> int:
        return 9000000

    def getVersion(self) -> int:
        return 7002000

    def getHostname(self) -> str:
        return "labhost"


KVM_XML = "<domain type='kvm'><name>k</name><memballoon model='none'/></domain>"
TCG_XML = (
    "<domain type='qemu'><name>t</name><devices><memballoon model='virtio'>"
    "<stats period='2'/></memballoon></devices></domain>"
)


def fake_domains() -> tuple[FakeDomain, FakeDomain]:
    return (
        FakeDomain("aaaaaaaa-0000-0000-0000-000000000001", "k", 1, KVM_XML),
        FakeDomain("aaaaaaaa-0000-0000-0000-000000000002", "t", 2, TCG_XML),
    )


def opener(*conns: FakeConnection) -> tuple[Callable[[str | None], Any], list[FakeConnection]]:
    """open_fn handing out the given connections in order; records which were opened."""
    queue = list(conns)
    opened: list[FakeConnection] = []

    def open_fn(_uri: str | None) -> Any:
        conn = queue.pop(0)
        opened.append(conn)
        return conn

    return open_fn, opened


def test_reconnects_once_after_daemon_restart(lv: ModuleType) -> None:
    k, t = fake_domains()
    stats = {"state.state": 1, "cpu.time": 5}
    broken = FakeConnection([[(k, stats)]])
    fresh = FakeConnection([[(k, stats), (t, stats)]])
    open_fn, opened = opener(broken, fresh)
    collector = LibvirtCollector(open_fn=open_fn)
    assert [g.name for g in collector.collect(0)] == ["k"]
    # libvirtd restarts: the old socket reports EOF on the next call.
    broken.failures = [
        make_error(lv, lv.VIR_ERR_SYSTEM_ERROR, lv.VIR_FROM_RPC, "End of file while reading data")
    ]
    assert [g.name for g in collector.collect(1)] == ["k", "t"]
    assert opened == [broken, fresh]
    assert broken.closed
    assert len(fresh.calls) == 1


def test_client_socket_closed_is_a_connection_error(lv: ModuleType) -> None:
    k, _ = fake_domains()
    first = FakeConnection(
        [[(k, {})]],
        failures=[
            make_error(lv, lv.VIR_ERR_INTERNAL_ERROR, lv.VIR_FROM_RPC, "client socket is closed")
        ],
    )
    second = FakeConnection([[(k, {"state.state": 1})]])
    open_fn, opened = opener(first, second)
    collector = LibvirtCollector(open_fn=open_fn)
    assert [g.state for g in collector.collect(0)] == ["running"]
    assert opened == [first, second]


def test_dead_connection_detected_by_isalive(lv: ModuleType) -> None:
    k, _ = fake_domains()
    first = FakeConnection([[(k, {})]])
    second = FakeConnection([[(k, {"state.state": 3})]])
    open_fn, opened = opener(first, second)
    collector = LibvirtCollector(open_fn=open_fn)
    collector.collect(0)
    assert opened == [first]
    first.alive = False
    assert [g.state for g in collector.collect(1)] == ["paused"]
    assert first.closed
    assert len(first.calls) == 1


def test_unreachable_after_one_reconnect_then_recovers(lv: ModuleType) -> None:
    k, _ = fake_domains()
    eof = make_error(lv, lv.VIR_ERR_SYSTEM_ERROR, lv.VIR_FROM_RPC, "Cannot write data: Broken pipe")
    first = FakeConnection([[(k, {})]], failures=[eof])
    second = FakeConnection([[(k, {})]], failures=[eof])
    third = FakeConnection([[(k, {"state.state": 1})]])
    open_fn, opened = opener(first, second, third)
    collector = LibvirtCollector(open_fn=open_fn)
    with pytest.raises(CollectorError, match=r"libvirt at qemu:///system unreachable: Cannot"):
        collector.collect(0)
    assert opened == [first, second]
    assert first.closed and second.closed
    assert collector.unanswered("gone") == ()  # nothing was ever read
    # The daemon is back: the next call opens a new connection and works.
    assert [g.state for g in collector.collect(1)] == ["running"]
    assert opened == [first, second, third]


def test_guests_stay_listed_while_the_daemon_is_away(lv: ModuleType) -> None:
    """libvirtd stopped or restarting: its guests still run. `unanswered` lists the
    running ones with identity and size, values unknown, not responding since the
    first tick without an answer; a shut-off domain as it was."""
    k, t = fake_domains()
    t._id = -1  # shut off
    stats = {"state.state": 1, "cpu.time": 5, "vcpu.current": 2}
    conn = FakeConnection([[(k, stats), (t, {"state.state": 5})]])
    open_fn, _ = opener(conn)
    clock = iter([100.0, 130.0, 132.0])
    collector = LibvirtCollector(open_fn=open_fn, wall=lambda: next(clock))
    collector.collect(0)
    first = {g.name: g for g in collector.unanswered("libvirt daemon not running")}
    again = {g.name: g for g in collector.unanswered("libvirt daemon not running")}
    k_out = first["k"]
    assert (k_out.state, k_out.vcpus_current, k_out.cpu_time_ns) == ("running", 2, None)
    assert k_out.not_responding_since_s == 130.0
    assert (
        k_out.not_responding
        == "not responding since "
        + time.strftime("%H:%M:%S", time.localtime(130.0))
        + ": libvirt daemon not running"
    )
    assert again["k"].not_responding_since_s == 130.0  # since the first such tick
    assert first["t"].state == "shutoff" and first["t"].not_responding is None


def test_open_failure_is_a_collector_error(lv: ModuleType) -> None:
    def open_fn(_uri: str | None) -> Any:
        raise make_error(
            lv,
            lv.VIR_ERR_SYSTEM_ERROR,
            lv.VIR_FROM_RPC,
            "Failed to connect socket to '/var/run/libvirt/libvirt-sock-ro': Permission denied",
        )

    collector = LibvirtCollector(open_fn=open_fn)
    with pytest.raises(CollectorError, match="permission denied opening qemu:///system"):
        collector.collect(0)
    probe = collector.probe()
    assert not probe.available
    assert probe.detail == {"uri": "qemu:///system"}


def test_other_errors_are_not_retried(lv: ModuleType) -> None:
    k, _ = fake_domains()
    conn = FakeConnection(
        [[(k, {})]],
        failures=[
            make_error(lv, lv.VIR_ERR_OPERATION_INVALID, lv.VIR_FROM_QEMU, "operation is not valid")
        ],
    )
    open_fn, opened = opener(conn)
    collector = LibvirtCollector(open_fn=open_fn)
    with pytest.raises(CollectorError, match="getAllDomainStats failed: operation is not"):
        collector.collect(0)
    assert opened == [conn]
    assert not conn.closed
    assert collector.collect(1)[0].name == "k"


def test_vanished_domain_is_skipped(lv: ModuleType) -> None:
    k, t = fake_domains()
    t.xml_error = make_error(lv, lv.VIR_ERR_NO_DOMAIN, lv.VIR_FROM_QEMU, "Domain not found")
    conn = FakeConnection([[(k, {}), (t, {})]])
    open_fn, _ = opener(conn)
    collector = LibvirtCollector(open_fn=open_fn)
    assert [g.name for g in collector.collect(0)] == ["k"]


def test_xml_error_is_retried_next_tick(lv: ModuleType) -> None:
    k, _ = fake_domains()
    k.xml_error = make_error(lv, lv.VIR_ERR_INTERNAL_ERROR, lv.VIR_FROM_QEMU, "transient")
    conn = FakeConnection([[(k, {})]])
    open_fn, _ = opener(conn)
    collector = LibvirtCollector(open_fn=open_fn)
    assert collector.collect(0)[0].accel is None
    k.xml_error = None
    assert collector.collect(1)[0].accel == "kvm"
    assert collector.collect(2)[0].accel == "kvm"
    assert k.xml_calls == 2


def test_restart_gets_new_entry_and_pid(tmp_path: Path, lv: ModuleType) -> None:
    pids = tmp_path / "run" / "libvirt" / "qemu"
    pids.mkdir(parents=True)
    k, _ = fake_domains()
    conn = FakeConnection([[(k, {"state.state": 1})]])
    open_fn, _ = opener(conn)
    collector = LibvirtCollector(root=tmp_path, open_fn=open_fn)
    assert collector.collect(0)[0].pid is None  # pidfile not written yet
    (pids / "k.pid").write_text("100")
    assert collector.collect(1)[0].pid == 100
    (pids / "k.pid").write_text("200")
    assert collector.collect(2)[0].pid == 100  # same dom_id: cached
    k._id = 5  # domain restarted
    assert collector.collect(3)[0].pid == 200
    assert k.xml_calls == 2


def test_remote_uri_has_no_pid(tmp_path: Path, lv: ModuleType) -> None:
    (tmp_path / "run" / "libvirt" / "qemu").mkdir(parents=True)
    (tmp_path / "run" / "libvirt" / "qemu" / "k.pid").write_text("100")
    k, _ = fake_domains()
    conn = FakeConnection([[(k, {})]])
    conn.getURI = lambda: "qemu+ssh://root@far/system"  # type: ignore[method-assign]
    open_fn, _ = opener(conn)
    collector = LibvirtCollector("qemu+ssh://root@far/system", tmp_path, open_fn=open_fn)
    guest = collector.collect(0)[0]
    assert guest.pid is None
    assert guest.accel == "kvm"  # XML facts still apply
    assert not collector.is_local


def test_balloon_carried_forward_unchanged(lv: ModuleType) -> None:
    _, t = fake_domains()
    b1 = {"state.state": 1, "balloon.current": 100, "balloon.usable": 50, "balloon.last-update": 7}
    b2 = {"state.state": 1, "balloon.current": 100, "balloon.usable": 40, "balloon.last-update": 9}
    fast = {"state.state": 1}
    conn = FakeConnection([[(t, b1)], [(t, fast)], [(t, fast)], [(t, b2)], [(t, fast)]])
    open_fn, _ = opener(conn)
    collector = LibvirtCollector(open_fn=open_fn, balloon_every=3)
    samples = [collector.collect(tick)[0] for tick in range(5)]
    balloons = [s.balloon for s in samples]
    assert balloons[0] is not None and balloons[0].usable_bytes == 50 * 1024
    assert balloons[1] is balloons[0] and balloons[2] is balloons[0]
    assert balloons[3] is not None and balloons[3].usable_bytes == 40 * 1024
    assert balloons[4] is balloons[3]
    assert [s.balloon.last_update_s for s in samples if s.balloon] == [7, 7, 7, 9, 9]


def test_balloon_not_carried_across_restart(lv: ModuleType) -> None:
    _, t = fake_domains()
    conn = FakeConnection([[(t, {"balloon.current": 1})], [(t, {})]])
    open_fn, _ = opener(conn)
    collector = LibvirtCollector(open_fn=open_fn, balloon_every=10)
    assert collector.collect(0)[0].balloon is not None
    t._id = 9
    assert collector.collect(1)[0].balloon is None


# --------------------------------------------------------------------------- captures


class Capture:
    """One capture directory: stats.json calls plus domains/<name>.xml."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = json.loads((path / "stats.json").read_text())
        self.meta: dict[str, Any] = data["meta"]
        self.calls: list[dict[str, Any]] = data["calls"]
        self.xml = {p.stem: p.read_text() for p in (path / "domains").glob("*.xml")}

    def raw(self, label: str) -> list[list[Any]]:
        """The [uuid, name, id, stats] records of one captured call."""
        records: list[list[Any]] = next(c for c in self.calls if c["label"] == label)["records"]
        return records

    def records(self, label: str) -> list[tuple[FakeDomain, dict[str, Any]]]:
        """One captured call as (FakeDomain, stats) pairs, XML from domains/."""
        return [
            (FakeDomain(uuid, name, -1 if dom_id is None else dom_id, self.xml[name]), stats)
            for uuid, name, dom_id, stats in self.raw(label)
        ]


@pytest.fixture(params=CAPTURES, ids=[p.name for p in CAPTURES])
def capture(request: pytest.FixtureRequest) -> Iterator[Capture]:
    yield Capture(request.param)


def replay(capture: Capture, labels: list[str], **kw: Any) -> list[tuple[Any, ...]]:
    """Collect once per label through a FakeConnection serving those captured calls
    (root points at a directory without pidfiles, so `pid` stays None)."""
    conn = FakeConnection([capture.records(label) for label in labels])
    open_fn, _ = opener(conn)
    collector = LibvirtCollector(root=capture.path, open_fn=open_fn, **kw)
    return [collector.collect(tick) for tick in range(len(labels))]


def test_capture_kvm_and_tcg_guests(lv: ModuleType, capture: Capture) -> None:
    (guests,) = replay(capture, ["fast+balloon-1"])
    running = [g for g in guests if g.state == "running"]
    kvm = [g for g in running if g.accel == "kvm"]
    tcg = [g for g in running if g.accel == "tcg"]
    assert kvm, "capture has no running KVM guest"
    assert tcg, "capture has no running TCG guest"
    for g in kvm:
        assert g.vcpus
        assert "exits.sum" in g.vcpus[0].kvm
        assert g.vcpus[0].kvm["exits.sum"] > 0
        assert "halt_exits.sum" in g.vcpus[0].kvm
    for g in tcg:
        assert g.vcpus
        assert all(v.kvm == {} for v in g.vcpus)
        assert g.vm_kvm == {}
    for g in running:
        assert g.cpu_time_ns is not None and g.cpu_time_ns > 0
        assert all(v.delay_ns is not None for v in g.vcpus)  # libvirt >= 7.2
        assert g.pid is None  # fake root: no pidfile


def test_capture_balloon_in_bytes(lv: ModuleType, capture: Capture) -> None:
    (guests,) = replay(capture, ["fast+balloon-1"])
    raw = {name: stats for _, name, _, stats in capture.raw("fast+balloon-1")}
    with_stats = [g for g in guests if g.balloon is not None and g.balloon.usable_bytes]
    assert with_stats, "no guest with live balloon stats in the capture"
    for g in with_stats:
        assert g.balloon is not None
        assert g.balloon.usable_bytes == raw[g.name]["balloon.usable"] * 1024
        assert g.balloon.available_bytes == raw[g.name]["balloon.available"] * 1024
        assert g.balloon.last_update_s is not None and g.balloon.last_update_s > 0
        used = g.balloon.available_bytes - g.balloon.usable_bytes
        assert 0 < used < g.balloon.available_bytes


def test_capture_disks_and_nics(lv: ModuleType, capture: Capture) -> None:
    (guests,) = replay(capture, ["fast-1"])
    running = [g for g in guests if g.state == "running"]
    for g in running:
        assert g.balloon is None  # first call without the balloon group
        for d in g.disks:
            assert d.target.startswith(("vd", "sd", "hd"))
            assert d.rd_reqs is not None
    tcg = [g for g in running if g.accel == "tcg"]
    assert any(g.nics for g in tcg)
    for g in tcg:
        for n in g.nics:
            assert n.rx_bytes is not None and n.tx_pkts is not None


def test_capture_counters_advance(lv: ModuleType, capture: Capture) -> None:
    first, second = replay(capture, ["fast-1", "fast-2"])
    before = {g.uuid: g for g in first if g.state == "running"}
    after = {g.uuid: g for g in second if g.state == "running"}
    common = before.keys() & after.keys()
    assert common
    for uuid in common:
        a, b = before[uuid], after[uuid]
        assert a.cpu_time_ns is not None and b.cpu_time_ns is not None
        assert b.cpu_time_ns >= a.cpu_time_ns
        if a.accel == "kvm":
            assert b.vcpus[0].kvm["exits.sum"] > a.vcpus[0].kvm["exits.sum"]


def test_capture_shutoff_guests_listed(lv: ModuleType, capture: Capture) -> None:
    (guests,) = replay(capture, ["fast-1"])
    for g in guests:
        if g.state == "shutoff":
            assert g.dom_id is None
            assert g.cpu_time_ns is None
    assert len(guests) == len(capture.raw("fast-1"))


def test_capture_every_running_guest_has_its_disk(lv: ModuleType, capture: Capture) -> None:
    # libvirt 9.0 reports block.0.backingIndex=1 for the top image: still the disk.
    (guests,) = replay(capture, ["fast-1"])
    for g in guests:
        if g.state == "running":
            assert [d.target for d in g.disks] == ["vda"]
            assert g.disks[0].path is not None
            assert g.disks[0].capacity_bytes


def test_capture_vm_group_only_for_kvm(lv: ModuleType, capture: Capture) -> None:
    (guests,) = replay(capture, ["fast+vm-2"])
    for g in guests:
        if g.accel == "kvm":
            assert "pages_4k.cur" in g.vm_kvm
            assert "remote_tlb_flush.sum" in g.vm_kvm
        else:
            assert g.vm_kvm == {}


def test_capture_memleak_guest_loses_usable_memory(lv: ModuleType, capture: Capture) -> None:
    first, second = replay(capture, ["fast+balloon-1", "fast+balloon-2"], balloon_every=1)
    before = {g.name: g.balloon for g in first}
    after = {g.name: g.balloon for g in second}
    b1, b2 = before["lab-memleak"], after["lab-memleak"]
    assert b1 is not None and b2 is not None
    assert b1.usable_bytes is not None and b2.usable_bytes is not None
    assert b1.last_update_s is not None and b2.last_update_s is not None
    assert b2.last_update_s > b1.last_update_s
    assert b2.usable_bytes < b1.usable_bytes
    idle1, idle2 = before["lab-idle"], after["lab-idle"]
    assert idle1 is not None and idle2 is not None
    assert idle2.usable_bytes == idle1.usable_bytes


def test_nested_capture_linux_guests_under_kvm_with_balloon(lv: ModuleType) -> None:
    """getAllDomainStats on an SVM host: every Linux guest is `type='kvm'` with KVM's
    binary stats (exits, halt polling) and its balloon's guest memory stats."""
    capture = Capture(NESTED_CAPTURE)
    first, second = replay(capture, ["fast+balloon-1", "fast+balloon-2"], balloon_every=1)
    guests = {g.name: g for g in first}
    later = {g.name: g for g in second}
    assert len(guests) == 10 and all(g.accel == "kvm" for g in guests.values())
    for name, g in guests.items():
        kvm = g.vcpus[0].kvm
        assert kvm["exits.sum"] > 0 and kvm["halt_exits.sum"] > 0, name
        assert "halt_successful_poll.sum" in kvm and "halt_poll_fail_ns.sum" in kvm, name
        assert later[name].vcpus[0].kvm["exits.sum"] > kvm["exits.sum"], name
        assert g.vcpus[0].delay_ns is not None, name
        if name.startswith("lab-probe"):
            assert g.balloon is None or g.balloon.usable_bytes is None, name
            continue
        b = g.balloon
        assert b is not None and b.usable_bytes is not None and b.last_update_s, name
        assert b.available_bytes is not None and b.usable_bytes < b.available_bytes, name
    idle = guests["lab-idle"].vcpus[0].kvm
    assert (idle["exits.sum"], idle["halt_exits.sum"], idle["io_exits.sum"]) == (
        111518,
        21674,
        38239,
    )
    # The leaking guest's usable memory falls between the two balloon reads (5 s).
    b1, b2 = guests["lab-memleak"].balloon, later["lab-memleak"].balloon
    assert b1 is not None and b2 is not None
    assert b1.usable_bytes is not None and b2.usable_bytes is not None
    assert b2.usable_bytes < b1.usable_bytes
    info = LibvirtCollector(
        root=capture.path, open_fn=opener(FakeConnection([capture.records("fast-1")]))[0]
    )
    by_name = {g.name: g for g in info.collect(0)}
    leak = info.domain_info(by_name["lab-memleak"].uuid)
    assert leak is not None and (leak.accel, leak.memballoon_model, leak.balloon_period_s) == (
        "kvm",
        "virtio",
        2,
    )


def test_capture_domain_xml_facts(lv: ModuleType, capture: Capture) -> None:
    conn = FakeConnection([capture.records("fast-1")])
    open_fn, _ = opener(conn)
    collector = LibvirtCollector(root=capture.path, open_fn=open_fn)
    guests = {g.name: g for g in collector.collect(0)}
    infos = {name: collector.domain_info(g.uuid) for name, g in guests.items()}
    for name, info in infos.items():
        assert info is not None
        if info.accel == "kvm":
            assert info.memballoon_model == "none"
            assert info.max_memory_bytes == 16 << 20
        else:
            assert info.accel == "tcg"
            assert (info.memballoon_model, info.balloon_period_s) == ("virtio", 2)
            assert info.interfaces and info.interfaces[0].target == guests[name].nics[0].name
        assert info.disks[0].source == guests[name].disks[0].path
    ovs = infos["lab-ovs"]
    assert ovs is not None
    assert ovs.interfaces[0].virtualport == "openvswitch"
    assert ovs.interfaces[0].bridge


# --------------------------------------------------------------------------- live lab


@pytest.mark.lab
@pytest.mark.nested
def test_live_lab_read_only(lv: ModuleType, lab: Lab) -> None:
    """Against the real qemu:///system with the lab up (the `lab` fixture brings it
    up, or skips saying why).

    Read-only: opens the URI with virConnectOpenReadOnly and changes nothing.
    """
    collector = LibvirtCollector("qemu:///system")
    probe = collector.probe()
    assert probe.available, probe.reason
    try:
        first = [g for g in collector.collect(0) if g.name.startswith("lab-")]
        assert any(g.state == "running" and g.accel == "kvm" for g in first)
        second = {g.uuid: g for g in collector.collect(1)}
    finally:
        collector.close()
    assert probe.detail["hypervisor"].startswith("QEMU ")
    for g in first:
        assert g.accel in ("kvm", "tcg")
        assert g.pid is not None or g.state == "shutoff"
        later = second.get(g.uuid)
        if g.accel == "kvm" and g.state == "running" and later and later.dom_id == g.dom_id:
            assert "exits.sum" in g.vcpus[0].kvm, g.name
            # A record libvirt read without the monitor (its job held by another
            # client at that moment) has no KVM stats; one that has them only grows.
            if "exits.sum" in later.vcpus[0].kvm:
                assert later.vcpus[0].kvm["exits.sum"] >= g.vcpus[0].kvm["exits.sum"]
        if g.accel == "tcg":
            assert all(v.kvm == {} for v in g.vcpus)


def test_libvirt_errors_do_not_reach_stderr(
    lv: ModuleType, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # libvirt's default handler would print "libvirt: XML-RPC error : ..." over the TUI.
    collector = LibvirtCollector(f"qemu+unix:///system?socket={tmp_path}/absent")
    assert not collector.probe().available
    assert "libvirt:" not in capfd.readouterr().err
