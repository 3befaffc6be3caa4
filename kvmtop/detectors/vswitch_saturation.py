"""`vswitch_saturation`: a Linux bridge or OVS bridge, or its uplink, saturated
(docs/detectors.md#vswitch_saturation).

Per switch (see `kvmtop.detectors.topology`), bad for K samples when any of:
- an uplink at ≥ 90 % of its capacity, full duplex = max(rx, tx) (atop's rule);
  capacity from the config (`uplink_capacity_mbps`), else the link speed of a
  physical NIC or bond that reports one, else the rate of the shaping root qdisc
  (`NetDevSample.shaped_mbps`: tbf's rate, htb's top-level rates), see
  `uplink_capacity`; veth and tap speeds are made up and never used;
- uplink drops rising (/proc/net/dev rx drop includes rx_missed_errors, plus fifo
  and tx drops), or root-qdisc drops (`NetDevSample.qdisc_drops`: where tbf/htb
  shaping drops land);
- OVS port drops on an uplink (`HostSample.ovs_ports`), or the OVS datapath `lost`
  counter of the switch's datapath (`HostSample.ovs_datapaths`):
  upcalls that overflowed a datapath queue;
- softnet backlog drops on the host (CPU-bound switching), blamed on the busiest
  switch by packets per second;
- several guests behind the switch dropping RX at once: the bottleneck is shared
  (one guest alone is `vnic_drops`).

Critical when packets are being lost (any drop signal); warning for utilization
alone. The finding names the switch and the guests behind it; its cause
"switch:<name>" is shared by `vnic_drops` findings on the switch's vNICs, and its
`cause_guests` are the guests dropping RX.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from kvmtop.detectors.base import Observation, Tick, cause_key, fmt_rate, known
from kvmtop.detectors.settings import DetectorSettings, VswitchSettings
from kvmtop.detectors.topology import (
    Switch,
    Topology,
    build,
    drop_ratio_pct,
    guest_names,
    summarize,
)
from kvmtop.model.rates.counters import rate
from kvmtop.model.rates.host import HostNetRates
from kvmtop.model.sample import HostSample, NetDevSample
from kvmtop.model.units import BITS_PER_MBIT, NS_PER_S

ID = "vswitch_saturation"


class Capacity(NamedTuple):
    """An uplink's capacity and where it comes from."""

    mbps: float
    source: str
    """"configured", "link speed", "tbf rate" or "htb rate" (shown in the message)."""
    shaped: bool = False
    """Whether it is the rate of the interface's shaping root qdisc."""


def uplink_capacity(dev: NetDevSample, s: VswitchSettings) -> Capacity | None:
    """An uplink's capacity, the first known of: the config (`uplink_capacity_mbps`),
    the link speed of a physical NIC or bond that reports one, the rate of its shaping
    root qdisc (tbf or htb, whatever the interface's kind). None when none is."""
    configured = s.uplink_capacity_mbps.get(dev.name)
    if configured is not None:
        return Capacity(configured, "configured")
    if dev.kind in ("physical", "bond") and dev.speed_mbps:
        return Capacity(float(dev.speed_mbps), "link speed")
    if dev.shaped_mbps:
        return Capacity(dev.shaped_mbps, f"{dev.shaped_by} rate", shaped=True)
    return None


def _delta_rate(prev: int | None, cur: int | None, dt_s: float) -> float:
    """Per-second rate of a counter, 0 when unknown (a missing signal is not a drop)."""
    return rate(prev, cur, dt_s) or 0.0


def dropping_nics(tick: Tick, ratio_pct: float) -> dict[tuple[str, str], tuple[float, float]]:
    """(uuid, vNIC) → (RX drops/s, drop %) for every vNIC dropping above `ratio_pct`."""
    result: dict[tuple[str, str], tuple[float, float]] = {}
    for g in tick.guests:
        for nic in g.rates.nics:
            if not nic.rx_drops_per_s:
                continue  # most vNICs drop nothing: no ratio to compute
            ratio = drop_ratio_pct(nic.rx_drops_per_s, nic.rx_pps)
            if ratio is not None and ratio > ratio_pct:
                result[(g.uuid, nic.name)] = (nic.rx_drops_per_s, ratio)
    return result


@dataclass(frozen=True, slots=True)
class Network:
    """The switches of one tick and the guest vNICs dropping RX (see `network`)."""

    topology: Topology
    dropping: dict[tuple[str, str], tuple[float, float]]


