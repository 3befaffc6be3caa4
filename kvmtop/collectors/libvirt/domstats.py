"""Parses libvirt's bulk domain stats: one record of `virConnectGetAllDomainStats` into a
`GuestSample`.

Layer: collectors, but free of I/O and of the `libvirt` module, so the tests feed it
captured stats (tests/fixtures/libvirt/) and the replay path could reuse it.

`parse_domain_stats` turns one record of `virConnectGetAllDomainStats` (libvirt-python
`virConnect.getAllDomainStats`, libvirt >= 1.2.8) into a `GuestSample`. Key names and
units follow virsh(1) "domstats": times are ns, balloon sizes KiB (converted to bytes
here), and a key libvirt did not send stays None, never 0. What the domain XML adds
(`DomainLinks`) comes from `kvmtop.collectors.libvirt.domxml`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from kvmtop.collectors.libvirt.domxml import DomainInfo
from kvmtop.model.sample import BalloonSample, DiskSample, GuestSample, NicSample, VcpuSample
from kvmtop.model.units import KIB

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


# Field name of each sample type -> the `<group>.<N>.<key>` (or `<group>.<key>`) it is
# read from (virsh(1) domstats). Fields not listed are not libvirt stats.
_VCPU_KEYS = {"state": "state", "time_ns": "time", "delay_ns": "delay"}
_DISK_KEYS = {
    "target": "name",
    "path": "path",
    "rd_reqs": "rd.reqs",
    "rd_bytes": "rd.bytes",
    "rd_times_ns": "rd.times",
    "wr_reqs": "wr.reqs",
    "wr_bytes": "wr.bytes",
    "wr_times_ns": "wr.times",
    "fl_reqs": "fl.reqs",
    "fl_times_ns": "fl.times",
    "capacity_bytes": "capacity",
    "allocation_bytes": "allocation",
    "physical_bytes": "physical",
}
_NIC_KEYS = {
    "name": "name",
    "rx_bytes": "rx.bytes",
    "rx_pkts": "rx.pkts",
    "rx_errs": "rx.errs",
    "rx_drop": "rx.drop",
    "tx_bytes": "tx.bytes",
    "tx_pkts": "tx.pkts",
    "tx_errs": "tx.errs",
    "tx_drop": "tx.drop",
}
_STR_FIELDS = frozenset({"target", "path", "name"})
# `balloon.<key>`: every size is KiB in libvirt (converted to bytes); the faults are
# counts; last-update is host epoch seconds.
_BALLOON_KEYS = {
    "current_bytes": "current",
    "maximum_bytes": "maximum",
    "available_bytes": "available",
    "usable_bytes": "usable",
    "unused_bytes": "unused",
    "disk_caches_bytes": "disk_caches",
    "rss_bytes": "rss",
    "swap_in_bytes": "swap_in",
    "swap_out_bytes": "swap_out",
    "major_fault": "major_fault",
    "minor_fault": "minor_fault",
    "last_update_s": "last-update",
}
_BALLOON_KIB = frozenset(f for f in _BALLOON_KEYS if f.endswith("_bytes"))
_GUEST_KEYS = {
    "state_reason": "state.reason",
    "vcpus_current": "vcpu.current",
    "vcpus_maximum": "vcpu.maximum",
    "cpu_time_ns": "cpu.time",
    "cpu_user_ns": "cpu.user",
    "cpu_system_ns": "cpu.system",
}
_NO_SWITCH: tuple[None, None] = (None, None)
_PLANS_PER_DOMAIN = 4
"""Key sets a domain alternates between (with and without the balloon group, ...)."""
_SHARED_PLANS = 64
"""Layouts whose plans are kept for every domain (`_shared_plan`)."""


def _is_int(kind: type) -> bool:
    """Whether values of this type are integer stats (bool excluded)."""
    return issubclass(kind, int) and not issubclass(kind, bool)


def domain_state_name(state: int | None) -> str:
    """Map a virDomainState integer to its name; unknown or missing -> "nostate"."""
    if state is not None and 0 <= state < len(DOMAIN_STATES):
        return DOMAIN_STATES[state]
    return "nostate"


Getter = Callable[[Any], tuple[Any, ...]]
_Parse = Callable[..., GuestSample]
"""A plan's `parse(values, uuid, name, dom_id, parser, balloon)`."""


def _getter(items: Sequence[Any]) -> Getter:
    """`operator.itemgetter` that always returns a tuple (even of 0 or 1 items)."""
    if len(items) > 1:
        return itemgetter(*items)
    if items:
        first = items[0]
        return lambda values: (values[first],)
    return lambda _values: ()


