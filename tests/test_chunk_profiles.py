"""What the knowledge base stores for the packer at index time (`Chunk.profile`): it must be
what the packer would work out itself, be used only where it is valid, and save the work."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from conftest import FACTS

from hybridctx import Pipeline, Settings
from hybridctx.generate.vllm import VLLMSettings
from hybridctx.pack import Packer
from hybridctx.pack.dedup import exact_key, sketch_batch
from hybridctx.schema import Hit
from hybridctx.tokens import TiktokenCounter

QUESTION = "How many times does the Zephyr client retry a failed request?"


class Recording:
    """A counter that remembers every text it was asked to count."""

    def __init__(self, counter):
        self.counter = counter
        self.key = getattr(counter, "key", None)
        self.texts: list[str] = []

    def count(self, text):
        return self.count_many([text])[0]

    def count_many(self, texts):
        self.texts += texts
        return self.counter.count_many(texts)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, embedder, backend):
    documents = dict(FACTS)
    # Long enough for neighbouring chunks, and a near copy for the dedup sketches to matter.
    documents["handbook.md"] = "\n\n".join(
        f"Section {i}. The office at site {i} opens at {7 + i % 3} am and closes at {16 + i % 4} pm." for i in range(60)
    )
    documents["handbook-copy.md"] = documents["handbook.md"].replace("Section 7.", "Part 7.")
    folder = tmp_path_factory.mktemp("corpus")
    for name, text in documents.items():
        (folder / name).write_text(text)
    with Pipeline.open(tmp_path_factory.mktemp("kb"), embedder=embedder, backend=backend, show_progress=False,
                       chunk_tokens=48, chunk_overlap_tokens=8) as pipe:
        pipe.add(folder)
        yield pipe


def without_profiles(hits: list[Hit]) -> list[Hit]:
    return [h.model_copy(update={"chunk": h.chunk.model_copy(update={"profile": None})}) for h in hits]


def test_retrieved_chunks_carry_what_the_packer_would_work_out(pipe, llama_counter):
    hits = pipe.retrieve(QUESTION, k=200)
    assert len(hits) > 40
    packer = Packer(llama_counter, pipe.packer.template)
    texts = [h.chunk.text for h in hits]
    sketches = sketch_batch(texts)
    for hit, sketch in zip(hits, sketches, strict=True):
        profile = hit.chunk.profile
        assert profile is not None and profile.chars == len(hit.chunk.text)
        assert profile.reader == packer.reader is not None
        assert profile.tokens == llama_counter.count(packer.template.body(hit.chunk.text.strip()))
        assert profile.exact == exact_key(hit.chunk.text)
        assert np.array_equal(np.frombuffer(profile.signature, dtype="<u4"), sketch.signature)
        assert np.array_equal(np.frombuffer(profile.shingles, dtype="<u4"), sketch.shingles)


@pytest.mark.parametrize("budget", [600, 1500, 3000])
def test_stored_profiles_change_nothing_but_the_work(pipe, llama_counter, budget):
    hits = pipe.retrieve(QUESTION, k=200)
    stored, bare = Recording(llama_counter), Recording(llama_counter)
    with_profiles = Packer(stored, pipe.packer.template).pack(QUESTION, hits, budget)
    computed = Packer(bare, pipe.packer.template).pack(QUESTION, without_profiles(hits), budget)
    assert with_profiles.prompt == computed.prompt and with_profiles.token_count == computed.token_count
    assert with_profiles.dropped == computed.dropped
    assert with_profiles.token_count == llama_counter.count(with_profiles.prompt) <= budget
    bodies = {Packer(llama_counter, pipe.packer.template).template.body(h.chunk.text.strip()) for h in hits}
    assert not bodies & set(stored.texts)  # no chunk was tokenized: the stored counts served
    assert bodies & set(bare.texts)


def test_counts_stored_for_another_reader_are_not_used(pipe, llama_counter):
    """The KB counted in the GGUF's tokens; a packer for an OpenAI-style reader must count itself."""
    hits = pipe.retrieve(QUESTION, k=200)
    counter = Recording(TiktokenCounter("cl100k_base"))
    packer = Packer(counter)
    assert packer.reader != hits[0].chunk.profile.reader
    context = packer.pack(QUESTION, hits, 1500)
    assert context.token_count == counter.counter.count(context.prompt) <= 1500
    assert {packer.template.body(c.text.strip()) for c in context.chunks} & set(counter.texts)


