"""Opening a memory-mapped dense segment: trusted by its stamp vs checked in full.

A mapped segment (`mmap_index=True`, for a KB larger than RAM) is read whole to check its
CRC-32 only when its file changed since the checksum was verified (dense.py, `file_stamp`).
This writes one segment of N synthetic 384-d vectors, then times, each a few times:
loading it mapped with a matching stamp (what every open of an unchanged KB does), mapped with
no stamp (a copied or restored KB before `hybridctx repair`), and read into memory (always checked).
The file was just written, so it is in the page cache: a cold read from disk is slower still.

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

from hybridctx.index.dense import FaissIndex, file_stamp

DIM = 384


def timed(load, repeats: int = 3) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        load()
        seconds.append(time.perf_counter() - started)
    return percentile(seconds, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dense-1-0.faiss"
        index = FaissIndex(DIM)
        for start in range(0, args.vectors, 100_000):
            part = rng.standard_normal((min(100_000, args.vectors - start), DIM), dtype=np.float32)
            part /= np.linalg.norm(part, axis=1, keepdims=True)
            index.add(np.arange(start, start + len(part), dtype=np.int64), part)
        checksum = index.save(path)
        stamp = file_stamp(path)
        del index
        size_mb = path.stat().st_size / 1e6
        trusted = timed(lambda: FaissIndex.load(path, DIM, mmap=True, checksum=checksum, stamp=stamp))
        checked = timed(lambda: FaissIndex.load(path, DIM, mmap=True, checksum=checksum))
        read = timed(lambda: FaissIndex.load(path, DIM, checksum=checksum))
    load = os.getloadavg()[0]
    lines = [
        "## Opening a memory-mapped segment",
        "",
        f"Measured {date.today()} by `bench/bench_mapped_open.py` (load average {load:.1f}): one segment of "
        f"{args.vectors:,} synthetic 384-d vectors ({size_mb:,.0f} MB, IDMap2,Flat), in the page cache; "
        "median of 3 loads.",
        "",
        "| load | seconds |",
        "|---|---:|",
        f"| mapped, stamp unchanged since verified (every open of an unchanged KB) | {trusted:.3f} |",
        f"| mapped, file changed or copied since verified: CRC-32 read in full first | {checked:.3f} |",
        f"| read into memory (CRC-32 always checked) | {read:.3f} |",
        "",
        f"Trusting the stamp opens {checked / max(trusted, 1e-9):,.0f}x faster than checking the file; a copied "
        "or restored KB pays the full check on each open until `hybridctx repair` records its new stamps.",
    ]
    write_section("mapped-open", lines)


if __name__ == "__main__":
    main()
