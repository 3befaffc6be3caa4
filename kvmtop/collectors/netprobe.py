"""Opt-in network round-trip time to each guest, next to the host's own baseline.

Layer: collectors (I/O). Probing sends packets, so this enricher is off unless the
user asks for it; when on it only ever probes:
- a guest vNIC's IPv4 address as the operator configured it, as libvirt reports it
  (`virDomainInterfaceAddresses`, sources LEASE and AGENT), or as the host's ARP
  table has it (/proc/net/arp: the entry on the vNIC's own bridge with the vNIC's
  MAC; this is what libvirt's ARP source reads too, virArpTableGet, without the
  RPC);
- and only when that address is on-link in the subnet of the host's own address on
  the vNIC's bridge (so a probe never leaves through a route);
- the host's own address on that bridge, as the baseline (the host stack without
  the guest and its vNIC path).

At most one probe per vNIC (and per bridge) every `every_s` seconds (5 by default).
A probe is an ICMP echo (an unprivileged ICMP socket where net.ipv4.ping_group_range
admits kvmtop's group, else a raw socket, which needs CAP_NET_RAW), or a TCP connect
to a port configured for guests that drop ICMP. Nothing blocks the tick: probes are
sent during one `enrich()` and their answers collected at the next. ICMP replies
carry the kernel's receive time (SO_TIMESTAMPNS); a TCP probe reads the kernel's
handshake RTT (TCP_INFO tcpi_rtt), so the delay until collection does not count.

Per vNIC the sample gets the median and 95th percentile of the answered probes in
the last `window` probes (12: one minute at 5 s), the cumulative count of probes
without an answer, and, when no probe in the window was answered, RTT unknown with
the reason (never 0). Never imports textual.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import os
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from kvmtop.collectors import rtnetlink
from kvmtop.collectors.base import CollectorError, Probe
from kvmtop.collectors.host import read_text
from kvmtop.collectors.libvirt.connect import import_libvirt
from kvmtop.collectors.libvirt.domxml import DomainInfo
from kvmtop.model.sample import GuestSample, NicSample

# include/uapi/asm-generic/socket.h: SO_TIMESTAMPNS_OLD (the 64-bit struct timespec
# form on x86_64 and arm64); Python's socket module does not export it.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("=qq")
# include/uapi/linux/icmp.h
_ICMP_ECHO_REPLY = 0
_ICMP_ECHO = 8
_ICMP = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_PAYLOAD = b"kvmtop-rtt-probe"
# include/uapi/linux/tcp.h struct tcp_info: tcpi_rtt (µs, smoothed; after the
# handshake it is the SYN/SYN-ACK sample) follows 8 u8 fields and 15 u32 fields.
_TCPI_RTT_OFFSET = 68
# include/uapi/linux/if_arp.h: ATF_COM, a resolved ARP entry.
_ATF_COM = 0x2


# --------------------------------------------------------------------------- parsers


def parse_proc_net_arp(text: str) -> list[tuple[str, str, str]]:
    """(IPv4 address, MAC, device) of the resolved entries of /proc/net/arp.

    Columns (net/ipv4/arp.c arp_seq_show): IP address, HW type, Flags (hex), HW
    address, Mask, Device. Entries without ATF_COM are still being resolved.
    """
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6:
            continue
        try:
            flags = int(fields[2], 16)
        except ValueError:
            continue
        if flags & _ATF_COM:
            out.append((fields[0], fields[3].lower(), fields[5]))
    return out


def percentile(values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def icmp_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def on_link(addr: str, host_addrs: Sequence[tuple[str, int]]) -> bool:
    """Whether `addr` is a unicast address in the subnet of one of `host_addrs`
    (address, prefix length), other than the host's own address."""
    try:
        ip = ipaddress.IPv4Address(addr)
    except ValueError:
        return False
    for host, prefix in host_addrs:
        net = ipaddress.IPv4Interface(f"{host}/{prefix}").network
        if ip in net and ip != ipaddress.IPv4Address(host):
            small = net.prefixlen >= 31  # RFC 3021: no network or broadcast address
            if small or ip not in (net.network_address, net.broadcast_address):
                return True
    return False


