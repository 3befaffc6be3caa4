"""Per-reason tracing through the sampler and the live feed, over a fake tracer:
who is attached when, on which thread, what the tracer's status says; the real
collector's refusals (perf not permitted, no fds, no tracefs) as a status, never a
crash; and `Sampler.close()` closing every collector."""

from __future__ import annotations

import ctypes
import errno
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from kvmtop.collectors.base import CollectorError, Probe, Tracer
from kvmtop.collectors.perf import PerfError, PerfEventAttr
from kvmtop.collectors.tracepoints import TracepointCollector
from kvmtop.feed.live import LiveFeed
from kvmtop.feed.pipeline import Pipeline
from kvmtop.model.rates.kvm import TRACE_ATTACHED, TRACE_FDS, TRACE_SOURCE
from kvmtop.model.sample import GuestSample, HostSample, Sample, SourceStatus, VcpuSample
from kvmtop.sampler import Sampler
from tests.collectors.test_tracepoints import fake_tracefs
from tests.records import replace

KVM = GuestSample(
    uuid="u-kvm",
    name="kvm",
    pid=10,
    accel="kvm",
    vcpus=(VcpuSample(0, tid=11), VcpuSample(1, tid=12)),
)
TCG = GuestSample(uuid="u-tcg", name="tcg", pid=20, accel="tcg", vcpus=(VcpuSample(0, tid=21),))
OTHER = GuestSample(
    uuid="u-other", name="other", pid=30, accel="kvm", vcpus=(VcpuSample(0, tid=31),)
)


class Guests:
    """A guest source whose guests the test changes between ticks."""

    def __init__(self, *guests: GuestSample) -> None:
        self.guests = guests
        self.closed = 0

    def probe(self) -> Probe:
        return Probe("libvirt", True)

    def collect(self, tick: int, deadline_s: float | None = None) -> tuple[GuestSample, ...]:
        return self.guests

    def unanswered(self, reason: str) -> tuple[GuestSample, ...]:
        return ()

    def close(self) -> None:
        self.closed += 1


class FakeTracer:
    """Records attach/detach calls (and their threads); 10 fds per tid."""

    name = TRACE_SOURCE

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, str, tuple[int, ...]]] = []
        self.threads: set[int] = set()
        self.tids: dict[str, tuple[int, ...]] = {}
        self.errors: dict[str, str] = {}
        self.closed = 0

    def probe(self) -> Probe:
        return Probe(TRACE_SOURCE, True, detail={"counters_per_vcpu": "10"})

    def attach(self, key: str, tids: Iterable[int] = ()) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append(("attach", key, tuple(tids)))
        if self.refuse is not None:
            raise PerfError(self.refuse)
        self.tids[key] = tuple(tids)

    def detach(self, key: str) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append(("detach", key, ()))
        self.tids.pop(key, None)
        self.errors.pop(key, None)

    def attached(self) -> tuple[str, ...]:
        return tuple(self.tids)

    def open_fds(self) -> int:
        return sum(10 * len(t) for t in self.tids.values())

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        return tuple(
            replace(g, exit_reasons={"kvm_pio:total": 1}) if g.uuid in self.tids else g
            for g in guests
        )

    def close(self) -> None:
        self.closed += 1
        self.tids.clear()


def status(sample: Sample) -> SourceStatus:
    (found,) = [s for s in sample.sources if s.name == TRACE_SOURCE]
    return found


def make(tracer: Tracer, *guests: GuestSample) -> tuple[Sampler, Guests]:
    source = Guests(*guests)
    return Sampler(None, source, [tracer]), source


def test_the_tracer_is_found_among_the_enrichers() -> None:
    tracer = FakeTracer()
    assert isinstance(tracer, Tracer)
    assert Sampler(None, None, [tracer]).tracer is tracer
    assert Sampler(None, None, []).tracer is None


def test_trace_attaches_at_the_next_sample_and_detaches_when_no_longer_asked() -> None:
    tracer = FakeTracer()
    sampler, _ = make(tracer, KVM, OTHER)
    first = sampler.sample()
    assert tracer.calls == [] and status(first).ok
    assert status(first).detail[TRACE_ATTACHED] == "" and status(first).detail[TRACE_FDS] == "0"
    sampler.trace(["u-kvm"])
    assert tracer.calls == []  # the request alone does nothing
    second = sampler.sample()
    assert tracer.calls == [("attach", "u-kvm", (11, 12))]
    assert status(second).detail == {
        "counters_per_vcpu": "10",
        TRACE_ATTACHED: "u-kvm",
        TRACE_FDS: "20",
    }
    assert second.guests[0].exit_reasons == {"kvm_pio:total": 1}
    assert second.guests[1].exit_reasons == {}
    sampler.sample()
    assert len(tracer.calls) == 1  # still asked for: nothing to do
    sampler.trace(["other"])  # by name
    sampler.sample()
    assert tracer.calls[1:] == [("detach", "u-kvm", ()), ("attach", "u-other", (31,))]
    sampler.trace([])
    last = sampler.sample()
    assert tracer.calls[-1] == ("detach", "u-other", ())
    assert status(last).detail[TRACE_ATTACHED] == ""


