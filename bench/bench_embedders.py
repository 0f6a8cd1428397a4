"""Embedding tiers side by side: torch MiniLM vs the static table distilled from it.

In one run, on the same chunks (the Paul Graham essays with bench_retrieval's planted facts):
- throughput of each tier's raw encode, chunks/s and tokens/s, as a ratio to torch's
  `SentenceTransformer.encode` (targets: static >= 100x);
- end to end: `Pipeline.add` of the whole haystack vs the raw encode of its chunks (target >= 0.85),
  with the add's profile (what bounds it when the encoder is no longer the cost);
- retrieval quality on bench_retrieval's questions, dense-only and hybrid (target: hybrid static
  keeps >= 0.95 of hybrid MiniLM's hit@100).
Prints the figures and writes them into bench/RESULTS.md ("Embedding tiers").

    .venv/bin/python bench/bench_embedders.py
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from _results import write_section
from bench_retrieval import facts

from hybridctx import Pipeline
from hybridctx.embed import SentenceTransformerEmbedder, StaticEmbedder
from hybridctx.evals.essays import paul_graham_essays, plant

TIERS = {"transformer": SentenceTransformerEmbedder, "static": StaticEmbedder}


def quality(pipe_path: Path, embedder, questions) -> dict[str, dict[str, float]]:
    out = {}
    for mode in ("dense", "hybrid"):
        with Pipeline.open(pipe_path, embedder=embedder, retrieval=mode, show_progress=False) as pipe:
            ranks = []
            for _, question, fact in questions:
                hits = pipe.retrieve(question, k=100)
                ranks.append(next((h.rank for h in hits if fact in h.chunk.text), None))
        out[mode] = {
            "hit@10": statistics.mean(r is not None and r <= 10 for r in ranks),
            "hit@100": statistics.mean(r is not None for r in ranks),
            "mrr": statistics.mean(1 / r if r else 0.0 for r in ranks),
        }
    return out


def main() -> None:
    sentences, questions = facts(random.Random(3))
    documents = list(plant(paul_graham_essays(), sentences, seed=5))
    rows, profiles = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for tier, make in TIERS.items():
            embedder = make("all-MiniLM-L6-v2")
            path = Path(tmp) / tier
            profiler = cProfile.Profile()
            start = time.perf_counter()
            with Pipeline.open(path, embedder=embedder, show_progress=False) as pipe:
                profiler.enable()
                report = pipe.add(documents)
                profiler.disable()
                add_s = time.perf_counter() - start
                ids = list(range(1, report.chunks_added + 1))
                chunks = pipe.kb.store.chunks(ids)
                texts = [chunks[i].text for i in ids if i in chunks]
                tokens = sum(chunks[i].token_count for i in ids if i in chunks)
            # Raw encode of the very chunks the add embedded (torch: the library's own call).
            raw = embedder._model
            start = time.perf_counter()
            if tier == "transformer":
                raw.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
            else:
                raw.encode(texts, use_multiprocessing=False)
            raw_s = time.perf_counter() - start
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(6)
            profiles[tier] = [line for line in stream.getvalue().splitlines() if "{" in line or ".py" in line][:6]
            rows[tier] = {
                "chunks": len(texts), "tokens": tokens, "raw_s": raw_s, "add_s": add_s,
                "quality": quality(path, embedder, questions), "load": os.getloadavg()[0],
            }
            print(tier, rows[tier])
    torch_rate = rows["transformer"]["chunks"] / rows["transformer"]["raw_s"]
    lines = [
        f"## Embedding tiers ({date.today().isoformat()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU; load average {rows['transformer']['load']:.1f} / "
        f"{rows['static']['load']:.1f} while each tier ran. `bench/bench_embedders.py`: the essays with "
        f"bench_retrieval's planted facts ({rows['transformer']['chunks']} chunks, "
        f"{rows['transformer']['tokens']:,} MiniLM tokens), both tiers in one run on the same chunks; "
        f"{len(questions)} retrieval questions, top 100.",
        "",
        "| tier | raw encode chunks/s | tokens/s | x torch | `Pipeline.add` s | raw encode / add | "
        "dense hit@10 | dense hit@100 | dense MRR | hybrid hit@10 | hybrid hit@100 | hybrid MRR |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tier, r in rows.items():
        rate = r["chunks"] / r["raw_s"]
        d, h = r["quality"]["dense"], r["quality"]["hybrid"]
        lines.append(
            f"| {tier} | {rate:,.0f} | {r['tokens'] / r['raw_s']:,.0f} | {rate / torch_rate:.1f} | {r['add_s']:.1f} | "
            f"{r['raw_s'] / r['add_s']:.2f} | {d['hit@10']:.3f} | {d['hit@100']:.3f} | {d['mrr']:.3f} | "
            f"{h['hit@10']:.3f} | {h['hit@100']:.3f} | {h['mrr']:.3f} |"
        )
    hybrid = {tier: r["quality"]["hybrid"]["hit@100"] for tier, r in rows.items()}
    keep = hybrid["static"] / max(hybrid["transformer"], 1e-9)
    lines += [
        "",
        f"Hybrid static keeps **{keep:.2f}** of hybrid MiniLM's hit@100 (target 0.95). "
        "Where `Pipeline.add` spends its time with each tier (cProfile, top functions by own time):",
        "",
    ]
    for tier, top in profiles.items():
        lines += [f"- {tier}:", "", "```", *top, "```", ""]
    write_section("bench_embedders", lines)


if __name__ == "__main__":
    main()