# --------------------------------------------------------------------------- probers


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one probe: an RTT, or None with why (no answer, refused)."""

    key: Hashable
    rtt_ns: int | None
    reason: str | None = None


class Prober(Protocol):
    """Sends probes and later collects what became of them, without blocking."""

    def send(self, key: Hashable, addr: str, port: int | None, now_ns: int) -> None:
        """Start one probe of `addr` (`port` for TCP) at monotonic time `now_ns`."""
        ...

    def collect(self, now_ns: int, timeout_ns: int) -> list[Outcome]:
        """Answers that arrived, and probes sent more than `timeout_ns` before
        `now_ns` (same clock as `send`) as lost."""
        ...

    def close(self) -> None:
        """Release sockets."""
        ...


@dataclass(slots=True)
class _Pending:
    key: Hashable
    addr: str
    sent_mono_ns: int
    sent_wall_ns: int
    sock: socket.socket | None = None
    port: int | None = None


class IcmpProber:
    """ICMP echo over one socket for every target.

    An unprivileged ICMP socket (SOCK_DGRAM, IPPROTO_ICMP; net/ipv4/ping.c) where
    net.ipv4.ping_group_range admits the process's group: the kernel picks the echo
    identifier and delivers only our replies, without the IP header. Else a raw
    socket (needs CAP_NET_RAW): it sees every ICMP packet with its IP header, so
    replies are matched on identifier, sequence and source address.
    """

    def __init__(self) -> None:
        """Open the socket.

        Raises:
            CollectorError: neither kind of ICMP socket may be opened.
        """
        try:
            self._sock = socket.socket(
                socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP
            )
            self.mode = "unprivileged ICMP socket (net.ipv4.ping_group_range)"
            self._raw = False
        except OSError as dgram_error:
            try:
                self._sock = socket.socket(
                    socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP
                )
            except OSError as raw_error:
                raise CollectorError(
                    "no ICMP socket: net.ipv4.ping_group_range excludes group "
                    f"{os.getgid()} ({dgram_error.strerror}) and a raw socket needs "
                    f"CAP_NET_RAW ({raw_error.strerror})"
                ) from raw_error
            self.mode = "raw ICMP socket (CAP_NET_RAW)"
            self._raw = True
        self._sock.setblocking(False)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._ident = os.getpid() & 0xFFFF
        self._seq = 0
        self._pending: dict[int, _Pending] = {}

    def send(self, key: Hashable, addr: str, port: int | None, now_ns: int) -> None:
        """Send one echo request to `addr` (`port` is ignored)."""
        self._seq = (self._seq + 1) & 0xFFFF
        header = _ICMP.pack(_ICMP_ECHO, 0, 0, self._ident, self._seq)
        packet = (
            _ICMP.pack(_ICMP_ECHO, 0, icmp_checksum(header + _PAYLOAD), self._ident, self._seq)
            + _PAYLOAD
        )
        pending = _Pending(key, addr, now_ns, time.time_ns())
        try:
            self._sock.sendto(packet, (addr, 0))
        except OSError:
            pending.sent_mono_ns = -(1 << 62)  # unreachable now (no route, no ARP): lost
        self._pending[self._seq] = pending

    def collect(self, now_ns: int, timeout_ns: int) -> list[Outcome]:
        """Drain the replies; expire the unanswered."""
        out = []
        while True:
            try:
                data, ancdata, _flags, source = self._sock.recvmsg(2048, 256)
            except (BlockingIOError, InterruptedError):
                break
            reply = self._match(data, source[0])
            if reply is None:
                continue
            rx_ns = _rx_time(ancdata)
            rtt = rx_ns - reply.sent_wall_ns if rx_ns is not None else None
            if rtt is not None and 0 <= rtt <= timeout_ns:  # a clock step voids it
                out.append(Outcome(reply.key, rtt))
        for seq, p in list(self._pending.items()):
            if now_ns - p.sent_mono_ns > timeout_ns:
                del self._pending[seq]
                out.append(Outcome(p.key, None, "no ICMP echo reply"))
        return out

    def _match(self, data: bytes, source: str) -> _Pending | None:
        """The pending probe a received packet answers, removed from the table."""
        offset = (data[0] & 0x0F) * 4 if self._raw and data else 0  # IPv4 IHL
        if len(data) < offset + _ICMP.size:
            return None
        kind, code, _sum, ident, seq = _ICMP.unpack_from(data, offset)
        if kind != _ICMP_ECHO_REPLY or code != 0 or (self._raw and ident != self._ident):
            return None
        pending = self._pending.get(seq)
        if pending is None or pending.addr != source:
            return None
        del self._pending[seq]
        return pending

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def _rx_time(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel receive time (CLOCK_REALTIME ns) from an SCM_TIMESTAMPNS message."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec: int
            nsec: int
            sec, nsec = _TIMESPEC.unpack_from(data)
            return sec * 1_000_000_000 + nsec
    return None


class TcpProber:
    """TCP connect probes: the handshake RTT the kernel measured (TCP_INFO).

    Each probe is a non-blocking connect; when it has completed, tcpi_rtt (µs) is
    the SYN → SYN-ACK round trip (tcp_synack_rtt_meas seeds srtt). The connection is
    then reset (SO_LINGER 0), so no TIME_WAIT piles up on the host. A refused
    connection (RST) is an answer without an RTT: the reason says so.
    """

    def __init__(self) -> None:
        """No socket until the first probe."""
        self._pending: list[_Pending] = []

    def send(self, key: Hashable, addr: str, port: int | None, now_ns: int) -> None:
        """Start a connect to `addr`:`port`."""
        if port is None:
            raise ValueError("a TCP probe needs a port")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        pending = _Pending(key, addr, now_ns, time.time_ns(), sock, port)
        code = sock.connect_ex((addr, port))
        if code not in (0, errno.EINPROGRESS):
            pending.sent_mono_ns = -(1 << 62)  # failed at once (no route): reported lost
        self._pending.append(pending)

    def collect(self, now_ns: int, timeout_ns: int) -> list[Outcome]:
        """Completed connects give an RTT or a refusal; the rest expire."""
        out = []
        socks = [p.sock for p in self._pending if p.sock is not None]
        _, writable, _ = select.select([], socks, [], 0) if socks else ([], [], [])
        done = set(writable)
        keep = []
        for p in self._pending:
            assert p.sock is not None
            if p.sock in done:
                code = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    info = p.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
                    (rtt_us,) = struct.unpack_from("=I", info, _TCPI_RTT_OFFSET)
                    out.append(Outcome(p.key, rtt_us * 1_000))
                elif code == errno.ECONNREFUSED:
                    out.append(Outcome(p.key, None, f"TCP port {p.port} refused the connection"))
                else:
                    out.append(Outcome(p.key, None, f"TCP connect: {os.strerror(code)}"))
            elif now_ns - p.sent_mono_ns > timeout_ns:
                out.append(Outcome(p.key, None, f"no answer on TCP port {p.port}"))
            else:
                keep.append(p)
                continue
            p.sock.close()
        self._pending = keep
        return out

    def close(self) -> None:
        """Abort every connect in flight."""
        for p in self._pending:
            if p.sock is not None:
                p.sock.close()
        self._pending = []


# --------------------------------------------------------------------------- addresses


class LibvirtAddresses:
    """Guest IPv4 addresses by MAC from `virDomainInterfaceAddresses`.

    Sources LEASE (libvirt's dnsmasq leases: guests on a libvirt network) and AGENT
    (qemu-guest-agent; libvirt allows it only on a read-write connection, so on the
    default read-only one it answers "read only access prevents ..."). The ARP
    source is not asked: the prober reads the same kernel table itself.
    """

    def __init__(self, uri: str | None = "qemu:///system", open_fn: Any = None) -> None:
        """Remember how to connect; the connection opens on first use."""
        self._uri = uri
        self._open_fn = open_fn
        self._conn: Any = None
        self.last_error: str | None = None
        """Why the last lookup found nothing, when an error said so."""

    def __call__(self, uuid: str) -> dict[str, list[str]]:
        """MAC (lower case) → IPv4 addresses of domain `uuid`; {} when none known."""
        lv = import_libvirt()
        if lv is None:
            self.last_error = "libvirt-python not installed"
            return {}
        out: dict[str, list[str]] = {}
        try:
            if self._conn is None:
                self._conn = (self._open_fn or lv.openReadOnly)(self._uri)
            dom = self._conn.lookupByUUIDString(uuid)
        except lv.libvirtError as e:
            self._conn = None
            self.last_error = str(e)
            return {}
        for source in (
            lv.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            lv.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
        ):
            try:
                found = dom.interfaceAddresses(source)
            except lv.libvirtError as e:
                self.last_error = str(e)
                continue
            for info in (found or {}).values():
                mac = str(info.get("hwaddr") or "").lower()
                for a in info.get("addrs") or []:
                    if a.get("type") == lv.VIR_IP_ADDR_TYPE_IPV4 and mac:
                        out.setdefault(mac, []).append(str(a["addr"]))
            if out:
                break
        return out


def host_bridge_addresses() -> dict[str, list[tuple[str, int]]]:
    """Interface name → its IPv4 (address, prefix length), from one rtnetlink dump.

    Raises:
        OSError: netlink unavailable.
    """
    out: dict[str, list[tuple[str, int]]] = {}
    for a in rtnetlink.ipv4_addresses():
        with contextlib.suppress(OSError):  # the interface went away meanwhile
            out.setdefault(socket.if_indextoname(a.ifindex), []).append((a.address, a.prefixlen))
    return out


# --------------------------------------------------------------------------- enricher


@dataclass(slots=True)
class _Target:
    """One probed thing: a guest vNIC or a bridge's own address.

    Attributes:
        addr: the address probed (None while unknown).
        source: where `addr` came from ("configured", "libvirt", "arp"), or why
            there is none.
        resolved_ns / last_sent_ns: when the address was looked up / last probed.
        results: the last `window` outcomes, RTT ns or None for no answer.
        lost: probes without an answer since the guest started (cumulative).
        reason: why the last unanswered probe failed.
    """

    addr: str | None = None
    source: str | None = None
    resolved_ns: int | None = None
    last_sent_ns: int | None = None
    results: deque[int | None] = field(default_factory=deque)
    lost: int = 0
    reason: str | None = None


class NetProbe:
    """Per-vNIC RTT with the bridge baseline (see the module docstring).

    Args:
        root: directory holding `proc/` (for /proc/net/arp).
        domain_info: uuid → parsed domain XML (`LibvirtCollector.domain_info`), for
            each vNIC's MAC; without it only configured addresses are probed.
        addresses: uuid → {MAC: [IPv4]} from libvirt (`LibvirtAddresses`), or None.
        configured: guest name or UUID → IPv4 address, from the user's config.
        tcp_ports: guest name or UUID → TCP port to connect to instead of ICMP.
        every_s: seconds between two probes of one target (at least 1).
        window: probes kept per target for the percentiles.
        timeout_s: a probe unanswered this long is lost.
        resolve_every_s: how often a vNIC's address is looked up again.
        bridge_addresses: interface → host IPv4 addresses (netlink by default).
        icmp / tcp: the probers (tests pass fakes); ICMP opens on first use.
        clock: monotonic clock in ns.
    """

    name = "netprobe"

    def __init__(
        self,
        root: Path = Path("/"),
        *,
        domain_info: Callable[[str], DomainInfo | None] | None = None,
        addresses: Callable[[str], Mapping[str, Sequence[str]]] | None = None,
        configured: Mapping[str, str] | None = None,
        tcp_ports: Mapping[str, int] | None = None,
        every_s: float = 5.0,
        window: int = 12,
        timeout_s: float = 3.0,
        resolve_every_s: float = 30.0,
        bridge_addresses: Callable[[], Mapping[str, Sequence[tuple[str, int]]]] = (
            host_bridge_addresses
        ),
        icmp: Prober | None = None,
        tcp: Prober | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._arp_path = str(root).rstrip("/") + "/proc/net/arp"
        self._domain_info = domain_info
        self._addresses = addresses
        self._configured = dict(configured or {})
        self._tcp_ports = dict(tcp_ports or {})
        self._every_ns = int(max(1.0, every_s) * 1e9)
        self._window = max(1, window)
        self._timeout_ns = int(timeout_s * 1e9)
        self._resolve_ns = int(resolve_every_s * 1e9)
        self._bridge_addresses = bridge_addresses
        self._icmp = icmp
        self._tcp = tcp or TcpProber()
        self._clock = clock
        self._targets: dict[Hashable, _Target] = {}
        self._seen: set[Hashable] = set()
        self._icmp_mode = "injected" if icmp is not None else None
        self._icmp_error: str | None = None
        self._bridges: Mapping[str, Sequence[tuple[str, int]]] = {}
        self._bridges_ns: int | None = None
        self._arp: list[tuple[str, str, str]] | None = None

    def paths_read(self) -> list[str]:
        """Glob patterns (relative to root) of every file this collector reads."""
        return ["proc/net/arp"]

    def probe(self) -> Probe:
        """Open the ICMP socket; say how probing will be done."""
        detail = {"every_s": f"{self._every_ns / 1e9:g}", "window": str(self._window)}
        if self._icmp_prober() is None:
            assert self._icmp_error is not None
            if not self._tcp_ports:
                return Probe(self.name, False, self._icmp_error, detail)
            detail["icmp"] = self._icmp_error
            return Probe(self.name, True, "ICMP unavailable; TCP probes only", detail)
        detail["icmp"] = self._icmp_mode or ""
        return Probe(self.name, True, None, detail)

    def close(self) -> None:
        """Close the probe sockets."""
        if self._icmp is not None:
            self._icmp.close()
        self._tcp.close()

    def _icmp_prober(self) -> Prober | None:
        """The ICMP prober, opened on first use; None (and `_icmp_error`) when the
        process may open no ICMP socket."""
        if self._icmp is None and self._icmp_error is None:
            try:
                prober = IcmpProber()
            except CollectorError as e:
                self._icmp_error = str(e)
                return None
            self._icmp, self._icmp_mode = prober, prober.mode
        return self._icmp

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        """Collect answers, send the probes that are due, fill the RTT fields."""
        now = self._clock()
        icmp = self._icmp_prober()
        for prober in (icmp, self._tcp):
            if prober is None:
                continue
            for outcome in prober.collect(now, self._timeout_ns):
                target = self._targets.get(outcome.key)
                if target is not None:
                    self._record(target, outcome)
        if self._bridges_ns is None or now - self._bridges_ns >= self._resolve_ns:
            # Host addresses change rarely: looked up on the address refresh period.
            try:
                self._bridges = self._bridge_addresses()
            except OSError as e:
                raise CollectorError(f"host addresses unavailable (rtnetlink): {e}") from e
            self._bridges_ns = now
        self._arp = None  # read at most once per tick, and only when an address is due
        self._seen = set()
        out = []
        for g in guests:
            if g.state != "running" or not g.nics:
                out.append(g)
                continue
            macs = self._macs(g)
            nics = []
            for nic in g.nics:
                key = (g.uuid, g.dom_id, nic.name)
                self._seen.add(key)
                target = self._targets.setdefault(key, _Target())
                nics.append(self._nic(g, nic, target, macs.get(nic.name), now))
            out.append(replace(g, nics=tuple(nics)))
        for gone in self._targets.keys() - self._seen:
            del self._targets[gone]
        return tuple(out)

    def _record(self, target: _Target, outcome: Outcome) -> None:
        if len(target.results) == self._window:
            target.results.popleft()
        target.results.append(outcome.rtt_ns)
        if outcome.rtt_ns is None:
            target.lost += 1
            target.reason = outcome.reason

    def _macs(self, g: GuestSample) -> dict[str, str]:
        """vNIC name → MAC from the domain XML."""
        info = self._domain_info(g.uuid) if self._domain_info is not None else None
        if info is None:
            return {}
        return {i.target: i.mac.lower() for i in info.interfaces if i.target and i.mac}

    def _arp_table(self) -> list[tuple[str, str, str]]:
        """This tick's /proc/net/arp (empty when unreadable)."""
        if self._arp is None:
            try:
                self._arp = parse_proc_net_arp(read_text(self._arp_path))
            except OSError:
                self._arp = []
        return self._arp

    def _nic(
        self,
        g: GuestSample,
        nic: NicSample,
        target: _Target,
        mac: str | None,
        now: int,
    ) -> NicSample:
        if nic.bridge is None:
            return replace(nic, rtt_reason="not on a host bridge: not probed")
        host_addrs = list(self._bridges.get(nic.bridge, ()))
        if not host_addrs:
            return replace(
                nic,
                rtt_reason=f"bridge {nic.bridge} has no host IPv4 address: no baseline, "
                "and a probe would leave through a route; not probed",
            )
        if target.resolved_ns is None or now - target.resolved_ns >= self._resolve_ns:
            target.addr, target.source = self._resolve(g, mac, nic.bridge, host_addrs)
            target.resolved_ns = now
        if target.addr is None:
            return replace(nic, rtt_reason=target.source)
        port = self._tcp_ports.get(g.name, self._tcp_ports.get(g.uuid))
        prober = self._tcp if port is not None else self._icmp_prober()
        if prober is None:
            return replace(nic, addr=target.addr, rtt_reason=self._icmp_error)
        if target.last_sent_ns is None or now - target.last_sent_ns >= self._every_ns:
            target.last_sent_ns = now
            prober.send((g.uuid, g.dom_id, nic.name), target.addr, port, now)
        baseline = self._baseline(nic.bridge, host_addrs[0][0], now)
        answered = [r for r in target.results if r is not None]
        reason = None
        if not answered:
            if not target.results:
                reason = "first probe in flight"
            elif port is None:
                reason = (
                    f"no ICMP echo reply to the last {len(target.results)} probes (the guest "
                    "drops ICMP or is unreachable); configure a TCP port for it"
                )
            else:
                reason = target.reason
        return replace(
            nic,
            addr=target.addr,
            rtt_ns=percentile(answered, 50) if answered else None,
            rtt_p95_ns=percentile(answered, 95) if answered else None,
            host_rtt_ns=baseline,
            rtt_lost=target.lost,
            rtt_reason=reason,
        )

    def _resolve(
        self,
        g: GuestSample,
        mac: str | None,
        bridge: str,
        host_addrs: list[tuple[str, int]],
    ) -> tuple[str | None, str]:
        """(address, source) or (None, why not): configured, libvirt, then ARP, each
        accepted only on-link on the vNIC's bridge."""
        candidates: list[tuple[str, str]] = []
        conf = self._configured.get(g.name) or self._configured.get(g.uuid)
        if conf is not None:
            candidates.append((conf, "configured"))
        if mac is not None and self._addresses is not None:
            candidates.extend((a, "libvirt") for a in self._addresses(g.uuid).get(mac, ()))
        if mac is not None:
            candidates.extend(
                (ip, "arp") for ip, hw, dev in self._arp_table() if hw == mac and dev == bridge
            )
        for addr, source in candidates:
            if on_link(addr, host_addrs):
                return addr, source
        if candidates:
            return None, (
                f"address {candidates[0][0]} ({candidates[0][1]}) is not on {bridge}'s "
                "subnet: not probed"
            )
        if mac is None:
            return None, "no MAC known for this vNIC and no configured address"
        return None, (
            f"no IPv4 address known for {mac} (libvirt lease/agent, ARP on {bridge}); "
            "the host has not talked to the guest yet, or configure its address"
        )

    def _baseline(self, bridge: str, host_addr: str, now: int) -> int | None:
        """Median RTT to the host's own address on `bridge`, probing it when due."""
        key = ("bridge", bridge)
        self._seen.add(key)
        target = self._targets.setdefault(key, _Target(addr=host_addr))
        icmp = self._icmp_prober()
        if icmp is None:
            return None
        if target.last_sent_ns is None or now - target.last_sent_ns >= self._every_ns:
            target.last_sent_ns = now
            icmp.send(key, host_addr, None, now)
        answered = [r for r in target.results if r is not None]
        return percentile(answered, 50) if answered else None