def _split_indexed(
    keys: Iterable[str],
) -> tuple[dict[str, dict[int, dict[str, int]]], dict[str, int]]:
    """One pass over the flat keys, giving each key's position in `keys`.

    Returns `{"vcpu"|"block"|"net": {N: {rest: position}}}` for `<group>.<N>.<rest>`
    keys, and `{rest: position}` for the `vm.<rest>` keys.
    """
    indexed: dict[str, dict[int, dict[str, int]]] = {"vcpu": {}, "block": {}, "net": {}}
    vm: dict[str, int] = {}
    for position, key in enumerate(keys):
        group, _, rest = key.partition(".")
        if group == "vm":
            vm[rest] = position
            continue
        per_index = indexed.get(group)
        if per_index is None:
            continue
        index, _, field_name = rest.partition(".")
        # libvirt prints <N> in ASCII decimal; str.isdigit() alone also takes "²",
        # which int() refuses.
        if field_name and index.isascii() and index.isdigit():
            per_index.setdefault(int(index), {})[field_name] = position
    return indexed, vm


class _Plan:
    """How to read every record with one key set and one value type per key.

    libvirt sends the same keys with the same types tick after tick (a typed
    parameter list per domain; keys change only when a device or a stats group comes
    or goes), so each key is split and each value's type checked once, here, and the
    plan writes a `parse` function for records of exactly this layout: straight-line
    code that reads each field at its position and builds the sample (as `dataclasses`
    generates `__init__`), markedly faster per record than reading
    it through per-device getters (bench/results/measurements.md#libvirt-parse-plan).
    `fits` guarantees a record has the plan's keys and types, so a position the plan
    took for an integer holds one; a stat libvirt did not send, or sent with a type
    the field does not take, is the literal None in that code.
    """

    def __init__(self, keys: tuple[str, ...], types: tuple[type, ...]) -> None:
        self._count = len(keys)
        self.values = _getter(keys)
        self.types = types
        self.parse: _Parse = self._compile(keys)

    def fits(self, stats: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The record's values in plan order, or None when the record has other keys
        or value types than the plan was made for."""
        # As many keys as the plan's, and every key of the plan present: the same
        # keys (cheaper than comparing the key sets).
        if len(stats) != self._count:
            return None
        try:
            values: tuple[Any, ...] = self.values(stats)
        except KeyError:
            return None
        if tuple(map(type, values)) != self.types:
            return None
        return values

    def _int(self, position: int | None) -> str:
        """Code reading an integer stat at `position` (None when it holds none)."""
        ok = position is not None and _is_int(self.types[position])
        return f"v[{position}]" if ok else "None"

    def _str(self, position: int | None) -> str:
        """Code reading a string at `position` (None when it holds none)."""
        ok = position is not None and issubclass(self.types[position], str)
        return f"v[{position}]" if ok else "None"

    def _fields(self, table: Mapping[str, str], fields: Mapping[str, int]) -> list[str]:
        """Code reading `table`'s fields, in its order, from one entry's keys."""
        return [
            (self._str if name in _STR_FIELDS else self._int)(fields.get(key))
            for name, key in table.items()
        ]

    def _kvm(self, fields: Mapping[str, int]) -> str:
        """A dict literal of the `<name>.<sum|cur|max>` integer entries.

        Boolean stats (KVM_STATS_UNIT_BOOLEAN: `blocking`, `guest_mode`, which QEMU
        7.2 query-stats and libvirt 9.0 hand over as booleans) are kept as 0/1.
        Histograms (halt_wait_hist ...) and any other non-integer value are skipped.
        """
        entries = []
        for key, position in fields.items():
            name, dot, kind = key.rpartition(".")
            value_type = self.types[position]
            if dot and name and kind in KVM_STAT_TYPES and issubclass(value_type, int):
                value = f"v[{position}]" if value_type is int else f"int(v[{position}])"
                # repr() of a str is a Python literal of it, whatever libvirt sent.
                entries.append(f"{key!r}: {value}")
        return "{" + ", ".join(entries) + "}"

    def _compile(self, keys: tuple[str, ...]) -> _Parse:
        """The `parse` function of this layout (see the class docstring)."""
        indexed, vm = _split_indexed(keys)
        at = {key: i for i, key in enumerate(keys)}
        body = ["links = parser.links"]
        vcpus = [
            f"VcpuSample({index}, {', '.join(self._fields(_VCPU_KEYS, fields))}, "
            f"kvm={self._kvm(fields)})"
            for index, fields in sorted(indexed["vcpu"].items())
        ]
        body.append(f"vcpus = ({''.join(f'{c}, ' for c in vcpus)})")
        # A block or net entry without a (string) name is not a device.
        disk_entries = [
            self._fields(_DISK_KEYS, fields)
            for _, fields in sorted(indexed["block"].items())
            if self._str(fields.get("name")) != "None"
        ]
        # The disks themselves, not their backing images: the first entry per name.
        # `backingIndex` cannot tell them apart: it is the storage source's index
        # (`<source index='N'>`), which is non-zero for the top image too since
        # libvirt uses -blockdev (libvirt 9.0 reports `block.0.backingIndex: 1` for a
        # plain disk even without VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING; measured
        # in the lab). libvirt's qemuDomainGetStatsBlockExportDisk walks each disk
        # from the top down the chain, so the top entry of a disk always comes first.
        several = len(disk_entries) > 1
        body += ["disks = []", "disks_seen = set()"] if several else ["disks = []"]
        for target, path, *counters in disk_entries:
            source = f"links.disk_sources.get({target})"
            if path != "None":
                source = f"{source} if {path} is None else {path}"
            add = f"disks.append(DiskSample({target}, {source}, None, {', '.join(counters)}))"
            if several:
                body += [
                    f"if {target} not in disks_seen:",
                    f"    disks_seen.add({target})",
                    f"    {add}",
                ]
            else:
                body.append(add)
        nics = [
            f"NicSample({nic_name}, *links.nic_switches.get({nic_name}, _NO_SWITCH), "
            f"{', '.join(counters)})"
            for nic_name, *counters in (
                self._fields(_NIC_KEYS, fields)
                for _, fields in sorted(indexed["net"].items())
                if self._str(fields.get("name")) != "None"
            )
        ]
        body.append(f"nics = ({''.join(f'{n}, ' for n in nics)})")
        balloon = {k.removeprefix("balloon."): i for k, i in at.items() if k.startswith("balloon.")}
        if balloon:
            values = [
                f"{code} * {KIB}" if code != "None" and f in _BALLOON_KIB else code
                for f, code in zip(_BALLOON_KEYS, self._fields(_BALLOON_KEYS, balloon), strict=True)
            ]
            body += ["if balloon is None:", f"    balloon = BalloonSample({', '.join(values)})"]
        guest = ", ".join(f"{f}={self._int(at.get(k))}" for f, k in _GUEST_KEYS.items())
        body.append(
            "return GuestSample(uuid=uuid, name=name, dom_id=dom_id, "
            f"state=domain_state_name({self._int(at.get('state.state'))}), {guest}, "
            "accel=links.accel, pid=parser.pid, vcpus=vcpus, disks=tuple(disks), nics=nics, "
            f"balloon=balloon, vm_kvm={self._kvm(vm)}, "
            "max_memory_bytes=links.max_memory_bytes, "
            "balloon_period_s=links.balloon_period_s)"
        )
        source = "def parse(v, uuid, name, dom_id, parser, balloon):\n" + "".join(
            f"    {line}\n" for line in body
        )
        env: dict[str, Any] = {
            "VcpuSample": VcpuSample,
            "DiskSample": DiskSample,
            "NicSample": NicSample,
            "BalloonSample": BalloonSample,
            "GuestSample": GuestSample,
            "domain_state_name": domain_state_name,
            "_NO_SWITCH": _NO_SWITCH,
        }
        exec(compile(source, "<libvirt stats plan>", "exec"), env)
        parse: _Parse = env["parse"]
        return parse


@functools.lru_cache(maxsize=_SHARED_PLANS)
def _shared_plan(keys: tuple[str, ...], types: tuple[type, ...]) -> _Plan:
    """The plan of one layout, shared by every domain that sends it.

    A plan depends on the keys and value types alone (the domain's XML facts and pid
    come with each `parse` call), and the guests of a host mostly share a few layouts:
    at 500 guests, compiling one plan per domain made the first tick and the first
    one without the balloon group take 500 compilations each
    (bench/results/measurements.md#libvirt-parse-plan).
    """
    return _Plan(keys, types)


@dataclass(frozen=True, slots=True)
class DomainLinks:
    """What a sample takes from the domain XML, indexed for the per-tick parse.

    Attributes:
        accel: "kvm"/"tcg" (`DomainInfo.accel`), None when unknown.
        disk_sources: disk target -> its source (for disks whose stats lack
            `block.N.path`).
        nic_switches: host-side vNIC name -> (bridge, "ovs" | "linux"): the
            `<source bridge=...>` it is plugged into, and whether that is an Open
            vSwitch bridge (`<virtualport type='openvswitch'/>`, formatdomain
            "Virtual Ports") or a Linux bridge.
        max_memory_bytes / balloon_period_s: as in `DomainInfo`.
    """

    accel: str | None = None
    disk_sources: Mapping[str, str | None] = field(default_factory=dict)
    nic_switches: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    max_memory_bytes: int | None = None
    balloon_period_s: int | None = None

    @classmethod
    def of(cls, info: DomainInfo | None, accel: str | None = None) -> DomainLinks:
        """The links of a parsed domain XML; without one, only `accel` is known."""
        if info is None:
            return cls(accel=accel)
        return cls(
            accel=info.accel,
            disk_sources={d.target: d.source for d in info.disks},
            nic_switches={
                i.target: (i.bridge, "ovs" if i.virtualport == "openvswitch" else "linux")
                for i in info.interfaces
                if i.target and i.bridge is not None
            },
            max_memory_bytes=info.max_memory_bytes,
            balloon_period_s=info.balloon_period_s,
        )


class DomainStatsParser:
    """Parses the stats records of one domain, tick after tick.

    Keeps the plans (`_Plan`) of the last few key sets the domain sent: a tick with
    the balloon group has more keys than one without, a hot-plugged device adds
    keys, and a domain recreated under the same UUID gets a new parser from the
    collector. A record is read with a plan only when its keys and value types are
    exactly the plan's, so nothing read from an earlier record can leak into it.

    Args:
        links: the domain XML facts (`DomainLinks.of`).
        pid: the QEMU process id, None when unknown.
    """

    def __init__(self, links: DomainLinks, pid: int | None = None) -> None:
        self.links = links
        self.pid = pid
        self._plans: list[_Plan] = []

    def parse(
        self,
        uuid: str,
        name: str,
        dom_id: int | None,
        stats: Mapping[str, Any],
        carried_balloon: BalloonSample | None = None,
    ) -> GuestSample:
        """The sample of one `getAllDomainStats` record of this domain.

        `carried_balloon`, when given, is the guest's balloon instead of what the
        stats hold (the collector carries it over ticks without the balloon group).
        """
        plan, values = self._fit(stats)
        return plan.parse(values, uuid, name, dom_id, self, carried_balloon)

    def _fit(self, stats: Mapping[str, Any]) -> tuple[_Plan, tuple[Any, ...]]:
        """The plan that fits the record (most recently used first) and its values."""
        for i, plan in enumerate(self._plans):
            values = plan.fits(stats)
            if values is not None:
                if i:
                    self._plans.insert(0, self._plans.pop(i))
                return plan, values
        plan = _shared_plan(tuple(stats), tuple(map(type, stats.values())))
        self._plans.insert(0, plan)
        del self._plans[_PLANS_PER_DOMAIN:]
        return plan, plan.values(stats)


def parse_balloon(stats: Mapping[str, Any]) -> BalloonSample | None:
    """`balloon.*` keys → BalloonSample in bytes; None when no balloon key is present.

    (No balloon keys: the group was not requested, or the domain has no balloon.)
    """
    return parse_domain_stats("", "", None, stats, accel=None, pid=None).balloon


def parse_domain_stats(
    uuid: str,
    name: str,
    dom_id: int | None,
    stats: Mapping[str, Any],
    *,
    accel: str | None,
    pid: int | None,
    info: DomainInfo | None = None,
) -> GuestSample:
    """Build the typed sample of one domain from libvirt's flat stats dictionary.

    Args:
        uuid: domain UUID string (virDomainGetUUIDString).
        name: domain name.
        dom_id: domain ID, None for an inactive domain.
        stats: the dict libvirt returned for this domain (flat dotted keys).
        accel: "kvm"/"tcg" from the domain XML, None when unknown (`info`'s wins).
        pid: the QEMU process id, None when unknown.
        info: the domain XML: adds the guest's maximum memory and balloon stats
            period, each disk's source path (when the stats lack `block.N.path`)
            and each vNIC's switch (see `DomainLinks`).
    """
    return DomainStatsParser(DomainLinks.of(info, accel), pid).parse(uuid, name, dom_id, stats)
