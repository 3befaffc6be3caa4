"""RTT probers: ICMP echo and TCP connect probes, sent without blocking and collected
later with the kernel's own timing (SO_TIMESTAMPNS receive times, TCP_INFO tcpi_rtt).

Layer: collectors (I/O: sockets). Used by `kvmtop.collectors.netprobe`, which decides
what to probe and when.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

from kvmtop.collectors.base import CollectorError
from kvmtop.model.units import NS_PER_S

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


def icmp_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


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
            return sec * NS_PER_S + nsec
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
