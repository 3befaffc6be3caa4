"""Where an RTT probe may go: a guest vNIC's IPv4 address (from libvirt, or the host's
ARP table) and the host's own addresses on its bridges, with the on-link check.

Layer: collectors (I/O: /proc/net/arp is parsed here, libvirt and rtnetlink asked).
Used by `kvmtop.collectors.netprobe`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

from kvmtop.collectors import rtnetlink
from kvmtop.collectors.libvirt.connect import import_libvirt

# include/uapi/linux/if_arp.h: ATF_COM, a resolved ARP entry.
_ATF_COM = 0x2


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
