"""VswitchCollector against OVS replies captured from the lab (tests/fixtures/ovs/lab:
OVS 3.1.0, bridge labovs0 on the userspace datapath netdev@ovs-netdev)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvmtop.collectors.base import CollectorError, Probe
from kvmtop.collectors.vswitch import (
    DatapathStats,
    VswitchCollector,
    datapath_samples,
    parse_dpctl_show,
    parse_ovsdb_ports,
)
from kvmtop.model.sample import HostSample, OvsDatapathSample, OvsPortSample
from kvmtop.sampler import Sampler

OVS = Path(__file__).resolve().parents[1] / "fixtures" / "ovs" / "lab"
OVSDB = json.loads((OVS / "ovsdb.json").read_text())
DPCTL = (OVS / "dpctl.txt").read_text()


def test_ports_with_their_bridge() -> None:
    ports, types = parse_ovsdb_ports(OVSDB)
    assert types == {"labovs0": "netdev"}
    assert [(p.name, p.bridge) for p in ports] == [
        ("labov0", "labovs0"),
        ("labovs0", "labovs0"),  # the bridge's internal port
        ("vnet8", "labovs0"),
    ]
    # The guest's tap: OVS receives what the guest sends. OVSDB lags the datapath
    # (945 here, 1162 in dpctl.txt): stats-update-interval.
    assert ports[2] == OvsPortSample(
        "vnet8",
        "labovs0",
        rx_packets=945,
        tx_packets=13,
        rx_dropped=0,
        tx_dropped=0,
        rx_errors=0,
        tx_errors=0,
    )


def test_datapath_lookups_and_bridges() -> None:
    dps = parse_dpctl_show(DPCTL)
    assert dps == [DatapathStats("netdev", "ovs-netdev", 1167, 18, 0)]
    assert datapath_samples(dps, {"labovs0": "netdev"}) == (
        OvsDatapathSample("netdev@ovs-netdev", hit=1167, missed=18, lost=0, bridges=("labovs0",)),
    )


def test_two_datapaths_and_system_default() -> None:
    """Two datapath blocks in lib/dpctl.c show_dpif's format (this machine has no
    kernel datapath, so the system one is written by hand); a bridge with an empty
    datapath_type is on the system datapath (vswitch.xml)."""
    text = (
        "system@ovs-system:\n"
        "  lookups: hit:90 missed:10 lost:3\n"
        "  flows: 2\n"
        "  masks: hit:120 total:1 hit/pkt:1.20\n"
        "  port 0: ovs-system (internal)\n"
        "netdev@ovs-netdev:\n"
        "  flows: 0\n"
    )
    dps = parse_dpctl_show(text)
    assert dps == [
        DatapathStats("system", "ovs-system", 90, 10, 3),
        DatapathStats("netdev", "ovs-netdev", None, None, None),
    ]
    result = [
        {"rows": [{"name": "br-ex", "datapath_type": "", "ports": ["uuid", "p1"]}]},
        {
            "rows": [
                {"_uuid": ["uuid", "p1"], "interfaces": ["set", [["uuid", "i1"], ["uuid", "i2"]]]}
            ]
        },
        {
            "rows": [
                {
                    "_uuid": ["uuid", "i1"],
                    "name": "eth1",
                    "statistics": ["map", [["rx_dropped", 5]]],
                },
                {"_uuid": ["uuid", "i2"], "name": "eth2", "statistics": ["map", []]},
                {"_uuid": ["uuid", "i3"], "name": "orphan", "statistics": ["map", []]},
            ]
        },
    ]
    ports, types = parse_ovsdb_ports(result)
    assert types == {"br-ex": "system"}
    # A bond port: one sample per member interface, no orphan.
    assert [(p.name, p.bridge, p.rx_dropped) for p in ports] == [
        ("eth1", "br-ex", 5),
        ("eth2", "br-ex", None),
    ]
    assert datapath_samples(dps, types)[0].bridges == ("br-ex",)


@pytest.mark.parametrize(
    "bad",
    [[], [{"rows": []}, {"rows": []}], [{"error": "unknown table"}, {"rows": []}, {"rows": []}]],
)
def test_malformed_ovsdb_reply(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_ovsdb_ports(bad)


class FakeOvs:
    """Replays the captured replies; counts calls; can play a dead ovs-vswitchd."""

    def __init__(self, vswitchd: bool = True) -> None:
        self.calls: list[tuple[str, str]] = []
        self.vswitchd = vswitchd

    def __call__(self, path: str, method: str, params: list[Any], timeout_s: float) -> Any:
        self.calls.append((Path(path).name, method))
        if method == "transact":
            assert params[0] == "Open_vSwitch"
            return OVSDB
        if not self.vswitchd:
            raise CollectorError(f"{path}: Connection refused")
        assert (method, params) == ("dpctl/show", ["-s"])
        return DPCTL


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with OVS's run directory (the sockets only need to exist)."""
    rundir = tmp_path / "var/run/openvswitch"
    rundir.mkdir(parents=True)
    (rundir / "db.sock").touch()
    (rundir / "ovs-vswitchd.pid").write_text("11873\n")
    return tmp_path


