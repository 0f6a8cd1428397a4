"""Pipeline with the real embedding model: add, persistence, idempotence, filters, ACL, errors."""

from __future__ import annotations

import pytest
from conftest import count_retrievals

from hybridctx import Document, Pipeline
from hybridctx.errors import (
    EmbeddingModelMismatchError,
    EmptyQueryError,
    InvalidArgumentError,
    KnowledgeBaseFormatError,
    KnowledgeBaseLockedError,
    SourceNotFoundError,
)

pytestmark = pytest.mark.slow


def top_source(pipe, query, **kwargs):
    return pipe.retrieve(query, k=3, **kwargs)[0].chunk.metadata["name"]


def test_add_folder_then_retrieve_the_planted_fact(open_pipe, corpus):
    pipe = open_pipe()
    report = pipe.add(corpus)
    assert report.documents_added == 4 and not report.failed
    assert report.chunks_added >= 4 and report.tokens_added > 50
    assert set(report.seconds) >= {"read", "chunk", "embed", "write"}
    assert top_source(pipe, "How many times does the client retry a request?") == "retries.md"
    assert top_source(pipe, "how much sun do tomato plants need") == "garden.md"
    hit = pipe.retrieve("speed of light", k=1)[0]
    text = (corpus / "physics.txt").read_text()
    assert hit.chunk.text == text[hit.chunk.start : hit.chunk.end]
    assert hit.rank == 1 and 0 < hit.score <= 1.0001


def test_reopen_finds_everything_and_readd_is_a_no_op(open_pipe, corpus):
    pipe = open_pipe()
    first = pipe.add(corpus)
    pipe.close()
    again = open_pipe()
    assert again.stats() == {"documents": 4, "chunks": first.chunks_added}
    report = again.add(corpus)
    assert report.documents_unchanged == 4 and report.documents_added == 0 and report.chunks_added == 0
    assert again.stats()["chunks"] == first.chunks_added


def test_changed_document_replaces_its_old_chunks(open_pipe, corpus):
    pipe = open_pipe()
    pipe.add(corpus)
    chunks_before = pipe.stats()["chunks"]
    (corpus / "garden.md").write_text("# Growing peppers\n\nPeppers like warm soil above 18 degrees.\n")
    report = pipe.add(corpus)
    assert report.documents_replaced == 1 and report.documents_unchanged == 3
    assert pipe.stats()["chunks"] == chunks_before  # one chunk out, one in
    texts = [h.chunk.text for h in pipe.retrieve("tomatoes sunlight", k=50)]
    assert not any("Tomatoes" in t for t in texts)
    assert any("Peppers" in t for t in texts)


def test_delete_removes_a_document_everywhere(open_pipe, corpus):
    pipe = open_pipe()
    pipe.add(corpus)
    doc_id = str((corpus / "physics.txt").resolve())
    assert pipe.delete(doc_id) >= 1
    assert all(h.chunk.doc_id != doc_id for h in pipe.retrieve("speed of light", k=50))
    pipe.close()
    assert all(h.chunk.doc_id != doc_id for h in open_pipe().retrieve("speed of light", k=50))


def test_documents_texts_and_metadata_filters(open_pipe):
    pipe = open_pipe()
    docs = [
        Document(id=f"note-{i}", text=f"Release note {i}: the Zephyr client now retries {i} times.",
                 metadata={"product": "zephyr" if i % 2 else "aurora", "tags": ["release", f"v{i}"]})
        for i in range(10)
    ]
    pipe.add(docs + ["A plain text item about retry configuration."])
    assert pipe.stats()["documents"] == 11
    zephyr = pipe.retrieve("retries", k=5, filters={"product": "zephyr"})
    assert len(zephyr) == 5, "a filter must not shrink results below k when enough chunks pass"
    assert {h.chunk.metadata["product"] for h in zephyr} == {"zephyr"}
    tagged = pipe.retrieve("retries", k=20, filters={"tags": ["v3", "v4"]})
    assert sorted(h.chunk.doc_id for h in tagged) == ["note-3", "note-4"]
    assert pipe.retrieve("retries", k=5, filters={"product": "nothing"}) == []
    with pytest.raises(InvalidArgumentError, match="filters"):
        pipe.retrieve("retries", filters={"bad key'": 1})
    with pytest.raises(InvalidArgumentError, match="filters"):
        pipe.retrieve("retries", filters=["product"])  # type: ignore[arg-type]  # not a mapping
    with pytest.raises(InvalidArgumentError, match="no document .* has the metadata key 'prodcut'"):
        pipe.retrieve("retries", filters={"prodcut": "zephyr"})  # a typo is named, not an empty answer
    pipe.delete("note-3")
    assert pipe.retrieve("retries", k=20, filters={"tags": "v3"}) == []  # a key once added stays known


