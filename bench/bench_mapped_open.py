"""Opening a memory-mapped dense segment: trusted by its stamp vs checked in full.

A mapped segment (`mmap_index=True`, for a KB larger than RAM) is read whole to check its
CRC-32 only when its file changed since the checksum was verified (dense.py, `file_stamp`).
This writes one segment of N synthetic 384-d vectors, of the inverted-file type a KB of that
size merges into (FAISS maps only inverted lists), then times, each a few times: loading it mapped
with a matching stamp (what every open of an unchanged KB does), mapped with no stamp (a copied
or restored KB before `hybridctx repair`), and read into memory (always checked); the last two
also with the file's pages dropped from the page cache first (posix_fadvise), as after a reboot.

    .venv/bin/python bench/bench_mapped_open.py [--vectors 1000000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from _results import percentile, write_section

from hybridctx.index.dense import FaissIndex, file_stamp, index_spec

DIM = 384


def timed(load, repeats: int = 3, cold: Path | None = None) -> float:
    seconds = []
    for _ in range(repeats):
        if cold is not None:
            drop_from_page_cache(cold)
        started = time.perf_counter()
        load()
        seconds.append(time.perf_counter() - started)
    return percentile(seconds, 0.5)


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dense-1-0.faiss"
        vectors = rng.standard_normal((args.vectors, DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        spec = index_spec(args.vectors, DIM)
        index = FaissIndex.build(spec, np.arange(args.vectors, dtype=np.int64), vectors)
        del vectors
        checksum = index.save(path)
        stamp = file_stamp(path)
        del index
        size_mb = path.stat().st_size / 1e6
        trusted = timed(lambda: FaissIndex.load(path, DIM, mmap=True, checksum=checksum, stamp=stamp))
        checked = timed(lambda: FaissIndex.load(path, DIM, mmap=True, checksum=checksum))
        read = timed(lambda: FaissIndex.load(path, DIM, checksum=checksum))
        trusted_cold = timed(lambda: FaissIndex.load(path, DIM, mmap=True, checksum=checksum, stamp=stamp), cold=path)
        checked_cold = timed(lambda: FaissIndex.load(path, DIM, mmap=True, checksum=checksum), cold=path)
        read_cold = timed(lambda: FaissIndex.load(path, DIM, checksum=checksum), cold=path)
    load = os.getloadavg()[0]
    lines = [
        "## Opening a memory-mapped segment",
        "",
        f"Measured {date.today()} by `bench/bench_mapped_open.py` (load average {load:.1f}): one segment of "
        f"{args.vectors:,} synthetic 384-d vectors ({size_mb:,.0f} MB, {spec}); median of 3 loads, with the "
        "file in the page cache (warm) or dropped from it first (cold).",
        "",
        "| load | warm (s) | cold (s) |",
        "|---|---:|---:|",
        f"| mapped, stamp unchanged since verified (an unchanged KB) | {trusted:.3f} | {trusted_cold:.3f} |",
        f"| mapped, file changed or copied since verified: CRC-32 first | {checked:.3f} | {checked_cold:.3f} |",
        f"| read into memory (CRC-32 always checked) | {read:.3f} | {read_cold:.3f} |",
        "",
        f"Trusting the stamp opens {checked / max(trusted, 1e-9):,.1f}x faster warm and "
        f"{checked_cold / max(trusted_cold, 1e-9):,.1f}x faster cold than checking the file; a copied or restored "
        "KB pays the full check on each open until `hybridctx repair` records its new stamps.",
    ]
    write_section("mapped-open", lines)


if __name__ == "__main__":
    main()
