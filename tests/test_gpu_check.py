"""`make gpu-check` rehearsed without a GPU: the same script, every GPU step saying so and the
CPU parts measured small, so that the one prepared command for a lent GPU cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "bench" / "gpu_check.py"


@pytest.mark.slow
def test_the_gpu_check_runs_to_its_summary_on_a_cpu_with_every_gpu_step_skipped(tmp_path):
    state, results = tmp_path / "state.json", tmp_path / "RESULTS.md"
    command = [sys.executable, str(SCRIPT), "--small", "--budget-s", "240", "--state", str(state),
               "--results", str(results)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(state.read_text())
    assert figures["environment"]["gpu"] is False
    assert figures["install"] == {"skipped": "no GPU: skipped"}
    assert figures["vllm"] == {"skipped": "no GPU: skipped"}
    assert figures["embedding"]["gpu"] == "no GPU: skipped" and figures["embedding"]["cpu_chunks_per_s"] > 0
    assert 100 <= figures["embedding"]["chunk_tokens_mean"] <= 128  # hybridctx's 128-token chunks
    dense = figures["dense_index"]
    assert dense["spec"].startswith("IVF") and 0 < dense["recall_at_k"] <= 1 and dense["p99_ms"] >= dense["p50_ms"]
    pipeline = figures["pipeline"]
    assert pipeline["tokens"] > 0 and pipeline["questions"] == 2 and pipeline["p50_s_per_answer"] > 0
    section = results.read_text()
    assert "<!-- gpu-rehearsal:begin -->" in section and "<!-- gpu:begin -->" not in section
    assert all(f"| {step} |" in section for step in ("install", "embedding", "dense_index", "vllm", "pipeline"))

    again = subprocess.run(command, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert again.returncode == 0 and "embedding: measured before, kept" in again.stdout  # resumable
    assert json.loads(state.read_text())["embedding"] == figures["embedding"]
