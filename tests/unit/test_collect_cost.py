"""kvmtop's own collection time per tick: from the sources' durations to the host strip."""

from __future__ import annotations

from dataclasses import replace

from kvmtop.model.formatting import fmt_ms, fmt_pct
from kvmtop.views.host_strip import host_lines
from tests.app.builders import DEFAULT_SOURCES, GuestSpec, snapshot


def test_collection_time_is_the_sum_of_the_sources_durations() -> None:
    snap = snapshot([GuestSpec("alpha")])
    expected = sum(s.duration_ns for s in DEFAULT_SOURCES) / 1e6
    assert snap.collect_ms == expected
    assert replace(snap, sources=()).collect_ms is None


def test_host_strip_shows_the_collection_time_next_to_kvmtop_cpu() -> None:
    snap = snapshot([GuestSpec("alpha")])
    text = host_lines(snap)[0].plain.replace("\N{NO-BREAK SPACE}", " ")
    assert f"kvmtop {fmt_pct(snap.host.self_cpu_pct)}" in text
    assert text.rstrip().endswith(f"collect {fmt_ms(snap.collect_ms)} ms")
