"""Generation with the real embedded model, and citations read back from answers."""

from __future__ import annotations

import pytest

from hybridctx.errors import InvalidArgumentError
from hybridctx.generate import cite
from hybridctx.pack import Packer
from hybridctx.schema import Chunk, Hit, PackedContext, Passage


def context_of(*texts):
    chunks = [
        Chunk(id=f"d{i}#0", doc_id=f"d{i}", text=t, start=0, end=len(t), start_line=1, end_line=1,
              token_count=10, metadata={"source": f"d{i}.md"})
        for i, t in enumerate(texts)
    ]
    passages = [
        Passage(number=i + 1, doc_id=c.doc_id, source=c.source, text=c.text, start=c.start, end=c.end,
                start_line=1, end_line=1, chunk_ids=[c.id])
        for i, c in enumerate(chunks)
    ]
    return PackedContext(query="q", prompt="p", chunks=chunks, passages=passages, token_count=1, budget_tokens=10,
                         prefix_token_count=0)


def test_explicit_markers_become_citations_and_unknown_ones_are_dropped():
    ctx = context_of("alpha text", "beta text", "gamma text")
    citations = cite("It is alpha [1], also gamma [3, 1] but not [7].", ctx)
    assert [(c.passage, c.chunk_ids, c.explicit) for c in citations] == [(1, ["d0#0"], True), (3, ["d2#0"], True)]
    assert citations[0].location == "d0.md:1-1"


def test_answer_without_markers_is_attributed_by_overlap():
    ctx = context_of("Tomatoes need six hours of sunlight.", "The client retries seven times with backoff.")
    [citation] = cite("The client retries seven times.", ctx)
    assert (citation.chunk_ids, citation.explicit) == (["d1#0"], False)
    assert cite("Completely unrelated words here.", ctx) == []
    assert cite("", ctx) == []


FACT = (
    "Zephyr configuration guide. The Zephyr client retries a failed request up to 7 times. "
    "Configure retries with the setting zephyr.max_retries."
)


@pytest.mark.slow
def test_embedded_model_answers_from_the_context_and_reports_usage(backend, llama_counter):
    hit = Hit(chunk=Chunk(id="guide#0", doc_id="guide", text=FACT, start=0, end=len(FACT), start_line=1,
                          end_line=1, token_count=30, metadata={"source": "guide.md"}), score=1.0, rank=1)
    ctx = Packer(llama_counter).pack("How many times does the Zephyr client retry a request?", [hit], 1000)
    first = backend.generate(ctx, max_new_tokens=24)
    assert first.text
    assert "7" in first.text or "seven" in first.text.lower()
    assert first.usage.prompt_tokens == ctx.token_count  # the packer counted what the model read
    assert 0 < first.usage.generated_tokens <= 24
    pieces: list[str] = []
    again = backend.generate(ctx, max_new_tokens=24, on_text=pieces.append)
    assert "7" in again.text or "seven" in again.text.lower()
    assert len(pieces) > 1 and "".join(pieces).strip() == again.text  # streamed as it was generated
    assert again.usage.cached_tokens >= ctx.prefix_token_count  # llama.cpp reused the prompt's KV cache


@pytest.mark.slow
def test_prompt_longer_than_the_window_is_refused(backend):
    ctx = context_of("x")
    long = ctx.model_copy(update={"prompt": "word " * 5000})
    with pytest.raises(InvalidArgumentError, match="context window"):
        backend.generate(long, max_new_tokens=10)


@pytest.mark.slow
def test_a_packaged_model_is_assembled_once_into_the_cache(tmp_path):
    from hybridctx.generate.models import PACKAGED, gguf_file

    path = gguf_file("gemma-3-270m", tmp_path)
    assert path == tmp_path / "models" / PACKAGED["gemma-3-270m"].file
    assert path.read_bytes()[:4] == b"GGUF" and path.stat().st_size == PACKAGED["gemma-3-270m"].size
    stamp = path.stat().st_mtime_ns
    assert gguf_file("gemma-3-270m", tmp_path) == path and path.stat().st_mtime_ns == stamp
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_parts_that_do_not_hash_to_the_pinned_sum_are_refused_and_leave_nothing(tmp_path):
    from dataclasses import replace

    from hybridctx.errors import ModelUnavailableError
    from hybridctx.generate.models import PACKAGED, packaged_gguf

    tampered = replace(PACKAGED["gemma-3-270m"], sha256="0" * 64)
    with pytest.raises(ModelUnavailableError, match="SHA-256"):
        packaged_gguf(tampered, tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_model_that_is_neither_packaged_nor_a_file_is_named_in_the_error(tmp_path):
    from hybridctx.errors import ModelUnavailableError
    from hybridctx.generate.models import gguf_file

    with pytest.raises(ModelUnavailableError, match="no-such-model"):
        gguf_file("no-such-model", tmp_path)


@pytest.mark.slow
def test_a_session_follow_up_reuses_the_cached_prefix(open_pipe, corpus):
    pipe = open_pipe()
    pipe.add(corpus)
    session = pipe.session()
    first = session.ask("How many times does the Zephyr client retry?", budget_tokens=700, max_new_tokens=24)
    second = session.ask("How much sunlight do tomatoes need?", budget_tokens=700, max_new_tokens=24)
    shown_first = first.context.prompt[: first.context.prompt.rindex("</passage>") + len("</passage>\n\n")]
    assert second.context.prompt.startswith(shown_first)
    assert second.context.prefix_token_count > first.context.prefix_token_count
    assert second.usage.cached_tokens >= second.context.prefix_token_count
    assert second.usage.prompt_tokens == second.context.token_count <= 700 - 24
