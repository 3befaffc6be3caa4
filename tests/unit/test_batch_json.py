"""Batch JSON per guest: disks next to their host device, vNICs next to their switch,
uplink and RTTs, over the lab recording (tests/fixtures/recordings/README.md).

The recording is the lab's demo scenario: lab-disk throttled to 20 IOPS by
`<iotune>` (half reads, half writes), lab-net sending 1500 pps of UDP through the
Linux bridge labbr0 and its uplink veth labup0; every guest image on the host disk
vda; the OVS bridge labovs0 with its uplink veth labov0 and no guest on it. The
recording was made without RTT probing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from kvmtop.config import Settings
from kvmtop.feed.replay import ReplayFeed
from kvmtop.headless.batch import run_batch
from kvmtop.model.as_json import guest_json, snapshot_json
from kvmtop.model.as_text import snapshot_text
from kvmtop.model.rates.guest import NA_NO_PROBE, derive_guest
from kvmtop.model.rates.host import switch_uplinks
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot
from kvmtop.store.reader import StoreReader
from kvmtop.wiring import build_pipeline
from tests.records import replace

RECORDING = Path(__file__).parents[1] / "fixtures" / "recordings" / "lab-sample.kvmtop"
DISK_KEYS = {
    "target",
    "read_ms",
    "write_ms",
    "flush_ms",
    "iops",
    "host_device",
    "host_read_ms",
    "host_write_ms",
    "host_util_pct",
}
NIC_KEYS = {
    "ifname",
    "bridge",
    "uplink",
    "rx_bps",
    "tx_bps",
    "rx_drops_per_s",
    "tx_drops_per_s",
    "rtt_ms",
    "rtt_p95_ms",
    "host_rtt_ms",
}
INCIDENT_KEYS = {
    "id",
    "cause",
    "kind",
    "title",
    "severity",
    "since",
    "last_bad",
    "active",
    "crossings",
    "rank",
    "eta_s",
    "guests",
    "members",
    "evidence",
    "advice",
}
MEMBER_KEYS = {
    "detector",
    "subject",
    "subject_name",
    "guest",
    "severity",
    "since",
    "message",
    "evidence",
    "active",
}


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    """The first 30 samples of the lab recording."""
    reader = StoreReader(RECORDING)
    try:
        return [s for _, s in zip(range(30), reader.iter(), strict=False)]
    finally:
        reader.close()


@pytest.fixture(scope="module")
def snap(samples: list[Sample]) -> Snapshot:
    """The snapshot of the 30th sample through the shared pipeline."""
    pipeline = build_pipeline(Settings())
    for s in samples[:-1]:
        pipeline.push(s, mode="replay")
    return pipeline.push(samples[-1], mode="replay")


def guests(snap: Snapshot) -> dict[str, dict[str, Any]]:
    """The batch JSON line of a snapshot, round-tripped through json, by guest name."""
    line = json.loads(json.dumps(snapshot_json(snap)))
    return {g["name"]: g for g in line["guests"]}


def test_every_guest_has_the_disk_and_nic_schema(snap: Snapshot) -> None:
    for name, g in guests(snap).items():
        assert g["disks"], name
        for d in g["disks"]:
            assert d.keys() >= DISK_KEYS, name
        for n in g["nics"]:
            assert n.keys() >= NIC_KEYS, name
        assert "net_rtt_ms" in g


def test_throttled_disk_against_its_host_device(snap: Snapshot) -> None:
    (disk,) = guests(snap)["lab-disk"]["disks"]
    assert disk["target"] == "vda" and disk["host_device"] == "vda"
    # <iotune> total_iops_sec 20: QEMU's throttle holds the guest to 20 requests/s
    # and each waits for its slot, so the guest sees tens of ms per request.
    assert disk["iops"] == pytest.approx(20, abs=2)
    assert disk["read_ms"] > 20 and disk["write_ms"] > 20
    host_vda = snap.host.disk("vda")
    assert host_vda is not None
    assert disk["host_util_pct"] == pytest.approx(host_vda.util_pct, abs=1e-3)
    # The host device did no reads in this interval: its latency is unknown (null),
    # never 0, and neither is the guest's flush latency (no flushes).
    assert host_vda.read_iops == 0 and disk["host_read_ms"] is None
    assert disk["flush_ms"] is None


def test_vnic_on_the_linux_bridge_and_its_uplink(snap: Snapshot) -> None:
    (nic,) = guests(snap)["lab-net"]["nics"]
    assert (nic["ifname"], nic["bridge"], nic["switch"]) == ("vnet5", "labbr0", "linux")
    assert nic["uplink"] == "labup0" and nic["uplinks"] == ["labup0"]
    # 1500 pps x 1200-byte payloads (UDP/IP/Ethernet headers on top): about 15 Mb/s,
    # the guest's transmit side.
    assert nic["tx_bps"] == pytest.approx(14.9e6, rel=0.1)


def test_findings_carry_their_cause(snap: Snapshot) -> None:
    """The lab's two guests pinned to CPU 1 share one cause and name each other; the
    throttled disk's latency is above its host device (docs/detectors.md#incidents)."""
    line = json.loads(json.dumps(snapshot_json(snap)))
    causes = {
        (f["detector"], f["guest"]): (f["cause"], f["cause_guests"]) for f in line["findings"]
    }
    pinned = ("pinning:cpu=1", ["lab-steal-a", "lab-steal-b"])
    assert causes["steal", "lab-steal-a"] == causes["steal", "lab-steal-b"] == pinned
    cause, _ = causes["disk_latency", "lab-disk"]
    assert cause.startswith("disk-above-device:")
    assert causes["overcommit", None] == ("overcommit:host", [])


