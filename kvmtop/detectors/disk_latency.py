"""`disk_latency`: a guest disk slower than its floor and k × its own median
(docs/detectors.md#disk_latency).

Latency per request = Δ`block.N.{rd,wr,fl}.times` / Δreqs, judged only over at least
`min_reqs` requests. A throttled disk completes few requests per tick, so the deltas
of the last ticks (up to `accumulate_s`) are summed until there are enough; a disk
that still has too few is not judged.

Bad when latency > max(floor, k × rolling median of the same disk and kind) or above
`crit_ms` whatever the median. The floor depends on the host device: 2 ms when it is
non-rotational, 20 ms when rotational, network or unknown.

Verdict (ESXi GAVG = KAVG + DAVG as the model, docs/detectors.md#disk_latency):
- "storage": the host backing device is slow too (above its floor, or ≥ 90 % busy);
  cause "disk:<host device>", shared by every guest disk on it;
- "above the device": the host device is fine (guest − host > 2 ms, or it completed
  nothing while the guest waited): QEMU iothread, iotune throttling, image format
  or host page cache; cause "disk-above-device:<guest uuid>", shared by the guest's
  disks;
- unknown when the backing device cannot be resolved (then host io PSI is shown).

The backing device is `DiskSample.host_dev`; for a local image the collector could
not resolve, the host's only whole disk (loop, ram, zram, optical and nbd devices
aside) is assumed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from kvmtop.detectors.base import (
    GuestView,
    Observation,
    Tick,
    cause_key,
    good_verdict,
    known,
    verdict,
)
from kvmtop.detectors.settings import DetectorSettings, DiskLatencySettings
from kvmtop.detectors.stats import RollingMedian
from kvmtop.model.rates.counters import counter_delta
from kvmtop.model.rates.host import HostDiskRates
from kvmtop.model.sample import DiskSample
from kvmtop.model.units import NS_PER_MS

ID = "disk_latency"
KINDS = (("rd", "read"), ("wr", "write"), ("fl", "flush"))
ATTRS = {kind: (f"{kind}_reqs", f"{kind}_times_ns") for kind, _ in KINDS}
NOT_BACKING = ("loop", "ram", "zram", "sr", "fd", "nbd")


@dataclass(slots=True)
class _Kind:
    """Per (disk, request kind): recent deltas and the rolling median."""

    deltas: deque[tuple[float, int, int]]
    median: RollingMedian


class _Judged(NamedTuple):
    """One request kind of one disk judged this tick (a tuple: up to three per disk
    per tick, cheaper than a frozen dataclass)."""

    kind: str
    latency_ms: float
    reqs: int
    span_s: float
    median_ms: float | None
    threshold_ms: float
    bad: bool


def backing_device(
    disk: DiskSample, by_name: dict[str, HostDiskRates], fallback: str | None
) -> HostDiskRates | None:
    """The host device backing `disk`: `host_dev` as the collector resolved it; for a
    local image it could not resolve, the host's only whole disk; none for network
    storage (a source that is not a local path)."""
    local = disk.path is not None and disk.path.startswith("/")
    name = disk.host_dev or (fallback if local else None)
    return by_name.get(name) if name is not None else None


def only_disk(tick: Tick) -> str | None:
    """Name of the host's only whole disk, when there is exactly one."""
    if tick.sample.host is None:
        return None
    names = [
        d.name
        for d in tick.sample.host.blockdevs
        if not d.is_partition and not d.name.startswith(NOT_BACKING)
    ]
    return names[0] if len(names) == 1 else None


