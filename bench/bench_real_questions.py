"""Real questions: which reader, and which way of asking, answers questions nobody here wrote?

Sixty questions (bench/real_questions.py) over the source and docstrings of twelve installed
third-party packages, answered by every reader available offline (Qwen2.5-Coder 0.5B and 1.5B
Instruct, Gemma 3 270M, SmolLM2-135M Instruct; all llama.cpp on the CPU) in three ways: `ask` with
the direct strategy, `ask` with map, and classic top-5 RAG (`pack(hits=retrieve(q, k=5))` +
`generate`). Stuffing is left out: the corpus is about 1.4M tokens, 170 times the 8k window.
Graded on the answer's first line by regex; 95% bootstrap intervals, paired against top-5 for the
same reader; seconds per answer with the load average. Every answer is saved as it comes
(bench/real_questions.json), so an interrupted run resumes; `--report` rewrites the RESULTS
section ("real questions") and the plot (bench/real_questions.png) from what is saved.

    .venv/bin/python bench/bench_real_questions.py [--readers qwen-0.5b gemma ...] [--methods direct top5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section  # noqa: E402
from real_questions import PACKAGES, QUESTIONS, RealQuestion  # noqa: E402

from hybridctx import Pipeline  # noqa: E402
from hybridctx.cache import default_cache_dir  # noqa: E402
from hybridctx.generate import LlamaCppBackend  # noqa: E402
from hybridctx.schema import Answer  # noqa: E402

READERS = {
    "qwen-0.5b": "qwen2.5-coder-0.5b-instruct",
    "gemma": "gemma-3-270m",
    "smollm2": "smollm2-135m-instruct",
    "qwen-1.5b": "qwen2.5-coder-1.5b-instruct",
}
METHODS = ("direct", "top5", "map")
STATE = Path(__file__).with_name("real_questions.json")
PLOT = Path(__file__).with_name("real_questions.png")
WINDOW = 8192


def corpus() -> list[Path]:
    """The packages' Python files, from the site-packages this interpreter imports them from."""
    import importlib.util

    files: list[Path] = []
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"{package} is not installed here")
        files += sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.py"))
    return files


def graded(question: RealQuestion, text: str) -> bool:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return bool(re.search(question.right, first, re.IGNORECASE)) and not (
        question.wrong and re.search(question.wrong, first, re.IGNORECASE))


def answer(pipe: Pipeline, method: str, question: str) -> Answer:
    if method == "top5":
        return pipe.generate(pipe.pack(question, hits=pipe.retrieve(question, k=5)))
    return pipe.ask(question, strategy=method)  # type: ignore[arg-type]


def run(kb: Path, readers: list[str], methods: list[str], state: dict[str, dict]) -> None:
    for reader in readers:
        backend = LlamaCppBackend(READERS[reader], context_window=WINDOW)
        with Pipeline.open(kb, backend=backend, show_progress=False) as pipe:
            for method in methods:
                for number, q in enumerate(QUESTIONS):
                    key = f"{reader}/{method}/{number}"
                    if key in state:
                        continue
                    started = time.perf_counter()
                    found = answer(pipe, method, q.question)
                    seconds = time.perf_counter() - started
                    prompts = [w.prompt for w in found.windows] or [found.context.prompt]
                    state[key] = {
                        "text": found.text, "right": graded(q, found.text), "seconds": seconds,
                        "in_prompt": any(q.where in p for p in prompts), "prompt_tokens": found.usage.prompt_tokens,
                        "cached_tokens": found.usage.cached_tokens, "load": os.getloadavg()[0],
                    }
                    STATE.write_text(json.dumps(state, indent=1))
                    mark = "right" if state[key]["right"] else "WRONG"
                    first = found.text.splitlines()[0][:90] if found.text else ""
                    print(f"{key:22} {mark:5} {seconds:5.1f}s {first!r}", flush=True)
        backend.close()