def host(mono_ns: int = 1) -> HostSample:
    return HostSample(mono_ns=mono_ns)


def test_slow_tier_carries_forward(root: Path) -> None:
    now = [0]
    rpc = FakeOvs()
    vs = VswitchCollector(root, every_s=10, rpc=rpc, clock=lambda: now[0])
    first = vs.enrich_host(host())
    assert rpc.calls == [("db.sock", "transact"), ("ovs-vswitchd.11873.ctl", "dpctl/show")]
    assert [p.name for p in first.ovs_ports] == ["labov0", "labovs0", "vnet8"]
    assert first.ovs_datapaths[0].bridges == ("labovs0",) and first.ovs_mono_ns == 0
    now[0] = 9_000_000_000
    second = vs.enrich_host(host())
    assert len(rpc.calls) == 2  # not due: the same objects, the same read time
    assert second.ovs_ports is first.ovs_ports and second.ovs_mono_ns == 0
    now[0] = 10_000_000_000
    third = vs.enrich_host(host())
    assert len(rpc.calls) == 4 and third.ovs_mono_ns == 10_000_000_000


def test_vswitchd_down_keeps_ports(root: Path) -> None:
    vs = VswitchCollector(root, rpc=FakeOvs(vswitchd=False))
    probe = vs.probe()
    assert probe.available and probe.reason is not None and "datapath" in probe.reason
    out = vs.enrich_host(host())
    assert len(out.ovs_ports) == 3 and out.ovs_datapaths == ()


def test_without_ovs(tmp_path: Path) -> None:
    vs = VswitchCollector(tmp_path, rpc=FakeOvs())
    probe = vs.probe()
    assert not probe.available
    assert probe.reason is not None and probe.reason.startswith("Open vSwitch not running")
    with pytest.raises(CollectorError):
        vs.enrich_host(host())


class Host:
    """A host source that returns a bare HostSample."""

    def probe(self) -> Probe:
        return Probe("host", True)

    def collect(self) -> HostSample:
        return host()


def test_sampler_runs_host_enrichers(root: Path, tmp_path: Path) -> None:
    vs = VswitchCollector(root, rpc=FakeOvs())
    sample = Sampler(Host(), None, host_enrichers=[vs]).sample()
    assert sample.host is not None and len(sample.host.ovs_ports) == 3
    assert [(s.name, s.ok) for s in sample.sources] == [("host", True), ("vswitch", True)]
    # Without OVS the host sample is kept and the source says why.
    absent = VswitchCollector(tmp_path / "empty", rpc=FakeOvs())
    sample = Sampler(Host(), None, host_enrichers=[absent]).sample()
    assert sample.host is not None and sample.host.ovs_ports == ()
    status = sample.sources[1]
    assert (status.name, status.ok) == ("vswitch", False)
    assert status.reason is not None and "Open vSwitch" in status.reason


def test_vswitchd_that_stops_after_start_up_shows_in_the_status(root: Path) -> None:
    """The status reason is the gaps of this tick's read, not the probe's: an
    ovs-vswitchd that stops answering after kvmtop started is named while it is down
    (the source stays ok: OVSDB still gives the ports), and no longer once it is back."""
    rpc = FakeOvs()
    sampler = Sampler(Host(), None, host_enrichers=[VswitchCollector(root, every_s=0, rpc=rpc)])
    assert sampler.sample().sources[1].reason is None
    rpc.vswitchd = False
    status = sampler.sample().sources[1]
    assert status.ok and status.reason is not None
    assert status.reason.startswith("ovs-vswitchd unreachable, datapath counters unavailable")
    rpc.vswitchd = True
    assert sampler.sample().sources[1].reason is None
