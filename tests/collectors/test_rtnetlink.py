"""rtnetlink parsers against dumps captured on the project's machine.

tests/fixtures/netlink/shaped-netns is a private namespace with a tbf that dropped
and an htb with a backlog; lab-host is the host namespace while the lab ran (every
root qdisc idle); shaping-rates is a private namespace of tbf and htb roots (its
setup.sh) with the class dump of each htb. Each directory has the `tc -s qdisc show`
/ `ip -4 addr` (and `tc class show`) text of the same moment.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmtop.collectors import rtnetlink
from kvmtop.collectors.rtnetlink import Ipv4Address, NetlinkError, QdiscStats

NETLINK = Path(__file__).resolve().parents[1] / "fixtures" / "netlink"
SHAPED = NETLINK / "shaped-netns"
LAB = NETLINK / "lab-host"
RATES = NETLINK / "shaping-rates"
REPO = Path(__file__).resolve().parents[2]


def test_shaped_namespace_root_qdiscs() -> None:
    qdiscs = rtnetlink.parse_root_qdiscs((SHAPED / "qdisc.bin").read_bytes())
    # ip-link.txt: 1 lo, 2 capb, 3 capa (tbf), 4 capd, 5 capc (htb + ingress).
    assert qdiscs == {
        1: QdiscStats(1, "noqueue", 0, 0),
        2: QdiscStats(2, "noqueue", 0, 0),
        # tc.txt: "qdisc tbf 801c: ... rate 1Mbit", "dropped 2972"
        3: QdiscStats(3, "tbf", 2972, 0, 0x801C0000, 1_000_000),
        4: QdiscStats(4, "noqueue", 0, 0),
        # Draining when dumped; the ingress is left out; an htb's rate needs its classes.
        5: QdiscStats(5, "htb", 0, 70856, 0x10000),
    }
    tc = (SHAPED / "tc.txt").read_text()
    assert "dropped 2972" in tc and "rate 1Mbit" in tc


def names(fixture: Path) -> dict[int, str]:
    """ifindex → interface name, from the fixture's `ip -o link` text."""
    out = {}
    for line in (fixture / "ip-link.txt").read_text().splitlines():
        index, name = line.split(": ")[:2]
        out[int(index)] = name.split("@")[0]
    return out


def test_shaping_rates_of_tbf_and_htb_roots() -> None:
    """setup.sh's qdiscs as the 6.18 kernel dumped them: tbf's rate from the qdisc dump,
    htb's from its class dump, 64-bit attributes above 2^32 bytes/s."""
    qdiscs = rtnetlink.parse_root_qdiscs((RATES / "qdisc.bin").read_bytes())
    by_name = {names(RATES)[i]: q for i, q in qdiscs.items()}
    assert {n: (q.kind, q.shaped_bps) for n, q in by_name.items() if q.kind != "noqueue"} == {
        "sa0": ("tbf", 12_000_000),
        "sc0": ("tbf", 40_000_000_000),  # TCA_TBF_RATE64, the u32 rate capped
        "sb0": ("htb", None),  # no class dump yet
        "sd0": ("htb", None),
        "se0": ("htb", None),
        "sf1": ("htb", None),
        "sf0": ("pfifo", None),
    }
    tc = (RATES / "tc.txt").read_text()
    assert "dev sa0 root refcnt 3 rate 12Mbit" in tc and "dev sc0 root refcnt 3 rate 40Gbit" in tc

    def capacity(name: str) -> int | None:
        q = by_name[name]
        data = (RATES / f"tclass-{q.ifindex}.bin").read_bytes()
        return rtnetlink.htb_capacity_bps(data, q.handle)

    # One top-level class "rate 20mbit ceil 30mbit": a top-level class never borrows.
    assert capacity("sb0") == 20_000_000
    # Top-level 1:1 (30/30) and 1:2 (rate 5, ceil 8); child 1:10 and the child htb's
    # own top-level class 10:1 are not the root's.
    assert capacity("sd0") == 35_000_000
    # rate 50gbit in TCA_HTB_RATE64, ceil 45gbit in TCA_HTB_CEIL64: the lower counts.
    assert capacity("se0") == 45_000_000_000
    assert capacity("sf1") is None  # an htb without classes
    classes = (RATES / "tc-class.txt").read_text()
    assert "class htb 10:1 root" in classes and "rate 50Gbit ceil 45Gbit" in classes


def test_rate64_attributes_are_in_the_capture() -> None:
    """The 40 Gbit/s tbf carries TCA_TBF_RATE64 and a capped u32 rate, so the parser's
    64-bit path is what the capture exercises."""
    for msg_type, _seq, payload in rtnetlink.messages((RATES / "qdisc.bin").read_bytes()):
        if msg_type != rtnetlink.RTM_NEWQDISC:
            continue
        attrs = rtnetlink.attributes(payload, 20)  # after struct tcmsg
        opts = rtnetlink.attributes(attrs.get(rtnetlink.TCA_OPTIONS, b""))
        if rtnetlink.TCA_TBF_RATE64 in opts:
            rate32 = struct.unpack_from("=I", opts[rtnetlink.TCA_TBF_PARMS], 8)[0]
            assert (rate32, struct.unpack("=Q", opts[rtnetlink.TCA_TBF_RATE64])[0]) == (
                0xFFFFFFFF,
                5_000_000_000,
            )
            return
    raise AssertionError("no TCA_TBF_RATE64 in the capture")


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
    # Without TCA_OPTIONS a tbf's rate is unknown.
    assert rtnetlink.parse_root_qdiscs(data) == {9: QdiscStats(9, "tbf", 7, 3000, 0x10000)}


@pytest.mark.skipif(sys.platform != "linux", reason="rtnetlink is Linux only")
def test_live_dump_of_this_namespace() -> None:
    """The dump works unprivileged and finds loopback's root qdisc."""
    qdiscs = rtnetlink.root_qdiscs()
    assert qdiscs[1].kind == "noqueue"
    assert any(a.address == "127.0.0.1" for a in rtnetlink.ipv4_addresses())


@pytest.fixture
def shaped_namespace() -> Iterator[str]:
    """A network namespace of the test's own with two shaped veth pairs, removed after."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root on Linux")
    if shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("iproute2 (ip, tc) is not installed")
    ns = f"kvmtop-test-shape-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (
            "link add v0 type veth peer name v1",
            "link add h0 type veth peer name h1",
        ):
            subprocess.run(["ip", "-n", ns, *cmd.split()], check=True)
        for cmd in (
            "qdisc add dev v0 root tbf rate 12mbit burst 32k latency 50ms",
            "qdisc add dev h0 root handle 1: htb default 10",
            "class add dev h0 parent 1: classid 1:10 htb rate 20mbit ceil 30mbit",
        ):
            subprocess.run(["tc", "-n", ns, *cmd.split()], check=True, capture_output=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def test_live_shaping_rates_in_a_namespace(shaped_namespace: str) -> None:
    """The host collector, run inside a namespace (`ip netns exec` gives it that
    namespace's /sys and /proc/net), reports the tbf and htb rates as shaped_mbps."""
    child = (
        "import json\n"
        "from kvmtop.collectors.host import HostCollector\n"
        "host = HostCollector().collect()\n"
        "print(json.dumps({n.name: [n.kind, n.shaped_mbps, n.shaped_by] for n in host.netdevs}))"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", shaped_namespace, sys.executable, "-c", child],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == {
        "lo": ["loopback", None, None],
        "v0": ["veth", 12.0, "tbf"],
        "v1": ["veth", None, None],
        "h0": ["veth", 20.0, "htb"],
        "h1": ["veth", None, None],
    }
