"""Pure parsers for what libvirt hands back: bulk domain stats and domain XML.

Layer: collectors, but free of I/O and of the `libvirt` module, so the tests feed it
captured stats (tests/fixtures/libvirt/) and the replay path could reuse it.

`parse_domain_stats` turns one record of `virConnectGetAllDomainStats` (libvirt-python
`virConnect.getAllDomainStats`, libvirt >= 1.2.8) into a `GuestSample`. Key names and
units follow virsh(1) "domstats": times are ns, balloon sizes KiB (converted to bytes
here), and a key libvirt did not send stays None, never 0.

`parse_domain_xml` reads the few facts kvmtop needs from `virDomainGetXMLDesc`
(accelerator, memory, disk sources, interface bridges, balloon stats period).
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kvmtop.model.sample import BalloonSample, DiskSample, GuestSample, NicSample, VcpuSample

DOMAIN_STATES: tuple[str, ...] = (
    "nostate",
    "running",
    "blocked",
    "paused",
    "shutdown",
    "shutoff",
    "crashed",
    "pmsuspended",
)
"""Names of virDomainState values 0..7 (libvirt-domain.h; VIR_DOMAIN_PMSUSPENDED since 0.9.11)."""

KVM_STAT_TYPES = frozenset({"sum", "cur", "max"})
"""Suffixes libvirt gives QEMU query-stats values (libvirt 8.9, virsh(1) domstats --vm):
cumulative -> sum, instant -> cur, peak -> max."""

_KIB = 1024

# `balloon.<key>` (virsh(1) domstats, "balloon" group) -> BalloonSample field. Every
# size is KiB in libvirt; the faults are counts; last-update is host epoch seconds.
_BALLOON_KIB_FIELDS: tuple[tuple[str, str], ...] = (
    ("current", "current_bytes"),
    ("maximum", "maximum_bytes"),
    ("available", "available_bytes"),
    ("usable", "usable_bytes"),
    ("unused", "unused_bytes"),
    ("disk_caches", "disk_caches_bytes"),
    ("rss", "rss_bytes"),
    ("swap_in", "swap_in_bytes"),
    ("swap_out", "swap_out_bytes"),
)
_BALLOON_PLAIN_FIELDS: tuple[tuple[str, str], ...] = (
    ("major_fault", "major_fault"),
    ("minor_fault", "minor_fault"),
    ("last-update", "last_update_s"),
)


def _as_int(value: object) -> int | None:
    """An integer stat value, or None when absent or of another type (bool excluded)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _as_str(value: object) -> str | None:
    """A string stat value, or None."""
    return value if isinstance(value, str) else None


def domain_state_name(state: int | None) -> str:
    """Map a virDomainState integer to its name; unknown or missing -> "nostate"."""
    if state is not None and 0 <= state < len(DOMAIN_STATES):
        return DOMAIN_STATES[state]
    return "nostate"


def _split_indexed(
    stats: Mapping[str, Any],
) -> tuple[dict[str, dict[int, dict[str, Any]]], dict[str, Any]]:
    """One pass over the flat keys.

    Returns `{"vcpu"|"block"|"net": {N: {rest: value}}}` for `<group>.<N>.<rest>` keys,
    and `{rest: value}` for the `vm.<rest>` keys.
    """
    indexed: dict[str, dict[int, dict[str, Any]]] = {"vcpu": {}, "block": {}, "net": {}}
    vm: dict[str, Any] = {}
    for key, value in stats.items():
        group, _, rest = key.partition(".")
        if group == "vm":
            vm[rest] = value
            continue
        per_index = indexed.get(group)
        if per_index is None:
            continue
        index, _, field_name = rest.partition(".")
        if field_name and index.isdigit():
            per_index.setdefault(int(index), {})[field_name] = value
    return indexed, vm


