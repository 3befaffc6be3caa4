"""Codec: model dataclasses ↔ JSON round-trip, tolerate other layouts, reject damage."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmtop.model import sample as sample_module
from kvmtop.model.finding import Finding
from kvmtop.model.incident import Incident, Member
from kvmtop.model.sample import (
    BalloonSample,
    GuestSample,
    HostSample,
    NetDevSample,
    PressureSample,
    Sample,
    SourceStatus,
    VcpuSample,
)
from kvmtop.store import blob
from kvmtop.store.codec import CodecError, decode, decode_json, encode
from kvmtop.store.meta import RecordingMeta
from tests.records import field_names, from_type, is_record
from tests.store.synth import SyntheticHost

MODEL_TYPES = sorted(
    (
        obj
        for obj in vars(sample_module).values()
        if isinstance(obj, type)
        and is_record(obj)
        and obj.__module__ == sample_module.__name__
        and obj is not Sample
    ),  # the whole Sample is slow to draw: its own test below
    key=lambda tp: tp.__name__,
)


def check_round_trip(value: Any) -> None:
    """Through the store's text (`json`), back by both decoders."""
    text = json.dumps(encode(value))
    back = decode_json(type(value), text.encode())
    assert decode(type(value), json.loads(text)) == back or "NaN" in text
    assert json.dumps(encode(back)) == text
    if "NaN" not in text:  # NaN != NaN: such values are compared by their text above
        assert back == value


@pytest.mark.parametrize("tp", [*MODEL_TYPES, Finding, Member, Incident, RecordingMeta])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_every_stored_type(tp: type, data: st.DataObject) -> None:
    # Drawn floats include NaN and ±Infinity, ints are of any size.
    check_round_trip(data.draw(from_type(tp)))


@settings(max_examples=15, deadline=None)
@given(from_type(Sample))
def test_round_trip_whole_sample_through_blob(sample: Sample) -> None:
    raw = blob.dumps(sample)
    assert blob.dumps(blob.loads(raw)) == raw
    check_round_trip(sample)


def test_round_trip_realistic_sample() -> None:
    sample = SyntheticHost(guests=3).sample()
    assert blob.loads(blob.dumps(sample)) == sample
    assert decode(Sample, json.loads(blob.dumps(sample))) == sample


def test_every_field_is_written_its_default_too() -> None:
    data = encode(VcpuSample(index=0, time_ns=0, kvm={"exits.sum": 0}))
    assert data == {
        "index": 0,
        "state": None,
        "time_ns": 0,
        "delay_ns": None,
        "tid": None,
        "sched_run_ns": None,
        "sched_delay_ns": None,
        "kvm": {"exits.sum": 0},
        "affinity": None,
    }
    assert list(encode(GuestSample(uuid="u", name="g"))) == field_names(GuestSample)


@pytest.mark.parametrize("tp", [*MODEL_TYPES, Finding, Member, Incident])
def test_no_stored_struct_changes_the_layout(tp: type) -> None:
    """A Struct that left defaults out, wrote itself as an array or renamed its
    fields would change the stored bytes: none does."""
    if issubclass(tp, msgspec.Struct):
        config = tp.__struct_config__
        assert not config.omit_defaults and not config.array_like and config.tag is None
        assert all(f.encode_name == f.name for f in msgspec.structs.fields(tp))


def test_values_that_standard_json_lacks_round_trip_exactly() -> None:
    """NaN, ±Infinity and lone surrogates: `json` writes them (the store's text),
    msgspec's parser refuses them, the codec reads them with `json`."""
    dev = NetDevSample("tap\udcff0", 1, 2, 3, 4, 5, 6, 7, 8, shaped_mbps=float("inf"))
    pressure = PressureSample(some_avg10=float("nan"), full_avg60=float("-inf"))
    assert decode_json(NetDevSample, json.dumps(encode(dev)).encode()) == dev
    back = decode_json(PressureSample, json.dumps(encode(pressure)).encode())
    assert back.some_avg10 != back.some_avg10 and back.full_avg60 == float("-inf")


def test_unknown_keys_from_a_newer_layout_are_ignored() -> None:
    data = encode(GuestSample(uuid="u", name="g", pid=7))
    data["added_in_a_later_version"] = {"x": 1}
    want = GuestSample(uuid="u", name="g", pid=7)
    assert decode(GuestSample, data) == want
    assert decode_json(GuestSample, json.dumps(data).encode()) == want


def test_missing_keys_from_an_older_layout_take_defaults() -> None:
    data = {
        "wall_s": 1.0,
        "mono_ns": 5,
        "host": None,
        "guests": [{"uuid": "u", "name": "g"}, {"uuid": "v", "name": "h"}],
        "sources": [{"name": "host", "ok": True}],
    }
    for sample in (decode(Sample, data), decode_json(Sample, json.dumps(data).encode())):
        assert sample.interval_s == 2.0
        assert sample.sources == (SourceStatus("host", True),)
        assert sample.guests[0] == GuestSample("u", "g")
        # A default_factory makes a container per instance, as the constructor does.
        assert sample.guests[0].vm_kvm == {} and sample.guests[0].vm_kvm is not (
            sample.guests[1].vm_kvm
        )


@pytest.mark.parametrize(
    ("tp", "data", "message"),
    [
        (GuestSample, {"name": "g"}, "GuestSample: Object missing required field `uuid`"),
        (GuestSample, {"uuid": 1, "name": "g"}, r"Expected `str`, got `int` - at `\$.uuid`"),
        (GuestSample, {"uuid": "u", "name": "g", "pid": True}, "got `bool` - at `.*pid`"),
        (GuestSample, {"uuid": "u", "name": "g", "vcpus": {}}, "Expected `array`"),
        (GuestSample, {"uuid": "u", "name": "g", "vm_kvm": []}, "Expected `object`"),
        (GuestSample, {"uuid": "u", "name": "g", "vm_kvm": {"a": True}}, "got `bool`"),
        (GuestSample, [], "Expected `object`, got `array`"),
        (HostSample, {"mono_ns": 1, "loadavg": [1.0, 2.0]}, "array` of length 3"),
        (HostSample, {"mono_ns": 1, "pressure": {"cpu": {"some_avg10": "x"}}}, "got `str`"),
        (BalloonSample, {"rss_bytes": None, "current_bytes": 1.5}, "got `float`"),
        (Sample, {"wall_s": 1.0, "mono_ns": 5, "host": None, "guests": []}, "`sources`"),
    ],
)
def test_damaged_values_are_rejected(tp: type, data: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(tp, data)
    with pytest.raises(CodecError, match=message):
        decode_json(tp, json.dumps(data).encode())


@pytest.mark.parametrize("text", [b'{"uuid": "u", "name": ', b"", b"\xff", b'{"uuid": NaX}'])
def test_text_that_is_not_json_is_refused(text: bytes) -> None:
    with pytest.raises(ValueError):
        decode_json(GuestSample, text)


def test_int_accepted_where_float_declared() -> None:
    for back in (
        decode(PressureSample, {"some_avg10": 3}),
        decode_json(PressureSample, b'{"some_avg10": 3}'),
    ):
        assert back.some_avg10 == 3.0 and isinstance(back.some_avg10, float)
