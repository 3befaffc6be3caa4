"""The model's per-tick records are frozen msgspec Structs (issue #18: they replaced
the `exec`-generated `__init__` of frozen dataclasses), untracked by the garbage
collector (`gc=False`), which is safe only while none can be part of a reference
cycle: a record holds values, containers of values and other records, built before
it, so nothing in it can refer back to it."""

from __future__ import annotations

import types
import typing

import msgspec
import pytest

from kvmtop.detectors import base
from kvmtop.detectors.settings import DetectorSettings
from kvmtop.model import finding, incident, sample
from kvmtop.model.rates import cpu, disk, guest, kvm, net
from kvmtop.model.sample import GuestSample

STRUCTS = sorted(
    (
        obj
        for module in (base, finding, incident, sample, cpu, disk, guest, kvm, net)
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == module.__name__
    ),
    key=lambda tp: tp.__qualname__,
)


def test_the_model_has_its_structs() -> None:
    assert len(STRUCTS) == 19


LEAVES = {int, float, str, bool, type(None), DetectorSettings, *STRUCTS}
"""What a record's fields may hold: values, the detector settings (frozen values),
other records."""


def acyclic(hint: object) -> bool:
    """Whether a field of this type can never refer back to the record."""
    origin = typing.get_origin(hint)
    if origin in (dict, tuple, types.UnionType, typing.Union):
        return all(acyclic(a) for a in typing.get_args(hint) if a is not Ellipsis)
    return hint in LEAVES


@pytest.mark.parametrize("tp", STRUCTS, ids=lambda tp: tp.__name__)
def test_every_struct_is_frozen_and_untracked_safely(tp: type[msgspec.Struct]) -> None:
    config = tp.__struct_config__
    assert config.frozen and not config.gc
    assert all(acyclic(f.type) for f in msgspec.structs.fields(tp))


def test_frozen_with_a_factory_per_instance() -> None:
    g = GuestSample(uuid="u", name="g")
    with pytest.raises(AttributeError):
        g.name = "h"  # type: ignore[misc]
    assert g.vm_kvm == {} and g.vm_kvm is not GuestSample(uuid="u", name="g").vm_kvm
    assert msgspec.structs.replace(g, name="h") == GuestSample("u", "h")
