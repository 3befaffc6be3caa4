"""NetProbe: address discovery, rate limiting, percentiles, reasons; the real ICMP and
TCP probers on loopback.

The ARP table is tests/fixtures/fs/lab-arp (the host while the lab ran); the host's
bridge addresses are tests/fixtures/netlink/lab-host (labbr0 10.213.1.1/24, labovs0
10.213.2.1/24); MACs are the lab's (manifest.json). Probers are fakes except in the
last tests, which probe only 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kvmtop.collectors.base import CollectorError
from kvmtop.collectors.libvirt.domxml import DomainInfo, InterfaceInfo
from kvmtop.collectors.net_addresses import LibvirtAddresses, on_link, parse_proc_net_arp
from kvmtop.collectors.netprobe import NetProbe, percentile
from kvmtop.collectors.rtt_probers import (
    SO_TIMESTAMPNS,
    IcmpProber,
    Outcome,
    TcpProber,
    icmp_checksum,
)
from kvmtop.model.sample import GuestSample, NicSample
from kvmtop.model.units import NS_PER_S

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ARP_ROOT = FIXTURES / "fs" / "lab-arp"
BRIDGES = {"labbr0": [("10.213.1.1", 24)], "labovs0": [("10.213.2.1", 24)]}
MS = 1_000_000


def test_parse_arp_capture() -> None:
    entries = parse_proc_net_arp((ARP_ROOT / "proc/net/arp").read_text())
    assert ("10.213.1.10", "52:54:00:d5:01:0a", "labbr0") in entries
    assert ("10.213.2.10", "52:54:00:d5:02:0a", "labovs0") in entries
    incomplete = (
        "IP address HW type Flags HW address Mask Device\n"
        "10.0.0.9 0x1 0x0 00:00:00:00:00:00 * br0\n"
    )
    assert parse_proc_net_arp(incomplete) == []


def test_percentile_nearest_rank() -> None:
    assert percentile([5], 50) == 5
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile(list(range(1, 21)), 95) == 19
    assert percentile([3, 1, 2], 95) == 3


def test_icmp_checksum() -> None:
    # RFC 1071 §3's example words 0001 f203 f4f5 f6f7 sum to ddf2; checksum = ~ddf2.
    assert icmp_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert icmp_checksum(b"\x08\x00\x00\x00\x00\x01\x00\x01") == 0xF7FD


@pytest.mark.parametrize(
    ("addr", "ok"),
    [
        ("10.213.1.10", True),
        ("10.213.1.1", False),  # the host itself
        ("10.213.1.0", False),  # network address
        ("10.213.1.255", False),  # broadcast
        ("10.213.2.10", False),  # another bridge's subnet
        ("192.0.2.1", False),
        ("fe80::1", False),
        ("not an address", False),
    ],
)
def test_on_link(addr: str, ok: bool) -> None:
    assert on_link(addr, BRIDGES["labbr0"]) is ok


class FakeProber:
    """Records sends; plays the outcomes a test queues for the next collect."""

    def __init__(self) -> None:
        self.sent: list[tuple[Hashable, str, int | None]] = []
        self.queued: list[Outcome] = []

    def send(self, key: Hashable, addr: str, port: int | None, now_ns: int) -> None:
        self.sent.append((key, addr, port))

    def collect(self, now_ns: int, timeout_ns: int) -> list[Outcome]:
        out, self.queued = self.queued, []
        return out

    def close(self) -> None:
        pass

    def answer(self, rtt_ns: int | None, reason: str | None = None) -> None:
        """Answer every probe sent since the last call."""
        self.queued = [Outcome(key, rtt_ns, reason) for key, _, _ in self.sent]
        self.sent = []


def guest(
    name: str, nic: str, bridge: str | None, mac: str, dom_id: int = 4
) -> tuple[GuestSample, DomainInfo]:
    g = GuestSample(
        uuid=f"uuid-{name}",
        name=name,
        dom_id=dom_id,
        state="running",
        nics=(NicSample(nic, bridge=bridge, switch="linux"),),
    )
    info = DomainInfo("qemu", "tcg", interfaces=(InterfaceInfo(nic, "bridge", mac, bridge=bridge),))
    return g, info


LAB_IDLE = guest("lab-idle", "vnet0", "labbr0", "52:54:00:D5:01:0A")
LAB_OVS = guest("lab-ovs", "vnet8", "labovs0", "52:54:00:d5:02:0a")
LAB_NET = guest("lab-net", "vnet9", "labbr0", "52:54:00:d5:01:0b")


def netprobe(
    guests: Sequence[tuple[GuestSample, DomainInfo]],
    now: list[int],
    icmp: FakeProber,
    tcp: FakeProber | None = None,
    **kwargs: Any,
) -> NetProbe:
    infos = {g.uuid: info for g, info in guests}
    return NetProbe(
        ARP_ROOT,
        domain_info=infos.get,
        bridge_addresses=lambda: BRIDGES,
        icmp=icmp,
        tcp=tcp or FakeProber(),
        clock=lambda: now[0],
        **kwargs,
    )


def nics(samples: Sequence[GuestSample]) -> dict[str, NicSample]:
    return {g.name: g.nics[0] for g in samples}


def test_arp_discovery_rate_limit_and_percentiles() -> None:
    now = [0]
    icmp = FakeProber()
    probe = netprobe([LAB_IDLE, LAB_OVS, LAB_NET], now, icmp)
    gs = [LAB_IDLE[0], LAB_OVS[0], LAB_NET[0]]
    first = nics(probe.enrich(gs))
    assert first["lab-idle"].addr == "10.213.1.10"  # MAC matched case-insensitively
    assert first["lab-ovs"].addr == "10.213.2.10"
    assert (first["lab-idle"].rtt_ns, first["lab-idle"].rtt_reason) == (
        None,
        "first probe in flight",
    )
    # lab-net is in no ARP entry: never probed, and says why.
    assert first["lab-net"].addr is None and first["lab-net"].rtt_reason is not None
    assert "no IPv4 address known for 52:54:00:d5:01:0b" in first["lab-net"].rtt_reason
    # Two guests and the two bridges' own addresses.
    assert sorted(addr for _, addr, _ in icmp.sent) == [
        "10.213.1.1",
        "10.213.1.10",
        "10.213.2.1",
        "10.213.2.10",
    ]
    # Ticks every 2 s, each answering what was sent at the tick before; a target is
    # probed at most every 5 s: at 0, 6 and 12 s.
    guest_sends = [0]
    rtts = {2: 4 * MS, 4: 2 * MS, 6: 30 * MS, 8: 3 * MS, 10: 1 * MS, 12: 7 * MS}
    for t, rtt in rtts.items():
        icmp.queued = [
            Outcome(key, 20_000 if key[0] == "bridge" else rtt)  # type: ignore[index]
            for key, _, _ in icmp.sent
        ]
        icmp.sent = []
        now[0] = t * NS_PER_S
        out = nics(probe.enrich(gs))
        guest_sends += [t for _, addr, _ in icmp.sent if addr == "10.213.1.10"]
    assert guest_sends == [0, 6, 12]  # the t=12 probe is still in flight
    idle = out["lab-idle"]
    # Answered: the t=0 probe (4 ms, at t=2) and the t=6 probe (3 ms, at t=8).
    assert (idle.rtt_ns, idle.rtt_p95_ns, idle.host_rtt_ns) == (3 * MS, 4 * MS, 20_000)
    assert idle.rtt_lost == 0 and idle.rtt_reason is None


def test_guest_that_drops_icmp_has_no_rtt_and_a_reason() -> None:
    now = [0]
    icmp = FakeProber()
    probe = netprobe([LAB_IDLE], now, icmp, every_s=2)
    probe.enrich([LAB_IDLE[0]])
    for i in range(1, 4):
        icmp.answer(None, "no ICMP echo reply")
        now[0] = i * 2 * NS_PER_S
        (g,) = probe.enrich([LAB_IDLE[0]])
    nic = g.nics[0]
    assert nic.rtt_ns is None and nic.rtt_p95_ns is None  # unknown, never 0
    assert nic.rtt_lost == 3
    assert nic.rtt_reason is not None and nic.rtt_reason.startswith(
        "no ICMP echo reply to the last 3 probes"
    )
    # Restarted guest (new dom_id): a new target, its counters start again.
    restarted = guest("lab-idle", "vnet0", "labbr0", "52:54:00:d5:01:0a", dom_id=5)
    (g,) = probe.enrich([restarted[0]])
    assert g.nics[0].rtt_lost == 0


def test_tcp_port_instead_of_icmp() -> None:
    now = [0]
    icmp, tcp = FakeProber(), FakeProber()
    probe = netprobe([LAB_IDLE], now, icmp, tcp, tcp_ports={"lab-idle": 22})
    probe.enrich([LAB_IDLE[0]])
    assert tcp.sent == [(("uuid-lab-idle", 4, "vnet0"), "10.213.1.10", 22)]
    assert [addr for _, addr, _ in icmp.sent] == ["10.213.1.1"]  # the baseline stays ICMP
    tcp.answer(None, "TCP port 22 refused the connection")
    now[0] = 6 * NS_PER_S
    (g,) = probe.enrich([LAB_IDLE[0]])
    assert g.nics[0].rtt_reason == "TCP port 22 refused the connection"


def test_address_sources_and_safety() -> None:
    now = [0]
    icmp = FakeProber()
    libvirt = {"uuid-lab-net": {"52:54:00:d5:01:0b": ["10.213.1.11"]}}

    def addresses(uuid: str) -> Mapping[str, Sequence[str]]:
        return libvirt.get(uuid, {})

    probe = netprobe(
        [LAB_IDLE, LAB_NET, LAB_OVS],
        now,
        icmp,
        addresses=addresses,
        configured={"lab-idle": "10.213.1.99", "uuid-lab-ovs": "192.0.2.1"},
    )
    out = nics(probe.enrich([LAB_IDLE[0], LAB_NET[0], LAB_OVS[0]]))
    assert out["lab-idle"].addr == "10.213.1.99"  # configured first
    assert out["lab-net"].addr == "10.213.1.11"  # libvirt (lease/agent)
    # A configured address off the bridge's subnet is refused; ARP has an on-link one.
    assert out["lab-ovs"].addr == "10.213.2.10"
    sent = {addr for _, addr, _ in icmp.sent}
    assert "192.0.2.1" not in sent


def test_no_bridge_address_or_no_bridge() -> None:
    now = [0]
    icmp = FakeProber()
    probe = NetProbe(
        ARP_ROOT,
        domain_info={LAB_IDLE[0].uuid: LAB_IDLE[1]}.get,
        bridge_addresses=lambda: {"labovs0": [("10.213.2.1", 24)]},
        icmp=icmp,
        tcp=FakeProber(),
        clock=lambda: now[0],
    )
    direct = GuestSample("u2", "macvtap", dom_id=1, state="running", nics=(NicSample("macvtap0"),))
    out = nics(probe.enrich([LAB_IDLE[0], direct]))
    assert out["lab-idle"].rtt_reason is not None
    assert out["lab-idle"].rtt_reason.startswith("bridge labbr0 has no host IPv4 address")
    assert out["macvtap"].rtt_reason == "not on a host bridge: not probed"
    assert icmp.sent == []


def test_probe_without_icmp_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(socket, "socket", refuse)
    probe = NetProbe(ARP_ROOT, bridge_addresses=lambda: BRIDGES)
    result = probe.probe()
    assert not result.available
    assert result.reason is not None and "CAP_NET_RAW" in result.reason
    with_tcp = NetProbe(ARP_ROOT, bridge_addresses=lambda: BRIDGES, tcp_ports={"web": 80})
    assert with_tcp.probe().available


class FakeDomain:
    def __init__(self, lv: Any) -> None:
        self.lv = lv

    def interfaceAddresses(self, source: int) -> dict[str, Any]:
        if source == self.lv.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE:
            return {}
        # libvirtError takes its message from the thread's last libvirt error when
        # there is one (an earlier test's): clear it first.
        self.lv.virResetLastError()
        raise self.lv.libvirtError("operation forbidden: read only access prevents it")


def test_libvirt_addresses_read_only_agent() -> None:
    lv = pytest.importorskip("libvirt")

    class Conn:
        def lookupByUUIDString(self, uuid: str) -> FakeDomain:
            return FakeDomain(lv)

    addrs = LibvirtAddresses(open_fn=lambda uri: Conn())
    assert addrs("uuid") == {}
    assert addrs.last_error is not None and "read only" in addrs.last_error

    class LeaseDomain(FakeDomain):
        def interfaceAddresses(self, source: int) -> dict[str, Any]:
            return {
                "vnet0": {
                    "hwaddr": "52:54:00:AA:BB:CC",
                    "addrs": [
                        {"type": lv.VIR_IP_ADDR_TYPE_IPV4, "addr": "192.168.122.5", "prefix": 24},
                        {"type": lv.VIR_IP_ADDR_TYPE_IPV6, "addr": "fe80::1", "prefix": 64},
                    ],
                }
            }

    class LeaseConn:
        def lookupByUUIDString(self, uuid: str) -> FakeDomain:
            return LeaseDomain(lv)

    assert LibvirtAddresses(open_fn=lambda uri: LeaseConn())("u") == {
        "52:54:00:aa:bb:cc": ["192.168.122.5"]
    }


# --------------------------------------------------------------------------- real sockets


def icmp_or_skip() -> IcmpProber:
    try:
        return IcmpProber()
    except CollectorError as e:
        pytest.skip(str(e))


def test_icmp_to_loopback() -> None:
    prober = icmp_or_skip()
    try:
        prober.send("lo", "127.0.0.1", None, time.monotonic_ns())
        out: list[Outcome] = []
        for _ in range(1000):
            out = prober.collect(time.monotonic_ns(), 10**18)
            if out:
                break
            time.sleep(0.001)
        assert len(out) == 1 and out[0].key == "lo"
        assert out[0].rtt_ns is not None and 0 < out[0].rtt_ns < 100 * MS
    finally:
        prober.close()


class FakeSocket:
    """Stands in for the raw ICMP socket: records sends, replays crafted replies."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.replies: list[tuple[bytes, list[tuple[int, int, bytes]], int, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.sent.append((data, addr))
        return len(data)

    def recvmsg(self, _size: int, _ancsize: int) -> Any:
        if not self.replies:
            raise BlockingIOError
        return self.replies.pop(0)

    def close(self) -> None:
        pass


