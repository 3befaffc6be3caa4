"""A faster `__init__` for the frozen, slotted dataclasses built per guest per tick.

Layer: model (pure).

A frozen dataclass's generated `__init__` stores each field with
`object.__setattr__(self, name, value)` (it must bypass the `__setattr__` that
raises FrozenInstanceError): a name lookup on the type per field. A slotted class
already has a member descriptor per field, and calling its `__set__` directly stores
the value at half the cost. At 500 guests the pipeline builds some 200 fields per
guest per tick (samples, rates, observations), so this is a measurable share of the
tick budget (issue #9). Everything else about the class is the dataclass's own:
fields, defaults, equality, hashing, repr, `dataclasses.replace`, immutability.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Replace the `__init__` of a `@dataclass(frozen=True, slots=True)` class with one
    that stores each field through its slot's member descriptor.

    Same signature and defaults (a `default_factory` is called per instance, as the
    dataclass does); the code is generated with `exec`, as `dataclasses` does.

    Raises:
        TypeError: `cls` is not a frozen, slotted dataclass, or it has fields the
            generated `__init__` does not handle (init=False, kw_only, __post_init__).
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    env: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    args: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: init=False or kw_only")
        env[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
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
        body.append(f"    _set_{f.name}(self, {value})")
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body or ["    pass"])
    # A file name per class, so profiles tell the classes' __init__ apart.
    exec(compile(source, f"<fast_init {cls.__qualname__}>", "exec"), env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