class DiskLatency:
    """Disk latency detector (see the module docstring)."""

    id = ID

    def __init__(self, settings: DetectorSettings) -> None:
        """Start with no disks."""
        self._disks: dict[tuple[str, str], dict[str, _Kind]] = {}
        """(guest uuid, disk target) → request kind → its state."""

    def forget(self, uuid: str) -> None:
        """Drop a guest's disks."""
        for key in [k for k in self._disks if k[0] == uuid]:
            del self._disks[key]

    def observe(self, tick: Tick) -> Iterable[Observation]:
        """One verdict per guest disk with enough requests in the judged span."""
        fallback = only_disk(tick)
        by_name = {d.name: d for d in tick.host.disks}
        for g in tick.guests:
            if g.prev is None or not g.settings.enabled(ID):
                continue
            s = g.settings.disk_latency
            prev = {d.target: d for d in g.prev.disks}
            for disk in g.sample.disks:
                p = prev.get(disk.target)
                if p is None:
                    continue
                key = (g.uuid, disk.target)
                kinds = self._disks.get(key)
                if (
                    disk.rd_reqs == p.rd_reqs
                    and disk.wr_reqs == p.wr_reqs
                    and disk.fl_reqs == p.fl_reqs
                    and (kinds is None or not any(k.deltas for k in kinds.values()))
                ):
                    # No request completed and none pending: `_judge` leaves every
                    # kind unjudged and changes nothing. Most disks are idle on
                    # most ticks, so they cost three comparisons.
                    continue
                if kinds is None:
                    kinds = self._disks[key] = {}
                dev = backing_device(disk, by_name, fallback)
                ssd = dev is not None and dev.rotational is False
                judged = [
                    j
                    for kind, _ in KINDS
                    if (j := self._judge(tick, s, kinds, disk, p, kind, ssd)) is not None
                ]
                if judged:
                    obs = self._verdict(tick, g, s, disk, judged, dev)
                    if obs is not None:
                        yield obs

    @staticmethod
    def _judge(
        tick: Tick,
        s: DiskLatencySettings,
        kinds: dict[str, _Kind],
        disk: DiskSample,
        prev: DiskSample,
        kind: str,
        ssd: bool,
    ) -> _Judged | None:
        """One request kind of a disk (its state in `kinds`); None when not judged.

        `ssd`: the backing device is known to be non-rotational (the lower floor).
        """
        reqs_attr, times_attr = ATTRS[kind]
        dreqs = counter_delta(getattr(prev, reqs_attr), getattr(disk, reqs_attr))
        dtime = counter_delta(getattr(prev, times_attr), getattr(disk, times_attr))
        state = kinds.get(kind)
        if dreqs is None or dtime is None or (dreqs == 0 and (state is None or not state.deltas)):
            # Unknown (counter reset) or idle with nothing pending: no verdict, no cost.
            if state is not None:
                state.deltas.clear()
            return None
        if state is None:
            state = kinds[kind] = _Kind(deque(), RollingMedian(s.median_window_s))
        state.deltas.append((tick.wall_s, dreqs, dtime))
        horizon = tick.wall_s - s.accumulate_s
        while state.deltas and state.deltas[0][0] < horizon:
            state.deltas.popleft()
        reqs = 0
        total_ns = 0
        start = tick.wall_s
        for t, r, ns in reversed(state.deltas):
            reqs += r
            total_ns += ns
            start = t
            if reqs >= s.min_reqs:
                break
        if reqs < max(s.min_reqs, 1):
            return None
        latency = total_ns / reqs / NS_PER_MS
        rm = state.median
        med = rm.median() if rm.covered_s >= s.min_baseline_s else None
        floor = s.floor_ssd_ms if ssd else s.floor_rotational_ms
        threshold = max(floor, s.k * med) if med is not None else floor
        rm.add(tick.wall_s, latency)
        span = tick.wall_s - start + (tick.dt_s or 0.0)
        return _Judged(
            kind=kind,
            latency_ms=latency,
            reqs=reqs,
            span_s=span,
            median_ms=med,
            threshold_ms=threshold,
            bad=latency > threshold or latency > s.crit_ms,
        )

    @staticmethod
    def _verdict(
        tick: Tick,
        g: GuestView,
        s: DiskLatencySettings,
        disk: DiskSample,
        judged: list[_Judged],
        dev: HostDiskRates | None,
    ) -> Observation | None:
        """The verdict on one disk; None for a good one that changes nothing."""
        worst = max(judged, key=lambda j: (j.bad, j.latency_ms / j.threshold_ms))
        key = f"{g.uuid}/{disk.target}"
        if not worst.bad:
            if not tick.tracking(ID, key):
                return None
            return good_verdict(g, s, key, disk.target)
        names = dict(KINDS)
        host_ms: float | None = None
        if dev is not None:
            # The host has no flush latency per device: judge flushes against the
            # slower of its reads and writes.
            pick = {"rd": (dev.read_ms,), "wr": (dev.write_ms,)}
            values = [v for v in pick.get(worst.kind, (dev.read_ms, dev.write_ms)) if v is not None]
            host_ms = max(values) if values else None
        psi_io = tick.host.psi_io_full_pct
        cause, judgement, detail = _attribute(s, g.uuid, worst, dev, host_ms)
        evidence = known(
            {f"{names[j.kind]}_ms": j.latency_ms for j in judged}
            | {
                "reqs": float(worst.reqs),
                "span_s": worst.span_s,
                "median_ms": worst.median_ms,
                "threshold_ms": worst.threshold_ms,
            }
        )
        baseline = dict(tick.baseline) | known(
            {
                "host_dev_ms": host_ms,
                "host_dev_util_pct": dev.util_pct if dev is not None else None,
                "host_psi_io_full_pct": psi_io,
            }
        )
        med = f"its median {worst.median_ms:.1f} ms, " if worst.median_ms is not None else ""
        message = (
            f"{disk.target} {names[worst.kind]} {worst.latency_ms:.1f} ms/req "
            f"({worst.reqs} reqs in {worst.span_s:.0f} s; {med}"
            f"limit {worst.threshold_ms:.1f} ms): {judgement}{detail}"
        )
        if worst.kind == "fl" and all(not j.bad for j in judged if j.kind != "fl"):
            message += "; reads/writes normal: fsync storm or writeback"
        return verdict(
            g,
            s,
            key,
            bad=True,
            device=disk.target,
            severity="critical" if worst.latency_ms > s.crit_ms else "warning",
            message=message,
            evidence=evidence,
            baseline=baseline,
            cause=cause,
        )


