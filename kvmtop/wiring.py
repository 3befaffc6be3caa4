"""Wiring: the real collectors, the shared pipeline and the live feed, built from
Settings. Shared by the TUI, batch, record, serve and the benches.

Layer: beside the views and the report, above the feed (never imports textual or the
views); the commands, serve and the benches build with it.
"""

from __future__ import annotations

import gc

from kvmtop.collectors.base import GuestEnricher
from kvmtop.config import Settings
from kvmtop.feed.live import LiveFeed
from kvmtop.feed.pipeline import Pipeline
from kvmtop.sampler import Sampler

GC_THRESHOLD = 10_000
"""Allocations between young-generation collections (CPython's default is 700). A
tick allocates ~200 objects per guest, none of them in reference cycles, while the
window keeps tens of thousands alive; at the default the collector ran a full
collection every few ticks at 500 guests, walking the whole window each time and
finding nothing; with 10,000 the pipeline's tick is cheaper (bench_pipeline:
bench/results/measurements.md#gc-threshold). Cycles are still collected, later
(https://docs.python.org/3.11/library/gc.html#gc.set_threshold). The model's
records are Structs the collector does not track at all (`gc=False`: they cannot be
part of a cycle, tests/unit/test_model_records.py), so a full collection walks
well under half of the window (bench/results/measurements.md#model-records-as-msgspec-structs)."""


def tune_gc() -> None:
    """Set the collector's thresholds for kvmtop's allocation pattern (see
    `GC_THRESHOLD`); the entry point calls it before any command."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


def build_sampler(settings: Settings) -> Sampler:
    """The real collectors, wired to a sampler."""
    from kvmtop.collectors.host import HostCollector
    from kvmtop.collectors.kvmdebugfs import DebugfsCollector
    from kvmtop.collectors.libvirt.collector import LibvirtCollector
    from kvmtop.collectors.net_addresses import LibvirtAddresses
    from kvmtop.collectors.netprobe import NetProbe
    from kvmtop.collectors.processes import ProcessCollector
    from kvmtop.collectors.sched import SchedCollector
    from kvmtop.collectors.topology import TopologyCollector
    from kvmtop.collectors.tracepoints import TracepointCollector
    from kvmtop.collectors.vswitch import VswitchCollector

    libvirt = LibvirtCollector(settings.uri, balloon_every=settings.balloon_every)
    # Unmanaged KVM processes join the guests first, so the vCPU schedstat and
    # the debugfs stats cover them too; topology and tracepoints read the vCPU
    # threads sched found. Tracepoints count only the guests asked for (trace()).
    enrichers: list[GuestEnricher] = [
        ProcessCollector(),
        SchedCollector(),
        TopologyCollector(),
        DebugfsCollector(),
        TracepointCollector(),
    ]
    rtt = settings.rtt
    if rtt.enabled:  # sends packets: only when asked (config [rtt] or --rtt)
        enrichers.append(
            NetProbe(
                domain_info=libvirt.domain_info,
                addresses=LibvirtAddresses(settings.uri),
                configured=rtt.addresses,
                tcp_ports=rtt.tcp_ports,
                every_s=rtt.every_s,
            )
        )
    return Sampler(
        HostCollector(),
        libvirt,
        enrichers,
        host_enrichers=[VswitchCollector()],
        interval_s=settings.interval_s,
    )


def build_pipeline(settings: Settings) -> Pipeline:
    """The shared pipeline, with the detectors and incidents, as live and replay both
    use it."""
    from kvmtop.detectors.engine import build_engine
    from kvmtop.detectors.incidents import IncidentTracker

    return Pipeline(
        window_size=settings.window_size,
        min_ops=settings.min_ops,
        detect=build_engine(settings.detectors),
        incidents=IncidentTracker(settings.detectors),
    )


def build_live_feed(settings: Settings) -> LiveFeed[Sampler]:
    """Wire the real collectors to the shared pipeline."""
    return LiveFeed(build_sampler(settings), build_pipeline(settings))
