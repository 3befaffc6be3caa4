"""The endpoint's own encoder (`kvmtop.exposition.encode.Encoder`) writes exactly the
bytes prometheus_client's encoders write for the same families, in both formats: on
every tick of the shipped lab recording (12 guests, incidents, findings, threads that
come and go) and on names full of control, bidi and newline characters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from kvmtop.config import Settings
from kvmtop.detectors.incidents import IncidentTracker
from kvmtop.exposition.encode import Encoder, Prepared, families
from kvmtop.exposition.points import Points, tick_points
from kvmtop.feed.replay import ReplayFeed
from kvmtop.model.finding import Finding
from kvmtop.store.reader import StoreReader
from kvmtop.wiring import build_pipeline
from tests.app.builders import snapshot as app_snapshot
from tests.hostile import BAD, BIDI
from tests.serve.test_hostile_names import hostile_sample

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lab-sample.kvmtop"


def library_text(points: Points, openmetrics: bool) -> str:
    """What prometheus_client writes for the families of `points`."""
    if openmetrics:
        return str(generate_openmetrics(Prepared(families(points))).decode())
    return str(generate_latest(Prepared(families(points))).decode())


def own_text(encoder: Encoder, points: Points, openmetrics: bool) -> str:
    """What the endpoint writes (it ends OpenMetrics itself)."""
    text = encoder.render(points, openmetrics=openmetrics)
    return text + "# EOF\n" if openmetrics else text


def recorded_points() -> Iterator[Points]:
    """The points of every tick of the shipped lab recording, as serve builds them."""
    feed = ReplayFeed(StoreReader(EXAMPLE), build_pipeline(Settings()))
    try:
        while (snapshot := feed.next()) is not None:
            assert feed.position is not None
            sample = feed.reader.read(feed.position)
            assert sample is not None
            yield tick_points(sample, snapshot, 0.05)
    finally:
        feed.close()


@pytest.mark.parametrize("openmetrics", [True, False], ids=["openmetrics", "text-0.0.4"])
def test_every_recorded_tick_encodes_as_the_library_does(openmetrics: bool) -> None:
    encoder = Encoder()
    ticks = incidents = 0
    for points in recorded_points():
        assert own_text(encoder, points, openmetrics) == library_text(points, openmetrics)
        ticks += 1
        incidents += "kvmtop_incident" in points.by_name
    assert ticks > 100 and incidents > 0


@pytest.mark.parametrize("openmetrics", [True, False], ids=["openmetrics", "text-0.0.4"])
def test_hostile_names_encode_as_the_library_does(openmetrics: bool) -> None:
    tracker = IncidentTracker()
    tracker.update(
        1.0,
        [
            Finding(
                "vswitch_saturation", "critical", BIDI, BIDI, "full", 1.0, cause=f"switch:{BIDI}"
            )
        ],
    )
    finding = Finding("steal", "warning", "u", BAD, "steal", 1.0, guest=BAD)
    snapshot = replace(app_snapshot([], findings=(finding,)), incidents=tracker.current())
    points = tick_points(hostile_sample(), snapshot, 0.1)
    encoder = Encoder()
    for _ in range(2):  # the second time from the cache
        assert own_text(encoder, points, openmetrics) == library_text(points, openmetrics)


def test_the_cache_keeps_only_the_series_of_the_last_render() -> None:
    encoder = Encoder()
    one, two = Points(), Points()
    one.add("kvmtop_guest_vcpus", ("a", "u1"), 1)
    two.add("kvmtop_guest_vcpus", ("b", "u2"), 2)
    encoder.render(one, openmetrics=False)
    assert encoder.render(two, openmetrics=False) == (
        "# HELP kvmtop_guest_vcpus vCPUs currently online (libvirt vcpu.current)\n"
        "# TYPE kvmtop_guest_vcpus gauge\n"
        'kvmtop_guest_vcpus{guest="b",uuid="u2"} 2.0\n'
    )
    assert len(encoder._blocks) == 1