def test_tcg_and_absent_guests_are_not_attached_until_they_can_be() -> None:
    tracer = FakeTracer()
    sampler, source = make(tracer, TCG)
    sampler.trace(["u-tcg", "kvm"])
    assert status(sampler.sample()).ok
    assert tracer.calls == []
    source.guests = (TCG, KVM)
    sampler.sample()
    assert tracer.calls == [("attach", "u-kvm", (11, 12))]
    source.guests = (TCG,)  # gone for a tick: stays attached (the tracer follows restarts)
    sampler.sample()
    assert tracer.attached() == ("u-kvm",)


def test_attach_failure_shows_in_the_status_and_is_retried_on_a_new_request() -> None:
    tracer = FakeTracer(refuse="perf_event_open: not permitted (perf_event_paranoid)")
    sampler, _ = make(tracer, KVM)
    sampler.trace(["u-kvm"])
    failed = status(sampler.sample())
    assert not failed.ok
    assert failed.reason == "tracing u-kvm: perf_event_open: not permitted (perf_event_paranoid)"
    assert failed.detail[TRACE_ATTACHED] == ""
    sampler.sample()
    assert len(tracer.calls) == 1  # not retried every tick
    tracer.refuse = None
    sampler.trace(["u-kvm"])  # the detail screen opened again
    assert status(sampler.sample()).ok
    assert tracer.calls[-1] == ("attach", "u-kvm", (11, 12))


@pytest.mark.parametrize(
    ("tracefs", "err", "words"),
    [
        (True, errno.EPERM, "CAP_PERFMON"),
        (True, errno.EMFILE, "RLIMIT_NOFILE"),
        (False, 0, "tracefs not mounted"),
    ],
)
def test_a_refused_trace_is_a_status_not_a_crash(
    tmp_path: Path, tracefs: bool, err: int, words: str
) -> None:
    if tracefs:
        fake_tracefs(tmp_path)

    def refuse(_a: PerfEventAttr, _p: int, _c: int, _g: int, _f: int) -> int:
        ctypes.set_errno(err)
        return -1

    sampler, _ = make(TracepointCollector(tmp_path, mount=False, open_fn=refuse), KVM)
    sampler.trace(["u-kvm"])
    sample = sampler.sample()
    st = status(sample)
    assert not st.ok and st.reason is not None and words in st.reason
    assert "tracing u-kvm: " in st.reason and st.detail[TRACE_ATTACHED] == ""
    assert sample.guests == (KVM,)


def test_failure_while_counting_shows_in_the_status() -> None:
    tracer = FakeTracer()
    sampler, _ = make(tracer, KVM)
    sampler.trace(["u-kvm"])
    sampler.sample()
    tracer.errors["u-kvm"] = "read: too many open files"
    st = status(sampler.sample())
    assert not st.ok and st.reason == "tracing u-kvm: read: too many open files"
    assert st.detail[TRACE_ATTACHED] == ""
    sampler.trace([])
    assert status(sampler.sample()).ok


def test_live_feed_focus_runs_the_slow_part_on_the_collecting_thread() -> None:
    tracer = FakeTracer()
    sampler, _ = make(tracer, KVM)
    feed = LiveFeed(sampler, Pipeline())
    feed.focus("u-kvm")  # from the "UI" thread: only recorded
    assert tracer.calls == []
    worker = threading.Thread(target=feed.next)
    worker.start()
    worker.join()
    assert tracer.calls == [("attach", "u-kvm", (11, 12))]
    feed.focus(None)
    worker = threading.Thread(target=feed.next)
    worker.start()
    worker.join()
    assert tracer.calls[-1] == ("detach", "u-kvm", ())
    assert tracer.threads and threading.get_ident() not in tracer.threads


class Host:
    def __init__(self) -> None:
        self.closed = 0

    def probe(self) -> Probe:
        return Probe("host", True)

    def collect(self) -> HostSample:
        return HostSample(mono_ns=1)

    def close(self) -> None:
        self.closed += 1
        raise CollectorError("host close failed")


class NoClose:
    def probe(self) -> Probe:
        return Probe("sched", True)

    def enrich(self, guests: Sequence[GuestSample]) -> tuple[GuestSample, ...]:
        return tuple(guests)


def test_close_closes_every_collector_that_has_close_even_when_one_fails() -> None:
    host, tracer = Host(), FakeTracer()
    source = Guests(KVM)
    sampler = Sampler(host, source, [NoClose(), tracer])
    with pytest.raises(CollectorError, match="host close failed"):
        sampler.close()
    assert (host.closed, source.closed, tracer.closed) == (1, 1, 1)
