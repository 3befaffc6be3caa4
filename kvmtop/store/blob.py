"""Sample blobs: the codec's dict as compact JSON, compressed with zstd.

Layer: store. Never textual.

A block's reference sample is stored as such a blob (the `dictionaries` table) and
its rows as deltas (`kvmtop.store.delta`). Files of format 1 and 2 store each sample
row as one zstd frame compressed against a *reference dictionary*: the
raw JSON of a recent sample, stored once in the `dictionaries` table. Consecutive
samples share nearly all of their text (keys, names, UUIDs, counters that did not
move), so a raw-content dictionary made of one of them is what zstd can use best.
`bench/bench_store.py` measures it against a dictionary trained with zstd's COVER
trainer on the first 16 samples: the trained one was larger per sample, varied with
the number of guests, and took seconds of CPU to train
(bench/results/measurements.md#zstd-reference-dictionary).

Every frame carries zstd's content checksum (the low 32 bits of XXH64,
RFC 8878 §3.1.1), so a flipped bit inside a blob is detected on read instead of
decoding into wrong counters.
"""

from __future__ import annotations

import json
from typing import Any

import zstandard

from kvmtop.model.sample import Sample
from kvmtop.store.codec import decode_json, encode

PARAMETERS = zstandard.ZstdCompressionParameters(
    strategy=zstandard.STRATEGY_LAZY2,
    window_log=23,
    hash_log=17,
    chain_log=17,
    search_log=4,
    min_match=6,
    write_checksum=True,
)
"""zstd settings for "the same text as the reference with a few numbers changed".
The levels' presets choose min_match 3-5, which breaks the long matches against the
reference into short ones on digits: bench/bench_store.py measured a quarter to half
fewer bytes per guest-sample with these than at level 3
(bench/results/measurements.md#zstd-parameters). The 8 MiB window (window_log 23) covers a
reference and a sample of ~500 guests; decompression needs that much memory at most
(RFC 8878 §3.1.1.1.2)."""

Dictionary = zstandard.ZstdCompressionDict


def dumps(sample: Sample) -> bytes:
    """The compact JSON of a sample."""
    return dumps_doc(encode(sample))


def dumps_doc(doc: dict[str, Any]) -> bytes:
    """The compact JSON of a sample's codec dict (`kvmtop.store.codec.encode`).

    Written by `json`, as the block references are (`kvmtop.store.delta`), not by
    msgspec: msgspec 0.23's encoder writes NaN as null and refuses a lone surrogate,
    `json` keeps both exactly (and `kvmtop.store.codec.decode_json` reads them)."""
    return json.dumps(doc, separators=(",", ":")).encode()


def loads(raw: bytes) -> Sample:
    """The sample a JSON text describes.

    Raises:
        ValueError: not JSON, or not a valid sample (`CodecError`).
    """
    return decode_json(Sample, raw)


def dictionary(raw: bytes) -> Dictionary:
    """A raw-content zstd dictionary made of one sample's JSON."""
    return zstandard.ZstdCompressionDict(raw, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def compressor(reference: Dictionary | None) -> zstandard.ZstdCompressor:
    """A compressor for sample JSON against `reference` (None: no dictionary)."""
    return zstandard.ZstdCompressor(compression_params=PARAMETERS, dict_data=reference)


def pack(raw: bytes) -> bytes:
    """Compress without a dictionary (dictionaries themselves, samples without one)."""
    return compressor(None).compress(raw)


def decompressor(reference: Dictionary | None) -> zstandard.ZstdDecompressor:
    """A decompressor for frames made by `compressor(reference)`."""
    return zstandard.ZstdDecompressor(dict_data=reference)


MAX_CONTENT = 1 << 30
"""Bytes a frame may say it holds: a sample of thousands of guests is a few MB. The
size is in the frame header, outside the content checksum (RFC 8878 §3.1.1.1.4), and
zstd allocates it before decompressing: a damaged header must not ask for terabytes."""


def unpack(blob: bytes, using: zstandard.ZstdDecompressor | None = None) -> bytes:
    """Decompress one frame (by default one made without a dictionary), checking it.

    Raises:
        ValueError: the frame is damaged, truncated or needs another dictionary.
    """
    try:
        if zstandard.frame_content_size(blob) > MAX_CONTENT:
            raise ValueError(
                "zstd: the frame header is damaged (it claims "
                f"{zstandard.frame_content_size(blob)} bytes)"
            )
        return (using or decompressor(None)).decompress(blob)
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd: {exc}") from None
