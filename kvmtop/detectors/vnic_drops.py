"""`vnic_drops`: one guest not draining its RX ring, or the host dropping its TX
(docs/detectors.md#vnic_drops).

RX: guest RX drops (`net.N.rx.drop` = the tap's tx_dropped: the tun ring was full)
above 0 for K samples and above 0.1 % of the packets offered [H]. Causes: guest
steal, a small virtio ring, a starved vhost thread; the finding shows the guest's
steal and its vhost threads' CPU next to it [I]. When several guests behind the same
switch drop at once the switch is the bottleneck: `vswitch_saturation` reports it and
this detector stays quiet for those vNICs. A finding on a vNIC whose switch
`vswitch_saturation` holds a bad streak or a finding for shares the switch's cause.

TX: guest TX drops (tap rx_dropped) sustained → "host dropping guest TX" (backlog,
nftables/ebtables, OVS port) [I].
"""

from __future__ import annotations

from collections.abc import Iterable

from kvmtop.detectors.base import (
    Observation,
    Tick,
    cause_key,
    fmt_rate,
    good_verdict,
    known,
    thread_cpu_pct,
    verdict,
)
from kvmtop.detectors.settings import DetectorSettings
from kvmtop.detectors.topology import drop_ratio_pct
from kvmtop.detectors.vswitch_saturation import ID as SWITCH_ID
from kvmtop.detectors.vswitch_saturation import network

ID = "vnic_drops"


class VnicDrops:
    """Per-guest vNIC drop detector (see the module docstring)."""

    id = ID

    def __init__(self, settings: DetectorSettings) -> None:
        """Stateless apart from hysteresis (kept by the engine)."""
        self._vswitch = settings.vswitch_saturation

    def forget(self, uuid: str) -> None:
        """No per-guest state."""

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """One verdict per guest vNIC with drop counters this tick."""
        if tick.dt_s is None:
            return
        net = tick.shared(network, self._vswitch)
        topo, dropping = net.topology, net.dropping
        shared: set[str] = set()
        for name, sw in topo.switches.items():
            guests = {uuid for uuid, _, nic in sw.guests if (uuid, nic) in dropping}
            if len(guests) >= self._vswitch.guests_dropping:
                shared.add(name)
        tracked = tick.tracked_keys(ID)
        for g in tick.guests:
            if not g.rates.nics or not g.settings.enabled(ID):
                continue
            s = g.settings.vnic_drops
            vhost: float | None = None
            vhost_read = False
            for nic in g.rates.nics:
                if nic.rx_drops_per_s is None and nic.tx_drops_per_s is None:
                    continue
                rx = nic.rx_drops_per_s or 0.0
                tx = nic.tx_drops_per_s or 0.0
                ratio = drop_ratio_pct(nic.rx_drops_per_s, nic.rx_pps)
                switch = topo.nic_switch.get((g.uuid, nic.name))
                rx_bad = rx > 0 and ratio is not None and ratio > s.ratio_pct
                if rx_bad and switch in shared:
                    rx_bad = False
                tx_bad = tx > s.tx_drops_per_s
                if not (rx_bad or tx_bad):
                    # Most vNICs drop nothing and none is tracked: no key to build.
                    if tracked and (key := f"{g.uuid}/{nic.name}") in tracked:
                        yield good_verdict(g, s, key, nic.name)
                    continue
                key = f"{g.uuid}/{nic.name}"
                if not vhost_read:
                    # Only a bad verdict shows the vhost threads' CPU: read it then,
                    # not for every guest on every tick.
                    vhost = thread_cpu_pct(g, "vhost", tick.dt_s)
                    vhost_read = True
                parts = []
                if rx_bad and ratio is not None:
                    context = (
                        [f"steal max {g.rates.steal_max_pct:.0f}%"]
                        if (g.rates.steal_max_pct is not None)
                        else []
                    )
                    if vhost is not None:
                        context.append(f"vhost {vhost:.0f}% of a core")
                    parts.append(
                        f"{nic.name} RX drops {fmt_rate(rx)}/s ({ratio:.1f}% of packets): "
                        "guest not draining its RX ring"
                        + (f" ({', '.join(context)})" if context else "")
                    )
                if tx_bad:
                    parts.append(f"{nic.name} TX drops {fmt_rate(tx)}/s: host dropping guest TX")
                critical = rx_bad and ratio is not None and ratio >= s.crit_ratio_pct
                cause = ""
                if switch is not None and tick.tracking(SWITCH_ID, switch):
                    # `vswitch_saturation` runs first: its verdict of this tick counts.
                    cause = cause_key("switch", switch)
                yield verdict(
                    g,
                    s,
                    key,
                    bad=True,
                    device=nic.name,
                    severity="critical" if critical else "warning",
                    message="; ".join(parts),
                    evidence=known(
                        {
                            "rx_drops_per_s": nic.rx_drops_per_s,
                            "rx_pps": nic.rx_pps,
                            "rx_drop_pct": ratio,
                            "tx_drops_per_s": nic.tx_drops_per_s,
                            "steal_max_pct": g.rates.steal_max_pct,
                            "vhost_cpu_pct": vhost,
                        }
                    ),
                    baseline=dict(tick.baseline),
                    cause=cause,
                )