def network(tick: Tick, s: VswitchSettings) -> Network:
    """The topology of this tick's sample and the vNICs dropping above
    `s.guest_drop_ratio_pct`. Both network detectors read it: get it with
    `tick.shared(network, s)` so it is built once per tick."""
    return Network(build(tick.sample, s), dropping_nics(tick, s.guest_drop_ratio_pct))


class VswitchSaturation:
    """vSwitch saturation detector (see the module docstring)."""

    id = ID

    def __init__(self, settings: DetectorSettings) -> None:
        """Host-wide detector: settings come from the global table."""
        self.settings = settings.vswitch_saturation
        # OVS counters are read on a slow tier (HostSample.ovs_mono_ns says when) and
        # carried forward between reads: rate them between two reads and hold that
        # rate until the next one, instead of seeing 0 then a 5x burst.
        self._ovs_last: HostSample | None = None
        self._ovs_stamp = 0
        self._ovs_rates: tuple[dict[str, float], dict[str, float]] = ({}, {})

    def forget(self, uuid: str) -> None:
        """No per-guest state."""

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """One verdict per switch, once rates exist."""
        if tick.dt_s is None or tick.sample.host is None or tick.prev is None:
            return
        s = self.settings
        net = tick.shared(network, s)
        topo = net.topology
        if not topo.switches:
            return
        nets = {n.name: n for n in tick.host.nets}
        dropping = net.dropping
        softnet = tick.host.softnet_drops_per_s
        busiest: str | None = None
        if softnet is not None and softnet > s.softnet_drops_per_s:
            busiest = max(
                topo.switches.values(),
                key=lambda sw: sum(
                    (nets[p].rx_pps or 0.0) + (nets[p].tx_pps or 0.0) for p in sw.ports if p in nets
                ),
            ).name
        prev_host = tick.prev.host
        cur_host = tick.sample.host
        # Per uplink: root-qdisc drops (tbf/htb shaping) and OVS port drops per second.
        prev_q = {d.name: d.qdisc_drops for d in prev_host.netdevs} if prev_host else {}
        qdisc = {
            d.name: _delta_rate(prev_q.get(d.name), d.qdisc_drops, tick.dt_s)
            for d in cur_host.netdevs
        }
        devs = {d.name: d for d in cur_host.netdevs}
        port_drops, lost = self._ovs(cur_host, tick.sample.mono_ns)
        for sw in topo.switches.values():
            yield self._switch(
                tick,
                s,
                sw,
                nets,
                devs,
                dropping,
                softnet if sw.name == busiest else None,
                lost.get(sw.name),
                qdisc,
                port_drops,
            )

    def _ovs(self, cur: HostSample, mono_ns: int) -> tuple[dict[str, float], dict[str, float]]:
        """OVS port drops/s by port and datapath `lost`/s by bridge, between OVS reads."""
        stamp = cur.ovs_mono_ns if cur.ovs_mono_ns is not None else mono_ns
        prev = self._ovs_last
        if prev is not None and stamp == self._ovs_stamp:
            return self._ovs_rates
        dt_s = (stamp - self._ovs_stamp) / NS_PER_S
        port_drops: dict[str, float] = {}
        lost: dict[str, float] = {}
        if prev is not None:
            before = {p.name: p for p in prev.ovs_ports}
            for p in cur.ovs_ports:
                q = before.get(p.name)
                if q is not None:
                    port_drops[p.name] = _delta_rate(
                        q.rx_dropped, p.rx_dropped, dt_s
                    ) + _delta_rate(q.tx_dropped, p.tx_dropped, dt_s)
            prev_dp = {d.name: d.lost for d in prev.ovs_datapaths}
            for dp in cur.ovs_datapaths:
                r = rate(prev_dp.get(dp.name), dp.lost, dt_s)
                if r is not None:
                    lost.update(dict.fromkeys(dp.bridges, r))
        self._ovs_last, self._ovs_stamp = cur, stamp
        self._ovs_rates = (port_drops, lost)
        return self._ovs_rates

    def _switch(
        self,
        tick: Tick,
        s: VswitchSettings,
        sw: Switch,
        nets: dict[str, HostNetRates],
        devs: dict[str, NetDevSample],
        dropping: dict[tuple[str, str], tuple[float, float]],
        softnet: float | None,
        ovs_lost: float | None,
        qdisc_rates: dict[str, float],
        port_rates: dict[str, float],
    ) -> Observation:
        util = mbps = None
        busiest_uplink: str | None = None
        capacity: Capacity | None = None
        drops = qdisc = port_drops = 0.0
        for up in sw.uplinks:
            net = nets.get(up)
            dev = devs.get(up)
            if net is None or dev is None:
                continue
            cap = uplink_capacity(dev, s)
            busy = max((v for v in (net.rx_bps, net.tx_bps) if v is not None), default=None)
            if cap is not None and cap.mbps and busy is not None:
                u = 100.0 * busy / (cap.mbps * BITS_PER_MBIT)
                if util is None or u > util:
                    util, mbps, capacity, busiest_uplink = u, busy / BITS_PER_MBIT, cap, up
            drops += (net.rx_drops_per_s or 0.0) + (net.tx_drops_per_s or 0.0)
            qdisc += qdisc_rates.get(up, 0.0)
            port_drops += port_rates.get(up, 0.0)
        guests_dropping = sorted({name for uuid, name, nic in sw.guests if (uuid, nic) in dropping})
        signals: list[str] = []
        loss = False
        if util is not None and capacity is not None and util >= s.util_pct:
            signals.append(
                f"uplink {busiest_uplink} at {util:.0f}% of {capacity.mbps:g} Mbit/s "
                f"({capacity.source}): {mbps:.1f} Mbit/s"
            )
        for value, label in (
            (drops, "uplink drops"),
            (qdisc, "uplink qdisc drops"),
            (port_drops, "OVS uplink port drops"),
        ):
            if value > s.drops_per_s:
                signals.append(f"{label} {fmt_rate(value)}/s")
                loss = True
        if ovs_lost is not None and ovs_lost > s.ovs_lost_per_s:
            signals.append(f"OVS datapath lost {fmt_rate(ovs_lost)}/s (upcall queue overflow)")
            loss = True
        if softnet is not None:
            signals.append(
                f"host softnet backlog drops {fmt_rate(softnet)}/s (CPU-bound switching)"
            )
            loss = True
        if len(guests_dropping) >= s.guests_dropping:
            signals.append(
                f"{len(guests_dropping)} guests dropping RX at once ({summarize(guests_dropping)})"
            )
            loss = True
        if not signals:
            return _switch_verdict(sw, s, bad=False)
        behind = guest_names(sw)
        message = f"{sw.name} saturated: " + "; ".join(signals)
        if behind:
            message += f"; guests behind it: {summarize(behind)}"
        cap_mbps = capacity.mbps if capacity is not None else None
        # Present when the capacity is the shaping qdisc's rate.
        shaped_mbps = cap_mbps if capacity is not None and capacity.shaped else None
        evidence = known(
            {
                "uplink_util_pct": util,
                "uplink_mbps": mbps,
                "uplink_capacity_mbps": cap_mbps,
                "uplink_shaped_mbps": shaped_mbps,
                "uplink_drops_per_s": drops if sw.uplinks else None,
                "uplink_qdisc_drops_per_s": qdisc if sw.uplinks else None,
                "ovs_port_drops_per_s": port_drops if sw.kind == "ovs" else None,
                "ovs_lost_per_s": ovs_lost,
                "softnet_drops_per_s": softnet,
                "guests_dropping": float(len(guests_dropping)),
                "guests": float(len(behind)),
            }
        )
        baseline = dict(tick.baseline) | known(
            {
                "host_softnet_drops_per_s": tick.host.softnet_drops_per_s,
                "host_softnet_squeeze_per_s": tick.host.softnet_squeeze_per_s,
            }
        )
        return _switch_verdict(
            sw,
            s,
            bad=True,
            severity="critical" if loss else "warning",
            message=message,
            evidence=evidence,
            baseline=baseline,
            cause=cause_key("switch", sw.name),
            cause_guests=tuple(guests_dropping),
        )


def _switch_verdict(sw: Switch, s: VswitchSettings, *, bad: bool, **rest: Any) -> Observation:
    """A verdict on switch `sw` (its name is the key and the subject), with the K of
    `s`; `rest` as in `kvmtop.detectors.base.verdict`."""
    return Observation(
        key=sw.name,
        bad=bad,
        subject=sw.name,
        subject_name=sw.name,
        raise_after=s.raise_after,
        clear_after=s.clear_after,
        **rest,
    )
