"""A point in a recording as the user types it (`--from`, `--to`, the replay's seek).

Layer: feed. Pure: no I/O.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from datetime import time as clock_time

_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RELATIVE = re.compile(r"\+(\d+(?:\.\d+)?)([smhd]?)")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?")
TIME_FORMATS = (
    "ISO 8601 (local time unless it ends in Z or an offset), HH:MM[:SS] "
    "during the recording, Unix seconds, or +N[s|m|h|d] from the start of the recording"
)


def parse_time(text: str, start_s: float | None, end_s: float | None = None) -> float:
    """A point in a recording typed by the user, as Unix seconds.

    Args:
        text: ISO 8601 ("2025-03-01T14:05", "...Z", "...+01:00"), a local time of
            day ("14:05", "14:05:30": the first time the recording's clock reads it,
            or that time on its first day when it never does), Unix seconds
            ("1740837900"), or "+10m" (s, m, h, d; none means s) after `start_s`.
        start_s: the recording's first sample, for relative times and times of day.
        end_s: the recording's last sample (a time of day may fall on a later day).

    Raises:
        ValueError: none of those forms, or a relative time without a start.
    """
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    of_day = _CLOCK.fullmatch(text)
    if (relative or of_day) and start_s is None:
        raise ValueError("a relative time needs a recording that has samples")
    if relative and start_s is not None:
        return start_s + float(relative[1]) * _UNITS_S[relative[2] or "s"]
    if of_day and start_s is not None:
        return _time_of_day(text, of_day, start_s, end_s)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        # A naive datetime is local time: timestamp() applies the local zone.
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time ({TIME_FORMATS})") from None


def _time_of_day(text: str, match: re.Match[str], start_s: float, end_s: float | None) -> float:
    """The first local time reading `match` (HH, MM, SS, fraction) in [start_s, end_s]."""
    try:
        of_day = clock_time(
            int(match[1]), int(match[2]), int(match[3] or 0), int((match[4] or "0").ljust(6, "0"))
        )
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day") from None
    at = datetime.combine(datetime.fromtimestamp(start_s).date(), of_day)
    while at.timestamp() < start_s and end_s is not None:
        later = at + timedelta(days=1)
        if later.timestamp() > end_s:
            break
        at = later
    return at.timestamp()
