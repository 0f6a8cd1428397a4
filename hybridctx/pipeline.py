"""`Pipeline`: the public entry point. It wires the stages together and holds no stage logic.

    pipe = Pipeline.open("kb/")
    pipe.add(["docs/", "notes.md"])
    answer = pipe.ask("How do I configure retries?")
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hybridctx.chunk import StructuredChunker
from hybridctx.embed import Embedder, SentenceTransformerEmbedder, tokenizer_file
from hybridctx.errors import InvalidArgumentError, ModelUnavailableError
from hybridctx.generate import Backend, LlamaCppBackend, cite, unsupported_citations
from hybridctx.indexing import Indexer, refresh_facts
from hybridctx.kb import KnowledgeBase
from hybridctx.pack import Packer, PackSession, sketch_facts
from hybridctx.retrieve import DenseRetriever, HybridRetriever, LexicalRetriever, Retriever
from hybridctx.openai_backend import OpenAICompatibleBackend, OpenAISettings
from hybridctx.schema import AddReport, Answer, ChunkFacts, Hit, Ordering, PackedContext
from hybridctx.settings import Settings, Strategy
from hybridctx.sources import Item, iter_documents
from hybridctx.synthesis import FACTS_TEMPLATE, Synthesizer, self_route
from hybridctx.tokens import HFTokenizer
from hybridctx.vllm_backend import VLLMBackend, VLLMSettings


def build_embedder(settings: Settings) -> Embedder:
    """The embedding model the settings name (it loads on first use)."""
    return SentenceTransformerEmbedder(
        settings.embedding_model, device=settings.device, batch_size=settings.embedding_batch_size
    )


def build_backend(settings: Settings) -> Backend:
    """The generating backend the settings describe: vLLM, an OpenAI-compatible server, or the
    embedded model (each starts its model on first use)."""
    if isinstance(settings.backend, VLLMSettings):
        return VLLMBackend(settings.backend)
    if isinstance(settings.backend, OpenAISettings):
        return OpenAICompatibleBackend(settings.backend)
    return LlamaCppBackend(
        cache_dir=settings.cache_dir, context_window=settings.context_window, threads=settings.generator_threads
    )


class Pipeline:
    """A persistent knowledge base with the stages that fill and query it.

    Models load lazily: opening a KB is fast; the embedding model loads on the first
    `add`/`retrieve`, the generating model on the first `ask`.
    """

    def __init__(
        self,
        path: str | Path,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self._embedder = embedder
        self._backend = backend
        self._owns_backend = backend is None  # made here on first use: closed by close()
        # The embedding model is loaded here only to size a new KB; an existing one has a manifest.
        self.embedding_model = embedder.name if embedder is not None else self.settings.embedding_model
        self.kb = KnowledgeBase.open(
            path, self.embedding_model, dimension=lambda: self.embedder.dimension,
            mmap_index=self.settings.mmap_index,
        )

    @classmethod
    def open(
        cls,
        path: str | Path,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        backend: Backend | None = None,
        **overrides: Any,
    ) -> Pipeline:
        """Create or open the knowledge base at `path`; keyword overrides replace settings fields.

        `embedder` and `backend` replace the defaults built from the settings (e.g. to share
        one loaded model between pipelines, or to use vLLM).
        """
        settings = settings or Settings()
        if overrides:
            try:
                settings = Settings(**{**settings.model_dump(), **overrides})
            except ValidationError as exc:
                raise InvalidArgumentError(f"Pipeline.open: invalid settings: {exc}") from exc
        return cls(path, settings, embedder=embedder, backend=backend)

    # -- stages, built on first use -------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = build_embedder(self.settings)
        return self._embedder

    @cached_property
    def chunker(self) -> StructuredChunker:
        tokenizer = HFTokenizer(tokenizer_file(self.embedding_model))
        return StructuredChunker(tokenizer, self.settings.chunk_tokens, self.settings.chunk_overlap_tokens)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = build_backend(self.settings)
        return self._backend

    @cached_property
    def retriever(self) -> Retriever:
        s = self.settings
        if s.retrieval == "lexical":
            return LexicalRetriever(self.kb)
        dense = DenseRetriever(self.kb, self.embedder)
        if s.retrieval == "dense":
            return dense
        return HybridRetriever(dense, LexicalRetriever(self.kb), s.dense_weight, s.lexical_weight, s.rrf_k)

    @cached_property
    def packer(self) -> Packer:
        return Packer(
            self.backend.token_counter(), near_duplicate_threshold=self.settings.near_duplicate_threshold,
            follow_up_share=self.settings.follow_up_share,
        )

    @cached_property
    def synthesizer(self) -> Synthesizer:
        facts_packer = Packer(
            self.backend.token_counter(), FACTS_TEMPLATE, near_duplicate_threshold=self.settings.near_duplicate_threshold
        )
        return Synthesizer(self.backend, facts_packer, self.packer.template)

    # -- public API ------------------------------------------------------------------
    def add(self, items: Item | Iterable[Item]) -> AddReport:
        """Index documents, texts, files/folders or a Source; unchanged documents are skipped."""
        documents = iter_documents(items, self.settings.max_file_bytes)  # raises now if a path does not exist
        indexer = Indexer(
            self.kb, self.chunker, self.embedder,
            commit_every_chunks=self.settings.commit_every_chunks,
            show_progress=self.settings.show_progress,
            facts=self._chunk_facts()[0],
        )
        return indexer.add(documents)

    def refresh_facts(self) -> int:
        """Store what the packer needs to know of each chunk (`Chunk.facts`) where it is missing
        (a KB indexed before hybridctx stored it) or counted for another model than this
        pipeline's, so that packing them does no tokenizing; returns how many chunks. `add`
        stores it for what it adds; this is for a KB upgraded or given a new model."""
        facts, reader = self._chunk_facts()
        return refresh_facts(self.kb, facts, reader, show_progress=self.settings.show_progress)

    def _chunk_facts(self) -> tuple[Callable[[Sequence[str]], list[ChunkFacts]], int | None]:
        """What the indexer stores for the packer with each chunk, and the reader its counts are
        for: the generating model's, unless its tokenizer is not at hand (packing counts then)."""
        try:
            return self.packer.chunk_facts, self.packer.reader
        except ModelUnavailableError as exc:
            warnings.warn(f"chunks are stored without their token counts ({exc}); packing will count them", stacklevel=3)
            return sketch_facts, None

    def delete(self, doc_ids: str | Sequence[str]) -> int:
        """Delete documents by id; returns the number of chunks removed."""
        ids = [doc_ids] if isinstance(doc_ids, str) else list(doc_ids)
        with self.kb.writer() as writer:
            removed = writer.delete_documents(ids)
            writer.commit()
        return removed

    def retrieve(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None, principal: str | None = None
    ) -> list[Hit]:
        return self.retriever.retrieve(query, self.settings.k if k is None else k, filters, principal)

    def pack(
        self,
        query: str,
        budget_tokens: int | None = None,
        hits: Sequence[Hit] | None = None,
        filters: Mapping[str, Any] | None = None,
        principal: str | None = None,
        *,
        ordering: Ordering | None = None,
        max_new_tokens: int | None = None,
        session: PackSession | None = None,
    ) -> PackedContext:
        """Pack a prompt of at most `budget_tokens - max_new_tokens` tokens (room is kept for the answer).

        Without `hits`: when everything the principal may read is small enough to fit, all of
        it is packed (`route="whole_corpus"`, no retrieval loss); otherwise a generous
        retrieval (`settings.k`) is packed.
        """
        s = self.settings
        budget = s.budget_tokens if budget_tokens is None else budget_tokens
        reserve = s.max_new_tokens if max_new_tokens is None else max_new_tokens
        whole_corpus = False
        if hits is None:
            hits, whole_corpus = self._candidates(query, budget, filters, principal)
        context = self.packer.pack(
            query, hits, budget, reserve_tokens=reserve, ordering=ordering or s.ordering, session=session
        )
        if whole_corpus and not any(d.reason == "over_budget" for d in context.dropped):
            context = context.model_copy(update={"route": "whole_corpus"})
        return context

    def _candidates(
        self, query: str, budget: int, filters: Mapping[str, Any] | None, principal: str | None
    ) -> tuple[list[Hit], bool]:
        """A generous retrieval; everything the principal may read when it is about the budget's size."""
        k = self.settings.k
        chunks, tokens = self.kb.store.visible_size(filters, principal)
        # Token counts are the embedding model's; the packer decides with the reader's.
        whole_corpus = 0 < chunks and tokens <= 1.5 * budget
        if whole_corpus:
            k = max(k, chunks)
        return self.retrieve(query, k=k, filters=filters, principal=principal), whole_corpus

    def ask(
        self,
        query: str,
        budget_tokens: int | None = None,
        filters: Mapping[str, Any] | None = None,
        principal: str | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        *,
        ordering: Ordering | None = None,
        strategy: Strategy | None = None,
    ) -> Answer:
        """Retrieve, pack and generate; the backend refuses a prompt that overflows its window.

        `strategy` (default `settings.strategy`): "direct" answers from one packed prompt;
        "synthesis" lists the facts with their passages first, over several windows when the
        retrieved material exceeds one (map-reduce); "self_route" answers directly and, when
        the model says the documents do not contain the answer, again by synthesis over the
        model's whole window (`Answer.escalated`).
        """
        strategy = strategy or self.settings.strategy
        max_new = self.settings.max_new_tokens if max_new_tokens is None else max_new_tokens

        def direct() -> Answer:
            context = self.pack(
                query, budget_tokens, filters=filters, principal=principal, ordering=ordering, max_new_tokens=max_new
            )
            return self.generate(context, max_new_tokens=max_new, temperature=temperature)

        def synthesis(budget: int) -> Answer:
            hits, _ = self._candidates(query, budget, filters, principal)
            return self.synthesizer.answer(
                query, hits, budget, max_new, max_windows=self.settings.max_windows, temperature=temperature
            )

        if strategy == "direct":
            return direct()
        if strategy == "synthesis":
            return synthesis(self.settings.budget_tokens if budget_tokens is None else budget_tokens)
        if strategy == "self_route":
            return self_route(direct, lambda: synthesis(self.backend.context_window))
        raise InvalidArgumentError(f"strategy must be direct, synthesis or self_route, got {strategy!r}")

    def session(
        self, filters: Mapping[str, Any] | None = None, principal: str | None = None, ordering: Ordering | None = None
    ) -> Session:
        """A conversation about the same material: each follow-up keeps the passages already
        shown in place and appends what it adds, so the prompt prefix (and the model's KV
        cache of it) carries over and each question pays only for new tokens."""
        return Session(self, filters, principal, ordering)

    def generate(self, context: PackedContext, max_new_tokens: int | None = None, temperature: float = 0.0) -> Answer:
        """Answer from an already packed context (what `ask` does after `pack`)."""
        max_new = self.settings.max_new_tokens if max_new_tokens is None else max_new_tokens
        generation = self.backend.generate(context, max_new_tokens=max_new, temperature=temperature)
        return Answer(
            text=generation.text,
            citations=cite(generation.text, context),
            context=context,
            usage=generation.usage,
            unsupported_citations=unsupported_citations(generation.text, context),
        )

    def rebuild_index(self) -> str:
        """Merge the dense index segments into one, retrained on the current vectors as the type
        their number calls for, and return its FAISS type. Commits merge segments of similar
        size by themselves as the KB grows; this is for a KB whose content changed much
        through deletes and updates, or for the fastest searches (one segment)."""
        with self.kb.writer() as writer:
            writer.rebuild_index()
            writer.commit()
        return self.kb.index.spec

    def stats(self) -> dict[str, int]:
        documents, chunks = self.kb.store.counts()
        return {"documents": documents, "chunks": chunks}

    def close(self) -> None:
        self.kb.close()
        close_backend = getattr(self._backend, "close", None)
        if self._owns_backend and close_backend is not None:
            close_backend()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Session:
    """Follow-up questions sharing one growing prompt; made by `Pipeline.session()`."""

    def __init__(
        self, pipeline: Pipeline, filters: Mapping[str, Any] | None, principal: str | None, ordering: Ordering | None
    ) -> None:
        self.pipeline = pipeline
        self.filters = filters
        self.principal = principal
        self.ordering = ordering
        self.state = pipeline.packer.session()

    def pack(self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None) -> PackedContext:
        return self.pipeline.pack(
            query, budget_tokens, filters=self.filters, principal=self.principal, ordering=self.ordering,
            max_new_tokens=max_new_tokens, session=self.state,
        )

    def ask(
        self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None, temperature: float = 0.0
    ) -> Answer:
        context = self.pack(query, budget_tokens, max_new_tokens)
        return self.pipeline.generate(context, max_new_tokens=max_new_tokens, temperature=temperature)