def test_profiles_of_a_text_changed_after_retrieval_are_not_used(pipe, llama_counter):
    hits = pipe.retrieve(QUESTION, k=20)
    longer = " and then it waits for a long, long time" * 8
    changed = [h.model_copy(update={"chunk": h.chunk.model_copy(update={"text": h.chunk.text + longer})}) for h in hits]
    assert changed[0].chunk.profile is hits[0].chunk.profile  # model_copy keeps them: the packer must notice
    context = Packer(llama_counter, pipe.packer.template).pack(QUESTION, changed, 4000)
    assert context.token_count == llama_counter.count(context.prompt) <= 4000
    assert longer.strip() in context.prompt


def test_refresh_fills_in_the_profiles_an_older_kb_or_another_model_lacks(pipe, llama_counter):
    with sqlite3.connect(pipe.kb.store.path) as db:
        db.execute("DELETE FROM chunk_facts WHERE vector_id % 3 = 0")  # as a KB made before profile were stored
        db.execute("UPDATE chunk_facts SET reader = 12345, tokens = 1 WHERE vector_id % 3 = 1")  # another model's
        lacking = db.execute("SELECT COUNT(*) FROM chunks WHERE vector_id % 3 != 2").fetchone()[0]
    hits = pipe.retrieve(QUESTION, k=200)
    assert any(h.chunk.profile is None for h in hits)
    assert any(h.chunk.profile and h.chunk.profile.tokens == 1 for h in hits)
    # another model's counts are not taken
    context = Packer(llama_counter, pipe.packer.template).pack(QUESTION, hits, 1500)
    assert context.token_count == llama_counter.count(context.prompt) <= 1500

    assert pipe.refresh_profiles() == lacking > 0
    assert pipe.refresh_profiles() == 0  # nothing left to do
    packer = Packer(llama_counter, pipe.packer.template)
    for hit in pipe.retrieve(QUESTION, k=200):
        assert hit.chunk.profile.reader == packer.reader
        assert hit.chunk.profile.tokens == llama_counter.count(packer.template.body(hit.chunk.text.strip()))


def test_deleting_a_document_deletes_its_profiles(pipe):
    def profile_rows():
        with sqlite3.connect(pipe.kb.store.path) as db:
            return db.execute("SELECT COUNT(*) FROM chunk_facts").fetchone()[0], db.execute(
                "SELECT COUNT(*) FROM chunks").fetchone()[0]

    profiles_before, chunks_before = profile_rows()
    assert profiles_before == chunks_before
    doc_id = next(h.chunk.doc_id for h in pipe.retrieve("tomatoes sunlight", k=5) if "garden" in h.chunk.doc_id)
    removed = pipe.delete(doc_id)
    assert removed > 0
    assert profile_rows() == (profiles_before - removed, chunks_before - removed)


def test_without_the_generating_models_tokenizer_chunks_are_stored_without_counts(tmp_path, embedder):
    """Indexing on a machine that lacks the model (it lives on the GPU server) still works; the
    packer then counts."""
    settings = Settings(backend=VLLMSettings(model=str(tmp_path / "no-model"), max_model_len=4096), show_progress=False)
    with Pipeline.open(tmp_path / "kb", settings, embedder=embedder) as pipe:
        with pytest.warns(UserWarning, match="without their token counts"):
            pipe.add(list(FACTS.values()))
        hits = pipe.retrieve(QUESTION, k=10)
    assert hits and all(h.chunk.profile is not None for h in hits)
    assert all(h.chunk.profile.reader is None and h.chunk.profile.tokens is None for h in hits)
    context = Packer(TiktokenCounter("cl100k_base")).pack(QUESTION, hits, 800)
    assert "7 times" in context.prompt


def test_the_gguf_counter_counts_as_llama_cpp_tokenizes(backend, llama_counter):
    llama = backend._load(vocab_only=True)
    texts = ["", "a", "héllo wörld, naïve café 東京 🙂", "<start_of_turn>user\nhi<end_of_turn>", "word " * 20_000,
             '<passage id="12" source="docs/a.md" lines="1-9">\n']
    try:
        assert llama_counter.count_many(texts) == [len(llama.tokenize(t.encode(), add_bos=True, special=False))
                                                   for t in texts]
    finally:
        llama.close()
