"""Fuzz: damaged recordings through every reader (#16).

A small recording made by the real writer (with its index, as `kvmtop record` makes
it) is damaged two ways: cut at every page boundary, and a seeded loop of random
byte flips in one to three pages. Each damaged copy goes through replay --batch,
report (from the index and --exact), export and slice, in-process, and a few through
real processes. Whatever the damage:

- no traceback: exit status 0 or 2, and 2 is one line;
- every intact sample is read, and only samples equal to the undamaged ones;
- the commands agree on which samples they read;
- every sample the file had and a command did not read is named by a notice.

Which samples are intact comes from the page each sample needs, found once: a sample
needs a page when reading it alone (`StoreReader.read`) fails with that page
overwritten. A damaged copy's intact samples are those that need none of its
damaged pages.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from kvmtop.commands.main import main
from kvmtop.config import Settings
from kvmtop.model.sample import Sample
from kvmtop.report.index import IndexedWriter
from kvmtop.store.meta import StoreError
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import PAGE_SIZE, StoreWriter
from kvmtop.wiring import build_pipeline
from tests.store.synth import SyntheticHost

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = 30
"""Three chains of delta rows (`writer.CHAIN`), about 45 pages with two guests."""
FLIPS = 20
"""Damaged copies with random byte flips (seeded: the same every run)."""
SUBPROCESS_CUT, SUBPROCESS_FLIP = 20, 5
"""The damaged copies that also run through a real `python -m kvmtop`."""

NOTICE = re.compile(r"samples? #(-?\d+)(?: to #(\d+))?( and any after it)?")
"""A notice naming one sample, a run of them, or one and the rest of the file."""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[Sample]]:
    """The undamaged recording's bytes and its samples."""
    path = tmp_path_factory.mktemp("fuzz") / "pristine.kvmtop"
    settings = Settings()
    host = SyntheticHost(2)
    samples = [host.sample() for _ in range(SAMPLES)]
    writer = IndexedWriter(
        StoreWriter(path),
        build_pipeline(replace(settings, window_size=2)),
        settings.detectors.vswitch_saturation.uplink_kinds,
    )
    for sample in samples:
        writer.append(sample)
    writer.close()
    with StoreReader(path) as r:
        assert list(r.iter()) == samples and r.first_index() == 1
    return path.read_bytes(), samples


def _readable(path: Path) -> dict[int, Sample]:
    """Index → sample of every sample read alone (none when the file is refused)."""
    try:
        reader = StoreReader(path)
    except StoreError:
        return {}
    with reader:
        return {i: s for i in range(1, SAMPLES + 1) if (s := reader.read(i)) is not None}


