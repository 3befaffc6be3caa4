"""The sampler: run every collector once per tick and stamp the result.

Layer: sampler. Imports collectors and the model; never textual.

A failing source never crashes the tick: it becomes a `SourceStatus` with ok=False
and a reason, and its part of the sample is empty.

Per-reason exit tracing is costly (about 120 perf fds per vCPU), so it runs only for
the guests asked for with `trace()` (the detail screen open, `record --trace`). The
request is cheap and thread-safe; the slow attach and detach (a detach can take a good
part of a second: bench/results/measurements.md#tracepoint-detach-time) happen in
the next `sample()`, on the thread that samples, just before the tracer enriches.

The guest source gets a deadline (`GUEST_DEADLINE_SHARE` of the interval): a guest
that does not answer in time comes back as not responding instead of holding up the
tick, and the source's status names it. The sample is stamped (`Sample.mono_ns`)
when the guest source has returned, so rates span the time its counters were read.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Protocol

from kvmtop.collectors.base import (
    Closeable,
    CollectorError,
    Gapped,
    GuestEnricher,
    GuestSource,
    HostEnricher,
    HostSource,
    Probe,
    Tracer,
)
from kvmtop.model.rates.kvm import TRACE_ATTACHED, TRACE_FDS
from kvmtop.model.sample import GuestSample, HostSample, Sample, SourceStatus


def next_tick(due: float, now: float, interval_s: float) -> float:
    """When the tick after the one due at `due` starts: one interval later, or, when
    that is already past (the tick overran: a stall), the first time on the same grid
    that is still ahead of `now`. Missed ticks are skipped, never run one after another
    to catch up: a burst of ticks a few ms apart gives rates over intervals far
    shorter than the counters' read times can resolve (issue #16)."""
    following = due + interval_s
    if following >= now or interval_s <= 0:
        return max(following, now)
    return following + math.ceil((now - following) / interval_s) * interval_s


GUEST_DEADLINE_SHARE = 0.9
"""Share of the interval the guest source may take: the host collector, the
enrichers and the pipeline need the rest (bench/results/measurements.md#guest-deadline-share).
A guest that does not answer is found well before (`LibvirtCollector.stall_after`);
the deadline itself bounds a libvirtd that is slow for every guest (calls of 0.3-0.8 s
were seen in the lab while a domain started)."""

MAX_NAMED = 3
"""Guests, or gaps, named in a source's reason before "+N more"."""


class SampleSource(Protocol):
    """What a live feed needs from its source of ticks: the `Sampler`, or a recording
    played as if live (`kvmtop.store.looped.LoopedRecording`)."""

    interval_s: float

    def sample(self) -> Sample:
        """Collect one tick (never raises for a source failure)."""
        ...

    def trace(self, guests: Iterable[str]) -> None:
        """Count exits by reason for these guests (names or UUIDs) from now on."""
        ...

    def close(self) -> None:
        """Release the collectors."""
        ...


