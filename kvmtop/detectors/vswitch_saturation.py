"""`vswitch_saturation`: a Linux bridge or OVS bridge, or its uplink, saturated (§5.4).

Per switch (see `kvmtop.detectors.topology`), bad for K samples when any of:
- an uplink at ≥ 90 % of its capacity, full duplex = max(rx, tx) (atop's rule);
  capacity from the config (`uplink_capacity_mbps`, required for veth/tap uplinks
  whose reported speed is made up) or the NIC's `speed`;
- uplink drops rising (/proc/net/dev rx drop includes rx_missed_errors, plus fifo
  and tx drops), or root-qdisc drops (proposed `NetDevSample.qdisc_drops`: where
  tbf/htb shaping drops land);
- OVS port drops on an uplink (proposed `HostSample.ovs_ports`), or the OVS datapath
  `lost` counter of the switch's datapath (proposed `HostSample.ovs_datapaths`):
  upcalls that overflowed a datapath queue;
- softnet backlog drops on the host (CPU-bound switching), blamed on the busiest
  switch by packets per second;
- several guests behind the switch dropping RX at once: the bottleneck is shared
  (one guest alone is `vnic_drops`).

Critical when packets are being lost (any drop signal); warning for utilization
alone. The finding names the switch and the guests behind it.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvmtop.detectors.base import Observation, Tick, fmt_rate, known, proposed_str
from kvmtop.detectors.settings import DetectorSettings, VswitchSettings
from kvmtop.detectors.topology import (
    Switch,
    build,
    drop_ratio_pct,
    guest_names,
    items,
    summarize,
)
from kvmtop.model.rates import HostNetRates, rate

ID = "vswitch_saturation"


def _by_name(objs: Iterable[object]) -> dict[str, object]:
    return {n: o for o in objs if (n := proposed_str(o, "name")) is not None}


def _counter_rate(
    prev: dict[str, object], cur: dict[str, object], name: str, fields: tuple[str, ...], dt: float
) -> float | None:
    """Σ per-second rates of integer counters `fields` of the named proposed item."""
    p, c = prev.get(name), cur.get(name)
    if p is None or c is None:
        return None
    total: float | None = None
    for f in fields:
        a, b = getattr(p, f, None), getattr(c, f, None)
        r = rate(a, b, dt) if isinstance(a, int) and isinstance(b, int) else None
        if r is not None:
            total = (total or 0.0) + r
    return total


def dropping_nics(tick: Tick, ratio_pct: float) -> dict[tuple[str, str], tuple[float, float]]:
    """(uuid, vNIC) → (RX drops/s, drop %) for every vNIC dropping above `ratio_pct`."""
    result: dict[tuple[str, str], tuple[float, float]] = {}
    for g in tick.guests:
        for nic in g.rates.nics:
            ratio = drop_ratio_pct(nic.rx_drops_per_s, nic.rx_pps)
            if nic.rx_drops_per_s and ratio is not None and ratio > ratio_pct:
                result[(g.uuid, nic.name)] = (nic.rx_drops_per_s, ratio)
    return result


class VswitchSaturation:
    """vSwitch saturation detector (see the module docstring)."""

    id = ID

    def __init__(self, settings: DetectorSettings) -> None:
        """Host-wide detector: settings come from the global table."""
        self.settings = settings.vswitch_saturation

    def forget(self, uuid: str) -> None:
        """No per-guest state."""

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """One verdict per switch, once rates exist."""
        if tick.dt_s is None or tick.sample.host is None or tick.prev is None:
            return
        s = self.settings
        topo = build(tick.sample, s)
        if not topo.switches:
            return
        nets = {n.name: n for n in tick.host.nets}
        dropping = dropping_nics(tick, s.guest_drop_ratio_pct)
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
        prev_devs = _by_name(prev_host.netdevs if prev_host is not None else ())
        cur_devs = _by_name(tick.sample.host.netdevs)
        prev_ports = _by_name(items(prev_host, "ovs_ports"))
        cur_ports = _by_name(items(tick.sample.host, "ovs_ports"))
        lost = self._ovs_lost(tick)
        for sw in topo.switches.values():
            yield self._switch(
                tick, s, sw, nets, dropping, softnet if sw.name == busiest else None,
                lost.get(sw.name), (prev_devs, cur_devs), (prev_ports, cur_ports),
            )

    @staticmethod
    def _ovs_lost(tick: Tick) -> dict[str, float]:
        """OVS bridge → datapath `lost` per second (shared by the datapath's bridges)."""
        assert tick.prev is not None and tick.dt_s is not None
        prev = _by_name(items(tick.prev.host, "ovs_datapaths"))
        result: dict[str, float] = {}
        for name, dp in _by_name(items(tick.sample.host, "ovs_datapaths")).items():
            r = _counter_rate(prev, {name: dp}, name, ("lost",), tick.dt_s)
            bridges = getattr(dp, "bridges", ())
            if r is None or not isinstance(bridges, tuple):
                continue
            for bridge in bridges:
                if isinstance(bridge, str):
                    result[bridge] = r
        return result

    def _switch(
        self,
        tick: Tick,
        s: VswitchSettings,
        sw: Switch,
        nets: dict[str, HostNetRates],
        dropping: dict[tuple[str, str], tuple[float, float]],
        softnet: float | None,
        ovs_lost: float | None,
        devs: tuple[dict[str, object], dict[str, object]],
        ports: tuple[dict[str, object], dict[str, object]],
    ) -> Observation:
        assert tick.dt_s is not None
        util = mbps = capacity = None
        busiest_uplink: str | None = None
        drops = qdisc = port_drops = 0.0
        for up in sw.uplinks:
            net = nets.get(up)
            if net is None:
                continue
            cap = s.uplink_capacity_mbps.get(up)
            if cap is None and net.kind in ("physical", "bond") and net.speed_mbps:
                cap = float(net.speed_mbps)
            busy = max((v for v in (net.rx_bps, net.tx_bps) if v is not None), default=None)
            if cap and busy is not None:
                u = 100.0 * busy / (cap * 1e6)
                if util is None or u > util:
                    util, mbps, capacity, busiest_uplink = u, busy / 1e6, cap, up
            drops += (net.rx_drops_per_s or 0.0) + (net.tx_drops_per_s or 0.0)
            qdisc += _counter_rate(*devs, up, ("qdisc_drops",), tick.dt_s) or 0.0
            port_drops += (
                _counter_rate(*ports, up, ("rx_dropped", "tx_dropped"), tick.dt_s) or 0.0
            )
        guests_dropping = sorted(
            {name for uuid, name, nic in sw.guests if (uuid, nic) in dropping}
        )
        signals: list[str] = []
        loss = False
        if util is not None and util >= s.util_pct:
            signals.append(
                f"uplink {busiest_uplink} at {util:.0f}% of {capacity:g} Mbit/s ({mbps:.1f} Mbit/s)"
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
            return Observation(sw.name, False, sw.name, sw.name, s.raise_after, s.clear_after)
        behind = guest_names(sw)
        message = f"{sw.name} saturated: " + "; ".join(signals)
        if behind:
            message += f"; guests behind it: {summarize(behind)}"
        evidence = known(
            {
                "uplink_util_pct": util,
                "uplink_mbps": mbps,
                "uplink_capacity_mbps": capacity,
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
        return Observation(
            key=sw.name,
            bad=True,
            subject=sw.name,
            subject_name=sw.name,
            raise_after=s.raise_after,
            clear_after=s.clear_after,
            severity="critical" if loss else "warning",
            message=message,
            evidence=evidence,
            baseline=baseline,
        )
