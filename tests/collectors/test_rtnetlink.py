"""rtnetlink parsers against dumps captured on the project's machine.

tests/fixtures/netlink/shaped-netns is a private namespace with a tbf that dropped
and an htb with a backlog; lab-host is the host namespace while the lab ran (every
root qdisc idle). Each directory has the `tc -s qdisc show` / `ip -4 addr` text of
the same moment.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from kvmtop.collectors import rtnetlink
from kvmtop.collectors.rtnetlink import Ipv4Address, NetlinkError, QdiscStats

NETLINK = Path(__file__).resolve().parents[1] / "fixtures" / "netlink"
SHAPED = NETLINK / "shaped-netns"
LAB = NETLINK / "lab-host"


def test_shaped_namespace_root_qdiscs() -> None:
    qdiscs = rtnetlink.parse_root_qdiscs((SHAPED / "qdisc.bin").read_bytes())
    # ip-link.txt: 1 lo, 2 capb, 3 capa (tbf), 4 capd, 5 capc (htb + ingress).
    assert qdiscs == {
        1: QdiscStats(1, "noqueue", 0, 0),
        2: QdiscStats(2, "noqueue", 0, 0),
        3: QdiscStats(3, "tbf", 2972, 0),  # tc.txt: "dropped 2972"
        4: QdiscStats(4, "noqueue", 0, 0),
        5: QdiscStats(5, "htb", 0, 70856),  # draining when dumped; the ingress is left out
    }
    assert "dropped 2972" in (SHAPED / "tc.txt").read_text()


def test_lab_host_root_qdiscs_match_tc() -> None:
    qdiscs = rtnetlink.parse_root_qdiscs((LAB / "qdisc.bin").read_bytes())
    tc = (LAB / "tc.txt").read_text()
    assert len(qdiscs) == tc.count(" root ")
    kinds = sorted(q.kind for q in qdiscs.values())
    assert kinds == sorted(line.split()[1] for line in tc.splitlines() if " root " in line)
    assert all(q.drops == 0 and q.backlog_bytes == 0 for q in qdiscs.values())


def test_ipv4_addresses() -> None:
    assert rtnetlink.parse_ipv4_addresses((SHAPED / "addr.bin").read_bytes()) == [
        Ipv4Address(1, "127.0.0.1", 8),
        Ipv4Address(3, "10.99.0.1", 24),
        Ipv4Address(5, "10.98.0.1", 24),
    ]
    lab = rtnetlink.parse_ipv4_addresses((LAB / "addr.bin").read_bytes())
    assert [(a.address, a.prefixlen) for a in lab] == [
        ("127.0.0.1", 8),
        ("192.0.2.2", 24),
        ("10.213.1.1", 24),
        ("10.213.2.1", 24),
    ]


def test_error_message_raises_with_errno() -> None:
    # struct nlmsgerr {int error; struct nlmsghdr msg;} as the kernel answers EPERM.
    payload = struct.pack("=i", -1) + struct.pack("=IHHII", 20, 38, 0x301, 1, 0)
    data = struct.pack("=IHHII", 16 + len(payload), rtnetlink.NLMSG_ERROR, 0, 1, 0) + payload
    with pytest.raises(NetlinkError) as err:
        rtnetlink.parse_root_qdiscs(data)
    assert err.value.errno == 1


def test_truncated_message_is_an_error() -> None:
    data = (SHAPED / "qdisc.bin").read_bytes()
    with pytest.raises(ValueError, match="truncated"):
        rtnetlink.parse_root_qdiscs(data[:40])


def test_legacy_tca_stats_only() -> None:
    """A qdisc message with TCA_STATS (struct tc_stats) but no TCA_STATS2."""
    kind = struct.pack("=HH", 4 + 4, rtnetlink.TCA_KIND) + b"tbf\0"
    stats = struct.pack("=QIIIIIII", 1000, 10, 7, 0, 0, 0, 2, 3000)
    attr = struct.pack("=HH", 4 + len(stats), rtnetlink.TCA_STATS) + stats
    tcmsg = struct.pack("=BxxxiIII", 0, 9, 0x10000, rtnetlink.TC_H_ROOT, 0)
    body = tcmsg + kind + attr
    data = struct.pack("=IHHII", 16 + len(body), rtnetlink.RTM_NEWQDISC, 2, 1, 0) + body
    assert rtnetlink.parse_root_qdiscs(data) == {9: QdiscStats(9, "tbf", 7, 3000)}


@pytest.mark.skipif(sys.platform != "linux", reason="rtnetlink is Linux only")
def test_live_dump_of_this_namespace() -> None:
    """The dump works unprivileged and finds loopback's root qdisc."""
    qdiscs = rtnetlink.root_qdiscs()
    assert qdiscs[1].kind == "noqueue"
    assert any(a.address == "127.0.0.1" for a in rtnetlink.ipv4_addresses())
