"""Do default packs fill big budgets? The default `pack` (recall scaled to the budget) against
the old fixed k=100, side by side on one knowledge base, and a session's shared prefix.

Corpus: Paul Graham's essays (164k embedding-model tokens); reader: the embedded model's tokenizer
with a 131k window (packing only: the model never loads). Per budget: the share of the room
(`budget - max_new_tokens`) the prompt fills, why packing stopped, and the time of the whole
`pack` (retrieval included), p50 over 5 questions. Then a session of the 8 fundraising
questions of bench_packer.py at 16k: the share of each follow-up prompt that is its cached
prefix (`prefix_token_count / token_count`).

    .venv/bin/python bench/bench_fill.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _results import percentile, write_section  # noqa: E402
from bench_packer import SESSION_QUESTIONS  # noqa: E402

from hybridctx import Pipeline  # noqa: E402
from hybridctx.embed import SentenceTransformerEmbedder  # noqa: E402
from hybridctx.evals.essays import paul_graham_essays  # noqa: E402
from hybridctx.generate import LlamaCppBackend  # noqa: E402
from hybridctx.retrieve import recall_k  # noqa: E402
from hybridctx.schema import Scope  # noqa: E402
from hybridctx.settings import default_cache_dir  # noqa: E402

BUDGETS = [4_000, 16_000, 64_000, 128_000]
QUESTIONS = [
    "What did the author learn from starting a startup?",
    "Why do some cities produce more startups than others?",
    "How should a programmer choose a programming language?",
    "What makes a good essay?",
    "Why is it hard to make money from open source?",
]
ANSWER = 200


def pack_rows(pipe: Pipeline, k: int | None) -> list[tuple[int, float, str, float, float]]:
    """Per budget: fill, the usual stop reason (and whether it was the whole corpus), the p50
    time of `pack`, and of retrieving as many candidates alone."""
    rows = []
    for budget in BUDGETS:
        fills, stops, seconds, retrieving = [], [], [], []
        for question in QUESTIONS:
            started = time.perf_counter()
            context = pipe.pack(question, budget, max_new_tokens=ANSWER)
            seconds.append(time.perf_counter() - started)
            fills.append(context.token_count / (budget - ANSWER))
            stops.append(context.stopped_by + (", whole corpus" if context.recall == "whole_corpus" else ""))
            started = time.perf_counter()
            pipe.retrieve(question, k or recall_k(budget, 96))
            retrieving.append(time.perf_counter() - started)
        rows.append((budget, statistics.mean(fills), max(set(stops), key=stops.count), percentile(seconds, 0.5),
                     percentile(retrieving, 0.5)))
        print(f"k={k} budget {budget}: fill {rows[-1][1]:.2f}, {rows[-1][2]}, {rows[-1][3] * 1000:.0f} ms "
              f"(retrieval {rows[-1][4] * 1000:.0f} ms)", flush=True)
    return rows


def session_share(pipe: Pipeline) -> float:
    session = pipe.session()
    contexts = [session.pack(q, 16_000, max_new_tokens=ANSWER) for q in SESSION_QUESTIONS]
    return statistics.mean(c.prefix_token_count / c.token_count for c in contexts[1:])


def main() -> None:
    essays = paul_graham_essays()
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    reader = LlamaCppBackend("gemma-3-270m", cache_dir=default_cache_dir(), context_window=131_072)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        opened = dict(embedder=embedder, backend=reader, show_progress=False)
        with Pipeline.open(Path(folder) / "kb", **opened) as pipe:
            pipe.add(essays)
            tokens = pipe.kb.store.visible_size(Scope())
        for k in (None, 100):
            with Pipeline.open(Path(folder) / "kb", k=k, **opened) as pipe:
                pipe.pack(QUESTIONS[0], 4_000)  # warm: models and caches
                results[k] = (pack_rows(pipe, k), session_share(pipe))
                print(f"k={k}: session shared prefix {results[k][1]:.3f}", flush=True)
    reader.close()
    load = os.getloadavg()[0]
    rows = [
        f"| {new[0]:,} | **{new[1]:.2f}** ({new[2]}) | {new[3] * 1000:.0f} ms ({new[4] * 1000:.0f} ms) "
        f"| {old[1]:.2f} ({old[2]}) | {old[3] * 1000:.0f} ms |"
        for new, old in zip(results[None][0], results[100][0], strict=True)
    ]
    write_section("fill", [
        f"## Default packs fill big budgets ({date.today()}, load {load:.1f})",
        "",
        f"`bench/bench_fill.py`: {len(essays)} essays ({tokens[1]:,} embedding-model tokens, {tokens[0]:,} chunks), "
        f"the embedded model's tokenizer as the reader, {ANSWER} tokens kept for the answer. Fill: the share of "
        "the room the prompt fills, mean over 5 questions, with the usual reason packing stopped; time: the whole "
        "`pack` (retrieval included), p50, and in brackets retrieving as many candidates alone (the rest is "
        "packing). Target: >= 0.90 wherever the corpus can fill the budget.",
        "",
        "| budget | fill, default (recall scaled to the budget) | pack time (retrieval) | fill, fixed k=100 (before) "
        "| pack time |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"A session of {len(SESSION_QUESTIONS)} fundraising questions at 16k: each follow-up prompt's share that is "
        f"its cached prefix: **{results[None][1]:.3f}** by default, {results[100][1]:.3f} with k=100 (target >= 0.8).",
    ])


if __name__ == "__main__":
    main()
