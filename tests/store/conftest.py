"""Fixtures for the store tests: synthetic samples and recordings made of them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvmtop.model.sample import Sample
from kvmtop.store.writer import Retention, StoreWriter
from tests.store.synth import SyntheticHost


def make_samples(n: int, guests: int = 3, seed: int = 0) -> list[Sample]:
    """`n` consecutive samples (2 s apart) of a synthetic host."""
    host = SyntheticHost(guests, seed=seed)
    return [host.sample() for _ in range(n)]


def write(path: Path, samples: list[Sample], retention: Retention | None = None) -> Path:
    """A closed recording holding `samples`."""
    writer = StoreWriter(path, retention=retention)
    for s in samples:
        writer.append(s)
    writer.close()
    return path


@pytest.fixture(scope="session")
def samples() -> list[Sample]:
    """120 samples of a 3-guest host: a dozen chains of delta rows."""
    return make_samples(120)


@pytest.fixture
def recording(tmp_path: Path, samples: list[Sample]) -> Path:
    """A closed recording of `samples`."""
    return write(tmp_path / "rec.kvmtop", samples)


@pytest.fixture
def make_recording(tmp_path: Path) -> Callable[..., Path]:
    """Write a recording of the given samples under tmp_path."""

    def make(samples: list[Sample], name: str = "rec.kvmtop", **kw: Retention | None) -> Path:
        return write(tmp_path / name, samples, **kw)

    return make


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 128 KiB tmpfs (needs root and mount(2); skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
