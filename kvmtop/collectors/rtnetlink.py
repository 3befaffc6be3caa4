"""A small rtnetlink client: root qdisc statistics and shaping rates, and interface
IPv4 addresses.

Layer: collectors. `dump()` is the only I/O (one NETLINK_ROUTE dump request); every
other function is a pure parser of the bytes the kernel returned, so tests run on
captured dumps (tests/fixtures/netlink/). `root_qdiscs()` makes one RTM_GETQDISC dump,
plus one RTM_GETTCLASS dump per interface whose root qdisc is htb (htb keeps its rates
on its classes, and the kernel dumps classes one interface at a time).

Why netlink and not `tc -s -j qdisc show`: there is no procfs or sysfs file with qdisc
counters, and forking `tc` (fork, exec, JSON) costs far more CPU and wall time per call
than the RTM_GETQDISC dump (figures: bench/results/measurements.md#rtnetlink-qdisc-dump-vs-tc).

Layouts are the kernel's UAPI: include/uapi/linux/netlink.h (nlmsghdr, nlmsgerr),
rtnetlink.h (tcmsg, rtattr, RTM_*), if_addr.h (ifaddrmsg, IFA_*), pkt_sched.h
(TC_H_ROOT), gen_stats.h (TCA_STATS_*, gnet_stats_queue) and pkt_sched.h/
rtnetlink.h (TCA_KIND, TCA_STATS, TCA_STATS2, struct tc_stats). All in host byte
order. The shaping parameters (TCA_OPTIONS of tbf and htb: pkt_sched.h TCA_TBF_*,
TCA_HTB_*, struct tc_tbf_qopt, tc_htb_opt, tc_ratespec) were checked against the Linux
6.1 UAPI headers (Debian 12 linux-libc-dev) and against dumps of a 6.18 kernel
(tests/fixtures/netlink/shaping-rates); the 64-bit rate attributes date from Linux 3.13.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace

NETLINK_ROUTE = 0

# include/uapi/linux/netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED (0x8000) and NLA_F_NET_BYTEORDER

# include/uapi/linux/rtnetlink.h
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWQDISC = 36
RTM_GETQDISC = 38
RTM_NEWTCLASS = 40
RTM_GETTCLASS = 42
_TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
_RTATTR = struct.Struct("=HH")  # len, type
TCA_KIND = 1
TCA_OPTIONS = 2  # nested, the qdisc's or class's own TCA_<KIND>_* attributes
TCA_STATS = 3  # struct tc_stats (the pre-2.6.14 copy, still sent)
TCA_STATS2 = 7  # nested TCA_STATS_* (gen_stats.h)
TCA_STATS_QUEUE = 3  # struct gnet_stats_queue
_GNET_STATS_QUEUE = struct.Struct("=IIIII")  # qlen, backlog, drops, requeues, overlimits
# struct tc_stats: u64 bytes; u32 packets, drops, overlimits, bps, pps, qlen, backlog
_TC_STATS = struct.Struct("=QIIIIIII")

# include/uapi/linux/pkt_sched.h: a root qdisc's parent handle (and a top-level
# class's parent); TC_H_MAJ() of a class id is its qdisc's handle.
TC_H_ROOT = 0xFFFFFFFF
TC_H_MAJ_MASK = 0xFFFF0000
# struct tc_ratespec: u8 cell_log, u8 linklayer, u16 overhead, s16 cell_align, u16 mpu,
# u32 rate (bytes/s). The kernel caps `rate` at 2^32 - 1 and sends the exact value in a
# u64 *_RATE64 / *_CEIL64 attribute when it is >= 2^32 bytes/s (net/sched/sch_tbf.c
# tbf_dump, sch_htb.c htb_dump_class).
_RATESPEC = struct.Struct("=BBHhHI")
_U64 = struct.Struct("=Q")
# tbf: TCA_TBF_PARMS holds struct tc_tbf_qopt {tc_ratespec rate, peakrate; u32 limit,
# buffer, mtu}; `rate` is the sustained rate (peakrate only bounds bursts).
TCA_TBF_PARMS = 1
TCA_TBF_RATE64 = 4
# htb (on each class): TCA_HTB_PARMS holds struct tc_htb_opt {tc_ratespec rate, ceil;
# u32 buffer, cbuffer, quantum, level, prio}.
TCA_HTB_PARMS = 1
TCA_HTB_RATE64 = 6
TCA_HTB_CEIL64 = 7

# include/uapi/linux/if_addr.h
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
IFA_ADDRESS = 1
IFA_LOCAL = 2


class NetlinkError(OSError):
    """The kernel answered a dump with an NLMSG_ERROR, or the socket failed."""


@dataclass(frozen=True, slots=True)
class QdiscStats:
    """Counters of one root qdisc (`tc -s qdisc show dev X root`).

    Attributes:
        ifindex: the interface's index (/sys/class/net/<if>/ifindex).
        kind: qdisc kind ("pfifo_fast", "tbf", "htb", "noqueue", "mq", ...).
        drops: cumulative packets dropped (gnet_stats_queue.drops). For a classful
            or multiqueue root (htb, tbf, mq) the kernel counts its children's drops
            here too (htb_enqueue/tbf_enqueue qdisc_qstats_drop(sch); mq_dump sums
            the per-queue qdiscs).
        backlog_bytes: bytes queued right now (gnet_stats_queue.backlog).
        handle: the qdisc's handle (major number in the upper 16 bits, "1:" = 0x10000).
        shaped_bps: bits per second the qdisc lets through: tbf's rate, or for htb
            the sum over its top-level classes of min(rate, ceil) (`htb_capacity_bps`);
            None for a kind that does not shape, an htb without classes, or an htb
            whose classes were not dumped (`parse_root_qdiscs` alone).
    """

    ifindex: int
    kind: str
    drops: int
    backlog_bytes: int
    handle: int = 0
    shaped_bps: int | None = None


@dataclass(frozen=True, slots=True)
class Ipv4Address:
    """One IPv4 address of an interface (`ip -4 addr`)."""

    ifindex: int
    address: str
    prefixlen: int


def dump(msg_type: int, payload: bytes, *, timeout_s: float = 1.0) -> bytes:
    """Send one NLM_F_DUMP request on a NETLINK_ROUTE socket; return the reply bytes.

    The reply is every datagram up to and including NLMSG_DONE, concatenated (each
    datagram holds whole, aligned messages, so the result parses as one stream).

    Raises:
        NetlinkError: the kernel answered NLMSG_ERROR, or the socket timed out/failed.
    """
    seq = 1
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    chunks: list[bytes] = []
    try:
        with socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        ) as sock:
            sock.settimeout(timeout_s)
            sock.bind((0, 0))
            sock.send(header + payload)
            while True:
                # 32 KiB covers a default NLMSG_GOODSIZE datagram (PAGE_SIZE, capped at
                # 8 KiB) with room to spare.
                data = sock.recv(32768)
                chunks.append(data)
                if _ends_dump(data, seq):
                    break
    except OSError as e:
        raise NetlinkError(e.errno or errno.EIO, f"rtnetlink dump {msg_type}: {e}") from e
    return b"".join(chunks)


def _ends_dump(data: bytes, seq: int) -> bool:
    """Whether a datagram ends the dump (NLMSG_DONE, or an error for our request)."""
    for msg_type, msg_seq, _ in messages(data):
        if msg_seq == seq and msg_type in (NLMSG_DONE, NLMSG_ERROR):
            return True
    return False


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload) of each netlink message in `data`.

    Raises:
        NetlinkError: an NLMSG_ERROR with a non-zero error code.
        ValueError: a truncated message.
    """
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise ValueError(f"netlink: truncated message at byte {offset} (len {length})")
        payload = data[offset + _NLMSGHDR.size : offset + length]
        if msg_type == NLMSG_ERROR:
            # struct nlmsgerr: int error (negative errno), then the request's header.
            (code,) = struct.unpack_from("=i", payload)
            if code:
                raise NetlinkError(-code, f"rtnetlink: {os.strerror(-code)}")
        yield msg_type, seq, payload
        offset += _align(length)


