"""LangChain adapters: a retriever over a knowledge base, and a runnable giving a packed context.

    retriever = HybridCtxRetriever(pipeline=Pipeline.open("kb/"), k=20, principal="alice")
    docs = retriever.invoke("retry backoff")                 # or .invoke(query, k=5, filters={...})
    docs = await retriever.ainvoke("retry backoff")          # async: off the event loop (Pipeline.aretrieve)
    chain = {"context": packed_context(pipeline, budget_tokens=8000), "question": RunnablePassthrough()} | prompt | llm

The principal is set when the adapter is built, never per call. Install with the `langchain` extra.
"""

from __future__ import annotations

from typing import Any

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable, RunnableLambda
except ImportError as exc:  # pragma: no cover - the extra is missing
    from hybridctx.errors import ModelUnavailableError

    raise ModelUnavailableError(
        "the LangChain adapters need the langchain extra: pip install 'hybridctx[langchain]'"
    ) from exc
from pydantic import ConfigDict

from hybridctx import Hit, Pipeline
from hybridctx_connectors.tools import quoted_passages


class HybridCtxRetriever(BaseRetriever):
    """Hybrid (dense + BM25) retrieval from a hybridctx knowledge base, as LangChain `Document`s
    whose metadata carries the source, offsets, lines, score and rank."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pipeline: Pipeline
    k: int = 10
    filters: dict[str, Any] | None = None
    principal: str | None = None

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: dict[str, Any] | None = None,
    ) -> list[Document]:
        return _documents(self.pipeline.retrieve(
            query, k=k or self.k, filters=filters if filters is not None else self.filters, principal=self.principal
        ))

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filters: dict[str, Any] | None = None,
    ) -> list[Document]:
        return _documents(await self.pipeline.aretrieve(
            query, k=k or self.k, filters=filters if filters is not None else self.filters, principal=self.principal
        ))


def _documents(hits: list[Hit]) -> list[Document]:
    return [
        Document(
            id=hit.chunk.id,
            page_content=hit.chunk.text,
            metadata={
                **hit.chunk.metadata,
                "source": hit.chunk.source,
                "doc_id": hit.chunk.doc_id,
                "chunk_id": hit.chunk.id,
                "start": hit.chunk.start,
                "end": hit.chunk.end,
                "start_line": hit.chunk.start_line,
                "end_line": hit.chunk.end_line,
                "score": hit.score,
                "rank": hit.rank,
            },
        )
        for hit in hits
    ]


def packed_context(
    pipeline: Pipeline, budget_tokens: int = 8192, principal: str | None = None, filters: dict[str, Any] | None = None
) -> Runnable[str, str]:
    """A runnable from a question to its packed, deduplicated, cited passages (the quoted
    documents of hybridctx's prompt, without its instructions and question)."""

    def pack(question: str) -> str:
        ctx = pipeline.pack(question, budget_tokens=budget_tokens, filters=filters, principal=principal)
        return quoted_passages(pipeline, ctx)

    async def apack(question: str) -> str:
        ctx = await pipeline.apack(question, budget_tokens=budget_tokens, filters=filters, principal=principal)
        return quoted_passages(pipeline, ctx)

    return RunnableLambda(pack, afunc=apack, name="hybridctx_packed_context")
