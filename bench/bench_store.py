"""Recording store: bytes per guest-sample, write CPU per sample, seek time.

    python bench/bench_store.py [--guests 50] [--hours 12] [--recording FILE ...]
    from bench import bench_store; figures = bench_store.run(guests=50, hours=12.0)

1. Size: 600 synthetic samples (tests/store/synth.py: the ~40 KVM stats per vCPU
   libvirt re-exports, a disk, a NIC, balloon, host devices; a third of the counters
   moving at seeded random rates) written through `StoreWriter`, and the file as
   `kvmtop record` writes it, with the report's index (kvmtop.report.index), and the
   index's share. With --alternatives, what the design was chosen over: whole
   samples as JSON (format 2: no dictionary, a COVER-trained dictionary on the
   first 16 samples, zstd presets, a reference sample), and delta rows with other
   block lengths, chain lengths, zstd levels and page sizes. With
   --recording, the same figures for real recordings (file size / samples / guests).
2. Write CPU per sample (`time.process_time`): encode + JSON, compress, SQLite; and
   the index `kvmtop record` also writes (the shared pipeline: rates, window,
   detectors, snapshot; then the report's accumulation and a rollup per minute):
   their sum is the recorder's CPU per tick besides sampling.
3. Seek: a --hours recording at 2 s (synthetic samples cycled with shifted clocks);
   random `StoreReader.seek` + `read`, and `ReplayFeed.seek` (prime + target through
   the pipeline); median, p95, max over 200 random times. Also decode time per sample.

Figures of 2026-11-26 (the lab host, 2 vCPUs, other work running), 50 synthetic
guests, file format 3 (delta rows, kvmtop.store.delta): 134 B per guest-sample with
samples only, 144 B as `kvmtop record` writes it (index 10 B); format 2 (whole
samples as JSON against a reference) wrote 208 / 219 B. The lab's example recording
(8 guests, 4 minutes) holds 92 B of sample rows per guest-sample (the short file's
index and SQLite's fixed pages bring the file to 175 B). CPU per sample:
StoreWriter.append 7.3 ms (format 2: 13.3), the index 10.2 ms, read + decode 8.2 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvmtop.detectors.engine import build_engine
from kvmtop.detectors.settings import DetectorSettings, VswitchSettings
from kvmtop.feed.pipeline import Pipeline
from kvmtop.feed.replay import ReplayFeed
from kvmtop.model.sample import Sample
from kvmtop.model.units import NS_PER_S
from kvmtop.report.index import IndexedWriter, Indexer
from kvmtop.store import blob, writer
from kvmtop.store.codec import encode
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from tests.store.synth import SyntheticHost


def synthetic(guests: int, n: int) -> list[Sample]:
    host = SyntheticHost(guests)
    return [host.sample() for _ in range(n)]


def indexing_pipeline() -> Pipeline:
    """The pipeline `kvmtop record` indexes with (a window of two, as the CLI's)."""
    return Pipeline(window_size=2, detect=build_engine(DetectorSettings()))


def file_bytes_per_guest_sample(samples: list[Sample], guests: int, indexed: bool = False) -> float:
    """File size per guest-sample, written by `StoreWriter` (with `indexed`: and the
    report's index, as `kvmtop record` writes it)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "b.kvmtop"
        store = StoreWriter(path)
        w = (
            IndexedWriter(store, indexing_pipeline(), VswitchSettings().uplink_kinds)
            if indexed
            else store
        )
        for s in samples:
            w.append(s)
        w.close()
        return path.stat().st_size / len(samples) / guests


def table_bytes(path: Path) -> dict[str, int]:
    """Bytes of blob data per table of a recording (the index's tables may be absent)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        return {
            t: int(conn.execute(f"SELECT coalesce(sum(length(data)), 0) FROM {t}").fetchone()[0])
            for t in tables
            if t != "meta"
        }


def blob_bytes(
    samples: list[Sample], guests: int, make: Callable[[list[bytes]], Callable[[bytes], bytes]]
) -> float:
    """Mean compressed blob per guest-sample for samples 16.. with a compressor factory."""
    raws = [blob.dumps(s) for s in samples]
    compress = make(raws)
    sizes = [len(compress(r)) for r in raws[16:]]
    return statistics.fmean(sizes) / guests


def size_figures(guests: int, alternatives: bool = True) -> dict[str, float]:
    """Bytes per guest-sample of 600 synthetic samples (and of the alternatives)."""
    samples = synthetic(guests, 600)
    print(f"\n== bytes per guest-sample, {guests} guests, 600 synthetic samples ==")
    raw = statistics.fmean(len(blob.dumps(s)) for s in samples) / guests
    plain = file_bytes_per_guest_sample(samples, guests)
    indexed = file_bytes_per_guest_sample(samples, guests, indexed=True)
    print(f"JSON before compression                 {raw:8.0f}")
    print(f"file, samples only (StoreWriter)        {plain:8.0f}")
    print(f"file with the index (kvmtop record)     {indexed:8.0f}   (index {indexed - plain:.0f})")
    figures = {"json_bytes": raw, "samples_only_bytes": plain, "recorded_bytes": indexed}
    if not alternatives:
        return figures

    def preset(
        level: int, dictionary: Callable[[list[bytes]], object] | None = None
    ) -> Callable[[list[bytes]], Callable[[bytes], bytes]]:
        def make(raws: list[bytes]) -> Callable[[bytes], bytes]:
            d = dictionary(raws) if dictionary else None
            return zstandard.ZstdCompressor(level=level, dict_data=d, write_checksum=True).compress

        return make

    def trained(raws: list[bytes]) -> object:
        return zstandard.train_dictionary(65536, raws[:16])

    def reference(raws: list[bytes]) -> object:
        return blob.dictionary(raws[16])

    def format2(raws: list[bytes]) -> Callable[[bytes], bytes]:
        return blob.compressor(blob.dictionary(raws[16])).compress

    rows: list[tuple[str, Callable[[list[bytes]], Callable[[bytes], bytes]]]] = [
        ("zstd -3, no dictionary", preset(3)),
        ("zstd -3, COVER dictionary (16 samples)", preset(3, trained)),
        ("zstd -3, reference sample", preset(3, reference)),
        ("zstd -9, reference sample", preset(9, reference)),
        ("lazy2/min_match 6, reference (format 2)", format2),
    ]
    print("whole samples as JSON, blob only (one reference for all 584), against which")
    print(f"delta rows measure {plain:.0f} above:")
    for name, make in rows:
        t = time.process_time()
        size = blob_bytes(samples, guests, make)
        print(f"  {name:40s} {size:6.0f}   ({time.process_time() - t:5.1f} s CPU)")
    print("file with other settings (samples only):")
    for name, values in (
        ("DICTIONARY_EVERY", (100, 200, 400)),
        ("CHAIN", (5, 10, 20)),
        ("ROW_LEVEL", (1, 3, 9)),
        ("PAGE_SIZE", (512, 1024, 4096)),
    ):
        saved = getattr(writer, name)
        for value in values:
            setattr(writer, name, value)
            t = time.process_time()
            size = file_bytes_per_guest_sample(samples, guests)
            ms = (time.process_time() - t) / len(samples) * 1000
            print(
                f"  {name} = {value:<5d}{' (shipped)' if value == saved else '':10s}"
                f"       {size:8.0f}   ({ms:5.2f} ms per sample)"
            )
        setattr(writer, name, saved)
    return figures


def real_figures(paths: list[Path]) -> dict[str, dict[str, float]]:
    """Bytes per guest-sample of real recordings, and the index's share."""
    print("\n== real recordings ==")
    out = {}
    for path in paths:
        with StoreReader(path) as r:
            n = r.count()
            guests = statistics.fmean(len(s.guests) for s in r.iter()) if n else 0
        size = os.path.getsize(path)
        per = size / n / guests if n and guests else float("nan")
        tables = table_bytes(path)
        index = sum(v for k, v in tables.items() if k.endswith("rollups"))
        index_per = index / n / guests if n and guests else float("nan")
        print(
            f"{path}: {n} samples, {guests:.1f} guests, {size / 1e6:.2f} MB, "
            f"{per:.0f} B per guest-sample, of which the index's blobs {index_per:.0f}"
        )
        out[str(path)] = {"samples": n, "guests": guests, "bytes": per, "index_bytes": index_per}
    return out


def cpu_figures(guests: int) -> dict[str, float]:
    """CPU ms per sample of the writer's stages and of the index."""
    samples = synthetic(guests, 300)
    print(f"\n== CPU per sample, {guests} guests (process time, mean of 300) ==")
    t = time.process_time()
    raws = [json.dumps(encode(s), separators=(",", ":")).encode() for s in samples]
    encode_ms = (time.process_time() - t) / len(samples) * 1000
    compressor = blob.compressor(blob.dictionary(raws[0]))
    t = time.process_time()
    for raw in raws:
        compressor.compress(raw)
    compress_ms = (time.process_time() - t) / len(samples) * 1000
    with tempfile.TemporaryDirectory() as d:
        w = StoreWriter(Path(d) / "c.kvmtop")
        t = time.process_time()
        for s in samples:
            w.append(s)
        append_ms = (time.process_time() - t) / len(samples) * 1000
        w.close()
        with StoreReader(Path(d) / "c.kvmtop") as r:
            t = time.process_time()
            count = sum(1 for _ in r.iter())
            decode_ms = (time.process_time() - t) / count * 1000
    indexer = Indexer(indexing_pipeline(), VswitchSettings().uplink_kinds, lambda *_row: None)
    t = time.process_time()
    for s in samples:
        indexer.push(s)
    indexer.flush()
    index_ms = (time.process_time() - t) / len(samples) * 1000
    print(f"encode (codec + JSON)        {encode_ms:6.2f} ms")
    print(f"compress                     {compress_ms:6.2f} ms")
    print(f"StoreWriter.append, total    {append_ms:6.2f} ms")
    print(f"read + decode (iter)         {decode_ms:6.2f} ms")
    print(f"index (pipeline + rollups)   {index_ms:6.2f} ms")
    print(
        f"recorder CPU per tick        {append_ms + index_ms:6.2f} ms (append + index; "
        "sampling not included)"
    )
    return {
        "encode_ms": encode_ms,
        "compress_ms": compress_ms,
        "append_ms": append_ms,
        "decode_ms": decode_ms,
        "index_ms": index_ms,
        "record_ms": append_ms + index_ms,
    }


def shifted(samples: list[Sample], n: int, interval_s: float) -> Iterator[Sample]:
    """`n` samples cycling through `samples` with clocks moving on."""
    start_wall, start_mono = samples[0].wall_s, samples[0].mono_ns
    for i in range(n):
        s = samples[i % len(samples)]
        yield replace(
            s,
            wall_s=start_wall + i * interval_s,
            mono_ns=start_mono + int(i * interval_s * NS_PER_S),
        )


def seek_figures(guests: int, hours: float) -> dict[str, float]:
    """Write a `hours` recording of `guests` synthetic guests, then time seeks in it."""
    n = int(hours * 3600 / 2)
    base = synthetic(guests, 120)
    print(f"\n== seek in a {hours:g} h recording, {guests} guests, {n} samples at 2 s ==")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "long.kvmtop"
        w = StoreWriter(path)
        t = time.perf_counter()
        for s in shifted(base, n, 2.0):
            w.append(s)
        w.close()
        print(
            f"written in {time.perf_counter() - t:.0f} s, "
            f"{path.stat().st_size / 1e6:.0f} MB, "
            f"{path.stat().st_size / n / guests:.0f} B per guest-sample"
        )
        return seek_times(path)


def seek_times(path: Path, seeks: int = 200) -> dict[str, float]:
    """Open `path` and time `seeks` random seeks: `StoreReader.seek` + `read`, and
    `ReplayFeed.seek` (prime + target through the pipeline); p95 and median in ms."""
    t = time.perf_counter()
    reader = StoreReader(path)
    open_ms = (time.perf_counter() - t) * 1000
    t0, t1 = reader.first_time(), reader.last_time()
    assert t0 is not None and t1 is not None
    rng = random.Random(1)
    targets = [rng.uniform(t0, t1) for _ in range(seeks)]
    seek_read = []
    for target in targets:
        t = time.perf_counter()
        index = reader.seek(target)
        assert index is not None and reader.read(index) is not None
        seek_read.append((time.perf_counter() - t) * 1000)
    feed = ReplayFeed(reader, Pipeline(window_size=1800, detect=build_engine(DetectorSettings())))
    feed_seek = []
    for target in targets:
        t = time.perf_counter()
        assert feed.seek(target) is not None
        feed_seek.append((time.perf_counter() - t) * 1000)
    feed.close()

    def p95(xs: list[float]) -> float:
        return sorted(xs)[int(0.95 * len(xs))]

    def summary(xs: list[float]) -> str:
        return (
            f"median {statistics.median(xs):6.2f} ms  p95 {p95(xs):6.2f} ms  max {max(xs):6.2f} ms"
        )

    print(f"open                         {open_ms:6.2f} ms")
    print(f"StoreReader.seek + read      {summary(seek_read)}")
    print(f"ReplayFeed.seek (2 samples)  {summary(feed_seek)}")
    return {
        "open_ms": open_ms,
        "read_p95_ms": p95(seek_read),
        "read_median_ms": statistics.median(seek_read),
        "seek_p95_ms": p95(feed_seek),
        "seek_median_ms": statistics.median(feed_seek),
    }


def run(
    guests: int = 50,
    hours: float = 12.0,
    recordings: Sequence[Path] = (),
    alternatives: bool = False,
) -> dict[str, Any]:
    """Every measurement (the alternatives' sizes only when asked: they take minutes);
    the figures by name, also printed."""
    return {
        "guests": guests,
        "size": size_figures(guests, alternatives),
        "real": real_figures(list(recordings)) if recordings else {},
        "cpu": cpu_figures(guests),
        "seek": seek_figures(guests, hours) if hours > 0 else {},
    }


def main() -> None:
    """Run every measurement and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--guests", type=int, default=50)
    p.add_argument("--hours", type=float, default=12.0, help="seek test length (0: skip)")
    p.add_argument("--recording", type=Path, nargs="*", default=[])
    p.add_argument(
        "--alternatives",
        action="store_true",
        help="also the sizes of the designs not chosen (minutes of CPU)",
    )
    args = p.parse_args()
    run(args.guests, args.hours, args.recording, args.alternatives)


if __name__ == "__main__":
    main()
