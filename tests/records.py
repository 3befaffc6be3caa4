"""The model's record types, frozen dataclasses and `msgspec.Struct`s alike.

Issue #18 moves the model from dataclasses to Structs; the tests that enumerate a
type's fields, or draw values of it with Hypothesis, use these helpers so they hold
for either kind.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

import msgspec
from hypothesis import strategies as st

T = TypeVar("T")

REQUIRED: Any = object()
"""The default of a field that has none."""


def is_record(obj: Any) -> bool:
    """Whether `obj` is a dataclass or Struct type, or an instance of one."""
    tp = obj if isinstance(obj, type) else type(obj)
    return dataclasses.is_dataclass(tp) or issubclass(tp, msgspec.Struct)


def field_defaults(tp: type) -> list[tuple[str, Any]]:
    """(name, default) of each field of a record type, in order: a default factory is
    called, a field without default has `REQUIRED`."""
    if issubclass(tp, msgspec.Struct):
        fields: Any = msgspec.structs.fields(tp)
        absent: Any = msgspec.NODEFAULT
    else:
        fields, absent = dataclasses.fields(tp), dataclasses.MISSING
    return [
        (
            f.name,
            f.default
            if f.default is not absent
            else f.default_factory()
            if f.default_factory is not absent
            else REQUIRED,
        )
        for f in fields
    ]


def field_names(tp: type) -> list[str]:
    """A record type's field names, in order."""
    return [name for name, _ in field_defaults(tp)]


def from_type(tp: Any) -> st.SearchStrategy[Any]:
    """`st.from_type`, with every Struct type reachable from `tp` built from its
    fields' types: Hypothesis infers a Struct's arguments from its signature, where a
    default factory shows as a placeholder it would pass on."""
    _register(tp, set())
    return st.from_type(tp)


def _register(tp: Any, seen: set[Any]) -> None:
    if tp in seen:
        return
    seen.add(tp)
    for arg in typing.get_args(tp):
        _register(arg, seen)
    if not isinstance(tp, type):
        return
    if issubclass(tp, msgspec.Struct):
        fields = msgspec.structs.fields(tp)
        for f in fields:
            _register(f.type, seen)
        st.register_type_strategy(tp, st.builds(tp, **{f.name: _bounded(f.type) for f in fields}))
    elif dataclasses.is_dataclass(tp):
        for name, hint in typing.get_type_hints(tp).items():
            if name in {f.name for f in dataclasses.fields(tp)}:
                _register(hint, seen)


MAX_ITEMS = 3
"""The most items a drawn field's tuple, list or dict holds. Unbounded, nested
collections (a Sample's guests' vCPUs' counter dicts) can outgrow Hypothesis's data
buffer, and the draw fails its `data_too_large` health check at random."""


def _bounded(hint: Any) -> st.SearchStrategy[Any]:
    """The strategy for a field's type, its collections at most `MAX_ITEMS` long."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(_bounded(args[0]), max_size=MAX_ITEMS).map(tuple)
    if origin is list:
        return st.lists(_bounded(args[0]), max_size=MAX_ITEMS)
    if origin is dict:
        return st.dictionaries(_bounded(args[0]), _bounded(args[1]), max_size=MAX_ITEMS)
    return st.from_type(hint)


def replace(obj: T, **changes: Any) -> T:
    """A copy of a record (dataclass or Struct) with `changes` applied."""
    if isinstance(obj, msgspec.Struct):
        return msgspec.structs.replace(obj, **changes)
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
