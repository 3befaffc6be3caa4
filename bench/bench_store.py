"""Recording store: bytes per guest-sample, write CPU per sample, seek time.

    python bench/bench_store.py [--guests 12] [--hours 12] [--recording FILE ...]

1. Size: 600 synthetic samples (tests/store/synth.py: the ~40 KVM stats per vCPU
   libvirt re-exports, a disk, a NIC, balloon, host devices; a third of the counters
   moving at seeded random rates) written through `StoreWriter`, for the chosen
   design and the alternatives it was chosen over: no dictionary, a COVER-trained
   dictionary on the first 16 samples (zstd's trainer), zstd level presets, 4 KiB
   pages, other dictionary refresh periods. With --recording, the same figure for
   real recordings (file size / samples / guests).
2. Write CPU per sample (`time.process_time`): encode + JSON, compress, SQLite; and
   the cost of the shared pipeline (rates, window, detectors, snapshot) per sample,
   which `kvmtop record` does not pay.
3. Seek: a --hours recording at 2 s (synthetic samples cycled with shifted clocks);
   random `StoreReader.seek` + `read`, and `ReplayFeed.seek` (prime + target through
   the pipeline); median, p95, max over 200 random times. Also decode time per sample.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvmtop.detectors.engine import build_engine
from kvmtop.detectors.settings import DetectorSettings
from kvmtop.feed import Pipeline, ReplayFeed
from kvmtop.model.sample import Sample
from kvmtop.store import blob, writer
from kvmtop.store.codec import encode
from kvmtop.store.reader import StoreReader
from kvmtop.store.writer import StoreWriter
from tests.store.synth import SyntheticHost

S = 1_000_000_000


def synthetic(guests: int, n: int) -> list[Sample]:
    host = SyntheticHost(guests)
    return [host.sample() for _ in range(n)]


def file_bytes_per_guest_sample(samples: list[Sample], guests: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "b.kvmtop"
        w = StoreWriter(path)
        for s in samples:
            w.append(s)
        w.close()
        return path.stat().st_size / len(samples) / guests


def blob_bytes(samples: list[Sample], guests: int,
               make: Callable[[list[bytes]], Callable[[bytes], bytes]]) -> float:
    """Mean compressed blob per guest-sample for samples 16.. with a compressor factory."""
    raws = [blob.dumps(s) for s in samples]
    compress = make(raws)
    sizes = [len(compress(r)) for r in raws[16:]]
    return statistics.fmean(sizes) / guests


def size_figures(guests: int) -> None:
    samples = synthetic(guests, 600)
    print(f"\n== bytes per guest-sample, {guests} guests, 600 synthetic samples ==")
    raw = statistics.fmean(len(blob.dumps(s)) for s in samples) / guests
    print(f"JSON before compression                 {raw:8.0f}")
    print(f"file, as shipped                        "
          f"{file_bytes_per_guest_sample(samples, guests):8.0f}")

    def preset(level: int, dictionary: Callable[[list[bytes]], object] | None = None
               ) -> Callable[[list[bytes]], Callable[[bytes], bytes]]:
        def make(raws: list[bytes]) -> Callable[[bytes], bytes]:
            d = dictionary(raws) if dictionary else None
            return zstandard.ZstdCompressor(level=level, dict_data=d, write_checksum=True).compress
        return make

    def trained(raws: list[bytes]) -> object:
        return zstandard.train_dictionary(65536, raws[:16])

    def reference(raws: list[bytes]) -> object:
        return blob.dictionary(raws[16])

    def shipped(raws: list[bytes]) -> Callable[[bytes], bytes]:
        return blob.compressor(blob.dictionary(raws[16])).compress

    rows: list[tuple[str, Callable[[list[bytes]], Callable[[bytes], bytes]]]] = [
        ("zstd -3, no dictionary", preset(3)),
        ("zstd -3, COVER dictionary (16 samples)", preset(3, trained)),
        ("zstd -3, reference sample", preset(3, reference)),
        ("zstd -9, reference sample", preset(9, reference)),
        ("lazy2/min_match 6, reference (shipped)", shipped),
    ]
    print("blob only (one reference for all 584):")
    for name, make in rows:
        t = time.process_time()
        size = blob_bytes(samples, guests, make)
        print(f"  {name:40s} {size:6.0f}   ({time.process_time() - t:5.1f} s CPU)")
    saved = writer.DICTIONARY_EVERY, writer.PAGE_SIZE
    print("file with other settings:")
    for every in (50, 100, 200):
        writer.DICTIONARY_EVERY = every
        print(f"  new reference every {every:3d} samples        "
              f"{file_bytes_per_guest_sample(samples, guests):8.0f}")
    writer.DICTIONARY_EVERY = saved[0]
    writer.PAGE_SIZE = 4096
    print(f"  4 KiB pages                             "
          f"{file_bytes_per_guest_sample(samples, guests):8.0f}")
    writer.DICTIONARY_EVERY, writer.PAGE_SIZE = saved


def real_figures(paths: list[Path]) -> None:
    print("\n== real recordings ==")
    for path in paths:
        with StoreReader(path) as r:
            n = r.count()
            guests = statistics.fmean(len(s.guests) for s in r.iter()) if n else 0
        size = os.path.getsize(path)
        per = size / n / guests if n and guests else float("nan")
        print(f"{path}: {n} samples, {guests:.1f} guests, {size / 1e6:.2f} MB, "
              f"{per:.0f} B per guest-sample")


def cpu_figures(guests: int) -> None:
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
    pipeline = Pipeline(window_size=1800, detect=build_engine(DetectorSettings()))
    t = time.process_time()
    for s in samples:
        pipeline.push(s, mode="live")
    pipeline_ms = (time.process_time() - t) / len(samples) * 1000
    print(f"encode (codec + JSON)        {encode_ms:6.2f} ms")
    print(f"compress                     {compress_ms:6.2f} ms")
    print(f"StoreWriter.append, total    {append_ms:6.2f} ms")
    print(f"read + decode (iter)         {decode_ms:6.2f} ms")
    print(f"pipeline push (not recorded) {pipeline_ms:6.2f} ms")


def shifted(samples: list[Sample], n: int, interval_s: float) -> Iterator[Sample]:
    """`n` samples cycling through `samples` with clocks moving on."""
    start_wall, start_mono = samples[0].wall_s, samples[0].mono_ns
    for i in range(n):
        s = samples[i % len(samples)]
        yield replace(s, wall_s=start_wall + i * interval_s,
                      mono_ns=start_mono + int(i * interval_s * S))


def seek_figures(guests: int, hours: float) -> None:
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
        print(f"written in {time.perf_counter() - t:.0f} s, "
              f"{path.stat().st_size / 1e6:.0f} MB, "
              f"{path.stat().st_size / n / guests:.0f} B per guest-sample")
        rng = random.Random(1)
        t0, t1 = base[0].wall_s, base[0].wall_s + (n - 1) * 2.0
        targets = [rng.uniform(t0, t1) for _ in range(200)]
        t = time.perf_counter()
        reader = StoreReader(path)
        open_ms = (time.perf_counter() - t) * 1000
        seek_read = []
        for target in targets:
            t = time.perf_counter()
            index = reader.seek(target)
            assert index is not None and reader.read(index) is not None
            seek_read.append((time.perf_counter() - t) * 1000)
        feed = ReplayFeed(reader, Pipeline(window_size=1800,
                                           detect=build_engine(DetectorSettings())))
        feed_seek = []
        for target in targets:
            t = time.perf_counter()
            assert feed.seek(target) is not None
            feed_seek.append((time.perf_counter() - t) * 1000)
        feed.close()

    def summary(xs: list[float]) -> str:
        xs = sorted(xs)
        return (f"median {statistics.median(xs):6.2f} ms  p95 {xs[int(0.95 * len(xs))]:6.2f} ms"
                f"  max {xs[-1]:6.2f} ms")

    print(f"open                         {open_ms:6.2f} ms")
    print(f"StoreReader.seek + read      {summary(seek_read)}")
    print(f"ReplayFeed.seek (2 samples)  {summary(feed_seek)}")


def main() -> None:
    """Run every measurement and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--guests", type=int, default=12)
    p.add_argument("--hours", type=float, default=12.0)
    p.add_argument("--recording", type=Path, nargs="*", default=[])
    args = p.parse_args()
    size_figures(args.guests)
    if args.recording:
        real_figures(args.recording)
    cpu_figures(args.guests)
    seek_figures(args.guests, args.hours)


if __name__ == "__main__":
    main()
