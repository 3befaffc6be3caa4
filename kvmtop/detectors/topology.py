"""Which switch each vNIC is on, and each switch's uplinks (for `vswitch_saturation` and
`vnic_drops`, docs/detectors.md).

Layer: detectors (pure). Built from one sample:
- Linux bridges: host interfaces of kind "bridge"; their ports are the interfaces
  whose `master` is the bridge (a guest's tap included).
- OVS bridges: from `HostSample.ovs_ports` (name, bridge). Under the kernel datapath
  every OVS port has master "ovs-system", which does not say which bridge; under the
  userspace datapath there is no master at all.
- A guest vNIC's switch: `NicSample.bridge` (domain XML), else the switch its tap is
  a port of.
- Uplinks: ports of kind "physical" or "bond" (configurable), plus every interface
  given a capacity in the config, plus every port other than a guest's tap whose root
  qdisc shapes (`NetDevSample.shaped_mbps`: a tbf or htb the operator set is a
  capacity too). Taps are left out: libvirt's `<bandwidth>` shapes a vNIC with an htb
  on its tap. A configured uplink whose switch is unknown becomes a switch of its
  own, named after the interface.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kvmtop.detectors.settings import VswitchSettings
from kvmtop.model.sample import Sample


@dataclass(slots=True)
class Switch:
    """One switch: a Linux bridge, an OVS bridge, or a lone configured uplink."""

    name: str
    kind: str
    ports: list[str] = field(default_factory=list)
    uplinks: list[str] = field(default_factory=list)
    guests: list[tuple[str, str, str]] = field(default_factory=list)
    """(uuid, guest name, vNIC name) of every guest vNIC on the switch."""


@dataclass(frozen=True, slots=True)
class Topology:
    """Switches by name, and the switch of each (guest uuid, vNIC name)."""

    switches: dict[str, Switch]
    nic_switch: dict[tuple[str, str], str]


def build(sample: Sample, settings: VswitchSettings) -> Topology:
    """The topology of one sample."""
    switches: dict[str, Switch] = {}
    port_of: dict[str, str] = {}
    kinds: dict[str, str] = {}
    netdevs = sample.host.netdevs if sample.host is not None else ()
    for dev in netdevs:
        kinds[dev.name] = dev.kind
        if dev.kind == "bridge":
            switches.setdefault(dev.name, Switch(dev.name, "bridge"))
    for dev in netdevs:
        if dev.master is not None and dev.master in switches:
            switches[dev.master].ports.append(dev.name)
            port_of[dev.name] = dev.master
    for port in sample.host.ovs_ports if sample.host is not None else ():
        if port.name == port.bridge:
            continue  # the bridge's own internal port
        switches.setdefault(port.bridge, Switch(port.bridge, "ovs")).ports.append(port.name)
        port_of[port.name] = port.bridge
    shaped = {dev.name for dev in netdevs if dev.shaped_mbps and dev.kind != "tap"}
    for sw in switches.values():
        sw.uplinks = [
            p
            for p in sw.ports
            if kinds.get(p) in settings.uplink_kinds
            or p in settings.uplink_capacity_mbps
            or p in shaped
        ]
    for name in settings.uplink_capacity_mbps:
        if name not in port_of and name in kinds:
            switches[name] = Switch(name, "uplink", ports=[name], uplinks=[name])
    nic_switch: dict[tuple[str, str], str] = {}
    for g in sample.guests:
        if g.state != "running":
            continue
        for nic in g.nics:
            sw_name = nic.bridge or port_of.get(nic.name)
            if sw_name is None or sw_name not in switches:
                continue
            nic_switch[(g.uuid, nic.name)] = sw_name
            switches[sw_name].guests.append((g.uuid, g.name, nic.name))
    return Topology(switches, nic_switch)


def guest_names(switch: Switch) -> list[str]:
    """Distinct guest names behind a switch, sorted."""
    return sorted({name for _, name, _ in switch.guests})


def drop_ratio_pct(drops: float | None, pkts: float | None) -> float | None:
    """Drops as a percentage of the packets offered (delivered + dropped)."""
    if drops is None or pkts is None:
        return None
    offered = drops + pkts
    return 100.0 * drops / offered if offered > 0 else 0.0


def summarize(names: Iterable[str], limit: int = 4) -> str:
    """ "a, b, c (+2)" for a message."""
    names = list(names)
    head = ", ".join(names[:limit])
    return head + (f" (+{len(names) - limit})" if len(names) > limit else "")
