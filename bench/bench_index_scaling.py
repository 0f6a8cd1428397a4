"""Index scaling on synthetic 384-d vectors: the FAISS index type hybridctx picks for each corpus size.

1M and 4M unit vectors (4M chunks of 256 tokens is the billion-token case), drawn around
random centres, 200 vectors per centre on average, so that every query has a real
neighbourhood of 100 (uniform random vectors have none, and would make every index look
bad); queries are perturbed data points. For each
index type (`hybridctx.index.dense.index_spec` picks one by size; others for comparison): build
time, on-disk size, peak RAM of a fresh process that loads the index and serves queries
through `hybridctx.index.dense.FaissIndex` (nprobe chosen for k by `nprobe_for`, at several
minimum nprobe settings), single-query latency p50/p99 at k=100 and k=1000 (2 threads), and
recall@100 against exact search.

    .venv/bin/python bench/bench_index_scaling.py [--sizes 1000000 4000000] [--specs IVF4096,SQ8 ...]

Rows are kept in bench/index_scaling.json (a run replaces the rows of the sizes and types it
measures), printed, and written as a table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import faiss
import numpy as np
from _results import percentile, write_section

from hybridctx.index.dense import FaissIndex, index_spec

ROWS = Path(__file__).with_name("index_scaling.json")
DIM = 384
PER_CENTRE = 200
QUERIES = 200
MIN_NPROBES = (16, 32, 64)


def dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // PER_CENTRE, DIM), dtype=np.float32)
    data = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 500_000):
        stop = min(n, start + 500_000)
        data[start:stop] = centres[rng.integers(0, len(centres), stop - start)]
        data[start:stop] += 0.6 * rng.standard_normal((stop - start, DIM), dtype=np.float32)
    faiss.normalize_L2(data)
    # A query is a paraphrase of a stored chunk: cosine about 0.9 with it.
    noise = 0.5 / np.sqrt(DIM) * rng.standard_normal((QUERIES, DIM), dtype=np.float32)
    queries = (data[rng.integers(0, n, QUERIES)] + noise).astype(np.float32)
    faiss.normalize_L2(queries)
    return data, queries


SERVE = r"""
import json, sys, time
import faiss, numpy as np
import hybridctx.index.dense as hx
faiss.omp_set_num_threads(2)
path, queries_path = sys.argv[1], sys.argv[2]
def rss_mb(field="VmRSS"):  # VmHWM: this process image's peak (ru_maxrss would count the forking parent)
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1]) / 1024
base_mb = rss_mb()
index = hx.FaissIndex.load(path, int(sys.argv[3]))
queries = np.load(queries_path)
out = {}
for min_nprobe in ([0] if index.spec.startswith("IDMap") else [int(x) for x in sys.argv[4].split(",")]):
    hx.MIN_NPROBE = min_nprobe or hx.MIN_NPROBE
    row = {"ids": []}
    for k in (100, 1000):
        times = []
        for q in queries:
            t = time.perf_counter(); _, ids = index.search(q, k); times.append(time.perf_counter() - t)
            if k == 100:
                row["ids"].append(ids.tolist())
        row[f"ms{k}"] = [1000 * t for t in times]
    out[min_nprobe] = row
