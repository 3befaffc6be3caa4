"""Guest vNICs over an interval: traffic, drops, errors and the probe's RTTs.

Layer: model (pure). No I/O.
"""

from __future__ import annotations

import msgspec

from kvmtop.model.rates.counters import ms_of_ns, rate, to_bits
from kvmtop.model.sample import NicSample


class NicRates(msgspec.Struct, frozen=True, gc=False):
    """Per guest NIC, guest point of view; `*_bps` are bits per second.

    `bridge` and `switch` name the vSwitch the vNIC is plugged into (the baseline;
    its uplinks are `HostRates.switch_uplinks[bridge]`). The RTT fields are the net
    probe's (`NicSample`), in ms: `rtt_ms` / `rtt_p95_ms` to the guest's `addr`,
    `host_rtt_ms` to the host's own address on the bridge; `rtt_reason` says why
    `rtt_ms` is None.
    """

    name: str
    bridge: str | None = None
    switch: str | None = None
    addr: str | None = None
    rtt_ms: float | None = None
    rtt_p95_ms: float | None = None
    host_rtt_ms: float | None = None
    rtt_reason: str | None = None
    rx_bps: float | None = None
    tx_bps: float | None = None
    rx_pps: float | None = None
    tx_pps: float | None = None
    rx_drops_per_s: float | None = None
    tx_drops_per_s: float | None = None
    rx_errs_per_s: float | None = None
    tx_errs_per_s: float | None = None


def derive_nic(prev: NicSample | None, cur: NicSample, dt_s: float) -> NicRates:
    # Without a previous sample every counter rate is unknown (`_UNKNOWN_NIC`); the
    # RTTs are gauges over the probe's own window, known at once.
    p = prev or _UNKNOWN_NIC
    return NicRates(
        name=cur.name,
        bridge=cur.bridge,
        switch=cur.switch,
        addr=cur.addr,
        rtt_ms=ms_of_ns(cur.rtt_ns),
        rtt_p95_ms=ms_of_ns(cur.rtt_p95_ns),
        host_rtt_ms=ms_of_ns(cur.host_rtt_ns),
        rtt_reason=cur.rtt_reason,
        rx_bps=to_bits(rate(p.rx_bytes, cur.rx_bytes, dt_s)),
        tx_bps=to_bits(rate(p.tx_bytes, cur.tx_bytes, dt_s)),
        rx_pps=rate(p.rx_pkts, cur.rx_pkts, dt_s),
        tx_pps=rate(p.tx_pkts, cur.tx_pkts, dt_s),
        rx_drops_per_s=rate(p.rx_drop, cur.rx_drop, dt_s),
        tx_drops_per_s=rate(p.tx_drop, cur.tx_drop, dt_s),
        rx_errs_per_s=rate(p.rx_errs, cur.rx_errs, dt_s),
        tx_errs_per_s=rate(p.tx_errs, cur.tx_errs, dt_s),
    )


_UNKNOWN_NIC = NicSample(name="")
"""A previous vNIC sample whose counters are all unknown, so every rate is None."""
