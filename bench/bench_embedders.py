"""Embedding tiers side by side: torch MiniLM, its int8 ONNX export, and the static table distilled from it.

In one run, on the same chunks (the Paul Graham essays with bench_retrieval's planted facts):
- throughput of each tier's raw encode, chunks/s and tokens/s, as a ratio to torch's
  `SentenceTransformer.encode` (targets: ONNX int8 >= 2x, static >= 100x); the raw encodes run
  twice, interleaved (torch, onnx, static, torch, ...), and the faster pass of each counts,
  because this machine's speed swings within minutes;
- end to end: `Pipeline.add` of the whole haystack vs the raw encode of its chunks (target >= 0.85),
  with the add's profile (what bounds it when the encoder is no longer the cost);
- retrieval quality on bench_retrieval's questions, dense-only and hybrid (targets: hybrid static
  keeps >= 0.95 of hybrid MiniLM's hit@100, ONNX int8 within 0.01 of torch);
- needle coverage of a default pack at 4k and 16k (bench_packer's haystack and needle sets).
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
from bench_packer import bench_coverage, build_haystack_kb
from bench_retrieval import facts

from hybridctx import Pipeline
from hybridctx.embed import OnnxEmbedder, SentenceTransformerEmbedder, StaticEmbedder
from hybridctx.evals.essays import paul_graham_essays, plant
from hybridctx.pack import Packer
from hybridctx.tokens import TiktokenCounter

TIERS = {"transformer": SentenceTransformerEmbedder, "onnx": OnnxEmbedder, "static": StaticEmbedder}
BUDGETS = [4_096, 16_384]


def onnx_op_profile(embedder: OnnxEmbedder, texts: list[str]) -> list[str]:
    """Where ONNX Runtime spends an encode, by operator type (its own profiler, kernel time)."""
    import collections
    import json

    import onnxruntime as ort

    from hybridctx.embed.onnx import GRAPH_FILE, onnx_model_folder

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "hybridctx-ort-profile")
    session, embedder._session = embedder._session, ort.InferenceSession(
        str(onnx_model_folder("all-MiniLM-L6-v2") / GRAPH_FILE), options, providers=["CPUExecutionProvider"]
    )
    embedder.embed(texts)
    trace = Path(embedder._session.end_profiling())
    embedder._session = session
    by_op: collections.Counter[str] = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    trace.unlink()
    total = sum(by_op.values())
    return [f"{op} {us / total:.2f}" for op, us in by_op.most_common(8)]


def raw_encode(tier: str, embedder, texts: list[str]) -> float:
    """Seconds for the tier's own encode call: sentence-transformers', model2vec's, or the ONNX
    session loop (which is all `OnnxEmbedder.embed` is)."""
    start = time.perf_counter()
    if tier == "transformer":
        embedder._model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    elif tier == "static":
        embedder._model.encode(texts, use_multiprocessing=False)
    else:
        embedder.embed(texts)
    return time.perf_counter() - start


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
    packer = Packer(TiktokenCounter("cl100k_base"))
    rows, profiles, embedders = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for tier, make in TIERS.items():
            embedder = embedders[tier] = make("all-MiniLM-L6-v2")
            path = Path(tmp) / tier
            profiler = cProfile.Profile()
            encode = embedder.embed
            embed_s = [0.0]

            def timed(texts, encode=encode, embed_s=embed_s):
                began = time.perf_counter()
                try:
                    return encode(texts)
                finally:
                    embed_s[0] += time.perf_counter() - began

            embedder.embed = timed  # the add's own time in the encoder, whatever the machine's load
            start = time.perf_counter()
            with Pipeline.open(path, embedder=embedder, show_progress=False) as pipe:
                profiler.enable()
                report = pipe.add(documents)
                profiler.disable()
                add_s = time.perf_counter() - start
                del embedder.embed  # the class's method again
                ids = list(range(1, report.chunks_added + 1))
                chunks = pipe.kb.store.chunks(ids)
                texts = [chunks[i].text for i in ids if i in chunks]
                tokens = sum(chunks[i].token_count for i in ids if i in chunks)
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(6)
            profiles[tier] = [line for line in stream.getvalue().splitlines() if "{" in line or ".py" in line][:6]
            haystack, _ = build_haystack_kb(Path(tmp) / f"haystack-{tier}", embedder, random.Random(1))
            coverage = bench_coverage(haystack, packer, BUDGETS)["generous"]
            haystack.close()
            rows[tier] = {
                "chunks": len(texts), "tokens": tokens, "add_s": add_s, "embed_s": embed_s[0], "coverage": coverage,
                "quality": quality(path, embedder, questions), "load": os.getloadavg()[0],
            }
            print(tier, rows[tier])
    # Raw encodes of the very chunks the adds embedded, twice each, interleaved; the faster pass counts.
    for _ in range(2):
        for tier, embedder in embedders.items():
            seconds = raw_encode(tier, embedder, texts)
            rows[tier]["raw_s"] = min(seconds, rows[tier].get("raw_s", seconds))
            print(f"{tier} raw encode: {len(texts) / seconds:,.0f} chunks/s (load {os.getloadavg()[0]:.1f})")
    ops = onnx_op_profile(embedders["onnx"], texts[:300])
    torch_rate = rows["transformer"]["chunks"] / rows["transformer"]["raw_s"]
    loads = " / ".join(f"{r['load']:.1f}" for r in rows.values())
    lines = [
        f"## Embedding tiers ({date.today().isoformat()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU; load average "
        f"{loads} while each tier ran. `bench/bench_embedders.py`: "
        f"the essays with bench_retrieval's planted facts ({rows['transformer']['chunks']} chunks, "
        f"{rows['transformer']['tokens']:,} MiniLM tokens), all tiers in one run on the same chunks (raw encodes "
        f"twice each, interleaved, the faster pass counted); {len(questions)} retrieval questions, top 100; "
        "needle coverage of a default pack (top 1,000 candidates) on bench_packer's haystack.",
        "",
        "| tier | raw encode chunks/s | tokens/s | x torch | `Pipeline.add` s | raw encode / add | "
        "encoder share of add | "
        "dense hit@10 | dense hit@100 | dense MRR | hybrid hit@10 | hybrid hit@100 | hybrid MRR | "
        + " | ".join(f"coverage {b // 1024}k" for b in BUDGETS) + " |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(BUDGETS),
    ]
    for tier, r in rows.items():
        rate = r["chunks"] / r["raw_s"]
        d, h = r["quality"]["dense"], r["quality"]["hybrid"]
        lines.append(
            f"| {tier} | {rate:,.0f} | {r['tokens'] / r['raw_s']:,.0f} | {rate / torch_rate:.1f} | {r['add_s']:.1f} | "
            f"{r['raw_s'] / r['add_s']:.2f} | {r['embed_s'] / r['add_s']:.2f} | "
            f"{d['hit@10']:.3f} | {d['hit@100']:.3f} | {d['mrr']:.3f} | "
            f"{h['hit@10']:.3f} | {h['hit@100']:.3f} | {h['mrr']:.3f} | "
            + " | ".join(f"{c:.3f}" for c in r["coverage"]) + " |"
        )
    hybrid = {tier: r["quality"]["hybrid"]["hit@100"] for tier, r in rows.items()}
    keep = hybrid["static"] / max(hybrid["transformer"], 1e-9)
    lines += [
        "",
        f"Hybrid static keeps **{keep:.2f}** of hybrid MiniLM's hit@100 (target 0.95); hybrid ONNX int8 is "
        f"**{hybrid['onnx'] - hybrid['transformer']:+.3f}** from torch's (target within 0.01). "
        "Where `Pipeline.add` spends its time with each tier (cProfile, top functions by own time):",
        "",
    ]
    for tier, top in profiles.items():
        lines += [f"- {tier}:", "", "```", *top, "```", ""]
    lines += [
        "Inside the ONNX int8 encode, share of ONNX Runtime's kernel time by operator (its profiler, "
        "300 chunks): " + ", ".join(ops) + ".",
        "",
    ]
    write_section("bench_embedders", lines)


if __name__ == "__main__":
    main()