@pytest.fixture(scope="module")
def needs(
    pristine: tuple[bytes, list[Sample]], tmp_path_factory: pytest.TempPathFactory
) -> list[set[int]]:
    """For each page (0-based), the samples that cannot be read without it."""
    data, _ = pristine
    path = tmp_path_factory.mktemp("needs") / "one-page.kvmtop"
    out: list[set[int]] = []
    for page in range(len(data) // PAGE_SIZE):
        damaged = bytearray(data)
        damaged[page * PAGE_SIZE : (page + 1) * PAGE_SIZE] = b"\xff" * PAGE_SIZE
        path.write_bytes(damaged)
        out.append(set(range(1, SAMPLES + 1)) - set(_readable(path)))
    assert out[0] == set(range(1, SAMPLES + 1))  # page 1: the header and the schema
    assert any(len(lost) == 1 for lost in out)  # a leaf of one row, at least
    return out


def _run(*args: str | Path) -> tuple[int, str, str]:
    """`kvmtop ARGS` in-process (no config file): (status, stdout, stderr); an
    exception is a failure."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([*map(str, args), "--config", os.devnull])
    return status, out.getvalue(), err.getvalue()


def _check(
    path: Path,
    pages: set[int],
    pristine: tuple[bytes, list[Sample]],
    needs: list[set[int]],
    subprocesses: bool,
) -> None:
    """Run every reader over the damaged `path` (`pages` damaged) and check it."""
    _, samples = pristine
    every = set(range(1, SAMPLES + 1))
    intact = every - set().union(*(needs[p] for p in pages))
    read = _readable(path)
    assert intact <= set(read), f"intact samples not read: {sorted(intact - set(read))}"
    assert all(samples[i - 1] == s for i, s in read.items()), "a sample read wrong"
    times = [s.wall_s for _, s in sorted(read.items())]
    slice_out = path.with_suffix(".slice")
    runs = {
        "replay": _run("replay", path, "--batch", "--format", "json"),
        "export": _run("export", path, "--format", "jsonl"),
        "exact": _run("report", path, "--exact", "--format", "json"),
        "report": _run("report", path, "--format", "json"),
        "slice": _run("slice", path, "-o", slice_out),
    }
    for name, (status, out, err) in runs.items():
        where = f"{name} on {path.name} (pages {sorted(pages)})"
        assert "Traceback" not in err, where
        assert status in (0, 2), f"{where}: status {status}: {err}"
        if status == 2 or not read:
            assert status == 2 and not read, f"{where}: status {status}, {len(read)} read"
            assert len(err.splitlines()) == 1 and err.startswith("kvmtop: "), where
            continue
        if name == "report":  # from the index: figures of the samples as recorded
            json.loads(out)
            continue
        # The same samples as read alone, each one not read named by a notice.
        named: set[int] = set()
        for first, last, onward in NOTICE.findall(err):
            end = SAMPLES if onward else int(last or first)
            named |= set(range(int(first), end + 1))
        assert every - set(read) <= named, f"{where}: not named {every - set(read) - named}"
        if name == "replay":
            assert [x["time"] for x in map(json.loads, out.splitlines())] == [
                round(t, 3) for t in times[1:]
            ], where
        elif name == "export":
            assert [x["time"] for x in map(json.loads, out.splitlines())] == [
                round(t, 3) for t in times
            ], where
        elif name == "exact":
            assert json.loads(out)["range"]["samples"] == len(times), where
        else:
            with StoreReader(slice_out) as r:
                assert [s.wall_s for s in r.iter()] == times, where
    if subprocesses:
        for args in (
            ["replay", str(path), "--batch", "--format", "json"],
            ["export", str(path), "--format", "csv"],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "kvmtop", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert "Traceback" not in done.stderr and done.returncode in (0, 2), done.stderr
            assert done.returncode == runs["replay"][0]
    slice_out.unlink(missing_ok=True)


def test_a_cut_at_every_page_boundary(
    pristine: tuple[bytes, list[Sample]], needs: list[set[int]], tmp_path: Path
) -> None:
    data, _ = pristine
    pages = len(data) // PAGE_SIZE
    for keep in range(pages):
        path = tmp_path / f"cut-{keep}.kvmtop"
        path.write_bytes(data[: keep * PAGE_SIZE])
        if keep == 0:  # an empty file: not a recording at all
            assert _run("replay", path, "--batch")[0] == 2
            continue
        _check(path, set(range(keep, pages)), pristine, needs, subprocesses=keep == SUBPROCESS_CUT)


def test_random_byte_flips(
    pristine: tuple[bytes, list[Sample]], needs: list[set[int]], tmp_path: Path
) -> None:
    data, _ = pristine
    rng = random.Random(16)
    pages = len(data) // PAGE_SIZE
    for n in range(FLIPS):
        damaged = bytearray(data)
        hit = set(rng.sample(range(1, pages), rng.randint(1, 3)))  # page 1 is all or nothing
        for page in hit:
            for _ in range(rng.randint(1, 32)):
                damaged[page * PAGE_SIZE + rng.randrange(PAGE_SIZE)] ^= rng.randint(1, 255)
        path = tmp_path / f"flip-{n}.kvmtop"
        path.write_bytes(damaged)
        _check(path, hit, pristine, needs, subprocesses=n == SUBPROCESS_FLIP)


def test_cuts_and_flips_in_the_first_pages(
    pristine: tuple[bytes, list[Sample]], needs: list[set[int]], tmp_path: Path
) -> None:
    # Page 1 (the header and the schema) and the pages of the header rows: damage
    # there is all or nothing, but never a traceback, and never "no samples" with
    # no word said (a damaged schema may make the table of samples look empty).
    data, _ = pristine
    rng = random.Random(1)
    for n, cut in enumerate(range(100, 3 * PAGE_SIZE, 97)):
        path = tmp_path / f"head-cut-{n}.kvmtop"
        path.write_bytes(data[:cut])
        _check(
            path,
            set(range(cut // PAGE_SIZE, len(data) // PAGE_SIZE)),
            pristine,
            needs,
            subprocesses=False,
        )
    for n in range(12):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(PAGE_SIZE)] ^= rng.randint(1, 255)
        path = tmp_path / f"head-flip-{n}.kvmtop"
        path.write_bytes(damaged)
        _check(path, {0}, pristine, needs, subprocesses=False)
