"""The pieces every detector shares (`kvmtop.detectors.base`)."""

from __future__ import annotations

import inspect

import msgspec

from kvmtop.detectors.base import HOLD_S, GuestView, Observation, PerGuest, good_verdict, verdict
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
    rates = GuestRates("u1", "web", "running")
    return GuestView(
        sample=sample, rates=rates, prev=None, settings=DetectorSettings(), uuid="u1", name="web"
    )


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


def test_verdict_takes_the_observation_fields_with_their_defaults() -> None:
    # verdict() names Observation's fields as parameters of its own (no **rest): each
    # one it does not derive from the guest and the settings is a parameter, and one
    # left out gives what Observation would (evidence and baseline must be passed).
    derived = {"subject", "subject_name", "raise_after", "clear_after", "guest", "guest_uuid"}
    fields = {f.name: f for f in msgspec.structs.fields(Observation) if f.name not in derived}
    params = inspect.signature(verdict).parameters
    assert set(fields) <= set(params)
    for name, f in fields.items():
        default = params[name].default
        if default is inspect.Parameter.empty:
            assert f.default is msgspec.NODEFAULT, name
        else:
            assert default == f.default, name
