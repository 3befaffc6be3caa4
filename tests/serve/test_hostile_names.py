"""Issue #16 at the endpoint: label values carry a name's control and bidi characters
escaped (`\\x1b`, `\\u202e`), keep a newline as the format escapes it (`\\n`), and the
exposition stays valid for both content types."""

from __future__ import annotations

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from kvmtop.detectors.incidents import IncidentTracker
from kvmtop.exposition.metrics import label_value
from kvmtop.headless.endpoint import MetricsServer
from kvmtop.headless.exporter import Exporter
from kvmtop.model.finding import Finding
from kvmtop.model.sample import Sample
from tests.app.builders import HostSpec, host_sample
from tests.app.builders import snapshot as app_snapshot
from tests.hostile import BAD, BAD_SHOWN, BIDI, BIDI_SHOWN, assert_no_raw
from tests.records import replace
from tests.serve.test_serve import UUID, fetch, guest, server  # noqa: F401 (fixture)

TWO_LINES = "two\nlines\x1b"
COMM = "\x1b]2;qemu\x07"
"""A thread name (15 bytes of comm, set by the process itself)."""


def hostile_sample() -> Sample:
    g = guest(1, name=BAD)
    g = replace(
        g,
        disks=(replace(g.disks[0], target=BIDI),),
        nics=(replace(g.nics[0], name=TWO_LINES),),
        threads=(replace(g.threads[0], name=COMM),),
    )
    host = host_sample(HostSpec(), 2)
    host = replace(host, netdevs=tuple(replace(n, name=BIDI + n.name) for n in host.netdevs))
    return Sample(
        wall_s=1_764_000_000.0,
        mono_ns=2_000_000_000,
        host=host,
        guests=(g,),
        sources=(),
        interval_s=2.0,
    )


def test_label_value() -> None:
    assert label_value(BAD) == BAD_SHOWN
    assert label_value(BIDI) == BIDI_SHOWN
    assert label_value(TWO_LINES) == "two\nlines\\x1b"  # the encoder writes "\n"
    assert label_value("web-1") == "web-1"


@pytest.mark.parametrize("accept", ["application/openmetrics-text; version=1.0.0", None])
def test_labels_are_escaped_and_the_exposition_parses(
    server: tuple[MetricsServer, Exporter],  # noqa: F811
    accept: str | None,
) -> None:
    srv, exporter = server
    finding = Finding("steal", "warning", UUID, BAD, "steal", 1.0, guest=BAD)
    # A switch's name is in its incident's cause.
    tracker = IncidentTracker()
    tracker.update(
        1.0,
        [
            Finding(
                "vswitch_saturation", "critical", BIDI, BIDI, "full", 1.0, cause=f"switch:{BIDI}"
            )
        ],
    )
    snapshot = replace(app_snapshot([], findings=(finding,)), incidents=tracker.current())
    exporter.publish(hostile_sample(), snapshot, 0.1)
    body, _, _ = fetch(srv.url, accept)
    assert_no_raw(body)
    # The format's own escapes on top: "\" as "\\", the newline as "\n".
    assert 'guest="esc\\\\x1b[2J\\\\x1b[31mBAD\\\\x07"' in body
    assert 'nic="two\\nlines\\\\x1b"' in body
    parse = openmetrics_families if accept else text_string_to_metric_families
    families = {f.name: f for f in parse(body)}
    info = families["kvmtop_guest_info"].samples
    assert [s.labels["guest"] for s in info] == [BAD_SHOWN]
    disks = families["kvmtop_guest_disk_read_requests"].samples
    assert [s.labels["disk"] for s in disks] == [BIDI_SHOWN]
    nics = families["kvmtop_guest_nic_receive_bytes"].samples
    assert [s.labels["nic"] for s in nics] == ["two\nlines\\x1b"]
    threads = families["kvmtop_guest_thread_run_seconds"].samples
    assert [s.labels["thread"] for s in threads] == ["\\x1b]2;qemu\\x07"]
    devices = {s.labels["device"] for s in families["kvmtop_host_network_info"].samples}
    assert BIDI_SHOWN + "eno1" in devices
    findings = families["kvmtop_finding"].samples
    assert [s.labels["guest"] for s in findings] == [BAD_SHOWN]
    incidents = families["kvmtop_incident"].samples
    assert [s.labels["cause"] for s in incidents] == ["switch:" + BIDI_SHOWN]
