"""What every collector shares: the probe result, the error type, and the protocols
the sampler drives collectors through (host and guest sources, enrichers, the
tracer).

Layer: collectors (the model only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from kvmtop.model.sample import GuestSample, HostSample


@dataclass(frozen=True, slots=True)
class Probe:
    """Whether a source can be used here, and if not, a reason a human can act on.

    Attributes:
        name: collector name, as in `SourceStatus.name`.
        available: the source delivers data.
        reason: why it does not, or what part of it is missing
            (e.g. "/proc/schedstat absent: kernel built without CONFIG_SCHEDSTATS").
        detail: facts for the sources view (versions, paths, URI).
    """

    name: str
    available: bool
    reason: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


class CollectorError(Exception):
    """A source failed for this tick; the message is shown to the user as is."""


R = TypeVar("R")


@runtime_checkable
class Gapped(Protocol):
    """A collector whose read may miss some of its sources and go on: what the last
    read could not get is in `last_gaps`.

    The sampler makes them the source's reason on every tick it reads the source (the
    probe's reason is what the probe's own read missed, which goes stale), so a
    daemon that stops answering after start-up shows in the sources view."""

    @property
    def name(self) -> str:
        """Collector name, as in `Probe.name`."""
        ...

    @property
    def last_gaps(self) -> tuple[str, ...]:
        """What the last read could not get, one line each."""
        ...


def probe_read(
    collector: Gapped, read: Callable[[], R], detail: Callable[[R], dict[str, str]]
) -> Probe:
    """The probe of a collector by one read: unavailable, with the error's message,
    when `read` raises CollectorError; else available, with the read's gaps
    (`collector.last_gaps`, joined) as the reason and `detail` of what it read."""
    try:
        value = read()
    except CollectorError as e:
        return Probe(collector.name, False, str(e))
    return Probe(collector.name, True, "; ".join(collector.last_gaps) or None, detail(value))


def turn(tick: int, pid: int, period: int) -> bool:
    """Whether `tick` is `pid`'s turn in a period of `period` ticks: a collector that
    re-reads something once per period spreads the pids' turns over it, rather than
    reading every pid's in the same tick."""
    return (tick + pid) % period == 0


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

    def collect(self, tick: int, deadline_s: float | None = None) -> tuple[GuestSample, ...]:
        """All guests now, within `deadline_s` (guests that did not answer by then are
        marked `not_responding_since_s`); raises CollectorError on failure."""
        ...

    def unanswered(self, reason: str) -> tuple[GuestSample, ...]:
        """The guests last seen, marked not responding for `reason` (the collector
        failed this tick)."""
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


@runtime_checkable
class Tracer(GuestEnricher, Protocol):
    """A guest enricher that counts exits by reason for the guests attached (tracepoints).

    Attributes:
        errors: per attached key, why counting stopped during `enrich`.
    """

    errors: dict[str, str]

    def attach(self, key: str, tids: Iterable[int] = ()) -> None:
        """Start counting for a guest (slow); raises CollectorError."""
        ...

    def detach(self, key: str) -> None:
        """Stop counting for a guest and close its fds (slow)."""
        ...

    def attached(self) -> tuple[str, ...]:
        """Keys of the guests being counted."""
        ...

    def open_fds(self) -> int:
        """Perf fds open over all attached guests."""
        ...


@runtime_checkable
class Closeable(Protocol):
    """A collector holding resources (connections, fds) until `close()`."""

    def close(self) -> None:
        """Release them."""
        ...


class HostEnricher(Protocol):
    """A collector that adds to the host sample (Open vSwitch ports and datapaths)."""

    def probe(self) -> Probe:
        """Availability."""
        ...

    def enrich_host(self, host: HostSample) -> HostSample:
        """The same host sample with more fields filled; raises CollectorError."""
        ...