def test_a_kb_made_before_metadata_keys_were_listed_lists_them_on_open(open_pipe, tmp_path):
    import sqlite3

    pipe = open_pipe()
    pipe.add([Document(id="a", text="The Zephyr client retries.", metadata={"product": "zephyr"})])
    pipe.close()
    with sqlite3.connect(tmp_path / "kb" / "chunks.sqlite") as db:  # as the store was before
        db.execute("DELETE FROM metadata_keys")
        db.execute("DELETE FROM meta WHERE key = 'metadata_keys'")
    pipe = open_pipe()
    assert [h.chunk.doc_id for h in pipe.retrieve("retries", filters={"product": "zephyr"})] == ["a"]


def test_acl_hides_documents_from_other_principals(open_pipe):
    pipe = open_pipe()
    secret = "The merger code name is BLUEHERON and it closes in March."
    pipe.add([
        Document(id="secret", text=secret, acl={"alice"}),
        *[Document(id=f"public-{i}", text=f"Public memo {i} about the company picnic.") for i in range(6)],
    ])
    for principal in (None, "bob"):
        hits = pipe.retrieve("merger code name BLUEHERON", k=50, principal=principal)
        assert hits and all(h.chunk.doc_id != "secret" for h in hits)
        ctx = pipe.pack("What is the merger code name?", principal=principal, budget_tokens=2000)
        assert "BLUEHERON" not in ctx.prompt
    assert pipe.retrieve("merger code name", k=1, principal="alice")[0].chunk.doc_id == "secret"
    assert len(pipe.retrieve("memo", k=6, principal="bob")) == 6


