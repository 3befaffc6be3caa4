"""Every recording the repository ships reads as it did when it was written.

The files (examples/README.md, tests/fixtures/recordings/README.md) were written by
earlier kvmtops: file format 1 (whole samples against a reference) and format 3
(delta rows), each with the sample codec of its day. Each one's samples are pinned
here by a SHA-256 of their content, taken when they were read with the codec that
wrote them (the hand-made one, replaced by msgspec in issue #18): a change of how
recordings are decoded must leave every sample of them as it was.

The content of a sample is the fields that differ from their defaults, recursively
(what the hand-made codec stored), as sorted JSON: a field added to the model later
with a default leaves the digests alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from kvmtop.model.sample import Sample
from kvmtop.store.reader import StoreReader
from tests.records import field_defaults, is_record

ROOT = Path(__file__).resolve().parents[2]

SHIPPED = {
    "examples/lab-sample.kvmtop": (
        301,
        "e3edb7f99b3d871aa8e3201468af53c8c9caa035fa32089a438e60bb7edb3d07",
    ),
    "tests/fixtures/recordings/lab-sample-format3.kvmtop": (
        121,
        "76f3c044b2f7c4cefda6f992069b5e628ee30ee2c3699a745665951064cd5a2a",
    ),
    "tests/fixtures/recordings/lab-sample.kvmtop": (
        121,
        "76f3c044b2f7c4cefda6f992069b5e628ee30ee2c3699a745665951064cd5a2a",
    ),
}
"""Path → (samples, SHA-256 of their content in order)."""


def content(value: Any) -> Any:
    """A record's (dataclass, Struct) fields that differ from their defaults, recursively, as
    JSON-able values."""
    if is_record(value):
        return {
            name: content(getattr(value, name))
            for name, default in field_defaults(type(value))
            if getattr(value, name) != default
        }
    if isinstance(value, tuple | list):
        return [content(v) for v in value]
    if isinstance(value, dict):
        return {k: content(v) for k, v in value.items()}
    return value


def digest(samples: list[Sample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps(content(s), sort_keys=True).encode() + b"\n")
    return h.hexdigest()


@pytest.mark.parametrize("path", sorted(SHIPPED))
def test_every_sample_of_a_shipped_recording_reads_as_written(path: str) -> None:
    count, sha = SHIPPED[path]
    with StoreReader(ROOT / path) as reader:
        samples = list(reader.iter())
        assert reader.skipped == frozenset()
    assert len(samples) == count
    assert digest(samples) == sha


def test_known_values_of_the_example_recording() -> None:
    """A few figures read by hand from the example recording, so a digest mismatch
    above has a readable companion."""
    with StoreReader(ROOT / "examples" / "lab-sample.kvmtop") as reader:
        samples = list(reader.iter())
    first, last = samples[0], samples[-1]
    assert (first.wall_s, first.mono_ns, first.interval_s) == (
        1796554168.1045105,
        27170917098390,
        2.0,
    )
    assert last.wall_s == 1796554768.105292
    assert [g.name for g in first.guests] == [
        "lab-net",
        "lab-probe-cpuid",
        "lab-disk",
        "lab-steal-b",
        "lab-memleak",
        "lab-probe-pio",
        "lab-idle",
        "lab-steal-a",
    ]
    net = first.guests[0]
    assert (net.uuid, net.cpu_time_ns) == ("59587702-3888-54fb-be57-f12c9d438235", 3182868000)
    assert net.vcpus[0].time_ns == 2900000000 and net.vcpus[0].kvm == {}
    assert first.host is not None and first.host.cpu is not None
    assert (first.host.hostname, first.host.cpu.user_ns, first.host.cpu.steal_ns) == (
        "vm",
        31417410000000,
        96200000000,
    )
    assert first.host.loadavg == (2.47, 1.94, 1.71)
    assert [(n.name, n.rx_bytes) for n in first.host.netdevs[:2]] == [
        ("lo", 852556797),
        ("ifb0", 0),
    ]
    balloon = last.guests[1].balloon
    assert balloon is not None
    assert (balloon.current_bytes, balloon.rss_bytes, balloon.usable_bytes) == (
        16777216,
        40374272,
        None,
    )
