"""Answer level, per model: does hybridctx's default `ask` beat classic top-5 RAG and
long-context stuffing on the `hybridctx eval` tasks, beyond noise?

Each repeat plants fresh facts of every task into its own 32k-token haystack of the essays;
each question is answered by all three strategies at each budget, so differences are paired
(95% bootstrap intervals). hybridctx is the library's default `ask`: recall scaled to the
budget, multi-hop retrieval, and the `map` strategy over windows of the model's calibrated
effective context (each passage holding a sentence about the question read on its own, the
values the readings ground listed with their passages; the first window answered otherwise).

    .venv/bin/python bench/bench_answers.py [--models gemma,smollm2,vllm] [--repeats 10]

Resumable: a model whose bench/answers_<model>.json exists is not run again (--force).
Writes the RESULTS.md section "answers".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _results import write_section  # noqa: E402

from hybridctx.evals import EvalConfig, EvalResult, report, run_eval  # noqa: E402
from hybridctx.generate import LlamaCppBackend  # noqa: E402
from hybridctx.generate.models import safetensors_folder  # noqa: E402
from hybridctx.generate.vllm import VLLMBackend, VLLMSettings  # noqa: E402
from hybridctx.pipeline import Pipeline  # noqa: E402
from hybridctx.settings import Settings, default_cache_dir  # noqa: E402
from hybridctx.stages import embedder_from  # noqa: E402

HERE = Path(__file__).parent
WINDOW = 8192
MODELS = {
    "gemma": "Gemma 3 270M, llama.cpp (Q4_K_M)",
    "smollm2": "SmolLM2-135M-Instruct, llama.cpp (Q4_1)",
    "vllm": "Gemma 3 270M, vLLM CPU (float32, eager)",
}


def backend_of(model: str):
    cache = default_cache_dir()
    if model == "gemma":
        return LlamaCppBackend("gemma-3-270m", cache_dir=cache, context_window=WINDOW)
    if model == "smollm2":
        return LlamaCppBackend("smollm2-135m-instruct", cache_dir=cache, context_window=WINDOW)
    return VLLMBackend(VLLMSettings(model=str(safetensors_folder("gemma-3-270m", cache)), max_model_len=WINDOW,
                                    enforce_eager=True, cpu_kv_cache_gib=2))


def run(model: str, config: EvalConfig, cache: Path, effective: int | None) -> EvalResult:
    """`cache`: where the measured calibrations are put for the run (not the user's cache);
    `effective`: read at most this many tokens instead of the calibrated length."""
    settings = Settings(show_progress=False, cache_dir=cache, effective_context=effective or "calibrated")
    embedder, backend = embedder_from(settings), backend_of(model)
    if model != "gemma":  # its calibration ships; the others' were measured by bench_calibrate.py
        from hybridctx.generate.calibration import Calibration, save_calibration

        measured = HERE / f"calibration_{backend.model_id.replace('/', '_')}.json"
        save_calibration(settings.cache_dir, Calibration.model_validate_json(measured.read_text()))
    try:
        return run_eval(config, lambda folder: Pipeline(folder, settings, embedder=embedder, backend=backend))
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="gemma,smollm2,vllm")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--budgets", default="2000,4000")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--effective", type=int, help="Read at most this many tokens, not the calibrated length")
    parser.add_argument("--tasks", default=None, help="Comma-separated tasks (default: all)")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    tasks = {"tasks": args.tasks.split(",")} if args.tasks else {}
    config = EvalConfig(lengths=[32_000], budgets=budgets, depths=[0.5], answers=True, answer_budgets=budgets,
                        answer_tokens=48, repeats=args.repeats, **tasks)
    tag = f"_effective{args.effective}" if args.effective else ""
    for model in args.models.split(","):
        out = HERE / f"answers_{model}{tag}.json"
        if model in MODELS and (args.force or not out.exists()):
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as cache:
                result = run(model, config, Path(cache), args.effective)
            out.write_text(json.dumps({**result.model_dump(mode="json"), "load": os.getloadavg()[0]}, indent=1))
            print(f"{model}{tag}: {time.perf_counter() - started:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    lines: list[str] = []
    for out in sorted(HERE.glob("answers_*.json")):
        model, _, variant = out.stem.removeprefix("answers_").partition("_effective")
        result = EvalResult.model_validate_json(out.read_text())
        n = result.config.repeats
        stored = json.loads(out.read_text())
        load, note = stored.get("load"), stored.get("note")  # note: how its run differs from the others
        label = MODELS[model] + (f", reading at most {int(variant):,} tokens (effective_context)" if variant else "")
        lines += [
            f"**{label}**: {n} questions per task (each in its own haystack), {result.seconds / 60:.0f} min"
            f"{f', load {load:.1f} at the end' if load is not None else ''}. {f'{note} ' if note else ''}"
            "Share of planted values the answer names; hybridctx minus the stronger other strategy on the same "
            "questions, with a 95% bootstrap interval; the share of hybridctx's cited passages that hold "
            "a planted value; where wrong answers were planted, the share of them each of the two named; and "
            "the share of the names (numbers, codes) each of the two gave that are right.",
            "",
            *report.comparison(result, "answer"),
            "",
        ]
    write_section("answers", [
        f"## Answer level: hybridctx's default ask against top-5 RAG and stuffing ({date.today()})",
        "",
        "`bench/bench_answers.py`: the `hybridctx eval` tasks, 32k-token haystacks of the essays, 48 answer tokens. "
        "hybridctx is the default `ask`: recall scaled to the budget, multi-hop retrieval, and the `map` strategy "
        "over windows of the model's calibrated effective context (each passage holding a sentence about the "
        "question that names a value read on its own, the answer the values the readings take from those "
        "sentences, each cited; the first window answered where none does). Results per model in "
        "`bench/answers_<model>.json`.",
        "",
        *lines,
    ])


if __name__ == "__main__":
    main()
