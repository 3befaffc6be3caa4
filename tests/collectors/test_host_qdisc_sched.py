"""HostCollector's topology facts: root qdisc drops and backlog, I/O scheduler, THP.

Trees and dumps captured on the project's machine: tests/fixtures/fs/shaped-netns and
tests/fixtures/netlink/shaped-netns are the same private network namespace at the
same moment (a tbf that dropped, an htb with a backlog); fs/lab-topology with
netlink/lab-host is the host while the lab ran.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kvmtop.collectors import rtnetlink
from kvmtop.collectors.host import HostCollector, selected_word
from kvmtop.collectors.rtnetlink import NetlinkError, QdiscStats

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SHAPED_FS = FIXTURES / "fs" / "shaped-netns"
LAB_FS = FIXTURES / "fs" / "lab-topology"


def dump(name: str) -> dict[int, QdiscStats]:
    return rtnetlink.parse_root_qdiscs((FIXTURES / "netlink" / name / "qdisc.bin").read_bytes())


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("none [mq-deadline] kyber bfq \n", "mq-deadline"),
        ("[none] mq-deadline kyber bfq\n", "none"),
        ("always [madvise] never\n", "madvise"),
        ("none\n", "none"),  # a queue without elevator support offers one choice
        ("", None),
        ("a b c\n", None),
    ],
)
def test_selected_word(text: str, word: str | None) -> None:
    assert selected_word(text) == word


def test_tbf_drops_land_in_qdisc_drops_not_in_net_dev() -> None:
    host = HostCollector(SHAPED_FS, qdiscs=lambda: dump("shaped-netns")).collect()
    nets = {n.name: n for n in host.netdevs}
    capa = nets["capa"]
    assert (capa.qdisc_drops, capa.qdisc_backlog_bytes) == (2972, 0)
    assert capa.tx_drop == 0  # /proc/net/dev never sees a qdisc drop
    assert (nets["capc"].qdisc_drops, nets["capc"].qdisc_backlog_bytes) == (0, 70856)
    assert (nets["lo"].qdisc_drops, nets["capb"].qdisc_drops) == (0, 0)
    # A bridge that is down has the noop qdisc, which a dump does not list.
    assert nets["br9"].qdisc_drops is None and nets["br9"].qdisc_backlog_bytes is None


def test_shaping_rate_becomes_shaped_mbps_with_the_qdisc_kind() -> None:
    host = HostCollector(SHAPED_FS, qdiscs=lambda: dump("shaped-netns")).collect()
    nets = {n.name: n for n in host.netdevs}
    assert (nets["capa"].shaped_mbps, nets["capa"].shaped_by) == (1.0, "tbf")  # rate 1mbit
    # The htb's rate is on its classes, which a fake tree's qdisc dump does not carry;
    # noqueue does not shape.
    assert (nets["capc"].shaped_mbps, nets["capc"].shaped_by) == (None, None)
    assert (nets["capb"].shaped_mbps, nets["lo"].shaped_by) == (None, None)
    shaped = {1: QdiscStats(1, "noqueue", 0, 0), 5: QdiscStats(5, "htb", 0, 0, 0x10000, 25_500_000)}
    host = HostCollector(SHAPED_FS, qdiscs=lambda: shaped).collect()
    capc = next(n for n in host.netdevs if n.name == "capc")
    assert (capc.shaped_mbps, capc.shaped_by) == (25.5, "htb")


def test_lab_host_qdiscs_schedulers_and_thp() -> None:
    host = HostCollector(LAB_FS, qdiscs=lambda: dump("lab-host")).collect()
    nets = {n.name: n for n in host.netdevs}
    assert nets["eth0"].qdisc_drops == 0 and nets["labup0"].qdisc_backlog_bytes == 0
    # Every interface that is up has a root qdisc; the down ones (ifb0, ifb1 and
    # OVS's ovs-netdev tap, see tc.txt) have only noop, which a dump does not list.
    assert {n.name for n in host.netdevs if n.qdisc_drops is None} == {
        "ifb0",
        "ifb1",
        "ovs-netdev",
    }
    assert all(n.qdisc_drops == 0 for n in host.netdevs if n.qdisc_drops is not None)
    disks = {d.name: d for d in host.blockdevs}
    assert disks["vda"].scheduler == "mq-deadline"
    assert host.thp_enabled == "madvise"


def test_fake_tree_reads_no_netlink(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> dict[int, QdiscStats]:
        raise AssertionError("a fake tree must not dump the real host's qdiscs")

    monkeypatch.setattr(rtnetlink, "root_qdiscs", fail)
    host = HostCollector(LAB_FS).collect()
    assert all(n.qdisc_drops is None for n in host.netdevs)


def test_netlink_failure_is_a_gap() -> None:
    def refused() -> dict[int, QdiscStats]:
        raise NetlinkError(1, "rtnetlink: Operation not permitted")

    collector = HostCollector(LAB_FS, qdiscs=refused)
    host = collector.collect()
    assert all(n.qdisc_drops is None for n in host.netdevs)
    assert any("RTM_GETQDISC" in gap for gap in collector.last_gaps)


def test_scheduler_switched_at_run_time_and_no_thp(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(LAB_FS, root, symlinks=True)
    collector = HostCollector(root)
    assert {d.name: d.scheduler for d in collector.collect().blockdevs}["vda"] == "mq-deadline"
    (root / "sys/block/vda/queue/scheduler").write_text("[none] mq-deadline kyber bfq\n")
    (root / "sys/kernel/mm/transparent_hugepage/enabled").unlink()
    host = collector.collect()
    assert {d.name: d.scheduler for d in host.blockdevs}["vda"] == "none"
    assert host.thp_enabled is None  # kernel without CONFIG_TRANSPARENT_HUGEPAGE
