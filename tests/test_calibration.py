"""Effective context: the probe, where calibrations are kept, and `ask` reading at most what
the model was measured to use; multi-hop retrieval following chained facts."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from hybridctx import Document, Pipeline
from hybridctx.errors import InvalidArgumentError
from hybridctx.evals.calibrate import effective_length, probe_lengths
from hybridctx.evals.essays import paul_graham_essays
from hybridctx.generate.calibration import Calibration, load_calibration, save_calibration
from hybridctx.settings import default_cache_dir


def test_probe_lengths_double_up_to_the_window_less_the_answer():
    assert probe_lengths(8192, 24) == [512, 1024, 2048, 4096, 8168]
    assert probe_lengths(2048, 24) == [512, 1024, 2024]
    with pytest.raises(InvalidArgumentError, match="too small"):
        probe_lengths(500, 24)


def test_the_effective_length_is_where_the_model_gets_worse_not_where_it_is_weak():
    lengths = [1024, 2048, 4096, 8168]
    assert effective_length(lengths, [1.0, 1.0, 0.5, 0.5]) == 2048
    assert effective_length(lengths, [0.5, 0.5, 0.5, 0.5]) == 8168  # weak everywhere: no length is worse
    assert effective_length(lengths, [1.0, 0.9, 1.0, 0.2]) == 4096  # 0.9 is within 0.85 of the best
    assert effective_length(lengths, [0.5, 1.0, 1.0, 1.0]) == 1024  # worse at the start: cut there
    assert effective_length(lengths, [0.0, 0.0, 0.0, 0.0]) == 1024


def _calibration(model: str, effective: int) -> Calibration:
    return Calibration(model=model, window_tokens=4096, lengths=[1024, 4072], accuracy={"needle": [1.0, 0.0]},
                       effective_tokens=effective, seeds=1, seconds=1.0, measured_at="2026-12-06T00:00:00+00:00")


def test_calibrations_are_kept_by_model(tmp_path):
    assert load_calibration(tmp_path, "llama.cpp/nothing-here.gguf") is None
    save_calibration(tmp_path, _calibration("vllm/a", 1024))
    save_calibration(tmp_path, _calibration("vllm/b", 2048))
    assert load_calibration(tmp_path, "vllm/a").effective_tokens == 1024
    assert load_calibration(tmp_path, "vllm/b").effective_tokens == 2048
    (tmp_path / "calibration" / "vllm_a.json").write_text("{not json")
    with pytest.raises(InvalidArgumentError, match="vllm_a.json: not a calibration"):
        load_calibration(tmp_path, "vllm/a")


@pytest.mark.slow
def test_ask_reads_at_most_the_calibrated_length(essays_kb, embedder, backend, tmp_path):
    question = "What should founders do when a company is growing fast?"
    opened = dict(embedder=embedder, backend=backend, show_progress=False, cache_dir=tmp_path)
    with Pipeline.open(essays_kb, **opened) as pipe:
        found = pipe.calibrate(seeds=1, max_tokens=1100)  # the real model, three short lengths
        assert found.lengths == [512, 1024, 1076] and set(found.accuracy) == {"needle", "multi_key"}
        assert found.model == backend.model_id and found.effective_tokens in found.lengths
    stored = json.loads((tmp_path / "calibration" / "llama.cpp_gemma-3-270m-Q4_K_M.gguf.json").read_text())
    assert stored["effective_tokens"] == found.effective_tokens

    with Pipeline.open(essays_kb, **opened) as pipe:  # a new pipeline finds it in the cache
        assert pipe.effective_tokens == found.effective_tokens
        answer = pipe.ask(question, budget_tokens=4000, max_new_tokens=16)
        assert answer.context.budget_tokens == found.effective_tokens + 16
        assert answer.context.token_count <= found.effective_tokens
        assert answer.context.stopped_by == "effective_context"
        packed = pipe.pack(question, budget_tokens=4000, max_new_tokens=16)  # pack packs what it is asked
        assert packed.budget_tokens == 4000 and packed.stopped_by == "budget"
    with Pipeline.open(essays_kb, effective_context="window", **opened) as pipe:
        assert pipe.effective_tokens is None
        assert pipe.ask(question, budget_tokens=4000, max_new_tokens=16).context.budget_tokens == 4000
    with Pipeline.open(essays_kb, effective_context=1500, **opened) as pipe:
        session = pipe.session()
        assert session.ask(question, budget_tokens=4000, max_new_tokens=16).context.budget_tokens == 1516


@pytest.mark.slow
def test_synthesis_maps_over_windows_of_the_effective_length(essays_kb, embedder, backend, tmp_path):
    with Pipeline.open(essays_kb, embedder=embedder, backend=backend, show_progress=False, effective_context=1024,
                       max_windows=3) as pipe:
        answer = pipe.ask("What do investors look for in founders?", budget_tokens=4000, max_new_tokens=48,
                          strategy="synthesis")
    assert answer.route == "map_reduce" and len(answer.windows) == 3
    assert all(w.budget_tokens == 1024 + 48 and w.token_count <= 1024 for w in answer.windows)


@pytest.mark.slow
def test_hybridctx_calibrate_prints_the_table_and_stores_it(tmp_path):
    (tmp_path / "models").symlink_to(default_cache_dir() / "models")  # the assembled model, not made again
    runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", "HYBRIDCTX_CACHE": str(tmp_path)})
    from hybridctx.cli import app

    result = runner.invoke(app, ["calibrate", "--seeds", "1", "--max-tokens", "1100", "--context-window", "2048",
                                 "--model", "gemma-3-270m", "--plot", str(tmp_path / "calibration.png")])
    assert result.exit_code == 0, result.output
    assert "effective context:" in result.stdout and "1,076" in result.stdout
    assert (tmp_path / "calibration.png").stat().st_size > 10_000
    assert len(os.listdir(tmp_path / "calibration")) == 1


@pytest.mark.slow
def test_multi_hop_retrieval_follows_a_chain_of_names(tmp_path, embedder, backend):
    chain = ["VAR QXBTR = 48213.", "VAR LMWPZ = VAR QXBTR.", "VAR HDKRN = VAR LMWPZ.", "VAR TSVGA = VAR HDKRN."]
    prose = paul_graham_essays()[:6]
    documents = [*prose, *(Document(id=f"note{i}", text=f"Note {i}. {line} End of note.") for i, line in
                           enumerate(chain))]
    question = "Which variables are assigned the value 48213, directly or through other variables?"
    for hops, expected in ((3, set(chain)), (0, None)):
        with Pipeline.open(tmp_path / "kb", embedder=embedder, backend=backend, show_progress=False,
                           hops=hops) as pipe:
            pipe.add(documents)
            found = {line for hit in pipe.retrieve(question, k=10) for line in chain if line in hit.chunk.text}
        if expected:
            assert found == expected
        else:  # one retrieval: the later links share no word with the question
            assert found < set(chain)
