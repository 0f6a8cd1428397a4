"""Effective context of every model available here: `calibrate` on each, timed.

Models: the packaged readers on llama.cpp (Qwen2.5-Coder 0.5B and 1.5B Instruct, Gemma 3 270M,
SmolLM2-135M-Instruct: `hybridctx.generate.models.PACKAGED`), and Gemma 3 270M on vLLM's CPU engine. Each
probe set: a single needle and a magic number among 8 near-identical keys, lengths doubling
from 1k to the 8k window, `--seeds` seeds each (see `hybridctx.evals.calibrate`).

Writes bench/calibration.png, bench/calibration_<model>.json and the RESULTS.md section
"calibration". The embedded model's calibration is the one hybridctx ships
(`hybridctx/generate/calibrations/`): `--ship` copies the packaged readers' there, keeping the
strategy bench_real_questions.py recorded for each.

    .venv/bin/python bench/bench_calibrate.py [--seeds 3] [--models qwen-0.5b,gemma,smollm2,vllm] [--ship]
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

from hybridctx.evals.calibrate import calibrate, plot  # noqa: E402
from hybridctx.generate import LlamaCppBackend  # noqa: E402
from hybridctx.generate.calibration import (  # noqa: E402
    SHIPPED,
    Calibration,
    keep_calibration,
    read_calibration,
    save_calibration,
)
from hybridctx.generate.models import safetensors_folder  # noqa: E402
from hybridctx.generate.vllm import VLLMBackend, VLLMSettings  # noqa: E402
from hybridctx.settings import default_cache_dir  # noqa: E402

WINDOW = 8192
HERE = Path(__file__).parent


READERS = {  # --models name -> packaged model
    "qwen-0.5b": "qwen2.5-coder-0.5b-instruct", "qwen-1.5b": "qwen2.5-coder-1.5b-instruct",
    "gemma": "gemma-3-270m", "smollm2": "smollm2-135m-instruct",
}
LABELS = {  # Backend.model_id -> what the table calls it
    "llama.cpp/qwen2.5-coder-0.5b-instruct.gguf": "Qwen2.5-Coder 0.5B Instruct, llama.cpp (chat template)",
    "llama.cpp/qwen2.5-coder-1.5b-instruct.gguf": "Qwen2.5-Coder 1.5B Instruct, llama.cpp (chat template)",
    "llama.cpp/gemma-3-270m-Q4_K_M.gguf": "Gemma 3 270M, llama.cpp (Q4_K_M)",
    "llama.cpp/SmolLM2-135M-Instruct.Q4_1.gguf": "SmolLM2-135M-Instruct, llama.cpp (Q4_1)",
    "vllm/gemma-3-270m-hf": "Gemma 3 270M, vLLM CPU (float32, eager)",
}


def backends(names: list[str]):
    cache = default_cache_dir()
    for name in names:
        if name in READERS:
            backend = LlamaCppBackend(READERS[name], context_window=WINDOW)
            yield LABELS.get(backend.model_id, backend.model_id), backend
    if "vllm" in names:
        settings = VLLMSettings(model=str(safetensors_folder("gemma-3-270m", cache)), max_model_len=WINDOW,
                                enforce_eager=True, cpu_kv_cache_gib=2)
        yield "Gemma 3 270M, vLLM CPU (float32, eager)", VLLMBackend(settings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default="qwen-0.5b,gemma,smollm2,vllm")
    parser.add_argument("--ship", action="store_true", help="Copy the packaged readers' calibrations into the package")
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
            if args.ship and backend.name == "embedded-llama-cpp":
                shipped = read_calibration(SHIPPED, result.model)  # keeps the strategy measured for it
                keep_calibration(SHIPPED, result.model_copy(update={
                    "strategy": shipped.strategy if shipped else None,
                    "strategies": shipped.strategies if shipped else {},
                }))
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
