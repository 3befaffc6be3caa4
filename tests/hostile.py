"""Hostile names for the tests of every surface that shows a name (issue #16).

A user ran `qemu-system-x86_64 -name $'esc\\x1b[2J\\x1b[31mBAD\\x07' -enable-kvm ...`:
the name cleared kvmtop's screen. `BIDI` reverses how the text after it is shown
("exe.png"). Each surface must show the `*_SHOWN` form (`kvmtop.model.text.visible`)
and none of `RAW`; JSON must carry the exact string.
"""

from __future__ import annotations

BAD = "esc\x1b[2J\x1b[31mBAD\x07"
BAD_SHOWN = "esc\\x1b[2J\\x1b[31mBAD\\x07"
BIDI = "\u202egnp.exe"
BIDI_SHOWN = "\\u202egnp.exe"
RAW = ("\x1b", "\x07", "\u202e")
"""Characters of the hostile names that must never reach an output raw."""


def assert_no_raw(text: str) -> None:
    """`text` carries none of the hostile names' control or bidi characters raw."""
    found = [c for c in RAW if c in text]
    assert not found, f"raw {found!r} in output"
