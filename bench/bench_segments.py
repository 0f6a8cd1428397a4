"""Commits into a growing knowledge base: what segments cost and what they save.

Grows a real knowledge base (SQLite chunk store, tantivy lexical index, dense segments)
from empty to N synthetic 384-d vectors in commits of 4,096 chunks, as `Pipeline.add`
commits, with the embedding step left out (vectors drawn around random centres, as in
bench_index_scaling.py). Reports, per commit: seconds and bytes of index files written
(p50 and max), the write amplification over the whole growth (bytes of index files
written / final index size), the segments the KB ends with; then single-query dense search
latency at k=100/1000 and recall@100 against exact search, over the segments and after
`compact` (one segment); and, for comparison, what one commit cost before segments (clone
and rewrite the whole index).

    .venv/bin/python bench/bench_segments.py [--vectors 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

import faiss
import numpy as np
from _results import percentile, write_section
from bench_index_scaling import dataset
from tqdm import tqdm

from hybridctx.index.dense import FaissIndex
from hybridctx.index.kb import KnowledgeBase
from hybridctx.schema import Chunk, Document

COMMIT = 4096
DIM = 384


def index_bytes(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in root.glob("dense-*.faiss")}


def commit_batch(kb: KnowledgeBase, number: int, vectors: np.ndarray) -> None:
    doc = Document(id=f"doc-{number}", text="")
    chunks = [
        Chunk(id=f"doc-{number}#{i}", doc_id=doc.id, text=f"part {i} of batch {number}", start=0, end=0,
              start_line=1, end_line=1, token_count=6)
        for i in range(len(vectors))
    ]
    with kb.writer() as writer:
        writer.replace_document(doc, f"hash-{number}", chunks, vectors)
        writer.commit()


def latency(kb: KnowledgeBase, queries: np.ndarray, exact: FaissIndex) -> dict[str, float]:
    row: dict[str, float] = {}
    for k in (100, 1000):
        times, recalls = [], []
        for q in queries:
            started = time.perf_counter()
            _, ids = kb.index.search(q, k)
            times.append(time.perf_counter() - started)
            if k == 100:
                truth = set(exact.search(q, 100)[1].tolist())
                recalls.append(len(truth & set(ids.tolist())) / 100)
        row[f"p50_{k}"] = percentile(times, 0.5) * 1000
        row[f"p99_{k}"] = percentile(times, 0.99) * 1000
        if k == 100:
            row["recall"] = float(np.mean(recalls))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    args = parser.parse_args()
    faiss.omp_set_num_threads(2)
    data, queries = dataset(args.vectors)
    queries = queries[:100]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "kb"
        kb = KnowledgeBase.open(root, "synthetic-384", lambda: DIM)
        seconds, written = [], []
        for number, start in enumerate(tqdm(range(0, args.vectors, COMMIT), desc="commits", unit="commit")):
            before = index_bytes(root)
            started = time.perf_counter()
            commit_batch(kb, number, data[start : start + COMMIT])
            seconds.append(time.perf_counter() - started)
            after = index_bytes(root)
            written.append(sum(size for name, size in after.items() if name not in before))
        final = sum(index_bytes(root).values())
        segments = kb.index.spec
        ids, _ = kb.index.vectors()
        exact = FaissIndex.build("IDMap2,Flat", np.sort(ids), data[np.sort(ids) - 1])
        over_segments = latency(kb, queries, exact)
        started = time.perf_counter()
        with kb.writer() as writer:
            writer.rebuild_index()
            writer.commit()
        compact_s = time.perf_counter() - started
        compacted = latency(kb, queries, exact)
        [(_, whole)] = kb.index.segments
        started = time.perf_counter()
        whole.copy().save(Path(tmp) / "rewrite.faiss")  # what every commit did before segments
        rewrite_s = time.perf_counter() - started
        kb.close()

    mb = 1024 * 1024
    lines = [
        f"Measured {date.today()} on this machine (2 cores, no GPU) by `bench/bench_segments.py`: a real KB "
        f"grown to {args.vectors:,} synthetic 384-d vectors in {len(seconds)} commits of {COMMIT:,} chunks "
        "(embedding left out).",
        "",
        "| | figure |",
        "|---|---|",
        f"| commit time p50 / max | {percentile(seconds, 0.5):.2f} s / {max(seconds):.1f} s "
        "(the max is a tier merge) |",
        f"| index bytes written per commit p50 / max | {percentile(written, 0.5) / mb:.1f} MB "
        f"/ {max(written) / mb:.0f} MB |",
        f"| write amplification (index bytes written / final size) | {sum(written) / final:.1f} |",
        f"| segments at the end | {segments} |",
        f"| search over the segments: p50 k=100 / k=1000, recall@100 | {over_segments['p50_100']:.1f} ms / "
        f"{over_segments['p50_1000']:.1f} ms, {over_segments['recall']:.3f} |",
        f"| `compact` into one segment | {compact_s:.0f} s |",
        f"| search after compact: p50 k=100 / k=1000, recall@100 | {compacted['p50_100']:.1f} ms / "
        f"{compacted['p50_1000']:.1f} ms, {compacted['recall']:.3f} |",
        f"| one commit before segments (clone + rewrite the whole index) | {rewrite_s:.1f} s, {final / mb:.0f} MB |",
    ]
    write_section("segments", ["## Dense index segments: commits into a growing KB", "", *lines])


if __name__ == "__main__":
    main()
