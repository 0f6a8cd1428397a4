"""The stages a `Pipeline` wires, each built from `Settings` on first use: opening a KB loads no
model; the embedding model loads on the first `add`/`retrieve`, the generating model on the
first `ask`."""

from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path

from hybridctx.chunk import StructuredChunker
from hybridctx.embed import Embedder, build_embedder, embedder_name, tokenizer_file
from hybridctx.errors import ModelUnavailableError
from hybridctx.generate import (
    FACTS_TEMPLATE,
    Backend,
    LlamaCppBackend,
    OpenAICompatibleBackend,
    OpenAISettings,
    VLLMBackend,
    VLLMSettings,
)
from hybridctx.generate.backend import template_for
from hybridctx.generate.reader import Reader
from hybridctx.generate.strategies import Strategies
from hybridctx.index.indexer import Profiler
from hybridctx.index.kb import KnowledgeBase
from hybridctx.pack import Packer, sketch_profiles
from hybridctx.pack.context import ContextBuilder
from hybridctx.retrieve import Retriever, build_retriever
from hybridctx.schema import ReaderId
from hybridctx.settings import Settings
from hybridctx.tokens import HFTokenizer


def embedder_from(settings: Settings) -> Embedder:
    """The embedder the settings name: their tier of their model (it loads here)."""
    return build_embedder(
        settings.embedder, settings.embedding_model, device=settings.device,
        batch_size=settings.embedding_batch_size, cache_dir=settings.cache_dir,
    )


def build_backend(settings: Settings) -> Backend:
    """The generating backend the settings describe: a GGUF on llama.cpp, vLLM or an
    OpenAI-compatible server (each starts its model on first use)."""
    if isinstance(settings.backend, VLLMSettings):
        return VLLMBackend(settings.backend)
    if isinstance(settings.backend, OpenAISettings):
        return OpenAICompatibleBackend(settings.backend)
    return LlamaCppBackend.from_settings(settings.backend, settings.cache_dir)


class Stages:
    """chunk -> embed -> index (`kb`, the knowledge base at `path`) -> retrieve -> pack -> generate,
    as `settings` describe them; `embedder` and `backend`, when given, replace the ones the
    settings would build."""

    def __init__(
        self, path: str | Path, settings: Settings, embedder: Embedder | None = None, backend: Backend | None = None
    ) -> None:
        self.settings = settings
        self._embedder = embedder
        self._backend = backend
        self.owns_backend = backend is None  # made here on first use: closed by `close`
        # The embedding model is loaded here only to size a new KB; an existing one has a manifest.
        name = embedder.name if embedder is not None else embedder_name(settings.embedder, settings.embedding_model)
        self.kb = KnowledgeBase.open(
            path, name, dimension=lambda: self.embedder.dimension, mmap_index=settings.mmap_index,
            show_progress=settings.show_progress,
        )

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = embedder_from(self.settings)
        return self._embedder

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = build_backend(self.settings)
        return self._backend

    @cached_property
    def chunker(self) -> StructuredChunker:
        tokenizer = HFTokenizer(tokenizer_file(self.kb.manifest.embedding_model))
        return StructuredChunker(tokenizer, self.settings.chunk_tokens, self.settings.chunk_overlap_tokens)

    @cached_property
    def retriever(self) -> Retriever:
        s = self.settings
        return build_retriever(
            self.kb, self.embedder, s.retrieval, dense_weight=s.dense_weight, lexical_weight=s.lexical_weight,
            fusion_depth=s.fusion_depth, hops=s.hops, rrf_k=s.rrf_k,
        )

    @cached_property
    def packer(self) -> Packer:
        template = template_for(self.backend)
        return Packer(
            self.backend.token_counter(), template, near_duplicate_threshold=self.settings.near_duplicate_threshold,
            follow_up_share=self.settings.follow_up_share,
        )

    @cached_property
    def builder(self) -> ContextBuilder:
        """`ask`'s and `pack`'s prompts."""
        return self._builder(self.packer)

    @cached_property
    def reader(self) -> Reader:
        s = self.settings
        return Reader(
            self.backend, effective_context=s.effective_context, cache_dir=s.cache_dir, budget_tokens=s.budget_tokens,
            max_new_tokens=s.max_new_tokens, ordering=s.ordering,
        )

    @cached_property
    def strategies(self) -> Strategies:
        facts = Packer(
            self.backend.token_counter(), template_for(self.backend, FACTS_TEMPLATE),
            near_duplicate_threshold=self.settings.near_duplicate_threshold,
        )
        return Strategies(self.builder, self._builder(facts), self.reader, self.packer.template,
                          self.settings.max_windows)

    def _builder(self, packer: Packer) -> ContextBuilder:
        s = self.settings
        return ContextBuilder(
            self.retriever, self.kb.store, packer, k=s.k, chunk_stride_tokens=s.chunk_tokens - s.chunk_overlap_tokens
        )

    def profiler(self) -> tuple[Profiler, ReaderId | None]:
        """What the indexer stores for the packer with each chunk, and the reader its counts are
        for: the generating model's, unless its tokenizer is not at hand (packing counts then)."""
        try:
            return self.packer.chunk_profiles, self.packer.reader
        except ModelUnavailableError as exc:
            warnings.warn(f"chunks are stored without their token counts ({exc}); packing will count them",
                          stacklevel=3)
            return sketch_profiles, None

    def close(self) -> None:
        self.kb.close()
        if self.owns_backend and self._backend is not None:
            self._backend.close()
