"""Opt-in network round-trip time to each guest, next to the host's own baseline.

Layer: collectors (I/O). Probing sends packets, so this enricher is off unless the
user asks for it; when on it only ever probes:
- a guest vNIC's IPv4 address as the operator configured it, as libvirt reports it
  (`virDomainInterfaceAddresses`, sources LEASE and AGENT), or as the host's ARP
  table has it (/proc/net/arp: the entry on the vNIC's own bridge with the vNIC's
  MAC; this is what libvirt's ARP source reads too, virArpTableGet, without the
  RPC);
- and only when that address is on-link in the subnet of the host's own address on
  the vNIC's bridge (so a probe never leaves through a route);
- the host's own address on that bridge, as the baseline (the host stack without
  the guest and its vNIC path).

At most one probe per vNIC (and per bridge) every `every_s` seconds (5 by default).
A probe is an ICMP echo (an unprivileged ICMP socket where net.ipv4.ping_group_range
admits kvmtop's group, else a raw socket, which needs CAP_NET_RAW), or a TCP connect
to a port configured for guests that drop ICMP. Nothing blocks the tick: probes are
sent during one `enrich()` and their answers collected at the next. ICMP replies
carry the kernel's receive time (SO_TIMESTAMPNS); a TCP probe reads the kernel's
handshake RTT (TCP_INFO tcpi_rtt), so the delay until collection does not count.

Per vNIC the sample gets the median and 95th percentile of the answered probes in
the last `window` probes (12: one minute at 5 s), the cumulative count of probes
without an answer, and, when no probe in the window was answered, RTT unknown with
the reason (never 0). Never imports textual.

Sending probes and collecting their answers: `kvmtop.collectors.rtt_probers`; the
guests' and the host's addresses: `kvmtop.collectors.net_addresses`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from msgspec.structs import replace

from kvmtop.collectors.base import CollectorError, Probe
from kvmtop.collectors.host import read_text
from kvmtop.collectors.libvirt.domxml import DomainInfo
from kvmtop.collectors.net_addresses import host_bridge_addresses, on_link, parse_proc_net_arp
from kvmtop.collectors.rtt_probers import IcmpProber, Outcome, Prober, TcpProber
from kvmtop.model.sample import GuestSample, NicSample
from kvmtop.model.units import NS_PER_S


def percentile(values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------- enricher


@dataclass(slots=True)
class _Target:
    """One probed thing: a guest vNIC or a bridge's own address.

    Attributes:
        addr: the address probed (None while unknown).
        source: where `addr` came from ("configured", "libvirt", "arp"), or why
            there is none.
        resolved_ns / last_sent_ns: when the address was looked up / last probed.
        results: the last `window` outcomes, RTT ns or None for no answer.
        lost: probes without an answer since the guest started (cumulative).
        reason: why the last unanswered probe failed.
    """

    addr: str | None = None
    source: str | None = None
    resolved_ns: int | None = None
    last_sent_ns: int | None = None
    results: deque[int | None] = field(default_factory=deque)
    lost: int = 0
    reason: str | None = None


class NetProbe:
    """Per-vNIC RTT with the bridge baseline (see the module docstring).

    Args:
        root: directory holding `proc/` (for /proc/net/arp).
        domain_info: uuid → parsed domain XML (`LibvirtCollector.domain_info`), for
            each vNIC's MAC; without it only configured addresses are probed.
        addresses: uuid → {MAC: [IPv4]} from libvirt (`LibvirtAddresses`), or None.
        configured: guest name or UUID → IPv4 address, from the user's config.
        tcp_ports: guest name or UUID → TCP port to connect to instead of ICMP.
        every_s: seconds between two probes of one target (at least 1).
        window: probes kept per target for the percentiles.
        timeout_s: a probe unanswered this long is lost.
        resolve_every_s: how often a vNIC's address is looked up again.
        bridge_addresses: interface → host IPv4 addresses (netlink by default).
        icmp / tcp: the probers (tests pass fakes); ICMP opens on first use.
        clock: monotonic clock in ns.
    """

    name = "netprobe"

    def __init__(
        self,
        root: Path = Path("/"),
        *,
        domain_info: Callable[[str], DomainInfo | None] | None = None,
        addresses: Callable[[str], Mapping[str, Sequence[str]]] | None = None,
        configured: Mapping[str, str] | None = None,
        tcp_ports: Mapping[str, int] | None = None,
        every_s: float = 5.0,
        window: int = 12,
        timeout_s: float = 3.0,
        resolve_every_s: float = 30.0,
        bridge_addresses: Callable[[], Mapping[str, Sequence[tuple[str, int]]]] = (
            host_bridge_addresses
        ),
        icmp: Prober | None = None,
        tcp: Prober | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._arp_path = str(root).rstrip("/") + "/proc/net/arp"
        self._domain_info = domain_info
        self._addresses = addresses
        self._configured = dict(configured or {})
        self._tcp_ports = dict(tcp_ports or {})
        self._every_ns = int(max(1.0, every_s) * NS_PER_S)
        self._window = max(1, window)
        self._timeout_ns = int(timeout_s * NS_PER_S)
        self._resolve_ns = int(resolve_every_s * NS_PER_S)
        self._bridge_addresses = bridge_addresses
        self._icmp = icmp
        self._tcp = tcp or TcpProber()
        self._clock = clock
        self._targets: dict[Hashable, _Target] = {}
        self._seen: set[Hashable] = set()
        self._icmp_mode = "injected" if icmp is not None else None
        self._icmp_error: str | None = None
        self._bridges: Mapping[str, Sequence[tuple[str, int]]] = {}
        self._bridges_ns: int | None = None
        self._arp: list[tuple[str, str, str]] | None = None

    def paths_read(self) -> list[str]:
        """Glob patterns (relative to root) of every file this collector reads."""
        return ["proc/net/arp"]

    def probe(self) -> Probe:
        """Open the ICMP socket; say how probing will be done."""
        detail = {"every_s": f"{self._every_ns / NS_PER_S:g}", "window": str(self._window)}
        if self._icmp_prober() is None:
            assert self._icmp_error is not None
            if not self._tcp_ports:
                return Probe(self.name, False, self._icmp_error, detail)
            detail["icmp"] = self._icmp_error
            return Probe(self.name, True, "ICMP unavailable; TCP probes only", detail)
        detail["icmp"] = self._icmp_mode or ""
        return Probe(self.name, True, None, detail)

    def close(self) -> None:
        """Close the probe sockets."""
        if self._icmp is not None:
            self._icmp.close()
        self._tcp.close()

    def _icmp_prober(self) -> Prober | None:
        """The ICMP prober, opened on first use; None (and `_icmp_error`) when the
        process may open no ICMP socket."""
        if self._icmp is None and self._icmp_error is None:
            try:
                prober = IcmpProber()
            except CollectorError as e:
                self._icmp_error = str(e)
                return None
            self._icmp, self._icmp_mode = prober, prober.mode
        return self._icmp

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        """Collect answers, send the probes that are due, fill the RTT fields."""
        now = self._clock()
        icmp = self._icmp_prober()
        for prober in (icmp, self._tcp):
            if prober is None:
                continue
            for outcome in prober.collect(now, self._timeout_ns):
                target = self._targets.get(outcome.key)
                if target is not None:
                    self._record(target, outcome)
        if self._bridges_ns is None or now - self._bridges_ns >= self._resolve_ns:
            # Host addresses change rarely: looked up on the address refresh period.
            try:
                self._bridges = self._bridge_addresses()
            except OSError as e:
                raise CollectorError(f"host addresses unavailable (rtnetlink): {e}") from e
            self._bridges_ns = now
        self._arp = None  # read at most once per tick, and only when an address is due
        self._seen = set()
        out = []
        for g in guests:
            if g.state != "running" or not g.nics:
                out.append(g)
                continue
            macs = self._macs(g)
            nics = []
            for nic in g.nics:
                key = (g.uuid, g.dom_id, nic.name)
                self._seen.add(key)
                target = self._targets.setdefault(key, _Target())
                nics.append(self._nic(g, nic, target, macs.get(nic.name), now))
            out.append(replace(g, nics=tuple(nics)))
        for gone in self._targets.keys() - self._seen:
            del self._targets[gone]
        return tuple(out)

    def _record(self, target: _Target, outcome: Outcome) -> None:
        if len(target.results) == self._window:
            target.results.popleft()
        target.results.append(outcome.rtt_ns)
        if outcome.rtt_ns is None:
            target.lost += 1
            target.reason = outcome.reason

    def _macs(self, g: GuestSample) -> dict[str, str]:
        """vNIC name → MAC from the domain XML."""
        info = self._domain_info(g.uuid) if self._domain_info is not None else None
        if info is None:
            return {}
        return {i.target: i.mac.lower() for i in info.interfaces if i.target and i.mac}

    def _arp_table(self) -> list[tuple[str, str, str]]:
        """This tick's /proc/net/arp (empty when unreadable)."""
        if self._arp is None:
            try:
                self._arp = parse_proc_net_arp(read_text(self._arp_path))
            except OSError:
                self._arp = []
        return self._arp

    def _nic(
        self,
        g: GuestSample,
        nic: NicSample,
        target: _Target,
        mac: str | None,
        now: int,
    ) -> NicSample:
        if nic.bridge is None:
            return replace(nic, rtt_reason="not on a host bridge: not probed")
        host_addrs = list(self._bridges.get(nic.bridge, ()))
        if not host_addrs:
            return replace(
                nic,
                rtt_reason=f"bridge {nic.bridge} has no host IPv4 address: no baseline, "
                "and a probe would leave through a route; not probed",
            )
        if target.resolved_ns is None or now - target.resolved_ns >= self._resolve_ns:
            target.addr, target.source = self._resolve(g, mac, nic.bridge, host_addrs)
            target.resolved_ns = now
        if target.addr is None:
            return replace(nic, rtt_reason=target.source)
        port = self._tcp_ports.get(g.name, self._tcp_ports.get(g.uuid))
        prober = self._tcp if port is not None else self._icmp_prober()
        if prober is None:
            return replace(nic, addr=target.addr, rtt_reason=self._icmp_error)
        if target.last_sent_ns is None or now - target.last_sent_ns >= self._every_ns:
            target.last_sent_ns = now
            prober.send((g.uuid, g.dom_id, nic.name), target.addr, port, now)
        baseline = self._baseline(nic.bridge, host_addrs[0][0], now)
        answered = [r for r in target.results if r is not None]
        reason = None
        if not answered:
            if not target.results:
                reason = "first probe in flight"
            elif port is None:
                reason = (
                    f"no ICMP echo reply to the last {len(target.results)} probes (the guest "
                    "drops ICMP or is unreachable); configure a TCP port for it"
                )
            else:
                reason = target.reason
        return replace(
            nic,
            addr=target.addr,
            rtt_ns=percentile(answered, 50) if answered else None,
            rtt_p95_ns=percentile(answered, 95) if answered else None,
            host_rtt_ns=baseline,
            rtt_lost=target.lost,
            rtt_reason=reason,
        )

    def _resolve(
        self,
        g: GuestSample,
        mac: str | None,
        bridge: str,
        host_addrs: list[tuple[str, int]],
    ) -> tuple[str | None, str]:
        """(address, source) or (None, why not): configured, libvirt, then ARP, each
        accepted only on-link on the vNIC's bridge."""
        candidates: list[tuple[str, str]] = []
        conf = self._configured.get(g.name) or self._configured.get(g.uuid)
        if conf is not None:
            candidates.append((conf, "configured"))
        if mac is not None and self._addresses is not None:
            candidates.extend((a, "libvirt") for a in self._addresses(g.uuid).get(mac, ()))
        if mac is not None:
            candidates.extend(
                (ip, "arp") for ip, hw, dev in self._arp_table() if hw == mac and dev == bridge
            )
        for addr, source in candidates:
            if on_link(addr, host_addrs):
                return addr, source
        if candidates:
            return None, (
                f"address {candidates[0][0]} ({candidates[0][1]}) is not on {bridge}'s "
                "subnet: not probed"
            )
        if mac is None:
            return None, "no MAC known for this vNIC and no configured address"
        return None, (
            f"no IPv4 address known for {mac} (libvirt lease/agent, ARP on {bridge}); "
            "the host has not talked to the guest yet, or configure its address"
        )

    def _baseline(self, bridge: str, host_addr: str, now: int) -> int | None:
        """Median RTT to the host's own address on `bridge`, probing it when due."""
        key = ("bridge", bridge)
        self._seen.add(key)
        target = self._targets.setdefault(key, _Target(addr=host_addr))
        icmp = self._icmp_prober()
        if icmp is None:
            return None
        if target.last_sent_ns is None or now - target.last_sent_ns >= self._every_ns:
            target.last_sent_ns = now
            icmp.send(key, host_addr, None, now)
        answered = [r for r in target.results if r is not None]
        return percentile(answered, 50) if answered else None