def attributes(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """rtattr type → value of the attributes from `offset` to the end of `data`.

    A repeated type keeps its first value; NLA_F_NESTED and NLA_F_NET_BYTEORDER are
    masked off the type.
    """
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= len(data):
        length, attr_type = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > len(data):
            break  # a truncated attribute ends the list (the kernel never sends one)
        out.setdefault(attr_type & _NLA_TYPE_MASK, data[offset + _RTATTR.size : offset + length])
        offset += _align(length)
    return out


def parse_root_qdiscs(data: bytes) -> dict[int, QdiscStats]:
    """ifindex → root qdisc counters, from an RTM_GETQDISC dump.

    Only qdiscs whose parent is TC_H_ROOT are kept (the ingress/clsact qdisc hangs off
    TC_H_INGRESS, children off a class). Drops and backlog come from TCA_STATS2 /
    TCA_STATS_QUEUE, or from the legacy TCA_STATS when a kernel sends only that. A
    tbf's rate is read from its TCA_OPTIONS; an htb's needs its classes (`root_qdiscs`).

    Raises:
        NetlinkError: the dump carried an error.
        ValueError: a truncated message.
    """
    out: dict[int, QdiscStats] = {}
    for msg_type, _seq, payload in messages(data):
        if msg_type != RTM_NEWQDISC or len(payload) < _TCMSG.size:
            continue
        _family, ifindex, handle, parent, _info = _TCMSG.unpack_from(payload)
        if parent != TC_H_ROOT:
            continue
        attrs = attributes(payload, _TCMSG.size)
        kind = attrs.get(TCA_KIND, b"").rstrip(b"\0").decode("ascii", "replace")
        queue = attributes(attrs[TCA_STATS2]).get(TCA_STATS_QUEUE) if TCA_STATS2 in attrs else None
        if queue is not None and len(queue) >= _GNET_STATS_QUEUE.size:
            _qlen, backlog, drops, _requeues, _overlimits = _GNET_STATS_QUEUE.unpack_from(queue)
        elif len(attrs.get(TCA_STATS, b"")) >= _TC_STATS.size:
            _bytes, _pkts, drops, _over, _bps, _pps, _qlen, backlog = _TC_STATS.unpack_from(
                attrs[TCA_STATS]
            )
        else:
            continue
        shaped = _tbf_rate_bps(attrs.get(TCA_OPTIONS, b"")) if kind == "tbf" else None
        out[ifindex] = QdiscStats(ifindex, kind, drops, backlog, handle, shaped)
    return out


def htb_capacity_bps(data: bytes, handle: int) -> int | None:
    """What htb qdisc `handle` lets through, in bit/s, from an RTM_GETTCLASS dump of its
    interface: the sum over its top-level classes of min(rate, ceil).

    A top-level class (parent TC_H_ROOT) has no parent to borrow from, so it never
    sends above its rate even when its ceil is higher (net/sched/sch_htb.c
    htb_activate_prios queues a class that may only borrow on its parent, and it has
    none): a class "rate 10mbit ceil 30mbit" carried 9.8 Mbit/s of a flood on a 6.18
    kernel, "rate 30mbit ceil 10mbit" 9.8 too. Top-level classes do not share tokens,
    so together they carry at most the sum. Classes of other qdiscs in the dump (a
    child htb has top-level classes of its own) are told apart by TC_H_MAJ of the
    class id. None when the qdisc has no class.

    Raises:
        NetlinkError: the dump carried an error.
        ValueError: a truncated message.
    """
    total: int | None = None
    for msg_type, _seq, payload in messages(data):
        if msg_type != RTM_NEWTCLASS or len(payload) < _TCMSG.size:
            continue
        _family, _ifindex, classid, parent, _info = _TCMSG.unpack_from(payload)
        if parent != TC_H_ROOT or classid & TC_H_MAJ_MASK != handle & TC_H_MAJ_MASK:
            continue
        attrs = attributes(payload, _TCMSG.size)
        if attrs.get(TCA_KIND, b"").rstrip(b"\0") != b"htb":
            continue
        opts = attributes(attrs.get(TCA_OPTIONS, b""))
        parms = opts.get(TCA_HTB_PARMS, b"")
        if len(parms) < 2 * _RATESPEC.size:
            continue
        rate = _rate64(opts.get(TCA_HTB_RATE64), _RATESPEC.unpack_from(parms)[-1])
        ceil = _rate64(opts.get(TCA_HTB_CEIL64), _RATESPEC.unpack_from(parms, _RATESPEC.size)[-1])
        total = (total or 0) + 8 * min(rate, ceil)
    return total


def _tbf_rate_bps(options: bytes) -> int | None:
    """A tbf's rate in bit/s from its TCA_OPTIONS; None when absent."""
    opts = attributes(options)
    parms = opts.get(TCA_TBF_PARMS, b"")
    if len(parms) < _RATESPEC.size:
        return None
    return 8 * _rate64(opts.get(TCA_TBF_RATE64), _RATESPEC.unpack_from(parms)[-1])


def _rate64(attr: bytes | None, rate32: int) -> int:
    """Bytes/s: the u64 *_RATE64 attribute when the kernel sent one, else the u32."""
    return _U64.unpack(attr)[0] if attr is not None and len(attr) == _U64.size else rate32


def parse_ipv4_addresses(data: bytes) -> list[Ipv4Address]:
    """The IPv4 addresses in an RTM_GETADDR dump (IFA_LOCAL, else IFA_ADDRESS).

    IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a
    point-to-point link and equals IFA_LOCAL elsewhere (if_addr.h).

    Raises:
        NetlinkError: the dump carried an error.
        ValueError: a truncated message.
    """
    out = []
    for msg_type, _seq, payload in messages(data):
        if msg_type != RTM_NEWADDR or len(payload) < _IFADDRMSG.size:
            continue
        family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(payload)
        if family != socket.AF_INET:
            continue
        attrs = attributes(payload, _IFADDRMSG.size)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if raw is not None and len(raw) == 4:
            out.append(Ipv4Address(index, socket.inet_ntoa(raw), prefixlen))
    return out


def qdisc_request() -> bytes:
    """The tcmsg of an RTM_GETQDISC dump of every interface (ifindex 0)."""
    return _TCMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def class_request(ifindex: int) -> bytes:
    """The tcmsg of an RTM_GETTCLASS dump of every class of one interface (root qdisc,
    its children and ingress alike); net/sched/sch_api.c tc_dump_tclass dumps one
    interface only, an ifindex of 0 dumps nothing."""
    return _TCMSG.pack(socket.AF_UNSPEC, ifindex, 0, 0, 0)


def ipv4_address_request() -> bytes:
    """The ifaddrmsg of an RTM_GETADDR dump restricted to AF_INET."""
    return _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)


def root_qdiscs() -> dict[int, QdiscStats]:
    """Root qdisc counters and shaping rates of every interface of this network
    namespace, now: one qdisc dump, and a class dump per htb root.

    Raises:
        NetlinkError: netlink unavailable or the kernel refused a dump.
    """
    qdiscs = parse_root_qdiscs(dump(RTM_GETQDISC, qdisc_request()))
    for q in list(qdiscs.values()):
        if q.kind == "htb":
            classes = dump(RTM_GETTCLASS, class_request(q.ifindex))
            qdiscs[q.ifindex] = replace(q, shaped_bps=htb_capacity_bps(classes, q.handle))
    return qdiscs


def ipv4_addresses() -> list[Ipv4Address]:
    """Every IPv4 address of this network namespace, now.

    Raises:
        NetlinkError: netlink unavailable or the kernel refused the dump.
    """
    return parse_ipv4_addresses(dump(RTM_GETADDR, ipv4_address_request()))


def _align(length: int) -> int:
    """NLMSG_ALIGN / RTA_ALIGN: 4-byte alignment."""
    return (length + 3) & ~3