class Sampler:
    """Runs the collectors for one tick and returns a raw `Sample`.

    Args:
        host: host baseline collector, or None to skip it.
        guests: guest inventory/stats collector (libvirt), or None.
        enrichers: collectors that add to the guests (sched, KVM stats); the first
            `Tracer` among them serves `trace()`.
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
        self.tracer = next((e for e in self.enrichers if isinstance(e, Tracer)), None)
        self.host_enrichers = tuple(host_enrichers)
        self._gapped: dict[int, Gapped] = {}
        """The collectors that note their gaps, by id: a runtime protocol check costs
        microseconds, so it is made once here, not per source per tick."""
        for source in (host, *self.enrichers, *self.host_enrichers):
            if isinstance(source, Gapped):
                self._gapped[id(source)] = source
        self.interval_s = interval_s
        self._clock = clock
        self._wall = wall
        self._reprobe_every = max(1, reprobe_every)
        self._tick = 0
        self._probes: dict[int, Probe] = {}
        self._stale: set[int] = set()
        self._wanted: frozenset[str] = frozenset()
        self._seen_wanted = self._wanted
        self._traced: dict[str, str] = {}
        """Each guest asked for (name or UUID) → the key the tracer counts it under."""
        self._trace_errors: dict[str, str] = {}
        """Each guest asked for whose attach failed → why (until asked for again)."""

    def trace(self, guests: Iterable[str]) -> None:
        """Count exits by reason for these guests only (names or UUIDs; none: stop).

        Returns at once (safe from any thread): the next `sample()` detaches the
        guests no longer asked for and attaches the new ones, once they appear in
        the sample (TCG guests are skipped: they make no KVM exits). An attach that
        failed is tried again only on the next request; the tracer's status says why.
        """
        self._wanted = frozenset(guests)

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

    def _status(
        self,
        probe: Probe,
        started: int,
        ended: int,
        error: str | None,
        note: str | None = None,
        source: object = None,
    ) -> SourceStatus:
        """`note`: what the source delivered only in part (it stays ok). `source`: the
        collector read this tick; a `Gapped` one's gaps from this read are the reason
        in place of the probe's."""
        reason = probe.reason
        gapped = self._gapped.get(id(source))
        if error is None and probe.available and gapped is not None:
            reason = _listed(gapped.last_gaps)
        return SourceStatus(
            name=probe.name,
            ok=error is None and probe.available,
            reason=error or note or reason,
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
            statuses.append(self._status(probe, t0, self._clock(), error, source=self.host))

        for host_enricher in self.host_enrichers if host is not None else ():
            probe = self._probe(host_enricher, type(host_enricher).__name__)
            t0 = self._clock()
            error = None
            if probe.available and host is not None:
                try:
                    host = host_enricher.enrich_host(host)
                except (CollectorError, OSError, ValueError) as exc:
                    error = str(exc)
            statuses.append(self._status(probe, t0, self._clock(), error, source=host_enricher))

        if self.guests is not None:
            probe = self._probe(self.guests, "libvirt")
            t0 = self._clock()
            error = None
            if probe.available:
                try:
                    guests = self.guests.collect(
                        self._tick, deadline_s=GUEST_DEADLINE_SHARE * self.interval_s
                    )
                except CollectorError as exc:
                    error = str(exc)
                    # Probe again next tick: the daemon may be restarting. Its guests
                    # still run: listed as not responding, not gone.
                    self._stale.add(id(self.guests))
                    guests = self.guests.unanswered(error)
            else:
                guests = self.guests.unanswered(probe.reason or "libvirt unavailable")
            # Some guests did not answer while the source did: its status names them.
            note = _not_responding_note(guests) if probe.available and error is None else None
            statuses.append(self._status(probe, t0, self._clock(), error, note))

        mono = self._clock()
        for enricher in self.enrichers:
            probe = self._probe(enricher, type(enricher).__name__)
            t0 = self._clock()
            error = None
            tracer = self.tracer if enricher is self.tracer else None
            if tracer is not None:
                self._sync_tracing(tracer, guests)
            if probe.available:
                try:
                    guests = enricher.enrich(guests)
                except (CollectorError, OSError, ValueError) as exc:
                    error = str(exc)
            status = self._status(probe, t0, self._clock(), error, source=enricher)
            if tracer is not None:
                status = self._tracing_status(tracer, status)
            statuses.append(status)

        self._tick += 1
        return Sample(
            wall_s=wall,
            mono_ns=mono,
            host=host,
            guests=guests,
            sources=tuple(statuses),
            interval_s=self.interval_s,
        )

    def _sync_tracing(self, tracer: Tracer, guests: Sequence[GuestSample]) -> None:
        """Detach the guests no longer asked for, attach the ones asked for (slow)."""
        wanted = self._wanted
        if wanted is not self._seen_wanted:  # a new request: try failed guests again
            self._seen_wanted = wanted
            self._trace_errors.clear()
        for want in [w for w in self._traced if w not in wanted]:
            key = self._traced.pop(want)
            if key not in self._traced.values():
                tracer.detach(key)
        present = {g.name: g for g in guests} | {g.uuid: g for g in guests}
        for want in sorted(wanted - self._traced.keys() - self._trace_errors.keys()):
            guest = present.get(want)
            if guest is None or guest.accel == "tcg":
                continue
            try:
                tracer.attach(guest.uuid, [v.tid for v in guest.vcpus if v.tid])
            except (CollectorError, OSError, ValueError) as exc:
                self._trace_errors[want] = str(exc)
            else:
                self._traced[want] = guest.uuid

    def _tracing_status(self, tracer: Tracer, status: SourceStatus) -> SourceStatus:
        """The tracer's status with the guests traced now and why others are not."""
        traced = [k for k in tracer.attached() if k not in tracer.errors]
        detail = {
            **status.detail,
            TRACE_ATTACHED: ", ".join(traced),
            TRACE_FDS: str(tracer.open_fds()),
        }
        problems = [f"tracing {w}: {e}" for w, e in sorted(self._trace_errors.items())]
        problems += [f"tracing {k}: {e}" for k, e in sorted(tracer.errors.items())]
        if not problems:
            return replace(status, detail=detail)
        reason = "; ".join(([status.reason] if status.reason else []) + problems)
        return replace(status, ok=False, reason=reason, detail=detail)

    def close(self) -> None:
        """Release every collector's resources (connections, perf fds): each collector
        with a `close()` is closed even when another one's close raises."""
        with contextlib.ExitStack() as stack:
            for source in (self.host, self.guests, *self.host_enrichers, *self.enrichers):
                if isinstance(source, Closeable):
                    stack.callback(source.close)


def _not_responding_note(guests: Sequence[GuestSample]) -> str | None:
    """The guests that did not answer this tick and why, for the source's status."""
    silent = [g for g in guests if g.not_responding_since_s is not None]
    return _listed([f"{g.name} {g.not_responding}" for g in silent])


def _listed(items: Sequence[str]) -> str | None:
    """The first `MAX_NAMED` items, "; "-joined, and "+N more" for the rest; None for
    none. A reason is recorded with every sample: a host of hundreds of guests must
    not write hundreds of names per tick."""
    if not items:
        return None
    more = len(items) - MAX_NAMED
    return "; ".join(items[:MAX_NAMED]) + (f"; +{more} more" if more > 0 else "")
