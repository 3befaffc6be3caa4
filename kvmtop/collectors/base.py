"""What every collector shares: the probe result and the error type."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Probe:
    """Whether a source can be used here, and if not, a reason a human can act on.

    Attributes:
        name: collector name, as in `SourceStatus.name`.
        available: the source delivers data.
        reason: why it does not, or what part of it is missing
            (e.g. "/proc/schedstat absent: kernel built without CONFIG_SCHEDSTATS").
        detail: facts for the sources view (versions, paths, URI).
    """

    name: str
    available: bool
    reason: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


class CollectorError(Exception):
    """A source failed for this tick; the message is shown to the user as is."""