out = {"runs": out, "peak_rss_mb": rss_mb("VmHWM") - base_mb}
print(json.dumps(out))
"""


def serve(path: Path, queries_path: Path) -> dict:
    """Load the index in a fresh process and query it: what serving it really costs."""
    args = [str(path), str(queries_path), str(DIM), ",".join(map(str, MIN_NPROBES))]
    result = subprocess.run([sys.executable, "-c", SERVE, *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def _mb(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.0f} MB"


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / 100 for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 4_000_000],
                        help="Vector counts to measure; none: only rewrite the table from the kept rows")
    parser.add_argument("--specs", nargs="+", help="FAISS types to measure (default: the picked one and comparisons)")
    args = parser.parse_args()
    faiss.omp_set_num_threads(2)
    rows = json.loads(ROWS.read_text()) if ROWS.exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            data, queries = dataset(n)
            truth = faiss.knn(queries, data, 100, metric=faiss.METRIC_INNER_PRODUCT)[1]
            queries_path = Path(tmp) / "queries.npy"
            np.save(queries_path, queries)
            chosen = index_spec(n, DIM)
            nlist = chosen.split(",")[0].removeprefix("IVF")
            specs = [chosen] + [s for s in ("IDMap2,Flat", f"IVF{nlist},Flat", f"IVF{nlist},PQ48") if s != chosen]
            # Full vectors of 4M do not fit the RAM target; quantised types are measured at 4M.
            specs = args.specs or [s for s in specs if ("Flat" in s) == (n <= 1_000_000)]
            rows = [r for r in rows if not (r["vectors"] == n and r["index"] in specs)]
            for spec in specs:
                started = time.perf_counter()
                index = FaissIndex.build(spec, np.arange(n, dtype=np.int64), data, train_size=64)
                seconds = time.perf_counter() - started
                path = Path(tmp) / "index.faiss"
                index.save(path)
                size_mb = path.stat().st_size / 2**20
                del index
                served = serve(path, queries_path)
                for min_nprobe, run in served["runs"].items():
                    row = {
                        "vectors": n, "index": spec,
                        "min_nprobe": min_nprobe if min_nprobe != "0" else "-", "build_s": seconds,
                        "disk_mb": size_mb, "ram_mb": served["peak_rss_mb"], "recall100": recall(run["ids"], truth),
                        "p50_100": percentile(run["ms100"], 0.5), "p99_100": percentile(run["ms100"], 0.99),
                        "p50_1000": percentile(run["ms1000"], 0.5), "p99_1000": percentile(run["ms1000"], 0.99),
                    }
                    rows.append(row)
                    print(row, flush=True)
                ROWS.write_text(json.dumps(rows, indent=1))
            del data
    picked = {(r["vectors"], r["index"]) for r in rows if r["index"] == index_spec(r["vectors"], DIM)}
    rows.sort(key=lambda r: (r["vectors"], (r["vectors"], r["index"]) not in picked, r["index"], str(r["min_nprobe"])))

    lines = [
        f"## Index scaling on synthetic 384-d vectors ({date.today().isoformat()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU, faiss-cpu {faiss.__version__}. `bench/bench_index_scaling.py`: "
        f"unit vectors around random centres ({PER_CENTRE} a centre), {QUERIES} perturbed data points as queries; "
        "IVF trained on 64 vectors per list; serving measured through `hybridctx.index.dense.FaissIndex` "
        "in a fresh process that loads "
        "the index (RAM: the growth of its RSS from loading the index on, beyond the libraries); single queries, "
        "2 threads; nprobe "
        "chosen for k by `nprobe_for` (lists holding 8 k vectors, at least `min nprobe`). Rows are kept across runs "
        "(`bench/index_scaling.json`); \"not measured\": RAM of a row from a run whose reading counted the forking "
        "parent's memory (fixed since; the 4M PQ builds take 7-9 min here and were not repeated).",
        "",
        "| vectors | index | min nprobe | build | on disk | peak RAM of the index, serving | recall@100 "
        "| k=100 p50 / p99 | k=1000 p50 / p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['vectors']:,} | {r['index']}{' (picked)' * ((r['vectors'], r['index']) in picked)} "
        f"| {r['min_nprobe']} | {r['build_s']:.0f} s | {r['disk_mb']:.0f} MB | "
        f"{_mb(r['ram_mb'])} | **{r['recall100']:.3f}** | {r['p50_100']:.1f} / {r['p99_100']:.1f} ms | "
        f"**{r['p50_1000']:.1f}** / {r['p99_1000']:.1f} ms |"
        for r in rows
    ]
    lines.append("")
    write_section("bench_index_scaling", lines)


if __name__ == "__main__":
    main()
