"""Retrieve stage: a query to ranked Hits, with metadata filters and access control applied
inside each search (so filtering never silently returns fewer than k allowed chunks).

Three retrievers share one interface: dense (FAISS over embeddings), lexical (BM25 over
the chunk texts, tantivy) and hybrid (both, fused by reciprocal rank fusion). Hybrid is the
default: dense retrieval finds paraphrases, lexical retrieval finds rare exact terms
(error codes, function names, part numbers, names) that embeddings blur.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from hybridctx.embed import Embedder
from hybridctx.errors import EmptyQueryError, InvalidArgumentError
from hybridctx.kb import KnowledgeBase
from hybridctx.schema import Chunk, Hit

RetrievalMode = Literal["hybrid", "dense", "lexical"]


class Retriever(Protocol):
    def retrieve(
        self, query: str, k: int, filters: Mapping[str, Any] | None = None, principal: str | None = None
    ) -> list[Hit]: ...


def _check(query: str, k: int) -> None:
    if not query.strip():
        raise EmptyQueryError()
    if k < 1:
        raise InvalidArgumentError(f"k must be at least 1, got {k}")


def _hits(found: list[tuple[Chunk, float]]) -> list[Hit]:
    return [Hit(chunk=chunk, score=score, rank=rank) for rank, (chunk, score) in enumerate(found, start=1)]


class DenseRetriever:
    def __init__(self, kb: KnowledgeBase, embedder: Embedder) -> None:
        self.kb = kb
        self.embedder = embedder

    def retrieve(
        self, query: str, k: int, filters: Mapping[str, Any] | None = None, principal: str | None = None
    ) -> list[Hit]:
        _check(query, k)
        vector = self.embedder.embed([query])[0]
        return _hits(self.kb.search(vector, k, filters, principal))


class LexicalRetriever:
    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    def retrieve(
        self, query: str, k: int, filters: Mapping[str, Any] | None = None, principal: str | None = None
    ) -> list[Hit]:
        _check(query, k)
        return _hits(self.kb.search_lexical(query, k, filters, principal))


class HybridRetriever:
    """Dense and lexical rankings fused by reciprocal rank fusion:
    score = sum over rankings of weight / (rrf_k + rank). RRF needs no score calibration
    between BM25 and cosine similarity, and a chunk ranked well by either ranking rises."""

    def __init__(
        self,
        dense: DenseRetriever,
        lexical: LexicalRetriever,
        dense_weight: float = 1.0,
        lexical_weight: float = 1.0,
        rrf_k: int = 60,
    ) -> None:
        if dense_weight < 0 or lexical_weight < 0 or dense_weight + lexical_weight == 0:
            raise InvalidArgumentError("fusion weights must be non-negative and not both zero")
        self.rankings = [(dense, dense_weight), (lexical, lexical_weight)]
        self.rrf_k = rrf_k

    def retrieve(
        self, query: str, k: int, filters: Mapping[str, Any] | None = None, principal: str | None = None
    ) -> list[Hit]:
        _check(query, k)
        fused: dict[str, float] = {}
        chunks: dict[str, Chunk] = {}
        for retriever, weight in self.rankings:
            if weight == 0:
                continue
            for hit in retriever.retrieve(query, k, filters, principal):
                fused[hit.chunk.id] = fused.get(hit.chunk.id, 0.0) + weight / (self.rrf_k + hit.rank)
                chunks[hit.chunk.id] = hit.chunk
        best = sorted(fused, key=lambda chunk_id: -fused[chunk_id])[:k]
        return _hits([(chunks[chunk_id], fused[chunk_id]) for chunk_id in best])
