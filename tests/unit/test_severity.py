"""The one order of severities (`kvmtop.model.finding`), as every ranking uses it."""

from __future__ import annotations

from kvmtop.model.finding import SEVERITIES, severity_rank


def test_severities_rank_in_their_order_and_an_unknown_one_below_info() -> None:
    assert [severity_rank(s) for s in SEVERITIES] == [0, 1, 2]
    assert severity_rank("fatal") == -1 < severity_rank("info")
    assert sorted(["critical", "fatal", "info", "warning"], key=severity_rank) == [
        "fatal",
        "info",
        "warning",
        "critical",
    ]
