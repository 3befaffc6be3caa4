"""The sampler: run every collector once per tick and stamp the result.

Layer: sampler. Imports collectors and the model; never textual.

A failing source never crashes the tick: it becomes a `SourceStatus` with ok=False
and a reason, and its part of the sample is empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from kvmtop.collectors.base import CollectorError, Probe
from kvmtop.model.sample import GuestSample, HostSample, Sample, SourceStatus


class HostSource(Protocol):
    """What the sampler needs from the host collector."""

    def probe(self) -> Probe:
        """Availability and partial gaps."""
        ...

    def collect(self) -> HostSample:
        """Host counters now; raises CollectorError on failure."""
        ...


class GuestSource(Protocol):
    """What the sampler needs from the libvirt collector."""

    def probe(self) -> Probe:
        """Availability, versions, URI."""
        ...

    def collect(self, tick: int) -> tuple[GuestSample, ...]:
        """All guests now; raises CollectorError on failure."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class GuestEnricher(Protocol):
    """A collector that adds host-side facts to guests (vCPU threads' schedstat)."""

    def probe(self) -> Probe:
        """Availability."""
        ...

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        """The same guests with more fields filled."""
        ...


class HostEnricher(Protocol):
    """A collector that adds to the host sample (Open vSwitch ports and datapaths)."""

    def probe(self) -> Probe:
        """Availability."""
        ...

    def enrich_host(self, host: HostSample) -> HostSample:
        """The same host sample with more fields filled; raises CollectorError."""
        ...


class Sampler:
    """Runs the collectors for one tick and returns a raw `Sample`.

    Args:
        host: host baseline collector, or None to skip it.
        guests: guest inventory/stats collector (libvirt), or None.
        enrichers: collectors that add to the guests (sched, KVM stats).
        host_enrichers: collectors that add to the host sample (vswitch); skipped
            on a tick without a host sample.
        interval_s: the interval the caller samples at (recorded in the sample).
        clock: monotonic clock in ns; wall: wall clock in s (injectable for tests).
        reprobe_every: while a source is unavailable, probe it again this often
            (ticks), so a daemon that comes back is picked up.
    """

    def __init__(
        self,
        host: HostSource | None,
        guests: GuestSource | None,
        enrichers: Sequence[GuestEnricher] = (),
        *,
        host_enrichers: Sequence[HostEnricher] = (),
        interval_s: float = 2.0,
        clock: Callable[[], int] = time.monotonic_ns,
        wall: Callable[[], float] = time.time,
        reprobe_every: int = 5,
    ) -> None:
        self.host = host
        self.guests = guests
        self.enrichers = tuple(enrichers)
        self.host_enrichers = tuple(host_enrichers)
        self.interval_s = interval_s
        self._clock = clock
        self._wall = wall
        self._reprobe_every = max(1, reprobe_every)
        self._tick = 0
        self._probes: dict[int, Probe] = {}
        self._stale: set[int] = set()

    def probes(self) -> dict[str, Probe]:
        """The latest probe result of every collector, by collector name."""
        return {p.name: p for p in self._probes.values()}

    def _probe(
        self, source: HostSource | GuestSource | GuestEnricher | HostEnricher, fallback: str
    ) -> Probe:
        """The cached probe of `source`, refreshed while the source is unavailable."""
        cached = self._probes.get(id(source))
        if (
            cached is None
            or (not cached.available and self._tick % self._reprobe_every == 0)
            or id(source) in self._stale
        ):
            self._stale.discard(id(source))
            try:
                cached = source.probe()
            except Exception as exc:  # a probe must never take the tick down
                cached = Probe(name=fallback, available=False, reason=f"probe failed: {exc}")
            self._probes[id(source)] = cached
        return cached

    @staticmethod
    def _status(probe: Probe, started: int, ended: int, error: str | None) -> SourceStatus:
        return SourceStatus(
            name=probe.name,
            ok=error is None and probe.available,
            reason=error or probe.reason,
            duration_ns=ended - started,
            detail=dict(probe.detail),
        )

    def sample(self) -> Sample:
        """Collect one tick. Never raises for a source failure."""
        wall = self._wall()
        statuses: list[SourceStatus] = []
        host: HostSample | None = None
        guests: tuple[GuestSample, ...] = ()

        if self.host is not None:
            probe = self._probe(self.host, "host")
            t0 = self._clock()
            error = None
            if probe.available:
                try:
                    host = self.host.collect()
                except (CollectorError, OSError, ValueError) as exc:
                    error = str(exc)
            statuses.append(self._status(probe, t0, self._clock(), error))

        for host_enricher in self.host_enrichers if host is not None else ():
            probe = self._probe(host_enricher, type(host_enricher).__name__)
            t0 = self._clock()
            error = None
            if probe.available and host is not None:
                try:
                    host = host_enricher.enrich_host(host)
                except (CollectorError, OSError, ValueError) as exc:
                    error = str(exc)
            statuses.append(self._status(probe, t0, self._clock(), error))

        if self.guests is not None:
            probe = self._probe(self.guests, "libvirt")
            t0 = self._clock()
            error = None
            if probe.available:
                try:
                    guests = self.guests.collect(self._tick)
                except CollectorError as exc:
                    error = str(exc)
                    # Probe again next tick: the daemon may be restarting.
                    self._stale.add(id(self.guests))
            statuses.append(self._status(probe, t0, self._clock(), error))

        mono = self._clock()
        for enricher in self.enrichers:
            probe = self._probe(enricher, type(enricher).__name__)
            t0 = self._clock()
            error = None
            if probe.available:
                try:
                    guests = enricher.enrich(guests)
                except (CollectorError, OSError, ValueError) as exc:
                    error = str(exc)
            statuses.append(self._status(probe, t0, self._clock(), error))

        self._tick += 1
        return Sample(
            wall_s=wall,
            mono_ns=mono,
            host=host,
            guests=guests,
            sources=tuple(statuses),
            interval_s=self.interval_s,
        )

    def close(self) -> None:
        """Release every collector's resources."""
        if self.guests is not None:
            self.guests.close()