def _kvm_stats(fields: Mapping[str, Any]) -> dict[str, int]:
    """`<name>.<sum|cur|max>` integer entries, as "<name>.<type>".

    Boolean stats (KVM_STATS_UNIT_BOOLEAN: `blocking`, `guest_mode`, which QEMU 7.2
    query-stats and libvirt 9.0 hand over as booleans) become 0/1. Histograms
    (halt_wait_hist ...) and any other non-integer value are skipped.
    """
    out: dict[str, int] = {}
    for key, value in fields.items():
        name, dot, kind = key.rpartition(".")
        number = int(value) if isinstance(value, bool) else _as_int(value)
        if dot and name and kind in KVM_STAT_TYPES and number is not None:
            out[key] = number
    return out


def _parse_vcpu(index: int, fields: Mapping[str, Any]) -> VcpuSample:
    """`vcpu.<N>.*`: state, time (ns), delay (ns, libvirt >= 7.2) and KVM stats."""
    return VcpuSample(
        index=index,
        state=_as_int(fields.get("state")),
        time_ns=_as_int(fields.get("time")),
        delay_ns=_as_int(fields.get("delay")),
        kvm=_kvm_stats(fields),
    )


def _parse_disk(fields: Mapping[str, Any]) -> DiskSample | None:
    """`block.<N>.*`; None for an entry without a name."""
    target = _as_str(fields.get("name"))
    if target is None:
        return None
    return DiskSample(
        target=target,
        path=_as_str(fields.get("path")),
        rd_reqs=_as_int(fields.get("rd.reqs")),
        rd_bytes=_as_int(fields.get("rd.bytes")),
        rd_times_ns=_as_int(fields.get("rd.times")),
        wr_reqs=_as_int(fields.get("wr.reqs")),
        wr_bytes=_as_int(fields.get("wr.bytes")),
        wr_times_ns=_as_int(fields.get("wr.times")),
        fl_reqs=_as_int(fields.get("fl.reqs")),
        fl_times_ns=_as_int(fields.get("fl.times")),
        capacity_bytes=_as_int(fields.get("capacity")),
        allocation_bytes=_as_int(fields.get("allocation")),
        physical_bytes=_as_int(fields.get("physical")),
    )


def _parse_nic(fields: Mapping[str, Any]) -> NicSample | None:
    """`net.<N>.*` (already the guest's point of view); None without a name."""
    name = _as_str(fields.get("name"))
    if name is None:
        return None
    return NicSample(
        name=name,
        rx_bytes=_as_int(fields.get("rx.bytes")),
        rx_pkts=_as_int(fields.get("rx.pkts")),
        rx_errs=_as_int(fields.get("rx.errs")),
        rx_drop=_as_int(fields.get("rx.drop")),
        tx_bytes=_as_int(fields.get("tx.bytes")),
        tx_pkts=_as_int(fields.get("tx.pkts")),
        tx_errs=_as_int(fields.get("tx.errs")),
        tx_drop=_as_int(fields.get("tx.drop")),
    )


def parse_balloon(stats: Mapping[str, Any]) -> BalloonSample | None:
    """`balloon.*` keys → BalloonSample in bytes; None when no balloon key is present.

    (No balloon keys: the group was not requested, or the domain has no balloon.)
    """
    if not any(key.startswith("balloon.") for key in stats):
        return None
    values: dict[str, int | None] = {}
    for key, attr in _BALLOON_KIB_FIELDS:
        kib = _as_int(stats.get("balloon." + key))
        values[attr] = None if kib is None else kib * _KIB
    for key, attr in _BALLOON_PLAIN_FIELDS:
        values[attr] = _as_int(stats.get("balloon." + key))
    return BalloonSample(**values)


