"""Retrieve stage: a query to ranked Hits, with metadata filters and access control applied
inside the search (so filtering never silently returns fewer than k allowed chunks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from hybridctx.embed import Embedder
from hybridctx.errors import EmptyQueryError, InvalidArgumentError
from hybridctx.kb import KnowledgeBase
from hybridctx.schema import Hit


class Retriever(Protocol):
    def retrieve(
        self, query: str, k: int, filters: Mapping[str, Any] | None = None, principal: str | None = None
    ) -> list[Hit]: ...


class DenseRetriever:
    def __init__(self, kb: KnowledgeBase, embedder: Embedder) -> None:
        self.kb = kb
        self.embedder = embedder

    def retrieve(
        self, query: str, k: int, filters: Mapping[str, Any] | None = None, principal: str | None = None
    ) -> list[Hit]:
        if not query.strip():
            raise EmptyQueryError()
        if k < 1:
            raise InvalidArgumentError(f"k must be at least 1, got {k}")
        vector = self.embedder.embed([query])[0]
        found = self.kb.search(vector, k, filters, principal)
        return [Hit(chunk=chunk, score=score, rank=rank) for rank, (chunk, score) in enumerate(found, start=1)]
