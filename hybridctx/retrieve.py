"""Retrieve stage: a query to ranked Hits, with metadata filters and access control applied
inside each search (so filtering never silently returns fewer than k allowed chunks).

Three retrievers share one interface: dense (FAISS over embeddings), lexical (BM25 over
the chunk texts, tantivy) and hybrid (both, fused by reciprocal rank fusion). Hybrid is the
default: dense retrieval finds paraphrases, lexical retrieval finds rare exact terms
(error codes, function names, part numbers, names) that embeddings blur.
"""

from __future__ import annotations

from typing import Literal, Protocol

from hybridctx.embed import Embedder
from hybridctx.errors import EmptyQueryError, InvalidArgumentError
from hybridctx.index.kb import KnowledgeBase
from hybridctx.schema import MAX_K, Chunk, Hit, Scope
from hybridctx.text import names, sentences

RetrievalMode = Literal["hybrid", "dense", "lexical"]
DEFAULT_K = 100  # what `retrieve` returns when no k is asked for: the classic generous recall
_EVERYTHING = Scope()


class Retriever(Protocol):
    def retrieve(self, query: str, k: int, scope: Scope = _EVERYTHING) -> list[Hit]:
        """The `k` chunks `scope` sees that best match `query`, best first (rank 1)."""
        ...


def _check(query: str, k: int) -> None:
    """Every retriever's arguments, checked before any index sees them."""
    if not isinstance(query, str):
        raise InvalidArgumentError(f"query must be a string, got {type(query).__name__}")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no index can hold or match it
        raise InvalidArgumentError(f"query is not valid Unicode text: {exc.reason} at {exc.start}") from exc
    if not query.strip():
        raise EmptyQueryError()
    if not isinstance(k, int) or isinstance(k, bool):
        raise InvalidArgumentError(f"k must be a whole number, got {k!r}")
    if not 1 <= k <= MAX_K:
        raise InvalidArgumentError(f"k must be between 1 and {MAX_K:,} (hybridctx.schema.MAX_K), got {k:,}")


def _hits(found: list[tuple[Chunk, float]]) -> list[Hit]:
    return [Hit(chunk=chunk, score=score, rank=rank) for rank, (chunk, score) in enumerate(found, start=1)]


class DenseRetriever:
    def __init__(self, kb: KnowledgeBase, embedder: Embedder) -> None:
        self.kb = kb
        self.embedder = embedder

    def retrieve(self, query: str, k: int, scope: Scope = _EVERYTHING) -> list[Hit]:
        _check(query, k)
        vector = self.embedder.embed([query])[0]
        return _hits(self.kb.search(vector, k, scope))


class LexicalRetriever:
    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    def retrieve(self, query: str, k: int, scope: Scope = _EVERYTHING) -> list[Hit]:
        _check(query, k)
        return _hits(self.kb.search_lexical(query, k, scope))


class HybridRetriever:
    """Dense and lexical rankings fused by a convex combination of their scores, each scaled
    to 0..1 over its ranking (min-max): score = w_d * dense + w_l * lexical, the weights
    normalised to sum to 1; a chunk one ranking did not return scores 0 there.

    Scores, not ranks (reciprocal rank fusion, used before): RRF keeps only the order, so
    BM25's clear margin for the one chunk that names a rare key exactly (11.9 against 9.3
    for the look-alike keys of hard distractors) counted no more than the embedding's guess
    among near-identical sentences, and the fact fell to rank 5. On `bench/bench_retrieval.py`
    this fusion gave hit@10 0.926 (RRF 0.809), MRR 0.629 (0.513), hit@100 0.985 (the same),
    and no question family worse at hit@10; Bruch et al. (2023, "An Analysis of Fusion
    Functions for Hybrid Retrieval") found the same over BEIR.

    Each ranking is taken `max(k, fusion_depth)` deep before fusing, and scaled over that
    depth: so for every k up to `fusion_depth` the result is the first k of the same fused
    list (`k=5` is the first five of `k=100`), where cut at k, a chunk ranked well by both
    rankings but just below k by one of them lost that ranking's share."""

    def __init__(
        self,
        dense: DenseRetriever,
        lexical: LexicalRetriever,
        dense_weight: float = 1.0,
        lexical_weight: float = 1.0,
        fusion_depth: int = 100,
    ) -> None:
        if dense_weight < 0 or lexical_weight < 0 or dense_weight + lexical_weight == 0:
            raise InvalidArgumentError("fusion weights must be non-negative and not both zero")
        if fusion_depth < 1:
            raise InvalidArgumentError(f"fusion_depth must be at least 1, got {fusion_depth}")
        self.fusion_depth = fusion_depth
        total = dense_weight + lexical_weight
        self.rankings: list[tuple[Retriever, float]] = [
            (dense, dense_weight / total), (lexical, lexical_weight / total)
        ]

    def retrieve(self, query: str, k: int, scope: Scope = _EVERYTHING) -> list[Hit]:
        _check(query, k)
        fused: dict[str, float] = {}
        chunks: dict[str, Chunk] = {}
        for retriever, weight in self.rankings:
            if weight == 0:
                continue
            hits = retriever.retrieve(query, max(k, self.fusion_depth), scope)
            for hit, scaled in zip(hits, _min_max([hit.score for hit in hits]), strict=True):
                fused[hit.chunk.id] = fused.get(hit.chunk.id, 0.0) + weight * scaled
                chunks[hit.chunk.id] = hit.chunk
        best = sorted(fused, key=lambda chunk_id: -fused[chunk_id])[:k]
        return _hits([(chunks[chunk_id], fused[chunk_id]) for chunk_id in best])


