"""The pieces every detector shares (`kvmtop.detectors.base`)."""

from __future__ import annotations

from kvmtop.detectors.base import HOLD_S, GuestView, PerGuest, good_verdict
from kvmtop.detectors.settings import DetectorSettings, DiskLatencySettings
from kvmtop.model.rates.guest import GuestRates
from kvmtop.model.sample import GuestSample


def test_per_guest_forget_drops_that_guest_only() -> None:
    state: PerGuest[int] = PerGuest(DetectorSettings())
    state._guests.update(a=1, b=2)
    state.forget("a")
    state.forget("gone")  # a guest it never saw: nothing to drop
    assert state._guests == {"b": 2}


def _guest() -> GuestView:
    sample = GuestSample(uuid="u1", name="web", state="running")
    return GuestView(sample, GuestRates("u1", "web", "running"), None, DetectorSettings())


def test_good_verdict_on_the_guest_itself() -> None:
    s = DiskLatencySettings(raise_after=4, clear_after=5)
    obs = good_verdict(_guest(), s, "u1")
    assert (obs.key, obs.bad, obs.subject, obs.subject_name) == ("u1", False, "u1", "web")
    assert (obs.guest, obs.guest_uuid) == ("web", "u1")
    assert (obs.raise_after, obs.clear_after, obs.hold_s) == (4, 5, HOLD_S)
    assert obs.evidence == {} and obs.baseline == {} and obs.message == "" and not obs.cause


def test_good_verdict_on_a_device_of_the_guest() -> None:
    obs = good_verdict(_guest(), DiskLatencySettings(), "u1/vda", "vda", hold_s=900.0)
    assert (obs.key, obs.subject, obs.subject_name) == ("u1/vda", "vda", "vda")
    assert (obs.guest, obs.guest_uuid, obs.hold_s) == ("web", "u1", 900.0)
