"""kvmtop's real sampler and pipeline run against the lab in-process, every raw
libvirt reply kept: what the end-to-end lab tests observe.

Shared by tests/e2e/test_lab_collectors.py and tests/e2e/test_lab_kvm_host.py.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvmtop.collectors.libvirt.collector import LibvirtCollector
from kvmtop.config import Settings
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.sample import Sample
from kvmtop.model.snapshot import Snapshot
from kvmtop.wiring import build_pipeline, build_sampler
from tests.lab.fixture import kvmtop_interval_s


@dataclass(frozen=True)
class Reply:
    """One raw getAllDomainStats reply: when its call started and returned (monotonic
    ns), and the stats by domain UUID."""

    started_ns: int
    returned_ns: int
    stats: dict[str, dict[str, Any]]


class RecordingConnection:
    """A libvirt connection that keeps every raw getAllDomainStats reply."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.replies: list[Reply] = []

    def getAllDomainStats(self, stats: int, flags: int) -> Any:
        started = time.monotonic_ns()
        reply = self._conn.getAllDomainStats(stats, flags)
        self.replies.append(
            Reply(started, time.monotonic_ns(), {d.UUIDString(): dict(s) for d, s in reply})
        )
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@dataclass
class Observation:
    """Everything kvmtop produced while watching the lab for OBSERVE_S seconds."""

    samples: list[Sample] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    raw: list[RecordingConnection] = field(default_factory=list)

    def _calls(self, i: int) -> list[Reply]:
        """The stats calls of tick `i`: started after sample i-1 was stamped (each
        sample is stamped after its guests were read), in the order they started."""
        after = self.samples[i - 1].mono_ns if i > 0 else 0
        return sorted(
            (
                r
                for conn in self.raw
                for r in conn.replies
                if after < r.started_ns <= self.samples[i].mono_ns
            ),
            key=lambda r: r.started_ns,
        )

    def raw_stats(self, i: int) -> dict[str, dict[str, Any]]:
        """The raw libvirt stats behind sample `i`, by domain UUID: the replies of tick
        i's calls that returned by the sample, merged in the order the calls started (a
        NOWAIT retry after an abandoned call wins). A call abandoned over its deadline
        that returned later is not in it: kvmtop never used its reply."""
        merged: dict[str, dict[str, Any]] = {}
        for reply in self._calls(i):
            if reply.returned_ns <= self.samples[i].mono_ns:
                for uuid, stats in reply.stats.items():
                    merged.setdefault(uuid, {}).update(stats)
        return merged

    def clean(self, i: int) -> bool:
        """Tick `i` read libvirt with one call that returned in time (no call abandoned
        over the deadline, no NOWAIT retry: every group of every guest answered)."""
        calls = self._calls(i)
        return len(calls) == 1 and calls[0].returned_ns <= self.samples[i].mono_ns

    def last_clean_pair(self) -> int:
        """The latest sample i whose tick and the one before were both clean: kvmtop's
        rates at i come from exactly the two raw replies a test compares them with (on
        a loaded host, as the nested lab's emulated one, a tick can overrun and
        abandon its call)."""
        clean = [i for i in range(1, len(self.samples)) if self.clean(i - 1) and self.clean(i)]
        assert clean, "no two consecutive ticks read libvirt with one timely call each"
        return clean[-1]

    def interval_s(self, i: int) -> float:
        """Seconds between samples i-1 and i, as kvmtop's rates use them."""
        return (self.samples[i].mono_ns - self.samples[i - 1].mono_ns) / 1e9

    def series(self, name: str, value: Callable[[GuestRates], float | None]) -> list[float]:
        """Known values of one guest's figure, frame by frame (first frame has none)."""
        out = []
        for snap in self.snapshots:
            for g in snap.guests:
                if g.name == name and (v := value(g)) is not None:
                    out.append(v)
        return out

    def median(self, name: str, value: Callable[[GuestRates], float | None]) -> float:
        """Median over the run; fails when kvmtop never produced the figure."""
        values = self.series(name, value)
        assert values, f"kvmtop produced no value for {name}"
        return statistics.median(values)


def watch(
    seconds: float,
    settings: Settings | None = None,
    trace: tuple[str, ...] = (),
    min_samples: int = 6,
    enough: Callable[[Observation], bool] | None = None,
    max_s: float = 120.0,
) -> Observation:
    """Run the real sampler and pipeline at the lab's interval (`kvmtop_interval_s`
    of its manifest) for `seconds`, and on until it
    has `min_samples` (a host whose ticks take longer than the interval, like the
    nested lab's emulated one, skips ticks) and, with `enough`, until that holds or
    `max_s` have passed, counting exits by reason for the guests in
    `trace` (names or UUIDs)."""
    import libvirt

    settings = settings or Settings(interval_s=kvmtop_interval_s())
    obs = Observation()

    def open_recording(uri: str | None) -> RecordingConnection:
        conn = RecordingConnection(libvirt.openReadOnly(uri))
        obs.raw.append(conn)
        return conn

    sampler = build_sampler(settings)
    sampler.guests = LibvirtCollector(
        settings.uri, balloon_every=settings.balloon_every, open_fn=open_recording
    )
    sampler.trace(trace)
    pipeline = build_pipeline(settings)
    deadline = time.monotonic()
    end, give_up = deadline + seconds, deadline + max_s

    def more() -> bool:
        if time.monotonic() < end or len(obs.samples) < min_samples:
            return True
        return enough is not None and not enough(obs) and time.monotonic() < give_up

    try:
        while more():
            sample = sampler.sample()
            obs.samples.append(sample)
            obs.snapshots.append(pipeline.push(sample, mode="live"))
            # On a grid, skipping the slots a tick overran, as kvmtop's own loops do
            # (a burst of catch-up ticks would give intervals kvmtop calls unknown).
            step = settings.interval_s
            deadline += step
            late = time.monotonic() - deadline
            if late > 0:
                deadline += (late // step + 1) * step
            time.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        sampler.close()
    return obs
