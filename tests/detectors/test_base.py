"""The pieces every detector shares (`kvmtop.detectors.base`)."""

from __future__ import annotations

from kvmtop.detectors.base import PerGuest
from kvmtop.detectors.settings import DetectorSettings


def test_per_guest_forget_drops_that_guest_only() -> None:
    state: PerGuest[int] = PerGuest(DetectorSettings())
    state._guests.update(a=1, b=2)
    state.forget("a")
    state.forget("gone")  # a guest it never saw: nothing to drop
    assert state._guests == {"b": 2}