def _min_max(scores: list[float]) -> list[float]:
    """Scores scaled to 0 (the lowest) .. 1 (the highest); all 1 when they are equal."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    return [(s - low) / (high - low) if high > low else 1.0 for s in scores]


class MultiHopRetriever:
    """Follows the question's names (an identifier, a code, a number) and chains of facts
    (X = Y; Y = 7).

    - The question's names, looked up exactly (a lexical search for them alone), rank just
      below the best hit: in the first ranking the question's prose outweighs them. RULER's
      variable tracking at 4k lost 3 of its 4 links so: the chunk naming "82517" ranked 24th,
      behind essays about variables, and its links below it fell out of the pack.
    - Then the sentences of the hits that mention a name of the question name new things: a
      lexical search for those, and again for what that finds, up to `max_hops` times.

    Each link ranks just below the best hit that named it, never above: summing the hops'
    ranks instead put a chunk two hops found (via "255", then "240") first for the demo's
    colour question, above the first retrieval's answer. A question without names costs
    nothing more. With one retrieval, variable tracking had 0.25 of its chain in the prompt
    at 4k and 16k: the later links share no word with the question."""

    def __init__(
        self, first: Retriever, lexical: LexicalRetriever, max_hops: int = 3, hop_k: int = 10, rrf_k: int = 60
    ) -> None:
        if max_hops < 1 or hop_k < 1:
            raise InvalidArgumentError(f"max_hops and hop_k must be at least 1, got {max_hops} and {hop_k}")
        self.first = first
        self.lexical = lexical
        self.max_hops = max_hops
        self.hop_k = hop_k
        self.rrf_k = rrf_k

    def retrieve(self, query: str, k: int, scope: Scope = _EVERYTHING) -> list[Hit]:
        hits = self.first.retrieve(query, k, scope)
        seen = names(query)
        if not seen:
            return hits
        score = {hit.chunk.id: 1 / (self.rrf_k + hit.rank) for hit in hits}
        chunks = {hit.chunk.id: hit.chunk for hit in hits}

        def links(wanted: set[str], parent: float) -> list[Hit]:
            """The lexical hits for `wanted`, each ranked just below `parent`'s score."""
            found = self.lexical.retrieve(" ".join(sorted(wanted)), self.hop_k, scope)
            for hit in found:
                inherited = parent * (self.rrf_k + 1) / (self.rrf_k + 1 + hit.rank)
                score[hit.chunk.id] = max(score.get(hit.chunk.id, 0.0), inherited)
                chunks[hit.chunk.id] = hit.chunk
            return found

        latest, wanted = [*hits, *links(seen, 1 / (self.rrf_k + 1))], seen
        for _ in range(self.max_hops):
            parent = 0.0  # the best score of a hit naming something new: the links rank just below it
            named: set[str] = set()
            for hit in latest:  # all first-round hits: a rare number ranks low against the prose of a question
                for sentence in sentences(hit.chunk.text):
                    found = names(sentence)
                    if found & wanted and found - seen:
                        named |= found
                        parent = max(parent, score[hit.chunk.id])
            wanted = named - seen
            if not wanted:
                break
            seen |= wanted
            latest = links(wanted, parent)
        best = sorted(score, key=lambda chunk_id: -score[chunk_id])[:k]
        return _hits([(chunks[chunk_id], score[chunk_id]) for chunk_id in best])


def build_retriever(
    kb: KnowledgeBase, embedder: Embedder, mode: RetrievalMode = "hybrid", *, dense_weight: float = 1.0,
    lexical_weight: float = 1.0, fusion_depth: int = 100, hops: int = 3, rrf_k: int = 60,
) -> Retriever:
    """The retriever `Settings.retrieval` names over `kb`, following names `hops` times (0: one retrieval)."""
    lexical = LexicalRetriever(kb)
    first: Retriever
    if mode == "lexical":
        first = lexical
    elif mode == "dense":
        first = DenseRetriever(kb, embedder)
    else:
        first = HybridRetriever(DenseRetriever(kb, embedder), lexical, dense_weight, lexical_weight, fusion_depth)
    return MultiHopRetriever(first, lexical, hops, rrf_k=rrf_k) if hops else first
