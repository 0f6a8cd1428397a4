"""Packer with the embedded model's real tokenizer: the budget is never exceeded."""

from __future__ import annotations

import pytest

from hybridctx.errors import BudgetTooSmallError, EmptyQueryError
from hybridctx.pack import BudgetPacker, PromptTemplate
from hybridctx.schema import Chunk, Hit


def make_hits(n, words=25):
    hits = []
    for i in range(n):
        text = f"Passage {i} " + " ".join(f"word{i}_{j}" for j in range(words)) + "."
        doc = f"doc-{i % 5}"
        chunk = Chunk(id=f"{doc}#{i}", doc_id=doc, text=text, start=i * 1000, end=i * 1000 + len(text),
                      start_line=i * 10 + 1, end_line=i * 10 + 3, token_count=words,
                      metadata={"source": f"{doc}.md"})
        hits.append(Hit(chunk=chunk, score=1 - i / 1000, rank=i + 1))
    return hits


@pytest.mark.parametrize("budget", [400, 1000, 2500, 6000])
def test_prompt_never_exceeds_the_budget_and_fills_it(llama_counter, budget):
    packer = BudgetPacker(llama_counter)
    ctx = packer.pack("What does passage 3 say?", make_hits(200), budget)
    assert ctx.token_count == llama_counter.count(ctx.prompt) <= budget
    largest_passage = max(llama_counter.count(c.text) for c in ctx.chunks)
    assert budget - ctx.token_count < largest_passage + 40, "budget left unfilled"
    assert len(ctx.chunks) + len(ctx.dropped) == 200
    assert {d.reason for d in ctx.dropped} == {"over_budget"}


def test_best_ranked_chunks_are_chosen_and_shown_in_document_order(llama_counter):
    hits = make_hits(50)
    ctx = BudgetPacker(llama_counter).pack("q?", list(reversed(hits)), 1500)
    chosen_ranks = sorted(int(c.id.split("#")[1]) + 1 for c in ctx.chunks)
    assert chosen_ranks == list(range(1, len(chosen_ranks) + 1)), "not the best-ranked chunks"
    order = [(c.doc_id, c.start) for c in ctx.chunks]
    assert order == sorted(order), "passages not in canonical (document, offset) order"


def test_question_comes_last_and_instructions_first(llama_counter):
    template = PromptTemplate()
    ctx = BudgetPacker(llama_counter, template).pack("  Where is passage 2?  ", make_hits(5), 2000)
    assert ctx.prompt.startswith(template.instructions)
    assert ctx.prompt.endswith("Based on the documents above, answer the question and cite the passage numbers.\n"
                               "Question: Where is passage 2?\nAnswer:")
    assert ctx.prefix_token_count == llama_counter.count(template.instructions)
    for n, chunk in enumerate(ctx.chunks, start=1):
        assert f"[{n}] {chunk.source}, lines {chunk.start_line}-{chunk.end_line}\n{chunk.text}" in ctx.prompt
    assert ctx.prompt.index(ctx.chunks[-1].text) < ctx.prompt.rindex("Question:")


def test_exact_duplicates_are_dropped(llama_counter):
    hits = make_hits(3)
    copy = hits[0].chunk.model_copy(update={"id": "other#9", "doc_id": "other"})
    hits.append(Hit(chunk=copy, score=0.1, rank=4))
    ctx = BudgetPacker(llama_counter).pack("q?", hits, 4000)
    assert [d.model_dump() for d in ctx.dropped] == [{"chunk_id": "other#9", "reason": "duplicate"}]
    assert len(ctx.chunks) == 3


def test_budget_smaller_than_the_skeleton_is_a_typed_error(llama_counter):
    with pytest.raises(BudgetTooSmallError, match="budget_tokens=20"):
        BudgetPacker(llama_counter).pack("What is it?", make_hits(3), 20)


def test_no_hits_gives_a_prompt_without_passages(llama_counter):
    ctx = BudgetPacker(llama_counter).pack("What is it?", [], 500)
    assert ctx.chunks == [] and "Question: What is it?" in ctx.prompt


def test_empty_query_is_a_typed_error(llama_counter):
    with pytest.raises(EmptyQueryError):
        BudgetPacker(llama_counter).pack(" \n", make_hits(3), 500)
