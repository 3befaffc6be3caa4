"""fast_init: the dataclass's own __init__ semantics, stored through the slots."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from kvmtop.model.frozen import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class Point:
    name: str
    x: int = 0
    tags: dict[str, int] = field(default_factory=dict)


def test_same_fields_defaults_and_factories() -> None:
    p = Point("a", 2)
    assert (p.name, p.x, p.tags) == ("a", 2, {})
    assert p == Point(name="a", x=2, tags={})
    assert Point("b").tags is not Point("b").tags
    assert Point("c", tags={"k": 1}).tags == {"k": 1}
    assert dataclasses.replace(p, x=3) == Point("a", 3)
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]


def test_still_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Point("a").x = 1  # type: ignore[misc]


def test_only_frozen_slotted_dataclasses() -> None:
    @dataclass(slots=True)
    class Mutable:
        x: int

    with pytest.raises(TypeError):
        fast_init(Mutable)


def test_built_instances_are_of_the_class_and_hash_as_dataclasses() -> None:
    p = Point("a", 2, {"k": 1})
    assert type(p) is Point
    assert Point("a", 2) == Point("a", 2)
    with pytest.raises(TypeError, match="unhashable type: 'dict'"):
        hash(p)  # the dataclass's own __hash__: over the fields, and tags is a dict
    assert repr(Point("a")) == "Point(name='a', x=0, tags={})"


def test_no_base_classes() -> None:
    @dataclass(frozen=True, slots=True)
    class Base:
        x: int

    @dataclass(frozen=True, slots=True)
    class Derived(Base):
        y: int

    with pytest.raises(TypeError, match="derives"):
        fast_init(Derived)