def raw_reply(request: bytes, source: str, ident: int | None = None, kind: int = 0) -> Any:
    """An IPv4 packet (20-byte header) carrying the echo reply to `request`, received
    3 ms from now by the kernel's clock."""
    _type, code, _sum, req_ident, seq = struct.unpack_from("!BBHHH", request)
    icmp = struct.pack("!BBHHH", kind, code, 0, req_ident if ident is None else ident, seq)
    ip = bytes([0x45]) + bytes(19)
    rx = time.time_ns() + 3 * MS
    stamp = struct.pack("=qq", rx // NS_PER_S, rx % NS_PER_S)
    return ip + icmp + request[8:], [(socket.SOL_SOCKET, SO_TIMESTAMPNS, stamp)], 0, (source, 0)


def test_raw_replies_matched_on_identifier_sequence_and_source() -> None:
    prober = icmp_or_skip()
    if "raw" not in prober.mode:
        prober.close()
        pytest.skip("the unprivileged socket has no IP header and no foreign replies")
    prober._sock.close()
    fake = FakeSocket()
    prober._sock = fake  # type: ignore[assignment]
    prober.send("a", "10.213.1.10", None, time.monotonic_ns())
    prober.send("b", "10.213.1.11", None, time.monotonic_ns())
    req_a, req_b = fake.sent[0][0], fake.sent[1][0]
    assert icmp_checksum(req_a) == 0  # a valid checksum sums to zero
    fake.replies = [
        raw_reply(req_a, "10.213.1.10", kind=8),  # our own echo request, looped back
        raw_reply(req_a, "10.213.1.10", ident=(os.getpid() + 1) & 0xFFFF),  # another pinger
        raw_reply(req_b, "10.213.1.99"),  # right sequence, wrong source
        raw_reply(req_a, "10.213.1.10"),
    ]
    out = prober.collect(time.monotonic_ns(), 10 * NS_PER_S)
    assert [o.key for o in out] == ["a"]
    assert out[0].rtt_ns is not None and 2 * MS < out[0].rtt_ns < 1000 * MS
    # b was never answered: lost once older than the timeout.
    assert prober.collect(time.monotonic_ns() + 20 * NS_PER_S, 10 * NS_PER_S) == [
        Outcome("b", None, "no ICMP echo reply")
    ]


def test_tcp_handshake_rtt_and_refusal() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, not listening: RST
    prober = TcpProber()
    try:
        prober.send("open", "127.0.0.1", port, 0)
        prober.send("closed", "127.0.0.1", closed_port, 0)
        out: dict[Hashable, Outcome] = {}
        for _ in range(200):
            out.update({o.key: o for o in prober.collect(0, 10**18)})
            if len(out) == 2:
                break
            os.sched_yield()
        rtt = out["open"].rtt_ns
        assert rtt is not None and 0 < rtt < 100 * MS
        assert out["closed"] == Outcome(
            "closed", None, f"TCP port {closed_port} refused the connection"
        )
    finally:
        prober.close()
        listener.close()
        closed.close()
