"""A plain reference parser of libvirt's bulk domain stats, for the tests only.

Why it exists: kvmtop reads `virConnectGetAllDomainStats` records with a parser that
generates Python code per key set and caches it
(`kvmtop.collectors.libvirt.domstats.DomainStatsParser`, its "plans"). Issue #18 lets
such a generator stay only next to a plain reference parser and a test that both give
identical samples on every captured fixture
(tests/collectors/test_libvirt_reference.py). This module is that reference: one
function, straightforward dict lookups, no code generation, no caching, nothing
imported from `domstats`. When the two disagree, this one is the easier to check by
eye against libvirt's documentation.

Keys, types and units as libvirt documents them (`virConnectGetAllDomainStats` in
src/libvirt-domain.c, and virsh(1) "domstats"):

- state group: `state.state` (a virDomainState number), `state.reason`.
- cpu-total group: `cpu.time`, `cpu.user`, `cpu.system`, in ns.
- vcpu group: `vcpu.current`, `vcpu.maximum`, and per vCPU `vcpu.<num>.state`,
  `vcpu.<num>.time` (ns) and `vcpu.<num>.delay` (ns, libvirt >= 7.2); "due to VCPU
  hotplug, the vcpu.<num>.* array could be sparse". With QEMU's query-stats (libvirt
  >= 8.9) the vcpu group also carries the KVM binary stats of each vCPU, and the vm
  group those of the VM, as `vcpu.<num>.<name>.<type>` and `vm.<name>.<type>`, `<type>`
  being "sum" (cumulative), "cur" (instant) or "max" (peak); boolean stats come as
  booleans, histograms as other types.
- interface group: per NIC `net.<num>.name` (the host-side device) and
  `net.<num>.{rx,tx}.{bytes,pkts,errs,drop}` (from the domain's point of view).
- block group: per disk `block.<num>.name` (the target, vda/sda), `block.<num>.path`
  ("omitted for network sources and drives with no media inserted"), the
  `rd`/`wr`/`fl` requests, bytes and times (ns), and `allocation`, `capacity`,
  `physical` in bytes. With backing chains listed, the same name repeats for every
  image of a disk, the disk's own (top) image first.
- balloon group: `balloon.current`, `maximum`, `swap_in`, `swap_out`, `unused`,
  `available`, `usable`, `rss`, `disk_caches` in KiB; `major_fault`, `minor_fault`
  counts; `last-update` in seconds.

What kvmtop makes of them (the contract of `kvmtop.model.sample`): sizes in bytes, a
stat that is missing or not an integer is None (never 0), a block or net entry
without a string name is not a device, only the first entry per disk name is the
disk, and from the domain XML (`DomainInfo`): the accelerator, the maximum memory,
the balloon stats period, a disk's source when its stats have no path, and the
switch each vNIC is plugged into.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvmtop.collectors.libvirt.domxml import DomainInfo
from kvmtop.model.sample import BalloonSample, DiskSample, GuestSample, NicSample, VcpuSample

KIB_BYTES = 1024
"""libvirt reports balloon sizes in KiB."""

STATE_NAMES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}
"""virDomainState (include/libvirt/libvirt-domain.h)."""

KVM_STAT_TYPES = ("sum", "cur", "max")


def as_int(value: Any) -> int | None:
    """An integer stat, or None (a bool is not one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def as_str(value: Any) -> str | None:
    """A string stat, or None."""
    return value if isinstance(value, str) else None


def kvm_stats(entries: Mapping[str, Any]) -> dict[str, int]:
    """The `<name>.<type>` entries whose value is an integer or a boolean (as 0/1)."""
    found: dict[str, int] = {}
    for key, value in entries.items():
        name, _, kind = key.rpartition(".")
        if name and kind in KVM_STAT_TYPES and isinstance(value, int):
            found[key] = int(value)
    return found


def split_indexed(stats: Mapping[str, Any], group: str) -> dict[int, dict[str, Any]]:
    """`<group>.<num>.<field>` keys as {num: {field: value}}; `<num>` is a decimal
    number, as libvirt prints it."""
    entries: dict[int, dict[str, Any]] = {}
    for key, value in stats.items():
        parts = key.split(".", 2)
        if len(parts) < 3 or parts[0] != group or not parts[2]:
            continue
        num = parts[1]
        if num.isascii() and num.isdigit():
            entries.setdefault(int(num), {})[parts[2]] = value
    return entries


def reference_vcpus(stats: Mapping[str, Any]) -> tuple[VcpuSample, ...]:
    """One sample per `vcpu.<num>.*` entry, by number."""
    vcpus = []
    for num, fields in sorted(split_indexed(stats, "vcpu").items()):
        vcpus.append(
            VcpuSample(
                index=num,
                state=as_int(fields.get("state")),
                time_ns=as_int(fields.get("time")),
                delay_ns=as_int(fields.get("delay")),
                kvm=kvm_stats(fields),
            )
        )
    return tuple(vcpus)


def disk_source(info: DomainInfo | None, target: str) -> str | None:
    """The XML `<source>` of the disk with this target."""
    if info is not None:
        for disk in info.disks:
            if disk.target == target:
                return disk.source
    return None


def reference_disks(stats: Mapping[str, Any], info: DomainInfo | None) -> tuple[DiskSample, ...]:
    """One sample per disk: the first `block.<num>` entry of each name."""
    disks = []
    seen = set()
    for _, fields in sorted(split_indexed(stats, "block").items()):
        target = as_str(fields.get("name"))
        if target is None or target in seen:
            continue
        seen.add(target)
        path = as_str(fields.get("path"))
        disks.append(
            DiskSample(
                target=target,
                path=path if path is not None else disk_source(info, target),
                rd_reqs=as_int(fields.get("rd.reqs")),
                rd_bytes=as_int(fields.get("rd.bytes")),
                rd_times_ns=as_int(fields.get("rd.times")),
                wr_reqs=as_int(fields.get("wr.reqs")),
                wr_bytes=as_int(fields.get("wr.bytes")),
                wr_times_ns=as_int(fields.get("wr.times")),
                fl_reqs=as_int(fields.get("fl.reqs")),
                fl_times_ns=as_int(fields.get("fl.times")),
                capacity_bytes=as_int(fields.get("capacity")),
                allocation_bytes=as_int(fields.get("allocation")),
                physical_bytes=as_int(fields.get("physical")),
            )
        )
    return tuple(disks)


def nic_switch(info: DomainInfo | None, device: str) -> tuple[str | None, str | None]:
    """(bridge, "ovs" | "linux") of the XML `<interface>` whose target is `device`."""
    if info is not None:
        for iface in info.interfaces:
            if iface.target and iface.target == device and iface.bridge is not None:
                kind = "ovs" if iface.virtualport == "openvswitch" else "linux"
                return iface.bridge, kind
    return None, None


def reference_nics(stats: Mapping[str, Any], info: DomainInfo | None) -> tuple[NicSample, ...]:
    """One sample per `net.<num>` entry with a name, by number."""
    nics = []
    for _, fields in sorted(split_indexed(stats, "net").items()):
        device = as_str(fields.get("name"))
        if device is None:
            continue
        bridge, switch = nic_switch(info, device)
        nics.append(
            NicSample(
                name=device,
                bridge=bridge,
                switch=switch,
                rx_bytes=as_int(fields.get("rx.bytes")),
                rx_pkts=as_int(fields.get("rx.pkts")),
                rx_errs=as_int(fields.get("rx.errs")),
                rx_drop=as_int(fields.get("rx.drop")),
                tx_bytes=as_int(fields.get("tx.bytes")),
                tx_pkts=as_int(fields.get("tx.pkts")),
                tx_errs=as_int(fields.get("tx.errs")),
                tx_drop=as_int(fields.get("tx.drop")),
            )
        )
    return tuple(nics)


def kib(value: Any) -> int | None:
    """A KiB stat in bytes."""
    number = as_int(value)
    return None if number is None else number * KIB_BYTES


def reference_balloon(stats: Mapping[str, Any]) -> BalloonSample | None:
    """The balloon group, None when the record has none of its keys."""
    if not any(key.startswith("balloon.") for key in stats):
        return None
    return BalloonSample(
        current_bytes=kib(stats.get("balloon.current")),
        maximum_bytes=kib(stats.get("balloon.maximum")),
        available_bytes=kib(stats.get("balloon.available")),
        usable_bytes=kib(stats.get("balloon.usable")),
        unused_bytes=kib(stats.get("balloon.unused")),
        disk_caches_bytes=kib(stats.get("balloon.disk_caches")),
        rss_bytes=kib(stats.get("balloon.rss")),
        swap_in_bytes=kib(stats.get("balloon.swap_in")),
        swap_out_bytes=kib(stats.get("balloon.swap_out")),
        major_fault=as_int(stats.get("balloon.major_fault")),
        minor_fault=as_int(stats.get("balloon.minor_fault")),
        last_update_s=as_int(stats.get("balloon.last-update")),
    )


def reference_sample(
    uuid: str,
    name: str,
    dom_id: int | None,
    stats: Mapping[str, Any],
    *,
    info: DomainInfo | None,
    accel: str | None,
    pid: int | None,
    carried_balloon: BalloonSample | None = None,
) -> GuestSample:
    """The sample of one record, read the plain way.

    Args:
        uuid, name, dom_id: the domain's identity (dom_id None when inactive).
        stats: the record's flat dotted keys.
        info: the parsed domain XML, None when unknown.
        accel: the accelerator when there is no `info` (the XML's wins).
        pid: the QEMU process id, None when unknown.
        carried_balloon: when given, the guest's balloon instead of what the record
            holds (the collector carries it over ticks without the balloon group).
    """
    state = as_int(stats.get("state.state"))
    vm = {key[len("vm.") :]: value for key, value in stats.items() if key.startswith("vm.")}
    return GuestSample(
        uuid=uuid,
        name=name,
        dom_id=dom_id,
        state=STATE_NAMES.get(state, "nostate") if state is not None else "nostate",
        state_reason=as_int(stats.get("state.reason")),
        accel=info.accel if info is not None else accel,
        pid=pid,
        vcpus_current=as_int(stats.get("vcpu.current")),
        vcpus_maximum=as_int(stats.get("vcpu.maximum")),
        cpu_time_ns=as_int(stats.get("cpu.time")),
        cpu_user_ns=as_int(stats.get("cpu.user")),
        cpu_system_ns=as_int(stats.get("cpu.system")),
        vcpus=reference_vcpus(stats),
        disks=reference_disks(stats, info),
        nics=reference_nics(stats, info),
        balloon=carried_balloon if carried_balloon is not None else reference_balloon(stats),
        vm_kvm=kvm_stats(vm),
        max_memory_bytes=info.max_memory_bytes if info is not None else None,
        balloon_period_s=info.balloon_period_s if info is not None else None,
    )
