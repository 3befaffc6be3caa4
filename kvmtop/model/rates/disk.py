"""Guest disks over an interval: IOPS, throughput, latency per request.

Layer: model (pure). No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from kvmtop.model.rates.counters import known_sum, latency_ms, rate
from kvmtop.model.sample import DiskSample
from kvmtop.model.units import NS_PER_MS


class DiskRates(msgspec.Struct, frozen=True, gc=False):
    """Per guest disk: IOPS, throughput and mean latency per request.

    `host_dev` is the host disk holding the image (the baseline to compare with).
    """

    target: str
    path: str | None = None
    host_dev: str | None = None
    read_iops: float | None = None
    write_iops: float | None = None
    flush_iops: float | None = None
    read_bytes_per_s: float | None = None
    write_bytes_per_s: float | None = None
    read_ms: float | None = None
    write_ms: float | None = None
    flush_ms: float | None = None

    @property
    def iops(self) -> float | None:
        """Read + write + flush requests per second."""
        return known_sum((self.read_iops, self.write_iops, self.flush_iops))


def derive_disk(prev: DiskSample | None, cur: DiskSample, dt_s: float, min_ops: int) -> DiskRates:
    if prev is None:
        return DiskRates(target=cur.target, path=cur.path, host_dev=cur.host_dev)
    return DiskRates(
        target=cur.target,
        path=cur.path,
        host_dev=cur.host_dev,
        read_iops=rate(prev.rd_reqs, cur.rd_reqs, dt_s),
        write_iops=rate(prev.wr_reqs, cur.wr_reqs, dt_s),
        flush_iops=rate(prev.fl_reqs, cur.fl_reqs, dt_s),
        read_bytes_per_s=rate(prev.rd_bytes, cur.rd_bytes, dt_s),
        write_bytes_per_s=rate(prev.wr_bytes, cur.wr_bytes, dt_s),
        read_ms=latency_ms(prev.rd_times_ns, cur.rd_times_ns, prev.rd_reqs, cur.rd_reqs, min_ops),
        write_ms=latency_ms(prev.wr_times_ns, cur.wr_times_ns, prev.wr_reqs, cur.wr_reqs, min_ops),
        flush_ms=latency_ms(prev.fl_times_ns, cur.fl_times_ns, prev.fl_reqs, cur.fl_reqs, min_ops),
    )


def weighted_latencies(
    disks: tuple[DiskSample, ...],
    prev_disks: Mapping[str, DiskSample],
    min_ops: int,
) -> tuple[float | None, float | None, float | None]:
    """Read, write and flush latency over all disks of a guest: Σ Δtimes / Σ Δreqs per
    kind (not a mean of means), each over the disks whose counters moved forward."""
    totals = [0, 0, 0, 0, 0, 0]  # (ns, reqs) of rd, wr, fl
    for d in disks:
        p = prev_disks.get(d.target)
        if p is None:
            continue
        for i, (pr, cr, pt, ct) in enumerate(
            (
                (p.rd_reqs, d.rd_reqs, p.rd_times_ns, d.rd_times_ns),
                (p.wr_reqs, d.wr_reqs, p.wr_times_ns, d.wr_times_ns),
                (p.fl_reqs, d.fl_reqs, p.fl_times_ns, d.fl_times_ns),
            )
        ):
            if pr is None or cr is None or pt is None or ct is None or cr < pr or ct < pt:
                continue
            totals[2 * i] += ct - pt
            totals[2 * i + 1] += cr - pr
    least = max(min_ops, 1)
    rd, wr, fl = (
        None if reqs < least else ns / reqs / NS_PER_MS
        for ns, reqs in zip(totals[::2], totals[1::2], strict=True)
    )
    return rd, wr, fl
