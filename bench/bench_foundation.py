"""Foundation benchmark on the demo corpus (the standard library's ~300 smallest files).

Measures, on this machine:
  * indexing throughput end to end (read + chunk + embed + write) versus raw
    `SentenceTransformer.encode` on the very same chunks: the pipeline's overhead;
  * retrieval latency (query embedding + FAISS + chunk store) at k = 10, 100, 1000;
  * the embedded model's prefill and decode speed on packed demo prompts.
Prints the figures and writes them into bench/RESULTS.md (between this script's markers).

    .venv/bin/python bench/bench_foundation.py [--max-files 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from _results import percentile, write_section

from hybridctx import Pipeline
from hybridctx.demo import QUESTIONS, demo_files
from hybridctx.embed import SentenceTransformerEmbedder
from hybridctx.sources import iter_documents


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-files", type=int, default=300)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    files = demo_files(args.max_files)
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    embedder.embed(["warm up"] * 64)

    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline.open(Path(tmp) / "kb", embedder=embedder, show_progress=False)
        # Raw encode on exactly the chunks the pipeline will produce.
        chunks = [c for d in iter_documents(files) if hasattr(d, "text") for c in pipe.stages.chunker.chunk(d)]
        texts = [c.text for c in chunks]
        t0 = time.perf_counter()
        for start in range(0, len(texts), 256):
            embedder.embed(texts[start : start + 256])
        raw_seconds = time.perf_counter() - t0
        raw_rate = len(texts) / raw_seconds

        t0 = time.perf_counter()
        report = pipe.add(files)
        e2e_seconds = time.perf_counter() - t0
        e2e_rate = report.chunks_added / e2e_seconds
        assert report.chunks_added == len(texts), (report.chunks_added, len(texts))

        queries = [" ".join(t.split()[:12]) for t in texts[:: max(1, len(texts) // args.queries)]][: args.queries]
        latency = {}
        for k in (10, 100, 1000):
            times = []
            for q in queries:
                t0 = time.perf_counter()
                pipe.retrieve(q, k=k)
                times.append(1000 * (time.perf_counter() - t0))
            latency[k] = (statistics.median(times), percentile(times, 0.99))
        t0 = time.perf_counter()
        for q in queries:
            embedder.embed([q])
        embed_ms = 1000 * (time.perf_counter() - t0) / len(queries)

        # Embedded model: prefill and decode separately (streaming gives time to first token).
        llm = pipe.backend._load(vocab_only=False)
        prefill, decode, prompt_tokens = [], [], []
        for question, _, _ in QUESTIONS:
            ctx = pipe.pack(question)
            llm.reset()
            t0 = time.perf_counter()
            first, n = None, 0
            for _ in llm.create_completion(ctx.prompt, max_tokens=96, temperature=0, stream=True):
                n += 1
                if first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
            prompt_tokens.append(ctx.token_count)
            prefill.append(ctx.token_count / (first - t0))
            if n > 1:
                decode.append((n - 1) / (end - first))
        pipe.close()

    ratio = e2e_rate / raw_rate
    lines = [
        f"## Foundation: demo corpus on this machine ({date.today().isoformat()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, no GPU. "
        f"Corpus: {len(files)} standard-library files, {report.chunks_added} chunks "
        f"({report.tokens_added:,} MiniLM tokens), `bench/bench_foundation.py`.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| raw `SentenceTransformer.encode`, same chunks, CPU | {raw_rate:.1f} chunks/s |",
        f"| end to end `Pipeline.add` (read + chunk + embed + write) | {e2e_rate:.1f} chunks/s |",
        f"| end to end / raw encode | **{ratio:.2f}** |",
        "| stage seconds in `add` | " + ", ".join(f"{k} {v:.2f}" for k, v in report.seconds.items()) + " |",
        f"| query embedding (single query) | {embed_ms:.1f} ms |",
    ]
    lines += [
        f"| retrieve (hybrid: dense + BM25, score fusion) k={k}: p50 / p99 | {p50:.1f} / {p99:.1f} ms |"
        for k, (p50, p99) in latency.items()
    ]
    lines += [
        f"| embedded model (Gemma 3 270M Q4_K_M, llama.cpp, 2 threads) prefill | "
        f"{statistics.mean(prefill):.0f} tokens/s (prompts of {min(prompt_tokens)}-{max(prompt_tokens)} tokens) |",
        f"| embedded model decode | {statistics.mean(decode):.1f} tokens/s |",
        "",
    ]
    write_section("bench_foundation", lines)


if __name__ == "__main__":
    main()