def test_incidents_group_the_findings_by_cause_in_rank_order(snap: Snapshot) -> None:
    """The pair pinned to CPU 1 is one incident; every finding is an active member of
    exactly one incident (docs/detectors.md#incidents)."""
    line = json.loads(json.dumps(snapshot_json(snap)))
    incidents = line["incidents"]
    assert [i["rank"] for i in incidents] == list(range(1, len(incidents) + 1))
    for i in incidents:
        assert i.keys() == INCIDENT_KEYS, i["cause"]
        assert all(m.keys() == MEMBER_KEYS for m in i["members"]), i["cause"]
    pinned = next(i for i in incidents if i["cause"] == "pinning:cpu=1")
    assert (pinned["kind"], pinned["severity"], pinned["active"]) == ("pinning", "critical", True)
    assert pinned["guests"] == ["lab-steal-a", "lab-steal-b"]
    assert [(m["detector"], m["guest"]) for m in pinned["members"]] == [
        ("steal", "lab-steal-a"),
        ("steal", "lab-steal-b"),
    ]
    assert pinned["evidence"]["steal_max_pct"] > 40 and "<vcpupin>" in pinned["advice"]
    assert pinned["since"] <= pinned["last_bad"] == pytest.approx(line["time"], abs=1e-3)
    members = [
        (m["detector"], m["subject"]) for i in incidents for m in i["members"] if m["active"]
    ]
    assert sorted(members) == sorted((f["detector"], f["subject"]) for f in line["findings"])


def test_text_lists_the_incidents_in_rank_order_before_the_findings(snap: Snapshot) -> None:
    first = snap.incidents[0]
    cleared = replace(snap, incidents=(first, replace(snap.incidents[1], active=False, rank=2)))
    lines = snapshot_text(cleared).splitlines()
    at = next(n for n, text in enumerate(lines) if text.startswith("incident #"))
    assert lines[at] == f"incident #1 [{first.severity}] {first.title}"
    assert lines[at + 1].startswith("incident #2 [") and lines[at + 1].endswith(" (cleared)")
    assert (
        lines[at + 2] == f"[{snap.findings[0].severity}] {snap.findings[0].subject_name}: "
        f"{snap.findings[0].message}"
    )


def test_ovs_bridge_uplink_and_no_guest_taps() -> None:
    reader = StoreReader(RECORDING)
    try:
        first = next(reader.iter())
    finally:
        reader.close()
    assert first.host is not None
    uplinks = switch_uplinks(first.host)
    assert uplinks["labovs0"] == ("labov0",)  # OVSDB ports, minus the bridge's own
    assert uplinks["labbr0"] == ("labup0",)  # vnet0..5 are guest taps


def test_rtt_unknown_without_the_probe_is_null_with_a_reason(snap: Snapshot) -> None:
    g = guests(snap)["lab-net"]
    assert g["net_rtt_ms"] is None and g["net_host_rtt_ms"] is None
    assert g["nics"][0]["rtt_ms"] is None and g["nics"][0]["host_rtt_ms"] is None
    assert g["na"]["net_rtt_ms"] == NA_NO_PROBE


# What the net probe gave on the lab (NetProbe over LibvirtCollector, 1 s apart,
# 10 ticks, 2026-11-26): lab-idle's vNIC on labbr0, and lab-ovs's before the host
# had talked to it.
PROBED_IDLE = {
    "addr": "10.213.1.10",
    "rtt_ns": 4603392,
    "rtt_p95_ns": 14450016,
    "host_rtt_ns": 42520,
    "rtt_lost": 0,
}
UNRESOLVED_OVS = (
    "no IPv4 address known for 52:54:00:d5:02:0a (libvirt lease/agent, ARP on "
    "labovs0); the host has not talked to the guest yet, or configure its address"
)


def probed(samples: list[Sample], **nic: Any) -> dict[str, Any]:
    """lab-net's batch JSON in the first sample, its vNIC carrying these probe fields."""
    g = next(g for g in samples[0].guests if g.name == "lab-net")
    g = replace(g, nics=(replace(g.nics[0], **nic),))
    return guest_json(derive_guest(None, g, 0.0, samples[0].wall_s))


def test_rtt_from_the_probe_in_ms(samples: list[Sample]) -> None:
    # The probe's figures are gauges over its own window: the first sample has them.
    j = probed(samples, **PROBED_IDLE)
    (nic,) = j["nics"]
    assert (nic["rtt_ms"], nic["rtt_p95_ms"], nic["host_rtt_ms"]) == (4.603, 14.45, 0.043)
    assert nic["addr"] == "10.213.1.10" and nic["rtt_reason"] is None
    assert j["net_rtt_ms"] == 4.603 and j["net_host_rtt_ms"] == 0.043
    assert "net_rtt_ms" not in j["na"]
    assert nic["uplink"] is None  # no host given: the uplink is unknown, not guessed


def test_rtt_reason_from_the_probe(samples: list[Sample]) -> None:
    j = probed(samples, rtt_reason=UNRESOLVED_OVS)
    assert j["net_rtt_ms"] is None and j["nics"][0]["rtt_ms"] is None
    assert j["na"]["net_rtt_ms"] == UNRESOLVED_OVS


def test_replay_batch_prints_the_schema() -> None:
    # `kvmtop replay FILE --batch --format json`: the replay feed through run_batch.
    feed = ReplayFeed(StoreReader(RECORDING), build_pipeline(Settings()))
    out = io.StringIO()
    try:
        printed = run_batch(feed, out, count=3, fmt="json", sleep=lambda _s: None)
    finally:
        feed.close()
    assert printed == 3
    line = json.loads(out.getvalue().splitlines()[-1])
    net = next(g for g in line["guests"] if g["name"] == "lab-net")
    assert net["nics"][0]["uplink"] == "labup0"
    assert net["disks"][0]["host_device"] == "vda"
