"""A pipeline's detector and incident state as bytes, and back (`Pipeline.checkpoint`).

Layer: feed. In memory only: the state refers to the latest sample, which the
recording holds, instead of copying it.
"""

from __future__ import annotations

import io
import pickle
import zlib
from typing import Any

from kvmtop.model.sample import Sample


def save_state(state: object, latest: Sample | None) -> bytes:
    """`state` pickled with `latest` as a reference, not a copy, and compressed."""
    out = io.BytesIO()
    _StatePickler(out, latest).dump(state)
    return zlib.compress(out.getvalue(), 1)


def load_state(data: bytes, latest: Sample) -> Any:
    """The state `save_state` gave `data` for, around `latest` read again."""
    return _StateUnpickler(io.BytesIO(zlib.decompress(data)), latest).load()


class _StatePickler(pickle.Pickler):
    """Pickles a pipeline's state with the latest sample as a reference, not a copy."""

    def __init__(self, out: io.BytesIO, latest: Sample | None) -> None:
        super().__init__(out, protocol=pickle.HIGHEST_PROTOCOL)
        self._latest = latest

    def persistent_id(self, obj: object) -> str | None:
        """The latest sample by reference."""
        return "latest" if obj is self._latest and obj is not None else None


class _StateUnpickler(pickle.Unpickler):
    """Loads a `_StatePickler` state around the latest sample, read again."""

    def __init__(self, data: io.BytesIO, latest: Sample) -> None:
        super().__init__(data)
        self._latest = latest

    def persistent_load(self, pid: object) -> Sample:
        """The latest sample (the only reference a state holds)."""
        if pid != "latest":
            raise pickle.UnpicklingError(f"unknown reference {pid!r}")
        return self._latest