def bootstrap(values: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of the mean of `values`."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def report(state: dict[str, dict]) -> None:
    """The RESULTS section from the saved answers; a cell not yet complete shows its n."""
    n = len(QUESTIONS)
    answered = {(reader, method): {i: state[f"{reader}/{method}/{i}"] for i in range(n)
                                   if f"{reader}/{method}/{i}" in state}
                for reader in READERS for method in METHODS}
    answered = {key: found for key, found in answered.items() if found}
    cells = {key: [float(found[i]["right"]) for i in range(n)] for key, found in answered.items() if len(found) == n}
    rows = []
    for (reader, method), found in answered.items():
        right = [float(f["right"]) for f in found.values()]
        low, high = bootstrap(right)
        seconds = statistics.median(f["seconds"] for f in found.values())
        load = statistics.fmean(f["load"] for f in found.values())
        in_prompt = sum(f["in_prompt"] for f in found.values())
        paired = "-"
        top5 = answered.get((reader, "top5"), {})
        common = sorted(found.keys() & top5.keys())
        if method != "top5" and common:
            diffs = [float(found[i]["right"]) - float(top5[i]["right"]) for i in common]
            d_low, d_high = bootstrap(diffs)
            paired = f"{statistics.fmean(diffs):+.2f} [{d_low:+.2f}, {d_high:+.2f}] (n={len(common)})"
        rows.append(f"| {reader} | {method} | **{int(sum(right))}/{len(right)}** ({statistics.fmean(right):.2f}) | "
                    f"[{low:.2f}, {high:.2f}] | {paired} | {seconds:.1f} | {in_prompt}/{len(right)} | {load:.1f} |")
    shapes = sorted({q.shape for q in QUESTIONS})
    by_shape = []
    for (reader, method), found in answered.items():
        counts = " | ".join(
            f"{sum(found[i]['right'] for i in found if QUESTIONS[i].shape == shape)}/"
            f"{sum(QUESTIONS[i].shape == shape for i in found)}" for shape in shapes)
        by_shape.append(f"| {reader} | {method} | {counts} |")
    recorded = record_strategies(cells, state)
    write_section("real-questions", [
        "## Real questions: readers and ways of asking (llama.cpp, 2 CPU cores)",
        "",
        f"{n} questions over the source of {len(PACKAGES)} installed third-party packages "
        f"({', '.join(PACKAGES)}; bench/real_questions.py), mixed answer shapes, graded on the answer's first line "
        "by regex. `direct`/`map`: `ask(strategy=...)` at the default budget (2,048 tokens; a reader with a stored "
        "calibration reads its effective length per window); `top5`: `pack(hits=retrieve(q, k=5))` + `generate`. "
        "Interval: 95% bootstrap; *vs top-5*: paired bootstrap of the difference on the same questions. *s/answer*: "
        "median wall seconds, at the load average shown (the machine was shared with other work). *answer in "
        "prompt*: the answer's file among the passages read. `bench/bench_real_questions.py`.",
        "",
        "| reader | method | right (of answered) | 95% CI | vs top-5, paired | s/answer | answer in prompt | load |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "By answer shape (right/asked):",
        "",
        "| reader | method | " + " | ".join(shapes) + " |",
        "|---|---|" + "---|" * len(shapes),
        *by_shape,
        "",
        "![accuracy per reader and method](real_questions.png)",
        "",
        "Strategy recorded in each reader's shipped calibration (`Settings.strategy=\"calibrated\"` follows it):",
        "",
        *(recorded or ["- none yet (a reader needs direct and map measured, and a shipped calibration)"]),
    ])
    _plot({key: [float(f["right"]) for f in found.values()] for key, found in answered.items()})


def record_strategies(cells: dict[tuple[str, str], list[float]], state: dict[str, dict]) -> list[str]:
    """For each reader measured both ways, store the strategy that answered more right (the
    faster on a tie) in its shipped calibration, which `Settings.strategy="calibrated"` follows."""
    from hybridctx.generate.calibration import SHIPPED, keep_calibration, read_calibration

    lines = []
    for reader, model in READERS.items():
        measured = {m: cells[reader, m] for m in ("direct", "map") if (reader, m) in cells}
        shipped = read_calibration(SHIPPED, LlamaCppBackend(model).model_id)
        if len(measured) < 2 or shipped is None:
            continue
        seconds = {m: statistics.median(state[f"{reader}/{m}/{i}"]["seconds"] for i in range(len(QUESTIONS)))
                   for m in measured}
        best = max(measured, key=lambda m: (sum(measured[m]), -seconds[m]))
        shares = {m: round(statistics.fmean(v), 3) for m, v in measured.items()}
        keep_calibration(SHIPPED, shipped.model_copy(update={"strategy": best, "strategies": shares}))
        lines.append(f"- {reader}: `{best}` ({', '.join(f'{m} {v:.2f}' for m, v in shares.items())})")
    return lines


def _plot(cells: dict[tuple[str, str], list[float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    readers = [r for r in READERS if any((r, m) in cells for m in METHODS)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(METHODS)
    for j, method in enumerate(m for m in METHODS if any((r, m) in cells for r in readers)):
        xs = [i + j * width for i, r in enumerate(readers) if (r, method) in cells]
        values = [cells[r, method] for r in readers if (r, method) in cells]
        means = [statistics.fmean(v) for v in values]
        intervals = [bootstrap(v) for v in values]
        errors = [[m - low for m, (low, _) in zip(means, intervals, strict=True)],
                  [high - m for m, (_, high) in zip(means, intervals, strict=True)]]
        ax.bar(xs, means, width, yerr=errors, capsize=3, label=method)
    ax.set_xticks([i + width for i in range(len(readers))], readers)
    ax.set_xlim(-0.5, len(readers) - 0.5 + 2 * width)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"right (of {len(QUESTIONS)})")
    ax.set_title("Real questions over installed packages' source")
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readers", nargs="+", default=list(READERS), choices=list(READERS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--report", action="store_true", help="Only rewrite RESULTS and the plot from saved answers")
    parser.add_argument("--fresh", action="store_true", help="Forget saved answers")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    state: dict[str, dict] = {} if args.fresh or not STATE.exists() else json.loads(STATE.read_text())
    if not args.report:
        kb = default_cache_dir() / "bench-real-questions-kb"
        with Pipeline.open(kb) as pipe:  # added once: unchanged files are skipped on a rerun
            pipe.add(corpus())
        run(kb, args.readers, args.methods, state)
    report(state)


if __name__ == "__main__":
    main()
