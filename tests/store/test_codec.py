"""Codec: Sample ↔ dict round-trips, tolerates other layouts, rejects damage."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmtop.model import sample as sample_module
from kvmtop.model.sample import (
    BalloonSample,
    GuestSample,
    HostSample,
    PressureSample,
    Sample,
    SourceStatus,
    VcpuSample,
)
from kvmtop.store import blob
from kvmtop.store.codec import CodecError, decode, encode
from tests.store.synth import SyntheticHost

MODEL_TYPES = sorted(
    (
        obj
        for obj in vars(sample_module).values()
        if dataclasses.is_dataclass(obj)
        and obj.__module__ == sample_module.__name__
        and obj is not Sample
    ),  # the whole Sample is slow to draw: its own test below
    key=lambda tp: tp.__name__,
)


def check_round_trip(value: Any) -> None:
    text = json.dumps(encode(value))
    back = decode(type(value), json.loads(text))
    assert json.dumps(encode(back)) == text
    if "NaN" not in text:  # NaN != NaN: such values are compared by their text above
        assert back == value


@pytest.mark.parametrize("tp", MODEL_TYPES, ids=lambda tp: tp.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_every_model_type(tp: type, data: st.DataObject) -> None:
    check_round_trip(data.draw(st.from_type(tp)))


@settings(max_examples=15, deadline=None)
@given(st.from_type(Sample))
def test_round_trip_whole_sample_through_blob(sample: Sample) -> None:
    raw = blob.dumps(sample)
    assert blob.dumps(blob.loads(raw)) == raw
    check_round_trip(sample)


def test_round_trip_realistic_sample() -> None:
    sample = SyntheticHost(guests=3).sample()
    assert decode(Sample, json.loads(json.dumps(encode(sample)))) == sample


def test_defaults_are_left_out() -> None:
    data = encode(GuestSample(uuid="u", name="g"))
    assert data == {"uuid": "u", "name": "g"}
    data = encode(VcpuSample(index=0, time_ns=0, kvm={"exits.sum": 0}))
    assert data == {"index": 0, "time_ns": 0, "kvm": {"exits.sum": 0}}


def test_unknown_keys_from_a_newer_layout_are_ignored() -> None:
    data = encode(GuestSample(uuid="u", name="g", pid=7))
    data["added_in_a_later_version"] = {"x": 1}
    assert decode(GuestSample, data) == GuestSample(uuid="u", name="g", pid=7)


def test_missing_keys_from_an_older_layout_take_defaults() -> None:
    sample = decode(
        Sample,
        {
            "wall_s": 1.0,
            "mono_ns": 5,
            "host": None,
            "guests": [],
            "sources": [{"name": "host", "ok": True}],
        },
    )
    assert sample.interval_s == 2.0
    assert sample.sources == (SourceStatus("host", True),)


@pytest.mark.parametrize(
    ("tp", "data", "message"),
    [
        (GuestSample, {"name": "g"}, "missing field 'uuid'"),
        (GuestSample, {"uuid": 1, "name": "g"}, "GuestSample.uuid: expected str"),
        (GuestSample, {"uuid": "u", "name": "g", "pid": True}, "expected int, got bool"),
        (GuestSample, {"uuid": "u", "name": "g", "vcpus": {}}, "expected an array"),
        (GuestSample, {"uuid": "u", "name": "g", "vm_kvm": []}, "expected an object"),
        (GuestSample, [], "expected an object, got list"),
        (HostSample, {"mono_ns": 1, "loadavg": [1.0, 2.0]}, "expected 3 items, got 2"),
        (HostSample, {"mono_ns": 1, "pressure": {"cpu": {"some_avg10": "x"}}}, "expected float"),
        (BalloonSample, {"rss_bytes": None, "current_bytes": 1.5}, "expected int, got float"),
    ],
)
def test_damaged_values_are_rejected(tp: type, data: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(tp, data)


def test_int_accepted_where_float_declared() -> None:
    assert decode(PressureSample, {"some_avg10": 3}).some_avg10 == 3.0
    assert isinstance(decode(PressureSample, {"some_avg10": 3}).some_avg10, float)


def test_encode_takes_dataclasses_only() -> None:
    with pytest.raises(TypeError):
        encode({"not": "a dataclass"})
