"""Rates around a stall (issue #16): over the time the counters were read, unknown
over an interval far off the nominal one, never from a guest that did not answer;
missed ticks skipped, never run in a burst."""

from __future__ import annotations

import pytest

from kvmtop.model.rates.counters import (
    INTERVAL_MAX_RATIO,
    INTERVAL_MIN_RATIO,
    interval_gap,
)
from kvmtop.model.rates.frame import derive
from kvmtop.model.rates.guest import NA_AFTER_NO_ANSWER
from kvmtop.model.sample import GuestSample, HostSample, NicSample, Sample
from kvmtop.model.units import NS_PER_S
from kvmtop.sampler import next_tick

UUID = "11111111-2222-3333-4444-555555555555"
TX_BYTES_PER_S = 2_000_000  # 16 Mbit/s, lab-net's order of magnitude
CPU_SHARE = 0.25


def guest(read_s: float, **extra: object) -> GuestSample:
    """A running guest whose counters were read at `read_s` (steady workload)."""
    return GuestSample(
        uuid=UUID,
        name="net",
        dom_id=5,
        state="running",
        accel="tcg",
        pid=4242,
        vcpus_current=1,
        cpu_time_ns=int(CPU_SHARE * read_s * NS_PER_S),
        nics=(NicSample("vnet0", tx_bytes=int(TX_BYTES_PER_S * read_s), rx_bytes=0),),
        **extra,  # type: ignore[arg-type]
    )


def sample(stamp_s: float, g: GuestSample, interval_s: float = 1.0) -> Sample:
    """A tick stamped at `stamp_s` (monotonic), with a host read at the same time."""
    host = HostSample(mono_ns=int(stamp_s * NS_PER_S), ncpu=2)
    return Sample(
        wall_s=1_700_000_000 + stamp_s,
        mono_ns=int(stamp_s * NS_PER_S),
        host=host,
        guests=(g,),
        sources=(),
        interval_s=interval_s,
    )


def test_rate_is_over_the_time_between_the_reads() -> None:
    frame = derive(sample(10.0, guest(10.0)), sample(11.05, guest(11.05)))
    (g,) = frame.guests
    assert g.net_tx_bps == pytest.approx(8 * TX_BYTES_PER_S)
    assert g.cpu_pct == pytest.approx(100 * CPU_SHARE)


@pytest.mark.parametrize(
    ("dt", "nominal", "ok"),
    [
        (1.0, 1.0, True),
        (INTERVAL_MIN_RATIO, 1.0, True),
        (INTERVAL_MAX_RATIO, 1.0, True),
        (0.1, 1.0, False),  # a burst after a stall
        (0.49, 1.0, False),
        (10.1, 1.0, False),
        (60.0, 2.0, False),  # a gap: kvmtop or the host stopped
        (2.0, 1.0, True),  # one skipped tick
        (3.6, 1.0, True),  # a tick that costs more than the interval (a slow host)
        (5.5, 2.0, True),
    ],
)
def test_interval_gap(dt: float, nominal: float, ok: bool) -> None:
    reason = interval_gap(dt, nominal, nominal)
    assert (reason is None) == ok
    if not ok:
        assert reason is not None and f"{nominal:g} s" in reason


def test_interval_change_accepts_either_nominal() -> None:
    # From 1 s to 10 s and back (the TUI's + and -): the first interval after the
    # change lies between the two.
    assert interval_gap(10.0, 1.0, 10.0) is None
    assert interval_gap(9.0, 10.0, 1.0) is None
    assert interval_gap(0.4, 1.0, 10.0) is not None


def test_burst_after_a_stall_gives_unknown_not_a_spike() -> None:
    """The issue's recording: a tick stalled 9.6 s by a stopped guest, whose counters
    (read before the stall) were stamped after it, then catch-up ticks 0.1 s apart.
    The next read shows 9.7 s of counters over a 0.1 s stamp interval."""
    before = sample(0.0, guest(0.0))
    stalled = sample(9.6, guest(0.0))  # read at 0, stamped 9.6 s later
    burst = sample(9.7, guest(9.7))
    frame = derive(before, stalled)
    # 9.6 s is a slow tick, not a gap: the stopped guest's counters did not move.
    assert frame.guests[0].net_tx_bps == 0.0
    assert "net_rx_bps" not in frame.guests[0].na
    gap = derive(before, sample(30.0, guest(30.0)))
    assert gap.guests[0].net_tx_bps is None and "over 10x" in gap.guests[0].na["net_rx_bps"]
    frame = derive(stalled, burst)
    (g,) = frame.guests
    assert g.net_tx_bps is None and g.cpu_pct is None  # not 941 Mbit/s, not 63 %
    assert "under 0.5x" in g.na["cpu_pct"]
    assert frame.host.ncpu == 2  # the host strip is derived as usual


def test_not_responding_guest_is_blank_with_its_reason_and_so_is_the_next_tick() -> None:
    reason = (
        "not responding since 10:00:00: its QEMU has not answered libvirt's monitor "
        "command for 3.0 s"
    )
    silent = GuestSample(
        uuid=UUID,
        name="net",
        dom_id=5,
        state="running",
        accel="tcg",
        pid=4242,
        vcpus_current=1,
        not_responding_since_s=1_700_000_009.0,
        not_responding=reason,
    )
    frames = [
        derive(sample(8.0, guest(8.0)), sample(9.0, guest(9.0))),
        derive(sample(9.0, guest(9.0)), sample(10.0, silent)),
        derive(sample(10.0, silent), sample(11.0, guest(11.0))),
        derive(sample(11.0, guest(11.0)), sample(12.0, guest(12.0))),
    ]
    running, stuck, after, back = (f.guests[0] for f in frames)
    assert running.net_tx_bps == pytest.approx(8 * TX_BYTES_PER_S)
    assert stuck.not_responding == reason
    assert stuck.not_responding_since_s == 1_700_000_009.0
    assert (stuck.cpu_pct, stuck.net_tx_bps, stuck.disk_iops, stuck.mem_used_bytes) == (
        None,
        None,
        None,
        None,
    )
    assert stuck.na["cpu_pct"] == stuck.na["net_rx_bps"] == reason
    assert (stuck.name, stuck.state, stuck.vcpus) == ("net", "running", 1)
    # Its first sample after answering again has no partner to take a rate with.
    assert after.not_responding is None
    assert after.cpu_pct is None and after.net_tx_bps is None
    assert after.na["cpu_pct"] == NA_AFTER_NO_ANSWER
    assert back.net_tx_bps == pytest.approx(8 * TX_BYTES_PER_S)


@pytest.mark.parametrize(
    ("due", "now", "expected"),
    [
        (10.0, 10.3, 11.0),  # on time: one interval later
        (10.0, 11.0, 11.0),  # exactly due
        (10.0, 11.4, 12.0),  # overran by 0.4 s: the missed tick at 11 is skipped
        (10.0, 19.7, 20.0),  # a 9.7 s stall: nine ticks skipped, none run in a burst
    ],
)
def test_next_tick_skips_missed_ticks(due: float, now: float, expected: float) -> None:
    assert next_tick(due, now, 1.0) == pytest.approx(expected)


def test_next_tick_without_an_interval() -> None:
    assert next_tick(10.0, 10.5, 0.0) == 10.5
