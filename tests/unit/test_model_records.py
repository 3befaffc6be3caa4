"""The model's per-tick records are frozen msgspec Structs (issue #18: they replaced
the `exec`-generated `__init__` of frozen dataclasses)."""

from __future__ import annotations

import msgspec
import pytest

from kvmtop.detectors import base
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
    assert len(STRUCTS) == 17


@pytest.mark.parametrize("tp", STRUCTS, ids=lambda tp: tp.__name__)
def test_every_struct_is_frozen(tp: type[msgspec.Struct]) -> None:
    assert tp.__struct_config__.frozen


def test_frozen_with_a_factory_per_instance() -> None:
    g = GuestSample(uuid="u", name="g")
    with pytest.raises(AttributeError):
        g.name = "h"  # type: ignore[misc]
    assert g.vm_kvm == {} and g.vm_kvm is not GuestSample(uuid="u", name="g").vm_kvm
    assert msgspec.structs.replace(g, name="h") == GuestSample("u", "h")
