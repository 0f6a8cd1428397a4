"""Budgets as the reading model can take them: recall scaled to the budget, budgets checked
against the model's window, and the packed context saying why it stopped."""

from __future__ import annotations

import pytest

from hybridctx import Pipeline
from hybridctx.errors import BudgetTooLargeError, InvalidArgumentError
from hybridctx.evals.essays import paul_graham_essays
from hybridctx.generate import LlamaCppBackend, OpenAISettings
from hybridctx.pack.context import recall_k
from hybridctx.settings import default_cache_dir

pytestmark = pytest.mark.slow

QUESTION = "What did the author learn from starting a startup?"


@pytest.fixture(scope="module")
def wide_reader():
    """The embedded model with a 32k window (its tokenizer only: packing never loads the model)."""
    reader = LlamaCppBackend("gemma-3-270m", cache_dir=default_cache_dir(), context_window=32_768)
    yield reader
    reader.close()


def test_recall_scales_with_the_budget():
    assert recall_k(2_000, 96) == 100  # the classic generous recall, at least
    assert recall_k(64_000, 96) == 2_000
    assert recall_k(10**9, 96) == 100_000  # capped at MAX_K


def test_a_default_pack_fills_a_large_budget(essays_kb, embedder, wide_reader):
    with Pipeline.open(essays_kb, embedder=embedder, backend=wide_reader, show_progress=False) as pipe:
        full = pipe.pack(QUESTION, budget_tokens=24_000, max_new_tokens=200)
        assert full.recall == "retrieved" and full.stopped_by == "budget"
        assert full.token_count >= 0.9 * 23_800
    # A fixed k of 100 (the old default) runs out of candidates far short of the budget.
    with Pipeline.open(essays_kb, embedder=embedder, backend=wide_reader, show_progress=False, k=100) as pipe:
        capped = pipe.pack(QUESTION, budget_tokens=24_000, max_new_tokens=200)
        assert capped.stopped_by == "candidates" and capped.token_count < 0.7 * 23_800


def test_a_pack_short_of_its_budget_retrieves_more(tmp_path, embedder, wide_reader):
    """Copies eat candidates: in a KB holding every text five times, the candidates a budget
    calls for leave a fifth of them; the pack retrieves more and still fills the budget."""
    from hybridctx import Document

    texts = [essay.text for essay in paul_graham_essays(max_chars=60_000)]
    copies = [Document(id=f"copy{n}/{i}", text=t) for n in range(5) for i, t in enumerate(texts)]
    with Pipeline.open(tmp_path / "kb", embedder=embedder, backend=wide_reader, show_progress=False) as pipe:
        pipe.add(copies)
        first = pipe.retrieve(QUESTION, k=recall_k(8_000, 96))
        once = pipe.pack(QUESTION, budget_tokens=8_000, max_new_tokens=200, hits=first)
        assert once.stopped_by == "candidates" and once.token_count < 0.9 * 7_800  # given hits are packed as given
        assert sum(d.reason == "duplicate" for d in once.dropped) > len(first) / 2
        full = pipe.pack(QUESTION, budget_tokens=8_000, max_new_tokens=200)
        assert full.recall == "retrieved" and full.stopped_by == "budget" and full.token_count >= 0.9 * 7_800


def test_a_budget_above_the_window_is_refused_per_call(open_pipe, corpus, backend):
    pipe = open_pipe()
    pipe.add(corpus)
    window = f"larger than the model's context window \\({backend.context_window:,}"
    for call in (lambda: pipe.pack("tomatoes?", budget_tokens=64_000),
                 lambda: pipe.ask("tomatoes?", budget_tokens=64_000),
                 lambda: pipe.session().pack("tomatoes?", budget_tokens=64_000)):
        with pytest.raises(BudgetTooLargeError, match=window):
            call()
    with pytest.raises(InvalidArgumentError, match="budget_tokens=16,000 is larger than the model's context window"):
        Pipeline.open(pipe.kb.root, budget_tokens=16_000)  # the same message for the settings


def test_a_small_corpus_runs_out_of_candidates(open_pipe, corpus):
    pipe = open_pipe()
    pipe.add(corpus)
    context = pipe.pack("How long should bread dough be kneaded?", budget_tokens=2048)
    assert context.recall == "whole_corpus" and context.stopped_by == "candidates"
    tight = pipe.pack("How long should bread dough be kneaded?", budget_tokens=400, max_new_tokens=100)
    assert tight.stopped_by == "budget"


def test_backend_settings_passed_as_backend_are_refused_with_where_they_go(tmp_path):
    settings = OpenAISettings(base_url="http://localhost:1/v1", model="m")
    with pytest.raises(InvalidArgumentError, match=r"Settings\(backend=OpenAISettings"):
        Pipeline.open(tmp_path / "kb", backend=settings)  # type: ignore[arg-type]
    assert not (tmp_path / "kb").exists()


def test_a_larger_retrieval_never_asks_for_more_than_max_k():
    from hybridctx.pack.context import Candidates
    from hybridctx.schema import MAX_K

    assert Candidates([], False, k=1_000).more == 4_000
    assert Candidates([], False, k=60_000).more == MAX_K
