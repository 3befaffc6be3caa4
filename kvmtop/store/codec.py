"""The model's frozen records (msgspec Structs and dataclasses) ↔ JSON, through msgspec.

Layer: store. Imports nothing from kvmtop; never textual.

msgspec (https://jcristharif.com/msgspec/, pinned in constraints.txt) reads the
records' fields and resolved type hints itself, so a field added to
`kvmtop.model.sample` needs no change here. Rules, as msgspec 0.23 applies them
(tests/store/test_codec.py checks each):

- every field is written, one equal to its default too: msgspec leaves defaults out
  only for a `Struct` type declared with `omit_defaults`, which no model type is. The
  codec before msgspec (issue #18) left them out; writing them adds little to a
  recording, since its rows store numbers only and a `null` is part of a block's
  shape, written once per block (bench/results/measurements.md#stored-codec-msgspec);
- decoding ignores keys it does not know (a file from a newer minor layout) and
  lets a missing key take the field's default (a file from an older one);
- a value of the wrong type raises `CodecError` (msgspec's strict mode: no bool
  where an int is declared, no float where an int is; an int is taken where a float
  is), so a record that decompressed but is damaged is rejected rather than turned
  into a wrong `Sample`;
- JSON text is read by msgspec's own parser, which refuses NaN and Infinity (not
  JSON: RFC 8259 §6) and the escape of a lone surrogate (RFC 8259 §8.2), all of
  which Python's `json` writes. The store writes its text with `json`
  (`kvmtop.store.blob`, `kvmtop.store.delta`), so such a text is parsed by `json`
  instead and validated the same way: every file an earlier kvmtop wrote reads as
  it did. Samples rarely hold such values (kernel text has no NaN, and the
  collectors decode it with errors="replace"): the second parse costs only the
  texts that need it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")


class CodecError(ValueError):
    """A document does not describe a valid value of the expected type."""


def encode(value: DataclassInstance | msgspec.Struct) -> dict[str, Any]:
    """The JSON-able dict of a record (dataclass or Struct): every field; tuples stay
    tuples (`json.dumps` writes them as arrays)."""
    result: dict[str, Any] = msgspec.to_builtins(value)
    return result


def decode(tp: type[T], data: Any) -> T:
    """The `tp` instance a decoded JSON document (dicts, lists, scalars) describes.

    Raises:
        CodecError: `data` is not an object, a required field is missing, or a value
            has the wrong type.
    """
    try:
        return msgspec.convert(data, tp)
    except msgspec.ValidationError as exc:
        raise CodecError(f"{tp.__name__}: {exc}") from None


def decode_json(tp: type[T], raw: bytes) -> T:
    """The `tp` instance a JSON text describes.

    Raises:
        CodecError: not a valid `tp` (as `decode`).
        ValueError: not JSON.
    """
    try:
        return _json_decoder(tp).decode(raw)
    except msgspec.ValidationError as exc:
        raise CodecError(f"{tp.__name__}: {exc}") from None
    except msgspec.DecodeError:
        pass  # NaN, Infinity or a lone surrogate, which `json` wrote (see the module)
    return decode(tp, json.loads(raw))


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}
"""One decoder per type, made on first use (msgspec's advice: a Decoder keeps the
type's plan)."""


def _json_decoder(tp: type[T]) -> msgspec.json.Decoder[T]:
    decoder = _DECODERS.get(tp)
    if decoder is None:
        decoder = _DECODERS[tp] = msgspec.json.Decoder(tp)
    return decoder
