"""`kvmtop.model.text.visible`, and the batch output that uses it (issue #16): text
escapes a name's control and bidi characters, JSON keeps the exact string."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmtop.headless.batch import run_batch
from kvmtop.model.finding import Finding
from kvmtop.model.sample import SourceStatus
from kvmtop.model.snapshot import Snapshot
from kvmtop.model.text import UNSAFE, visible
from tests.app.builders import DEFAULT_SOURCES, T0, GuestSpec, snapshot
from tests.hostile import BAD, BAD_SHOWN, BIDI, BIDI_SHOWN, assert_no_raw
from tests.records import replace

BIDI_CONTROLS = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def test_the_reported_names() -> None:
    assert visible(BAD) == BAD_SHOWN
    assert visible(BIDI) == BIDI_SHOWN


@pytest.mark.parametrize("code", [*range(0x20), 0x7F, *range(0x80, 0xA0)])
def test_every_c0_c1_and_del_as_x_escape(code: int) -> None:
    assert visible(f"a{chr(code)}b") == f"a\\x{code:02x}b"


@pytest.mark.parametrize("code", [*BIDI_CONTROLS, 0x2028, 0x2029, 0xD800, 0xDCFF, 0xDFFF])
def test_bidi_separators_and_surrogates_as_u_escape(code: int) -> None:
    assert visible(f"a{chr(code)}b") == f"a\\u{code:04x}b"


@pytest.mark.parametrize(
    "text",
    [
        "web-1",
        "db[prod]",
        "a\\x1b",
        "naïve é 数据 🙂",
        "zero\u200bwidth",
        "join\u200dme",
        "nb\u00a0sp",
        "",
    ],
)
def test_everything_else_is_kept(text: str) -> None:
    # Backslashes, brackets, any script, emoji, zero-width characters, NBSP.
    assert visible(text) == text


def test_every_escaped_code_point_is_outside_printable() -> None:
    # The fast path (str.isprintable) may only skip text with nothing to escape.
    assert not [c for c in range(0x110000) if UNSAFE.match(chr(c)) and chr(c).isprintable()]


@given(st.text(alphabet=st.characters(exclude_categories=())))  # surrogates too
def test_visible_leaves_nothing_to_escape_and_is_idempotent(text: str) -> None:
    shown = visible(text)
    assert UNSAFE.search(shown) is None
    assert visible(shown) == shown
    shown.encode("utf-8")  # no lone surrogate left


# --------------------------------------------------------------------------- batch


class ListFeed:
    """The `Feed` of `run_batch` over prepared snapshots."""

    def __init__(self, frames: list[Snapshot]) -> None:
        self.interval_s = 0.0
        self.frames = frames

    def next(self) -> Snapshot | None:
        """The next frame, None after the last."""
        return self.frames.pop(0) if self.frames else None


def hostile() -> Snapshot:
    """A frame with a hostile guest, uplink, finding and source reason."""
    evil = GuestSpec(BAD)
    snap = snapshot(
        [evil, GuestSpec(BIDI)],
        findings=(Finding("steal", "warning", evil.uuid, BAD, f"{BIDI} and {BAD}", T0, guest=BAD),),
        sources=(*DEFAULT_SOURCES, SourceStatus("processes", False, reason=f"pid of {BAD}")),
    )
    nets = tuple(replace(n, name=BIDI + n.name) for n in snap.host.nets)
    return replace(snap, host=replace(snap.host, nets=nets))


def batch(fmt: str) -> str:
    out = io.StringIO()
    # The first frame only primes the rates (it is not printed).
    assert (
        run_batch(ListFeed([hostile(), hostile()]), out, count=1, fmt=fmt, sleep=lambda _s: None)
        == 1
    )
    return out.getvalue()


def test_batch_text_escapes_every_name() -> None:
    text = batch("text")
    assert_no_raw(text)
    lines = text.splitlines()
    assert any(line.startswith(BAD_SHOWN[:18]) for line in lines)  # the name column
    assert any(line.startswith(BIDI_SHOWN) for line in lines)
    assert f"[warning] {BAD_SHOWN}: {BIDI_SHOWN} and {BAD_SHOWN}" in lines
    assert f"source processes: FAILED: pid of {BAD_SHOWN}" in lines
    assert f"uplinks: {BIDI_SHOWN}eno1 " in text


def test_batch_json_keeps_the_exact_names_in_ascii() -> None:
    text = batch("json")
    assert text.isascii()  # \u escapes: nothing raw reaches a terminal
    line = json.loads(text)
    assert [g["name"] for g in line["guests"]] == [BAD, BIDI]
    assert line["findings"][0]["subject_name"] == BAD
    assert line["findings"][0]["message"] == f"{BIDI} and {BAD}"
    assert line["guests"][0]["disks"][0]["path"] == f"/var/lib/libvirt/images/{BAD}.qcow2"
    assert line["host"]["nets"][0]["name"] == BIDI + "eno1"
