"""What every collector shares (`kvmtop.collectors.base`): the probe by one read."""

from __future__ import annotations

from kvmtop.collectors.base import CollectorError, Probe, probe_read


class _Source:
    name = "fake"

    def __init__(self, gaps: tuple[str, ...], error: str | None = None) -> None:
        self.last_gaps: tuple[str, ...] = ()
        self._gaps = gaps
        self._error = error

    def read(self) -> int:
        if self._error is not None:
            raise CollectorError(self._error)
        self.last_gaps = self._gaps  # set by the read, as the collectors do
        return 7

    def probe(self) -> Probe:
        return probe_read(self, self.read, lambda n: {"count": str(n)})


def test_a_whole_read_is_available_with_no_reason() -> None:
    assert _Source(()).probe() == Probe("fake", True, None, {"count": "7"})


def test_the_gaps_of_the_read_are_the_reason() -> None:
    probe = _Source(("no PSI", "no THP")).probe()
    assert probe == Probe("fake", True, "no PSI; no THP", {"count": "7"})


def test_a_failed_read_is_unavailable_with_its_message() -> None:
    assert _Source((), "socket refused").probe() == Probe("fake", False, "socket refused")
