"""What a reader tells of a recording: the samples it skipped as unreadable, one
line per run of consecutive ones, and facts about the file.

Layer: store. Never textual. Pure: `StoreReader` feeds it as it reads.

A damaged page or a broken delta chain loses samples by the dozen; one line per
sample would bury the other notices (and the terminal) under lines that say the
same thing, so consecutive samples lost are told as one run (ids are contiguous:
the samples on either side of one are its neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

REASONS_NAMED = 2
"""How many distinct reasons a run's notice names before counting the rest."""


def _when(t: float | None) -> str | None:
    """ "2026-01-02 03:04:05 UTC" for a notice; None without a time (or a damaged one)."""
    if t is None:
        return None
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(slots=True)
class _Run:
    """Consecutive samples skipped as unreadable, told in one notice line."""

    first: int
    last: int
    first_t: float | None
    last_t: float | None
    reasons: list[str]

    def line(self) -> str:
        """The notice: the sample or the run, its time or span, why it was skipped."""
        if self.first == self.last:
            at = _when(self.first_t)
            stamp = f" ({at})" if at else ""
            return f"sample #{self.first}{stamp} skipped: {self.reasons[0]}"
        span = [f"{self.last - self.first + 1} samples"]
        first, last = _when(self.first_t), _when(self.last_t)
        if first and last:
            span.append(f"{first} to {last}")
        why = "; ".join(self.reasons[:REASONS_NAMED])
        if (more := len(self.reasons) - REASONS_NAMED) > 0:
            why += f"; and {more} other reason{'s' if more > 1 else ''}"
        return f"samples #{self.first} to #{self.last} ({', '.join(span)}) skipped: {why}"

    def add(self, index: int, t: float | None, why: str) -> None:
        """Take in the sample just before or just after the run."""
        if index < self.first:
            self.first, self.first_t = index, t
        else:
            self.last, self.last_t = index, t
        if why not in self.reasons:
            self.reasons.append(why)

    def join(self, after: _Run) -> None:
        """Take in the run that starts right after this one ends."""
        self.last, self.last_t = after.last, after.last_t
        self.reasons.extend(w for w in after.reasons if w not in self.reasons)


class Notices:
    """The notices of one reader, in the order found."""

    def __init__(self) -> None:
        self._notes: list[str | _Run] = []
        self._lost: set[int] = set()

    def lines(self) -> list[str]:
        """One line per run of samples lost and per fact, in the order found."""
        return [note if isinstance(note, str) else note.line() for note in self._notes]

    @property
    def skipped(self) -> frozenset[int]:
        """Indices of the samples lost so far."""
        return frozenset(self._lost)

    def lost(self, index: int, t: float | None, why: str) -> None:
        """Note sample `index` (recorded at `t`, when known) lost for `why`: a run of
        its own, or the run it adjoins; once per sample."""
        if index in self._lost:
            return
        self._lost.add(index)
        runs = [note for note in self._notes if isinstance(note, _Run)]
        before = next((run for run in runs if run.last == index - 1), None)
        after = next((run for run in runs if run.first == index + 1), None)
        if before is not None:
            before.add(index, t, why)
            if after is not None:
                before.join(after)
                self._notes.remove(after)
        elif after is not None:
            after.add(index, t, why)
        else:
            self._notes.append(_Run(index, index, t, t, [why]))

    def fact(self, line: str) -> None:
        """Note a fact about the file, once."""
        if line not in self._notes:
            self._notes.append(line)
