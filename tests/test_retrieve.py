"""Hybrid retrieval with the real embedding model and a real tantivy index: identifiers,
persistence, incremental updates, filters and access control inside the lexical search,
and recovery of a lexical index left behind by an interrupted commit."""

from __future__ import annotations

import pytest

from hybridctx import Document
from hybridctx.errors import InvalidArgumentError

pytestmark = pytest.mark.slow

CODES = [f"E-{4400 + 7 * i}" for i in range(12)]
SENTENCES = [
    "The gateway drops idle connections after two minutes.",
    "Operators rotate the certificates every quarter.",
    "Retries back off exponentially up to thirty seconds.",
    "The load balancer checks health every five seconds.",
    "Logs are shipped to the central store each night.",
    "A failed handshake is retried once before alerting.",
]


def error_catalogue() -> list[Document]:
    """Incident notes on one subject, each naming its error code and the part it replaced."""
    notes = []
    for i, code in enumerate(CODES):
        body = " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(4))
        notes.append(Document(
            id=f"err-{code}",
            text=f"Incident note {i}. Error {code} was raised by the edge gateway. {body} "
                 f"The fix replaced part PN-{7000 + 37 * i}-X{i:02d}.",
            metadata={"team": "net" if i % 2 else "edge"},
        ))
    return notes


def top_doc(hits):
    return hits[0].chunk.doc_id if hits else None


def test_identifier_queries_need_the_lexical_ranking(open_pipe):
    hybrid = open_pipe(retrieval="hybrid", hops=0)  # single retrievals: multi-hop looks the code up exactly
    hybrid.add(error_catalogue())
    dense, lexical = open_pipe(retrieval="dense", hops=0), open_pipe(retrieval="lexical", hops=0)
    queries = [(f"err-{code}", f"error {code}") for code in CODES] + [
        (f"err-{CODES[i]}", f"part PN-{7000 + 37 * i}-X{i:02d}") for i in range(len(CODES))
    ]
    first = {"dense": 0, "lexical": 0, "hybrid": 0}
    in_top3 = dict(first)
    for doc_id, query in queries:
        for name, pipe in (("dense", dense), ("lexical", lexical), ("hybrid", hybrid)):
            ranked = [h.chunk.doc_id for h in pipe.retrieve(query, k=3)]
            first[name] += ranked[:1] == [doc_id]
            in_top3[name] += doc_id in ranked
    assert first["lexical"] == len(queries), first
    assert first["dense"] <= len(queries) // 2, first  # embeddings blur identifiers that differ in digits
    assert in_top3["hybrid"] == len(queries) > in_top3["dense"], in_top3  # fusion keeps every lexical find


LOOK_ALIKES = {  # a key, and keys one letter from it
    "Galhushus": ["Galhlshus", "Gallushus", "Galhushrs", "Galhusnus", "Calhushus"],
    "Tasfenren": ["Tasfenron", "Tasfemren", "Tosfenren", "Tasfenrem", "Tasfeuren"],
    "Lomiquist": ["Lomiquest", "Lomequist", "Lomiguist", "Lomiquisk", "Lamiquist"],
}


def test_the_chunk_naming_the_asked_key_exactly_ranks_first_among_look_alike_keys(open_pipe):
    """Hard distractors: one sentence about keys a letter apart. The embedding cannot tell
    them apart; BM25 can, by a clear margin, and score fusion keeps that margin (rank fusion
    did not: it put the fact below look-alikes that the embedding happened to rank higher)."""
    pipe = open_pipe()
    documents = []
    for key, others in LOOK_ALIKES.items():
        for n, name in enumerate([key, *others]):
            filler = " ".join(SENTENCES[(n + j) % len(SENTENCES)] for j in range(3))
            documents.append(Document(id=name, text=f"{filler} The special magic number for {name} is {n}{n}31."))
    pipe.add(documents)
    for key in LOOK_ALIKES:
        assert top_doc(pipe.retrieve(f"What is the special magic number for {key}?", k=3)) == key


def test_lexical_index_follows_adds_replacements_and_deletes_across_reopen(open_pipe):
    pipe = open_pipe(retrieval="lexical")
    pipe.add([Document(id="a", text="The quartz oscillator drifts by three parts per million."),
              Document(id="b", text="Sourdough starter needs feeding twice a day.")])
    pipe.add(Document(id="a", text="The rubidium standard drifts by one part per billion."))
    pipe.delete("b")
    reopened = open_pipe(retrieval="lexical")
    assert top_doc(reopened.retrieve("rubidium standard drift", k=3)) == "a"
    assert reopened.retrieve("quartz oscillator", k=3) == []
    assert reopened.retrieve("sourdough starter", k=3) == []


