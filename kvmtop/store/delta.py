"""Delta rows: a sample stored as the integers that moved since the samples before it.

Layer: store. Never textual.

A sample's JSON (`blob.dumps`) is mostly structure that does not change between
ticks (keys, names, UUIDs) and integer counters that do. `hollow` splits the codec's
dict into a *shape* (the document with every number replaced by a hole) and the
numbers in document order. Consecutive samples of one host share their shape, so a
block of samples stores its shape once, with its first sample's numbers
(`pack_reference`, the `dictionaries` row), and each sample row stores only numbers:

    b"D" + order + zstd("<order>\\n<integers>\\n<floats>")

- order 0 (a *checkpoint*): each integer minus the reference's;
- order 1: minus the previous sample's (the first difference);
- order 2: minus the linear prediction from the two previous samples,
  v - (2·prev - prev2), the second difference: a counter moving at a steady rate
  stores its jitter only (a few digits, often 0).

Integers are written in decimal (zstd packs short digit runs better than fixed-width
binary: bench/bench_store.py), floats as their exact JSON text (a float difference
would not round-trip). A row of order 1 or 2 is readable only with the rows before
it back to a checkpoint, so the writer makes every `CHECKPOINT_EVERY`-th row of a
block a checkpoint; damage to a row loses at most the rest of its chain. The order
byte outside the zstd frame lets SQL find checkpoints (retention cuts before one);
the same order inside the frame is covered by zstd's checksum, and the two must agree.
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any, NamedTuple

import msgspec
import zstandard

from kvmtop.store import blob

TAG = b"D"
"""First byte of a delta row. A legacy row (a zstd frame of JSON against the
reference) starts with the zstd magic 28 B5 2F FD (RFC 8878 §3.1.1)."""

ORDER_BASE = ord("0")
"""The order byte is the order's ASCII digit: b"D0" starts a checkpoint row."""

CHECKPOINT_PREFIX = TAG + b"0"
"""The first bytes of a checkpoint row (a row readable from its reference alone)."""

_HOLE = float("nan")
"""What a number becomes in the structure: `json.dumps` writes it as `NaN`, which
JSON text of a real value never holds outside a string; `Shape.parts` refuses a
document where a string holds it too (the count of holes would not match)."""

_HOLE_TEXT = "NaN"


class Shape:
    """A document split into its structure and its numbers.

    Attributes:
        structure: the document with every number replaced by a hole; samples with
            equal structures (`same_as`) can be stored as deltas of one another.
        float_slots: positions, among all numbers, of the floats (in order).
        ints: the integers in document order.
        floats: the floats' JSON text, in document order.
    """

    __slots__ = ("_parts", "float_slots", "floats", "ints", "structure")

    def __init__(
        self, structure: Any, float_slots: list[int], ints: list[int], floats: list[str]
    ) -> None:
        self.structure = structure
        self.float_slots = float_slots
        self.ints = ints
        self.floats = floats
        self._parts: list[str] | None = None

    def same_as(self, other: Shape) -> bool:
        """Whether `other` has this structure (holes compare equal: containers compare
        their items by identity first, and every hole is the same object)."""
        return self.float_slots == other.float_slots and self.structure == other.structure

    def parts(self) -> list[str] | None:
        """The JSON text between the numbers (one more than the numbers); None when a
        string holds the hole's text, so the holes cannot be found again."""
        if self._parts is None:
            parts = json.dumps(self.structure, separators=(",", ":")).split(_HOLE_TEXT)
            if len(parts) != len(self.ints) + len(self.floats) + 1:
                return None
            self._parts = parts
        return self._parts


def hollow(doc: dict[str, Any]) -> Shape:
    """Split a JSON-able dict (its arrays lists or tuples) into its structure and its
    numbers."""
    ints: list[int] = []
    floats: list[float] = []
    float_slots: list[int] = []

    def walk(value: Any) -> Any:
        if type(value) is dict:
            items = value.values()
            if all(type(v) is int for v in items):  # a dict of counters: in bulk
                ints.extend(items)
                return dict.fromkeys(value, _HOLE)
            out = {}
            for k, v in value.items():
                t = type(v)
                if t is int:
                    ints.append(v)
                    out[k] = _HOLE
                elif v is None or t is str:  # most fields (None: not reported): no call
                    out[k] = v
                else:
                    out[k] = leaf(v)
            return out
        if all(type(v) is int for v in value):
            ints.extend(value)
            return [_HOLE] * len(value)
        return [leaf(v) for v in value]

    def leaf(v: Any) -> Any:
        t = type(v)
        if t is int:
            ints.append(v)
            return _HOLE
        if t is dict or t is tuple or t is list:  # msgspec.to_builtins keeps tuples
            return walk(v)
        if t is float:
            float_slots.append(len(ints) + len(floats))
            floats.append(v)
            return _HOLE
        return v

    structure = walk(doc)
    return Shape(structure, float_slots, ints, [json.dumps(f) for f in floats])


def _decimals(values: list[int]) -> str:
    """Integers as comma-separated decimal text (how rows and references store them)."""
    return ",".join(map(str, values))


