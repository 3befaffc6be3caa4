"""A faster `__init__` for the frozen, slotted dataclasses built per guest per tick.

Layer: model (pure).

A frozen dataclass's generated `__init__` stores each field with
`object.__setattr__(self, name, value)`: it must bypass the class's `__setattr__`,
which raises FrozenInstanceError. That is a call per field, and so is calling each
slot's member descriptor. A plain `self.x = x` on a slotted class whose
`__setattr__` is the default one is a single specialised instruction in CPython
3.11 (STORE_ATTR_SLOT, PEP 659), several times cheaper. So the generated `__init__`
turns the new instance into an *open twin* of its class (the same slots, the
default `__setattr__`; `__class__` assignment between classes of the same layout,
Python reference "Data model, __class__"), stores every field, and turns it back.
At 500 guests the pipeline builds some 200 fields per guest per tick (samples,
rates, observations, findings), so this is a measurable share of the tick budget
(issue #9): a `GuestRates` is built in well under half the time
(bench/results/measurements.md#frozen-dataclass-init).

Everything else about the class is the dataclass's own: fields, defaults, equality,
hashing, repr, `dataclasses.replace`, and immutability once built.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Replace the `__init__` of a `@dataclass(frozen=True, slots=True)` class with one
    that stores each field through an open twin of the class (see the module).

    Same signature and defaults (a `default_factory` is called per instance, as the
    dataclass does); the code is generated with `exec`, as `dataclasses` does.

    Raises:
        TypeError: `cls` is not a frozen, slotted dataclass deriving from `object`
            alone, or it has fields the generated `__init__` does not handle
            (init=False, kw_only, __post_init__).
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if cls.__bases__ != (object,):
        # A base class's slots would have to be in the twin's layout too.
        raise TypeError(f"{cls.__name__} derives from another class")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    twin = type(f"_Open{cls.__name__}", (), {"__slots__": cls.__dict__["__slots__"]})
    env: dict[str, Any] = {
        "_MISSING": dataclasses.MISSING,
        "_retype": object.__setattr__,
        "_open": twin,
        "_frozen": cls,
    }
    args: list[str] = []
    body: list[str] = ["    _retype(self, '__class__', _open)"]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: init=False or kw_only")
        value = f.name
        if f.default is not dataclasses.MISSING:
            env[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            args.append(f"{f.name}=_MISSING")
            value = f"_factory_{f.name}() if {f.name} is _MISSING else {f.name}"
        else:
            args.append(f.name)
        body.append(f"    self.{f.name} = {value}")
    body.append("    _retype(self, '__class__', _frozen)")
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body)
    # A file name per class, so profiles tell the classes' __init__ apart.
    exec(compile(source, f"<fast_init {cls.__qualname__}>", "exec"), env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