def test_filters_and_acl_apply_inside_the_lexical_search(open_pipe):
    pipe = open_pipe(retrieval="lexical")
    secret = Document(id="secret", text="Error E-9999: the vault handshake failed.", acl={"alice"})
    pipe.add([*error_catalogue(), secret])
    edge = pipe.retrieve("connection gateway handshake error", k=6, filters={"team": "edge"})
    assert len(edge) == 6 and {h.chunk.metadata["team"] for h in edge} == {"edge"}
    for principal in (None, "bob"):
        hits = pipe.retrieve("vault handshake E-9999", k=50, principal=principal)
        assert all(h.chunk.doc_id != "secret" for h in hits)
    assert top_doc(pipe.retrieve("vault handshake E-9999", k=3, principal="alice")) == "secret"


def test_a_lexical_index_ahead_of_the_store_is_rebuilt_by_the_next_writer(open_pipe):
    pipe = open_pipe(retrieval="lexical")
    pipe.add(error_catalogue())
    kb = pipe.kb
    # What a crash between the lexical commit and the SQLite commit leaves behind.
    with kb.writer():
        kb.lexical.stage(add=[(10**9, "phantom chunk about zebras", [])])
        kb.lexical.commit(kb.generation + 1)
    reader = open_pipe(retrieval="lexical")
    assert reader.retrieve("zebras", k=3) == [] and reader.retrieve("gateway", k=3) == []  # dense-only meanwhile
    reader.add(Document(id="new", text="A note about zebras in the gateway."))  # a writer rebuilds first
    assert [h.chunk.doc_id for h in reader.retrieve("zebras", k=3)] == ["new"]
    assert len(reader.retrieve("gateway handshake", k=20)) == len(CODES) + 1


def test_a_lexical_index_whose_chunks_lack_their_visibility_names_is_rebuilt_with_them(open_pipe):
    """A lexical index from before chunks carried their filter and reader names would filter
    every chunk out: it counts as stale (readers go dense-only) until a writer rebuilds it."""
    import tantivy

    from hybridctx.index import lexical as lexical_module

    pipe = open_pipe(retrieval="lexical")
    pipe.add([Document(id=f"n{i}", text=f"Gateway note {i} about handshakes.", metadata={"team": "ab"[i % 2]})
              for i in range(6)])
    kb = pipe.kb
    with kb.writer():  # the marker as an older hybridctx wrote it
        writer = kb.lexical._open_writer()
        writer.delete_documents_by_query(tantivy.Query.term_query(kb.lexical._schema, "kind", lexical_module._MARKER))
        marker = tantivy.Document()
        marker.add_text("kind", lexical_module._MARKER)
        marker.add_unsigned("generation", kb.generation)
        writer.add_document(marker)
        writer.commit()
    with pytest.warns(UserWarning, match="lexical index .* is behind its chunk store"):
        reader = open_pipe(retrieval="lexical")
    assert reader.kb.lexical.generation == -1 and reader.retrieve("gateway", k=3) == []
    reader.add(Document(id="late", text="One more gateway note.", metadata={"team": "a"}))  # a writer rebuilds first
    found = reader.retrieve("gateway handshakes", k=20, filters={"team": "a"})
    assert sorted(h.chunk.doc_id for h in found) == ["late", "n0", "n2", "n4"]


def test_fusion_weights_are_validated(open_pipe, tmp_path):
    from hybridctx.retrieve import HybridRetriever

    with pytest.raises(InvalidArgumentError, match="weights"):
        HybridRetriever(None, None, dense_weight=0, lexical_weight=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="dense_weight"):
        open_pipe(dense_weight=0.0, lexical_weight=0.0)


def test_the_loaded_embedding_model_is_exempt_from_full_garbage_collections(embedder):
    import gc

    # Full collections used to scan the model's objects in the middle of queries (retrieve p99).
    assert gc.get_freeze_count() > 100_000


def test_a_small_k_is_the_first_k_of_a_larger_one(open_pipe):
    pipe = open_pipe()
    pipe.add(error_catalogue())
    queries = ["error on the edge gateway", "certificate rotation", "how do retries back off?",
               "health checks of the load balancer", f"error {CODES[3]}", "part replaced after a failed handshake"]
    for query in queries:
        ranked = [h.chunk.id for h in pipe.retrieve(query, k=100)]
        for k in (1, 3, 5, 10):
            assert [h.chunk.id for h in pipe.retrieve(query, k=k)] == ranked[:k], (query, k)
    # Cut at k before fusing (a fusion depth of 1), the small k loses chunks the larger k ranks first.
    shallow = open_pipe(fusion_depth=1)
    assert any(
        [h.chunk.id for h in shallow.retrieve(q, k=3)] != [h.chunk.id for h in shallow.retrieve(q, k=100)][:3]
        for q in queries
    )