_INTEGERS = msgspec.json.Decoder(list[int])
"""Reads `_decimals`' text as the JSON array it is inside brackets: msgspec parses it
in C, several times faster than `int()` per item, which a seek pays for every row
back to a checkpoint (bench/results/measurements.md#reading-stored-integers)."""


def _integers(text: bytes) -> list[int]:
    """The integers `_decimals` wrote (raises ValueError on anything else:
    `msgspec.DecodeError` is one)."""
    return _INTEGERS.decode(b"[" + text + b"]")


class Reference(NamedTuple):
    """What a block's rows are stored against: its first sample's shape and numbers."""

    parts: list[str]
    float_slots: list[int]
    ints: list[int]


def pack_reference(shape: Shape) -> bytes:
    """A block's reference (the `dictionaries` row, before compression): the JSON
    array of the shape's parts, then its float slots and its integers in decimal.
    Stored already split, so a seek to a block not read yet costs parsing this,
    not splitting a sample again (bench/bench_store.py)."""
    parts = shape.parts()
    if parts is None:
        raise ValueError("a shape whose holes cannot be found again has no reference")
    return "\n".join(
        (
            json.dumps(parts, separators=(",", ":")),
            _decimals(shape.float_slots),
            _decimals(shape.ints),
        )
    ).encode()


def unpack_reference(raw: bytes) -> Reference:
    """The reference `pack_reference` wrote.

    Raises:
        ValueError: not such a text (a damaged row, or a format-2 reference).
    """
    try:
        parts_text, slots_text, ints_text = raw.split(b"\n")
        parts = json.loads(parts_text.decode())
        slots, ints = _integers(slots_text), _integers(ints_text)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a block reference") from None
    if (
        not isinstance(parts, list)
        or set(map(type, parts)) - {str}
        or len(parts) != len(ints) + len(slots) + 1
    ):
        raise ValueError("not a block reference")
    return Reference(parts, slots, ints)


def fill(parts: list[str], float_slots: list[int], ints: list[int], floats: list[str]) -> bytes:
    """The JSON text of a shape's parts with these numbers in its holes.

    Raises:
        ValueError: the numbers do not fit the shape (a damaged row).
    """
    tokens = list(map(str, ints))
    if len(floats) != len(float_slots) or len(tokens) + len(floats) + 1 != len(parts):
        raise ValueError(
            f"{len(ints)} integers and {len(floats)} floats do not fit a "
            f"shape of {len(parts) - 1} numbers"
        )
    for slot, text in zip(float_slots, floats, strict=True):
        tokens.insert(slot, text)
    return ("".join(chain.from_iterable(zip(parts[:-1], tokens, strict=True))) + parts[-1]).encode()


def differences(order: int, ints: list[int], bases: tuple[list[int], ...]) -> list[int]:
    """What a row of `order` stores for `ints`: the difference from its reference
    (order 0, `bases` = (reference,)), from the previous sample (order 1, (previous,))
    or from the linear prediction of the two previous ones (order 2, (previous,
    the one before))."""
    if order == 2:
        prev, prev2 = bases
        # p + p rather than 2 * p: faster on counter-sized ints
        # (bench/results/measurements.md#order-2-delta-arithmetic).
        return [v - p - p + q for v, p, q in zip(ints, prev, prev2, strict=True)]
    return [v - b for v, b in zip(ints, bases[0], strict=True)]


def restore(order: int, stored: list[int], bases: tuple[list[int], ...]) -> list[int]:
    """The integers a row of `order` stored as `stored` (the inverse of
    `differences`).

    Raises:
        ValueError: the row and its bases hold different counts (a damaged row).
    """
    try:
        if order == 2:
            prev, prev2 = bases
            return [d + p + p - q for d, p, q in zip(stored, prev, prev2, strict=True)]
        return [d + b for d, b in zip(stored, bases[0], strict=True)]
    except ValueError:
        raise ValueError("its numbers do not match the samples it was stored against") from None


def pack_row(
    order: int, stored: list[int], floats: list[str], compressor: zstandard.ZstdCompressor
) -> bytes:
    """A delta row's bytes (see the module doc)."""
    text = f"{order}\n{_decimals(stored)}\n{','.join(floats)}"
    return TAG + str(order).encode() + compressor.compress(text.encode())


def is_delta_row(data: bytes) -> bool:
    """Whether a sample row is a delta row (else a whole sample's zstd frame)."""
    return data[:1] == TAG


def row_order(data: bytes) -> int:
    """The order byte of a delta row (before its checksum is verified)."""
    return data[1] - ORDER_BASE if len(data) > 1 else -1


def unpack_row(
    data: bytes, decompressor: zstandard.ZstdDecompressor
) -> tuple[int, list[int], list[str]]:
    """(order, stored integers, float texts) of a delta row.

    Raises:
        ValueError: the row is damaged (its frame, its text, or its two orders
            disagree).
    """
    text = blob.unpack(data[2:], decompressor)  # raises ValueError("zstd: ...")
    try:
        order_text, ints_text, floats_bytes = text.split(b"\n")
        order, stored = int(order_text), _integers(ints_text)
        floats_text = floats_bytes.decode()
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a delta row") from None
    if order != row_order(data) or order not in (0, 1, 2):
        raise ValueError("its order byte is damaged")
    return order, stored, floats_text.split(",") if floats_text else []
