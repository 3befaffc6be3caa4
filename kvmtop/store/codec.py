"""Sample ↔ plain dict (JSON-able), generically over the frozen dataclasses of the model.

Layer: store. Imports nothing from kvmtop; never textual.

The codec walks `dataclasses.fields` and the resolved type hints, so a field added to
`kvmtop.model.sample` needs no change here. Rules:

- a field equal to its default is left out (most counters a source does not report
  are None, and leaving them out is the cheapest compression there is);
- decoding ignores keys it does not know (a file from a newer minor layout) and lets
  a missing key take the field's default (a file from an older one);
- a value of the wrong type raises `CodecError`, so a record that decompressed but
  is damaged is rejected rather than turned into a wrong `Sample`.

Supported annotations: `int`, `float`, `str`, `bool`, `X | None`, nested dataclasses,
`tuple[X, ...]`, fixed `tuple[A, B, C]` and `dict[str, X]`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Hashable
from functools import cache
from typing import Any, TypeVar, cast

T = TypeVar("T")
Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]

_MISSING = object()
_SCALARS = (int, float, str, bool)


class CodecError(ValueError):
    """A dict does not describe a valid value of the expected type."""


def encode(value: Any) -> dict[str, Any]:
    """The JSON-able dict of a dataclass value (fields equal to their default left out)."""
    if not _is_dataclass_type(type(value)):
        raise TypeError(f"encode() takes a dataclass instance, not {type(value).__name__}")
    result: dict[str, Any] = _encoder(_key(type(value)))(value)
    return result


def decode(tp: type[T], data: Any) -> T:
    """The `tp` instance a dict describes.

    Raises:
        CodecError: `data` is not a dict, a required field is missing, or a value
            has the wrong type.
    """
    result: T = _decoder(_key(tp))(data)
    return result


# --------------------------------------------------------------------------- plans


def _key(tp: type[Any]) -> Hashable:
    # Classes are hashable; mypy does not infer it for `type[T]`.
    return cast(Hashable, tp)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _MISSING


@cache
def _encoder(tp: Any) -> Encoder:
    """An encoder for values annotated `tp`, built once per annotation."""
    if _is_dataclass_type(tp):
        hints = typing.get_type_hints(tp)
        plan = [(f.name, _default_of(f), _encoder(hints[f.name])) for f in dataclasses.fields(tp)]

        def encode_dataclass(value: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, default, enc in plan:
                v = getattr(value, name)
                if default is _MISSING or v != default:
                    out[name] = enc(v)
            return out

        return encode_dataclass
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [_encoder(a) for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"codec supports only `X | None` unions, not {tp}")
        enc = inner[0]
        return lambda v: None if v is None else enc(v)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _encoder(args[0])
            return lambda v: [item(x) for x in v]
        items = [_encoder(a) for a in args]
        return lambda v: [e(x) for e, x in zip(items, v, strict=True)]
    if origin is dict:
        value_enc = _encoder(args[1])
        return lambda v: {k: value_enc(x) for k, x in v.items()}
    if tp in _SCALARS:
        return _identity
    raise TypeError(f"codec cannot encode annotation {tp!r}")


def _identity(value: Any) -> Any:
    return value


def _scalar_decoder(tp: type) -> Decoder:
    def decode_scalar(value: Any) -> Any:
        # The exact type is the common case (`type(True) is bool`, never int).
        if type(value) is tp:
            return value
        # JSON has one number type: accept an int where a float is declared; bool is
        # an int subclass in Python, so it is refused where an int is declared.
        if tp is float and type(value) is int:
            return float(value)
        raise CodecError(f"expected {tp.__name__}, got {type(value).__name__}")

    return decode_scalar


def _exact_types(tp: Any) -> frozenset[type]:
    """The types a value annotated `tp` may have as decoded JSON and be used as it is
    (so the decoder need not be called): the scalar, and None for `X | None`."""
    if tp in _SCALARS:
        return frozenset({tp})
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if all(a in _SCALARS or a is type(None) for a in args):
            return frozenset(args)
    return frozenset()


def _dataclass_decoder(tp: type) -> Decoder:
    """A decoder for dataclass `tp`, generated as straight-line code (as `dataclasses`
    generates `__init__`): per field one dict lookup, a type check, and the field's
    own decoder only when the value is not already of a declared scalar type; the
    instance is built with positional arguments. Markedly less CPU than a loop over a
    plan of the fields (measured side by side:
    bench/results/measurements.md#stored-codec-decoder),
    which every replay, report and seek pays per sample."""
    hints = typing.get_type_hints(tp)
    fields = dataclasses.fields(tp)
    required = frozenset(
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    env: dict[str, Any] = {
        "_tp": tp,
        "_required": required,
        "_M": _MISSING,
        "CodecError": CodecError,
        "_missing": _missing_field,
    }
    body = [
        "def decode_dataclass(value):",
        "    if type(value) is not dict:",
        f"        raise CodecError('{tp.__name__}: expected an object, got '"
        " + type(value).__name__)",
        "    if not _required <= value.keys():",
        "        _missing(_tp, _required, value)",
        "    get = value.get",
    ]
    for i, f in enumerate(fields):
        if not f.init or f.kw_only:
            raise TypeError(f"codec cannot decode {tp.__name__}.{f.name} (init=False or kw_only)")
        env[f"_dec{i}"], env[f"_types{i}"] = _decoder(hints[f.name]), _exact_types(hints[f.name])
        convert = f"x if type(x) in _types{i} else _dec{i}(x)"
        if f.name in required:
            value = f"(x := value[{f.name!r}], {convert})[1]"
        elif f.default is not dataclasses.MISSING:
            env[f"_default{i}"] = f.default
            value = f"_default{i} if (x := get({f.name!r}, _M)) is _M else {convert}"
        else:
            env[f"_factory{i}"] = f.default_factory
            value = f"_factory{i}() if (x := get({f.name!r}, _M)) is _M else {convert}"
        body += [
            "    try:",
            f"        a{i} = {value}",
            "    except CodecError as exc:",
            f"        raise CodecError('{tp.__name__}.{f.name}: ' + str(exc)) from None",
        ]
    body.append(f"    return _tp({', '.join(f'a{i}' for i in range(len(fields)))})")
    exec(compile("\n".join(body), f"<codec {tp.__qualname__}>", "exec"), env)
    decoder: Decoder = env["decode_dataclass"]
    return decoder


def _missing_field(tp: type, required: frozenset[str], value: dict[str, Any]) -> None:
    missing = sorted(required - value.keys())[0]
    raise CodecError(f"{tp.__name__}: missing field {missing!r}")


def _list_of(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise CodecError(f"expected an array, got {type(value).__name__}")
    return value


@cache
def _decoder(tp: Any) -> Decoder:
    """A decoder for values annotated `tp`, built once per annotation."""
    if _is_dataclass_type(tp):
        return _dataclass_decoder(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [_decoder(a) for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"codec supports only `X | None` unions, not {tp}")
        dec = inner[0]
        return lambda v: None if v is None else dec(v)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])
            return lambda v: tuple(item(x) for x in _list_of(v))
        items = [_decoder(a) for a in args]

        def decode_fixed(v: Any) -> tuple[Any, ...]:
            values = _list_of(v)
            if len(values) != len(items):
                raise CodecError(f"expected {len(items)} items, got {len(values)}")
            return tuple(d(x) for d, x in zip(items, values, strict=True))

        return decode_fixed
    if origin is dict:
        key_dec = _decoder(args[0])
        value_dec = _decoder(args[1])
        key_type, value_type = args
        scalars = key_type in _SCALARS and value_type in _SCALARS

        def decode_dict(v: Any) -> dict[Any, Any]:
            if not isinstance(v, dict):
                raise CodecError(f"expected an object, got {type(v).__name__}")
            # Scalars of the declared types (the common case) are checked in bulk;
            # decoded JSON's keys are always str.
            if (
                scalars
                and all(type(x) is value_type for x in v.values())
                and (key_type is str or all(type(k) is key_type for k in v))
            ):
                return dict(v)
            return {key_dec(k): value_dec(x) for k, x in v.items()}

        return decode_dict
    if tp in _SCALARS:
        return _scalar_decoder(tp)
    raise TypeError(f"codec cannot decode annotation {tp!r}")