def test_bad_files_are_skipped_and_reported(open_pipe, corpus):
    (corpus / "empty.md").write_text("")
    (corpus / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    (corpus / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    report = open_pipe().add(corpus)
    reasons = {f.item.rsplit("/", 1)[-1]: f.reason for f in report.failed}
    assert set(reasons) == {"empty.md", "blob.txt", "latin1.txt"}
    assert "empty" in reasons["empty.md"] and "binary" in reasons["blob.txt"] and "UTF-8" in reasons["latin1.txt"]
    assert report.documents_added == 4


def test_missing_path_raises_before_writing(open_pipe, corpus, tmp_path):
    pipe = open_pipe()
    with pytest.raises(SourceNotFoundError, match="no-such-dir"):
        pipe.add([corpus, str(tmp_path / "no-such-dir" / "notes.md")])
    assert pipe.stats()["documents"] == 0


def test_empty_query_and_bad_k(open_pipe, corpus):
    pipe = open_pipe()
    pipe.add(corpus)
    with pytest.raises(EmptyQueryError):
        pipe.retrieve("   ")
    with pytest.raises(InvalidArgumentError, match="k"):
        pipe.retrieve("tomatoes", k=0)


def test_opening_with_another_embedding_model_is_refused(open_pipe, corpus, tmp_path):
    open_pipe().add(corpus)
    with pytest.raises(EmbeddingModelMismatchError, match="all-MiniLM-L6-v2"):
        Pipeline.open(tmp_path / "kb", embedding_model=str(tmp_path / "other-model"))


def test_a_folder_that_is_not_a_kb_is_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(KnowledgeBaseFormatError, match="not a hybridctx knowledge base"):
        Pipeline.open(tmp_path / "photos")


def test_second_writer_is_refused(open_pipe, corpus):
    pipe = open_pipe()
    with pipe.kb.writer():
        with pytest.raises(KnowledgeBaseLockedError, match="another process"):
            pipe.add(corpus)


class FailingEmbedder:
    """Fault injection: the real embedder, failing on its n-th call (as a crash mid-run would)."""

    def __init__(self, real, fail_on_call):
        self.real, self.fail_on_call, self.calls = real, fail_on_call, 0
        self.name, self.dimension, self.texts_per_call = real.name, real.dimension, real.texts_per_call

    def embed(self, texts):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("simulated crash while embedding")
        return self.real.embed(texts)

    def release(self):
        self.real.release()


def test_interrupted_add_keeps_committed_work_and_resumes(tmp_path, corpus, embedder, backend):
    docs = [Document(id=f"d{i}", text=f"Document {i} explains subject number {i}.") for i in range(12)]
    flaky = FailingEmbedder(embedder, fail_on_call=3)
    pipe = Pipeline.open(tmp_path / "kb", embedder=flaky, backend=backend, commit_every_chunks=4, show_progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipe.add(docs)
    pipe.close()
    reopened = Pipeline.open(tmp_path / "kb", embedder=embedder, backend=backend, show_progress=False)
    assert reopened.stats() == {"documents": 8, "chunks": 8}  # two commits of four landed
    assert len(reopened.kb.index) == 8
    report = reopened.add(docs)
    assert report.documents_unchanged == 8 and report.documents_added == 4
    assert reopened.stats() == {"documents": 12, "chunks": 12}
    assert len(reopened.kb.index) == 12
    assert sorted(p.name for p in (tmp_path / "kb").glob("dense-*")) == sorted(i.name for i in reopened.kb.index.infos)
    reopened.close()


def test_invalid_setting_overrides_are_a_typed_error(tmp_path):
    with pytest.raises(InvalidArgumentError, match="chunk_overlap_tokens"):
        Pipeline.open(tmp_path / "kb", chunk_tokens=64, chunk_overlap_tokens=64)
    assert not (tmp_path / "kb").exists()


def test_an_open_reader_sees_what_another_writer_committed(open_pipe, corpus):
    reader = open_pipe()
    assert reader.retrieve("tomatoes", k=5) == []
    writer = open_pipe()
    writer.add(corpus)
    assert reader.retrieve("how much sun do tomato plants need", k=1)[0].chunk.metadata["name"] == "garden.md"
    assert reader.stats() == writer.stats()


def test_a_corpus_that_fits_is_packed_whole(open_pipe, corpus):
    pipe = open_pipe()
    pipe.add(corpus)
    whole = pipe.pack("How long should bread dough be kneaded?", budget_tokens=2048)
    assert whole.recall == "whole_corpus"
    assert {p.source.rsplit("/", 1)[-1] for p in whole.passages} == {f.name for f in corpus.iterdir()}
    assert sum(len(p.chunk_ids) for p in whole.passages) == pipe.stats()["chunks"]
    tight = pipe.pack("How long should bread dough be kneaded?", budget_tokens=500, max_new_tokens=100)
    assert tight.recall == "retrieved" and tight.token_count <= 400
    assert any(d.reason == "over_budget" for d in tight.dropped)


def test_the_whole_corpus_route_respects_access_control(open_pipe):
    pipe = open_pipe()
    pipe.add([Document(id="secret", text="The vault code is 4417.", acl={"alice"}),
              Document(id="memo", text="The picnic is on Friday.")])
    for principal, visible in ((None, {"memo"}), ("bob", {"memo"}), ("alice", {"memo", "secret"})):
        ctx = pipe.pack("What is the vault code?", principal=principal)
        assert ctx.recall == "whole_corpus" and {p.doc_id for p in ctx.passages} == visible


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["map", "synthesis"])
def test_a_question_is_retrieved_once_however_many_windows_and_passages_it_reads(essays_kb, embedder, backend,
                                                                                 strategy):
    """The route of a question runs one way: the strategy packs its windows (and the passages it
    reads on their own) from one retrieval, then the model reads them."""
    from hybridctx import Pipeline

    with Pipeline.open(essays_kb, embedder=embedder, backend=backend, show_progress=False,
                       effective_context=400) as pipe:
        retrievals = count_retrievals(pipe)
        question = "What did the essay say about founders raising money from investors?"
        answer = pipe.ask(question, budget_tokens=2000, max_new_tokens=16, strategy=strategy)
    assert retrievals == [(question, 100)]  # recall_k(2000, 96): the classic generous 100
    assert answer.route in (strategy, "map_reduce")
