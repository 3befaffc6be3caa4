"""Parses the domain XML: the few facts kvmtop needs from `virDomainGetXMLDesc`
(accelerator, memory, disk sources, interface bridges, balloon stats period).

Layer: collectors, but free of I/O and of the `libvirt` module (tests feed it
captured XML).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmtop.model.units import GIB, KIB, MIB, TIB


@dataclass(frozen=True, slots=True)
class DiskInfo:
    """One `<disk>` of the domain XML.

    Attributes:
        target: `<target dev=...>` (matches `block.N.name`).
        device: "disk", "cdrom", "floppy", "lun".
        source: image file (`file=`), block device (`dev=`), or "pool/volume" /
            "protocol:name" for other source types; None when empty (e.g. no CD).
        source_type: the disk `type=` attribute ("file", "block", "network", ...).
    """

    target: str
    device: str | None = None
    source: str | None = None
    source_type: str | None = None


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    """One `<interface>` of the domain XML.

    Attributes:
        target: host-side device name (`<target dev=...>`, e.g. "vnet3"; matches
            `net.N.name`); None for an inactive domain.
        type: interface type ("bridge", "network", "direct", "user", ...).
        mac: guest MAC address.
        model: device model ("virtio", "e1000", ...).
        bridge: host bridge the tap is attached to (`<source bridge=...>`, or the
            `bridge=` libvirt fills into the live XML of a `type='network'` NIC).
        network: libvirt network name for `type='network'`.
        virtualport: `<virtualport type=...>` ("openvswitch" for OVS ports).
    """

    target: str | None
    type: str | None = None
    mac: str | None = None
    model: str | None = None
    bridge: str | None = None
    network: str | None = None
    virtualport: str | None = None


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """What kvmtop keeps from a domain's XML (fetched once per domain start).

    Attributes:
        domain_type: the `<domain type=...>` attribute as written ("kvm", "qemu", ...).
        accel: "kvm" for type kvm, "tcg" for type qemu (QEMU's emulator), None else.
        max_memory_bytes: `<memory>` (maximum boot memory).
        current_memory_bytes: `<currentMemory>`.
        vcpus: `<vcpu>` (maximum vCPUs).
        disks: the `<disk>` elements.
        interfaces: the `<interface>` elements.
        memballoon_model: `<memballoon model=...>` ("virtio", "none", ...), None when
            the element is absent.
        balloon_period_s: `<memballoon><stats period=...>` seconds; None when unset
            (balloon guest stats then never refresh).
    """

    domain_type: str | None
    accel: str | None
    max_memory_bytes: int | None = None
    current_memory_bytes: int | None = None
    vcpus: int | None = None
    disks: tuple[DiskInfo, ...] = ()
    interfaces: tuple[InterfaceInfo, ...] = ()
    memballoon_model: str | None = None
    balloon_period_s: int | None = None


# Memory units accepted by libvirt's <memory unit=...> (formatdomain "Memory
# Allocation"): bytes, then the decimal (KB, MB ...) and binary (k/KiB, M/MiB ...)
# families. Without a unit the value is KiB.
_MEMORY_UNITS: dict[str, int] = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": KIB,
    "kib": KIB,
    "mb": 1000**2,
    "m": MIB,
    "mib": MIB,
    "gb": 1000**3,
    "g": GIB,
    "gib": GIB,
    "tb": 1000**4,
    "t": TIB,
    "tib": TIB,
}

_ACCELERATORS = {"kvm": "kvm", "qemu": "tcg"}


def _memory_bytes(element: ET.Element | None) -> int | None:
    """A libvirt scaled integer element (`<memory unit='KiB'>N</memory>`) in bytes."""
    if element is None or element.text is None:
        return None
    try:
        value = int(element.text.strip())
    except ValueError:
        return None
    scale = _MEMORY_UNITS.get(element.get("unit", "KiB").lower())
    return None if scale is None else value * scale


def _int_text(element: ET.Element | None) -> int | None:
    """Integer text content of an element, or None."""
    if element is None or element.text is None:
        return None
    try:
        return int(element.text.strip())
    except ValueError:
        return None


def _disk_source(disk: ET.Element) -> str | None:
    """The source of a `<disk>`: file, dev, dir, "pool/volume" or "protocol:name"."""
    source = disk.find("source")
    if source is None:
        return None
    for attr in ("file", "dev", "dir"):
        if source.get(attr):
            return source.get(attr)
    if source.get("pool") and source.get("volume"):
        return f"{source.get('pool')}/{source.get('volume')}"
    if source.get("name"):
        protocol = source.get("protocol")
        return f"{protocol}:{source.get('name')}" if protocol else source.get("name")
    return None


def _parse_disk_info(disk: ET.Element) -> DiskInfo | None:
    """One `<disk>`; None without a target device."""
    target = disk.find("target")
    dev = target.get("dev") if target is not None else None
    if not dev:
        return None
    return DiskInfo(
        target=dev,
        device=disk.get("device"),
        source=_disk_source(disk),
        source_type=disk.get("type"),
    )


def _attr(parent: ET.Element, path: str, attr: str) -> str | None:
    """Attribute `attr` of the child at `path`, or None."""
    element = parent.find(path)
    return element.get(attr) if element is not None else None


def _parse_interface_info(iface: ET.Element) -> InterfaceInfo:
    """One `<interface>` (the live XML adds target dev and, for networks, bridge)."""
    return InterfaceInfo(
        target=_attr(iface, "target", "dev"),
        type=iface.get("type"),
        mac=_attr(iface, "mac", "address"),
        model=_attr(iface, "model", "type"),
        bridge=_attr(iface, "source", "bridge"),
        network=_attr(iface, "source", "network"),
        virtualport=_attr(iface, "virtualport", "type"),
    )


def parse_domain_xml(xml: str) -> DomainInfo:
    """Parse a domain XML document (virDomainGetXMLDesc output).

    Raises:
        ValueError: the text is not XML or its root is not `<domain>`.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"domain XML does not parse: {exc}") from exc
    if root.tag != "domain":
        raise ValueError(f"expected a <domain> document, got <{root.tag}>")
    domain_type = root.get("type")
    devices = root.find("devices")
    disks: tuple[DiskInfo, ...] = ()
    interfaces: tuple[InterfaceInfo, ...] = ()
    balloon_model: str | None = None
    balloon_period: int | None = None
    if devices is not None:
        disks = tuple(
            info for d in devices.findall("disk") if (info := _parse_disk_info(d)) is not None
        )
        interfaces = tuple(_parse_interface_info(i) for i in devices.findall("interface"))
        balloon = devices.find("memballoon")
        if balloon is not None:
            balloon_model = balloon.get("model")
            period = _attr(balloon, "stats", "period")
            balloon_period = int(period) if period is not None and period.isdigit() else None
    return DomainInfo(
        domain_type=domain_type,
        accel=_ACCELERATORS.get(domain_type or ""),
        max_memory_bytes=_memory_bytes(root.find("memory")),
        current_memory_bytes=_memory_bytes(root.find("currentMemory")),
        vcpus=_int_text(root.find("vcpu")),
        disks=disks,
        interfaces=interfaces,
        memballoon_model=balloon_model,
        balloon_period_s=balloon_period,
    )
