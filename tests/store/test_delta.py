"""Delta rows (kvmtop.store.delta): shapes, differences, row and reference encodings."""

from __future__ import annotations

import json

import pytest
import zstandard

from kvmtop.store import blob, delta
from kvmtop.store.codec import encode
from tests.store.conftest import make_samples


def test_a_sample_is_its_shape_with_its_numbers_put_back() -> None:
    for sample in make_samples(3):
        doc = encode(sample)
        shape = delta.hollow(doc)
        parts = shape.parts()
        assert parts is not None
        assert len(shape.ints) > 100 and shape.floats  # counters and e.g. wall_s
        assert delta.fill(parts, shape.float_slots, shape.ints, shape.floats) == (
            blob.dumps_doc(doc)
        )


def test_consecutive_samples_share_a_shape_and_another_guest_set_does_not() -> None:
    a, b = (delta.hollow(encode(s)) for s in make_samples(2))
    other = delta.hollow(encode(make_samples(1, guests=4)[0]))
    assert a.same_as(b) and b.same_as(a)
    assert a.ints != b.ints
    assert not a.same_as(other)


def test_a_string_holding_the_holes_text_gives_no_parts() -> None:
    shape = delta.hollow({"name": "NaN-box", "n": 1})
    assert shape.parts() is None


@pytest.mark.parametrize("order", [0, 1, 2])
def test_differences_and_restore_are_inverses(order: int) -> None:
    now, prev, prev2, ref = [105, 7, -3], [100, 7, 0], [96, 7, 2], [50, 0, 0]
    bases = ((ref,), (prev,), (prev, prev2))[order]
    stored = delta.differences(order, now, bases)
    assert delta.restore(order, stored, bases) == now
    if order == 2:
        assert stored == [1, 0, -1]  # a counter at a steady rate stores its jitter


def test_restore_refuses_rows_of_another_length() -> None:
    with pytest.raises(ValueError, match="do not match"):
        delta.restore(1, [1, 2], ([1, 2, 3],))


def test_a_row_round_trips_and_its_order_byte_is_checked() -> None:
    compressor, decompressor = zstandard.ZstdCompressor(), zstandard.ZstdDecompressor()
    row = delta.pack_row(2, [0, -1, 12], ["1.5", "NaN"], compressor)
    assert delta.is_delta_row(row) and delta.row_order(row) == 2
    assert delta.unpack_row(row, decompressor) == (2, [0, -1, 12], ["1.5", "NaN"])
    tampered = row[:1] + b"0" + row[2:]  # outside the checksum, so checked against the inside
    with pytest.raises(ValueError, match="order byte"):
        delta.unpack_row(tampered, decompressor)
    with pytest.raises(ValueError, match="zstd"):
        delta.unpack_row(row[:-3], decompressor)


def test_a_reference_round_trips_and_a_format_2_one_is_refused() -> None:
    doc = encode(make_samples(1)[0])
    shape = delta.hollow(doc)
    ref = delta.unpack_reference(delta.pack_reference(shape))
    assert ref == (shape.parts(), shape.float_slots, shape.ints)
    with pytest.raises(ValueError, match="not a block reference"):
        delta.unpack_reference(json.dumps(doc).encode())  # a whole sample (format 2)


@pytest.mark.parametrize(
    "stored",
    [
        [],
        [0],
        [2**64 - 1, -(2**63) - 1, 2**70],  # counter-sized, and an order-2 jump past 64 bits
    ],
)
def test_a_row_keeps_integers_of_any_size(stored: list[int]) -> None:
    compressor, decompressor = zstandard.ZstdCompressor(), zstandard.ZstdDecompressor()
    row = delta.pack_row(1, stored, [], compressor)
    assert delta.unpack_row(row, decompressor) == (1, stored, [])


@pytest.mark.parametrize("ints", [b"1,,2", b"1,2,", b"1_000", b"+1", b"0x10", b"1],[2", b"\xff"])
def test_a_row_whose_integers_are_not_decimals_is_refused(ints: bytes) -> None:
    """What the writer never writes (`_decimals`: plain comma-separated decimals) is a
    damaged row, even where Python's `int()` would take it."""
    frame = zstandard.ZstdCompressor(write_checksum=True).compress(b"1\n" + ints + b"\n")
    with pytest.raises(ValueError, match="not a delta row"):
        delta.unpack_row(b"D1" + frame, zstandard.ZstdDecompressor())