def _attribute(
    s: DiskLatencySettings,
    uuid: str,
    worst: _Judged,
    dev: HostDiskRates | None,
    host_ms: float | None,
) -> tuple[str, str, str]:
    """(cause key, "storage" | "above the device" | "host device unknown", detail) for
    a disk of the guest `uuid`; the cause is empty when the device is unknown."""
    if dev is None:
        return "", "host device unknown", " (backing device not resolved; see host io PSI)"
    storage = cause_key("disk", dev.name)
    floor = s.floor_ssd_ms if dev.rotational is False else s.floor_rotational_ms
    busy = dev.util_pct is not None and dev.util_pct >= s.host_util_pct
    slow = host_ms is not None and host_ms > floor
    if busy or slow:
        util = f", {dev.util_pct:.0f}% busy" if dev.util_pct is not None else ""
        ms = f"{host_ms:.1f} ms" if host_ms is not None else "n/a"
        return storage, "storage", f" (host {dev.name} {ms}{util})"
    if host_ms is None or worst.latency_ms - host_ms > s.host_gap_ms:
        ms = f"{host_ms:.1f} ms" if host_ms is not None else "idle"
        util = f", {dev.util_pct:.0f}% busy" if dev.util_pct is not None else ""
        return (
            cause_key("disk-above-device", uuid),
            "above the device",
            f" (host {dev.name} {ms}{util}: QEMU iothread, iotune throttling, "
            "image format or host cache)",
        )
    return storage, "storage", f" (host {dev.name} {host_ms:.1f} ms)"
