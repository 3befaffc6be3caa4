"""Text from outside kvmtop, made safe to show: control and bidi characters escaped.

Layer: model (pure: no I/O, no textual, no rich).

Names reach kvmtop from places it does not control: libvirt domain names, the
command line of an unmanaged QEMU (`-name`), disk paths and targets, interface and
bridge names, thread names (`prctl(PR_SET_NAME)`), and any string of a recording
someone else made. Whoever starts a VM can put an escape sequence in its name, and a
terminal that receives it acts on it. So every place that shows such text to a
person (the TUI, `--batch --format text`, text/Markdown/HTML reports, CSV,
OpenMetrics labels) passes it through `visible` once, just before it is shown; the
data itself (samples, recordings, JSON) keeps the exact string.
"""

from __future__ import annotations

import re

UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    r"\ud800-\udfff]"
)
"""The code points `visible` escapes (see its docstring for why each)."""


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every code point that could act on a terminal or reorder what is
    shown replaced by its escape, as Python writes it: `\\x1b` below U+0100,
    `\\u202e` above.

    Escaped (the `UNSAFE` pattern):

    - U+0000-U+001F (C0) and U+007F (DEL): a terminal acts on them. ESC starts a
      control sequence (clear the screen, move the cursor, set colours or the
      window title), BEL rings, BS and CR write over what was printed, LF, VT and
      FF break a table row or forge a line.
    - U+0080-U+009F (C1): terminals that honour 8-bit controls take U+009B as CSI
      and U+009D as OSC (ESC [ and ESC ]); U+0085 (NEL) is a line break.
    - U+202A-U+202E (LRE, RLE, PDF, LRO, RLO: bidi embeddings and overrides),
      U+2066-U+2069 (LRI, RLI, FSI, PDI: bidi isolates), U+200E, U+200F and U+061C
      (LRM, RLM, ALM: bidi marks): they reorder how the text around them is
      displayed ("Trojan Source", CVE-2021-42574): "\\u202egnp.exe" shows as
      "exe.png".
    - U+2028, U+2029 (line and paragraph separators): a line break to
      `str.splitlines` and to many viewers.
    - U+D800-U+DFFF (lone surrogates): how Python hands over the undecodable bytes
      of a file or interface name (PEP 383); they cannot be encoded as UTF-8, so
      writing one out would fail.

    Everything else is kept, the backslash included: a name without these code
    points shows exactly as it is on every surface (so a literal "\\x1b" in a name
    and an escaped ESC look alike; JSON output keeps the exact value). Other
    invisible format characters (zero-width space and joiner, soft hyphen) neither
    move the cursor nor reorder text, and scripts and emoji need some of them.

    The result has none of these code points, so escaping it again changes nothing.
    Costs one `str.isprintable` for text without them (every code point above is
    outside Python's printable set).
    """
    if text.isprintable():
        return text
    return UNSAFE.sub(_escaped, text)
