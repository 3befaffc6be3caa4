"""How a number is written: on screen, in `--batch` text, in reports and exports.

Layer: model (pure; no textual, no rich). A number is formatted the same way
everywhere, and unknown values always print as "–" (the reason lives in
`GuestRates.na` and the sources view).
"""

from __future__ import annotations

from kvmtop.model.units import BITS_PER_MBIT, GIB, KIB, MIB, TIB

DASH = "–"


def fmt_num(v: float | None, digits: int = 1) -> str:
    """A plain number with fixed decimals, or a dash."""
    return DASH if v is None else f"{v:.{digits}f}"


def fmt_pct(v: float | None) -> str:
    """A percentage without the sign (columns say %)."""
    if v is None:
        return DASH
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def fmt_si(v: float | None, unit: str = "") -> str:
    """A rate with an SI prefix: 950, 1.2k, 3.4M, 5.6G."""
    if v is None:
        return DASH
    av = abs(v)
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if av >= div:
            return f"{v / div:.1f}{prefix}{unit}"
    return f"{v:.0f}{unit}" if av >= 10 or v == 0 else f"{v:.1f}{unit}"


def fmt_bytes(v: float | None) -> str:
    """Bytes with a binary prefix: 512B, 1.5K, 96M, 2.0G."""
    if v is None:
        return DASH
    av = abs(v)
    for div, prefix in ((TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")):
        if av >= div:
            q = v / div
            return f"{q:.1f}{prefix}" if abs(q) < 10 else f"{q:.0f}{prefix}"
    return f"{v:.0f}B"


def fmt_ms(v: float | None) -> str:
    """Milliseconds with precision that suits the magnitude."""
    if v is None:
        return DASH
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_mbps(bits_per_s: float | None) -> str:
    """Bits per second shown as Mb/s."""
    if bits_per_s is None:
        return DASH
    return fmt_num(bits_per_s / BITS_PER_MBIT, 1 if bits_per_s < 1000 * BITS_PER_MBIT else 0)