def _top_of_chain_disks(entries: Mapping[int, Mapping[str, Any]]) -> tuple[DiskSample, ...]:
    """The disks themselves, not their backing images: the first entry per name.

    `backingIndex` cannot tell them apart: it is the storage source's index
    (`<source index='N'>`), which is non-zero for the top image too since libvirt
    uses -blockdev (libvirt 9.0 reports `block.0.backingIndex: 1` for a plain disk
    even without VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING; measured in the lab).
    libvirt's qemuDomainGetStatsBlockExportDisk walks each disk from the top down
    the chain, so the top entry of a disk always comes first.
    """
    disks: list[DiskSample] = []
    seen: set[str] = set()
    for _, fields in sorted(entries.items()):
        disk = _parse_disk(fields)
        if disk is not None and disk.target not in seen:
            seen.add(disk.target)
            disks.append(disk)
    return tuple(disks)


def parse_domain_stats(
    uuid: str,
    name: str,
    dom_id: int | None,
    stats: Mapping[str, Any],
    *,
    accel: str | None,
    pid: int | None,
) -> GuestSample:
    """Build the typed sample of one domain from libvirt's flat stats dictionary.

    Args:
        uuid: domain UUID string (virDomainGetUUIDString).
        name: domain name.
        dom_id: domain ID, None for an inactive domain.
        stats: the dict libvirt returned for this domain (flat dotted keys).
        accel: "kvm"/"tcg" from the domain XML, None when unknown.
        pid: the QEMU process id, None when unknown.
    """
    indexed, vm = _split_indexed(stats)
    state = _as_int(stats.get("state.state"))
    vcpus = tuple(
        _parse_vcpu(index, fields) for index, fields in sorted(indexed["vcpu"].items())
    )
    disks = _top_of_chain_disks(indexed["block"])
    nics = tuple(
        nic
        for _, fields in sorted(indexed["net"].items())
        if (nic := _parse_nic(fields)) is not None
    )
    return GuestSample(
        uuid=uuid,
        name=name,
        dom_id=dom_id,
        state=domain_state_name(state),
        state_reason=_as_int(stats.get("state.reason")),
        accel=accel,
        pid=pid,
        vcpus_current=_as_int(stats.get("vcpu.current")),
        vcpus_maximum=_as_int(stats.get("vcpu.maximum")),
        cpu_time_ns=_as_int(stats.get("cpu.time")),
        cpu_user_ns=_as_int(stats.get("cpu.user")),
        cpu_system_ns=_as_int(stats.get("cpu.system")),
        vcpus=vcpus,
        disks=disks,
        nics=nics,
        balloon=parse_balloon(stats),
        vm_kvm=_kvm_stats(vm),
    )


# --------------------------------------------------------------------------- XML


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
    "k": 1 << 10,
    "kib": 1 << 10,
    "mb": 1000**2,
    "m": 1 << 20,
    "mib": 1 << 20,
    "gb": 1000**3,
    "g": 1 << 30,
    "gib": 1 << 30,
    "tb": 1000**4,
    "t": 1 << 40,
    "tib": 1 << 40,
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


def apply_domain_info(sample: GuestSample, info: DomainInfo) -> GuestSample:
    """Add the facts of the domain XML to a stats sample.

    Fills the guest's maximum memory and balloon stats period, each disk's source
    path (when the stats lack `block.N.path`), and each vNIC's switch: the
    `<source bridge=...>` it is plugged into and whether that is an Open vSwitch
    bridge (`<virtualport type='openvswitch'/>`, formatdomain "Virtual Ports") or a
    Linux bridge.
    """
    sources = {d.target: d.source for d in info.disks}
    nets = {i.target: i for i in info.interfaces if i.target}
    disks = tuple(
        dataclasses.replace(d, path=sources.get(d.target)) if d.path is None else d
        for d in sample.disks
    )
    nics = []
    for n in sample.nics:
        iface = nets.get(n.name)
        if iface is None or iface.bridge is None:
            nics.append(n)
            continue
        switch = "ovs" if iface.virtualport == "openvswitch" else "linux"
        nics.append(dataclasses.replace(n, bridge=iface.bridge, switch=switch))
    return dataclasses.replace(
        sample,
        disks=disks,
        nics=tuple(nics),
        max_memory_bytes=info.max_memory_bytes,
        balloon_period_s=info.balloon_period_s,
    )
