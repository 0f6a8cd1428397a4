"""`Pipeline`: the public entry point. It wires the stages together and holds no stage logic.

    pipe = Pipeline.open("kb/")
    pipe.add(["docs/", "notes.md"])
    answer = pipe.ask("How do I configure retries?")
    for piece in (stream := pipe.stream("And timeouts?")):   # the answer as it is written
        print(piece, end="")
    stream.answer                                              # then the whole Answer

Each query method has an async twin (`aretrieve`, `apack`, `aask`, `astream`) that runs the
work on the pipeline's pool of `Settings.max_concurrency` threads, so an event loop never waits
on a model; the calls share the pipeline's one copy of each model, and the pool's threads keep
their SQLite connections warm.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from hybridctx.chunk import StructuredChunker
from hybridctx.embed import Embedder, build_embedder, embedder_name, tokenizer_file
from hybridctx.errors import BudgetTooLargeError, InvalidArgumentError, ModelUnavailableError
from hybridctx.generate import (
    Backend,
    LlamaCppBackend,
    OpenAICompatibleBackend,
    OpenAISettings,
    Synthesizer,
    VLLMBackend,
    VLLMSettings,
    cite,
    unsupported_citations,
)
from hybridctx.generate.calibration import Calibration, calibrate, load_calibration, save_calibration
from hybridctx.generate.mapping import map_answer, pack_alone, pack_windows
from hybridctx.generate.streaming import AnswerStream, AsyncAnswerStream, TrimmedText, result_of
from hybridctx.generate.synthesis import FACTS_TEMPLATE, answer_by
from hybridctx.index.indexer import Indexer, Profiler, refresh_profiles
from hybridctx.index.kb import KnowledgeBase
from hybridctx.pack import ControlTokens, Packer, PackSession, PromptTemplate, sketch_profiles
from hybridctx.retrieve import (
    DEFAULT_K,
    Candidates,
    DenseRetriever,
    HybridRetriever,
    LexicalRetriever,
    MultiHopRetriever,
    Retriever,
    candidates,
    recall_k,
)
from hybridctx.schema import (
    AddReport,
    Answer,
    DocumentInfo,
    Hit,
    Ordering,
    PackedContext,
    Passage,
    ReaderId,
    Scope,
    Strategy,
)
from hybridctx.settings import Settings
from hybridctx.sources import Item, document_id, folder_prefix, iter_documents
from hybridctx.tokens import HFTokenizer

_T = TypeVar("_T")
# What an answer may be: these strings, or those a function makes of the packed context.
Choices = Sequence[str] | Callable[[PackedContext], Sequence[str]]


def embedder_from(settings: Settings) -> Embedder:
    """The embedder the settings name: their tier of their model (it loads here)."""
    return build_embedder(
        settings.embedder, settings.embedding_model, device=settings.device,
        batch_size=settings.embedding_batch_size, cache_dir=settings.cache_dir,
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
        if isinstance(backend, (VLLMSettings, OpenAISettings)):
            raise InvalidArgumentError(
                f"backend= takes a loaded Backend object, and {type(backend).__name__} is settings: pass them as "
                f"Settings(backend={type(backend).__name__}(...)), or Pipeline.open(path, settings) with them there"
            )
        self.settings = settings or Settings()
        # Async and streamed calls run here; waiting ones queue, holding no thread.
        self._workers = ThreadPoolExecutor(self.settings.max_concurrency, thread_name_prefix="hybridctx")
        self._embedder = embedder
        self._backend = backend
        self._owns_backend = backend is None  # made here on first use: closed by close()
        self._calibration: Calibration | Literal[False] | None = None  # False: looked up, none stored
        # The embedding model is loaded here only to size a new KB; an existing one has a manifest.
        self.embedding_model = (
            embedder.name if embedder is not None
            else embedder_name(self.settings.embedder, self.settings.embedding_model)
        )
        self.kb = KnowledgeBase.open(
            path, self.embedding_model, dimension=lambda: self.embedder.dimension,
            mmap_index=self.settings.mmap_index, show_progress=self.settings.show_progress,
        )

    @classmethod
    def open(
        cls,
        path: str | Path,
        settings: Settings | None = None,
        *,
        embedder: Embedder | str | None = None,
        backend: Backend | None = None,
        **overrides: Any,
    ) -> Pipeline:
        """Create or open the knowledge base at `path`; keyword overrides replace settings fields.

        `embedder` and `backend` replace the defaults built from the settings (e.g. to share
        one loaded model between pipelines, or to use vLLM); `embedder="static"` names a tier
        (the `Settings.embedder` field) instead.
        """
        settings = settings or Settings()
        if isinstance(embedder, str):
            overrides["embedder"], embedder = embedder, None
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
            self._embedder = embedder_from(self.settings)
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
        lexical = LexicalRetriever(self.kb)
        first: Retriever
        if s.retrieval == "lexical":
            first = lexical
        elif s.retrieval == "dense":
            first = DenseRetriever(self.kb, self.embedder)
        else:
            first = HybridRetriever(
                DenseRetriever(self.kb, self.embedder), lexical, s.dense_weight, s.lexical_weight, s.fusion_depth,
            )
        return MultiHopRetriever(first, lexical, s.hops, rrf_k=s.rrf_k) if s.hops else first

    @cached_property
    def packer(self) -> Packer:
        template = PromptTemplate(control_tokens=ControlTokens(self.backend.control_tokens()))
        return Packer(
            self.backend.token_counter(), template, near_duplicate_threshold=self.settings.near_duplicate_threshold,
            follow_up_share=self.settings.follow_up_share,
        )

    @cached_property
    def synthesizer(self) -> Synthesizer:
        facts_packer = Packer(
            self.backend.token_counter(), replace(FACTS_TEMPLATE, control_tokens=self.packer.template.control_tokens),
            near_duplicate_threshold=self.settings.near_duplicate_threshold,
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
            profile=self._profiler()[0],
        )
        return indexer.add(documents)

    def refresh_profiles(self) -> int:
        """Store what the packer needs to know of each chunk (`Chunk.profile`) where it is
        missing (a KB indexed before hybridctx stored it) or counted for another model than
        this pipeline's, so that packing them does no tokenizing; returns how many chunks.
        `add` stores it for what it adds; this is for a KB upgraded or given a new model."""
        profile, reader = self._profiler()
        return refresh_profiles(self.kb, profile, reader, show_progress=self.settings.show_progress)

    def _profiler(self) -> tuple[Profiler, ReaderId | None]:
        """What the indexer stores for the packer with each chunk, and the reader its counts are
        for: the generating model's, unless its tokenizer is not at hand (packing counts then)."""
        try:
            return self.packer.chunk_profiles, self.packer.reader
        except ModelUnavailableError as exc:
            warnings.warn(
                f"chunks are stored without their token counts ({exc}); packing will count them", stacklevel=3
            )
            return sketch_profiles, None

    def delete(self, doc_ids: str | os.PathLike | Sequence[str | os.PathLike]) -> int:
        """Delete documents by id, or by the path they were added from (a file's document, or
        every document under a folder; relative or absolute); returns the number of chunks removed."""
        targets = [doc_ids] if isinstance(doc_ids, (str, os.PathLike)) else list(doc_ids)
        exact = [str(t) for t in targets] + [document_id(t) for t in targets]
        with self.kb.writer() as writer:
            removed = writer.delete_documents(self.kb.store.matching_ids(exact, [folder_prefix(t) for t in targets]))
            writer.commit()
        return removed

    def retrieve(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None, principal: str | None = None
    ) -> list[Hit]:
        """The `k` best chunks (default: `settings.k`, else 100) that the scope sees."""
        k = k if k is not None else self.settings.k or DEFAULT_K
        return self.retriever.retrieve(query, k, _scope(filters, principal))

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
        it is packed (`recall="whole_corpus"`, no retrieval loss); otherwise a generous
        retrieval, scaled to the budget (`settings.k` overrides it), is packed. A budget larger
        than the model's window is refused (`BudgetTooLargeError`); `stopped_by` says whether
        the budget or the candidates ran out.
        """
        call = self._per_call(budget_tokens, max_new_tokens, ordering)
        return self._pack(query, call.budget_tokens, call, _scope(filters, principal), hits, session)

    def _pack(
        self, query: str, budget_tokens: int, call: _PerCall, scope: Scope, hits: Sequence[Hit] | None = None,
        session: PackSession | None = None,
    ) -> PackedContext:
        """Pack `budget_tokens` (the call's, or less: what the model reads well)."""
        found = self._candidates(query, budget_tokens, scope) if hits is None else Candidates(list(hits), False)
        while True:
            context = self.packer.pack(
                query, found.hits, budget_tokens, max_new_tokens=call.max_new_tokens, ordering=call.ordering,
                session=session,
            )
            # Short with more in the corpus: retrieve more (not in a session, whose state the pack moved on).
            if hits is not None or session is not None or self.settings.k is not None or not found.short_of(context):
                break
            found = self._candidates(query, budget_tokens, scope, k=found.more)
        return _reported(context, found, call)

    def _candidates(self, query: str, budget_tokens: int, scope: Scope, k: int | None = None) -> Candidates:
        """Candidates for a budget: `settings.k` of them, or as many as the budget calls for."""
        if k is None:
            s = self.settings
            k = s.k or recall_k(budget_tokens, s.chunk_tokens - s.chunk_overlap_tokens)
        return candidates(self.retriever, self.kb, query, k, budget_tokens, scope)

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
        on_text: Callable[[str], None] | None = None,
        choices: Choices | None = None,
    ) -> Answer:
        """Retrieve, pack and generate; the backend refuses a prompt that overflows its window.

        `strategy` (default `settings.strategy`): "direct" answers from one packed prompt;
        "synthesis" lists the facts with their passages first, over several windows when the
        retrieved material exceeds one (map-reduce); "self_route" answers directly and, when
        the model says the documents do not contain the answer, again by synthesis over the
        model's whole window (`Answer.escalated`).

        `on_text` receives the answer's text as the model writes it (`stream` iterates over it
        instead), pieces that joined are `Answer.text`: piece by piece for "direct"; for the other
        strategies, whose model output is facts first, the answer once it is parsed.

        `choices`: the answer is one of these strings, or of those a function makes of the
        packed context (`hybridctx.generate.grounded.defined_symbols`: the functions the
        passages define, each citing its passage); "direct" only.
        """
        if choices is not None and strategy not in (None, "direct"):
            raise InvalidArgumentError(
                f"choices answer from one packed prompt: use strategy='direct', not {strategy!r}"
            )
        call = self._per_call(budget_tokens, max_new_tokens, ordering, "direct" if choices is not None else strategy)
        scope = _scope(filters, principal)

        def answer(context: PackedContext) -> Answer:
            return self.generate(
                context, max_new_tokens=call.max_new_tokens, temperature=temperature,
                on_text=on_text if call.strategy in ("direct", "map") else None,
                choices=choices(context) or None if callable(choices) else choices,
            )

        def mapped() -> Answer:  # windows of what the model reads well, from the budget's recall
            found = self._candidates(query, call.budget_tokens, scope)
            windows = [_reported(w, found, call) for w in pack_windows(
                self.packer, query, found.hits, call.read_tokens, call.max_new_tokens, self.settings.max_windows,
                call.ordering,
            )]

            def alone(passage: Passage) -> PackedContext:  # one passage, read on its own
                return _reported(pack_alone(
                    self.packer, query, found.hits, passage, call.read_tokens, call.max_new_tokens, call.ordering
                ), found, call)

            return map_answer(
                query, windows, answer, alone, self.backend, call.max_new_tokens, self.settings.max_windows,
                temperature, on_text=on_text,
            )

        result = answer_by(
            call.strategy,
            direct=lambda: answer(self._pack(query, call.read_tokens, call, scope)),
            mapped=mapped,
            synthesis=lambda budget_tokens: self.synthesizer.answer(  # windows of what the model reads well
                query, self._candidates(query, budget_tokens, scope).hits, min(budget_tokens, call.read_tokens),
                call.max_new_tokens, max_windows=self.settings.max_windows, temperature=temperature,
            ),
            budget_tokens=call.budget_tokens,
            window_tokens=self.backend.context_window,
        )
        if on_text is not None and call.strategy not in ("direct", "map") and result.text:
            on_text(result.text)
        return result

    def stream(
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
    ) -> AnswerStream:
        """`ask`, streamed: iterate for the answer's text as the model writes it (joined, the
        pieces are `Answer.text`); then `.answer` is the whole `Answer`."""
        return AnswerStream(lambda on_text: self.ask(
            query, budget_tokens, filters, principal, max_new_tokens, temperature,
            ordering=ordering, strategy=strategy, on_text=on_text,
        ), self._workers)

    # -- async twins: the same work on a thread, the event loop free meanwhile ---------
    async def aretrieve(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None, principal: str | None = None
    ) -> list[Hit]:
        """`retrieve`, awaited."""
        return await self._off_loop(lambda: self.retrieve(query, k, filters, principal))

    async def apack(
        self, query: str, budget_tokens: int | None = None, hits: Sequence[Hit] | None = None,
        filters: Mapping[str, Any] | None = None, principal: str | None = None, *,
        ordering: Ordering | None = None, max_new_tokens: int | None = None,
    ) -> PackedContext:
        """`pack`, awaited."""
        return await self._off_loop(lambda: self.pack(
            query, budget_tokens, hits, filters, principal, ordering=ordering, max_new_tokens=max_new_tokens
        ))

    async def aask(
        self, query: str, budget_tokens: int | None = None, filters: Mapping[str, Any] | None = None,
        principal: str | None = None, max_new_tokens: int | None = None, temperature: float = 0.0, *,
        ordering: Ordering | None = None, strategy: Strategy | None = None,
    ) -> Answer:
        """`ask`, awaited."""
        return await self._off_loop(lambda: self.ask(
            query, budget_tokens, filters, principal, max_new_tokens, temperature, ordering=ordering, strategy=strategy
        ))

    def astream(
        self, query: str, budget_tokens: int | None = None, filters: Mapping[str, Any] | None = None,
        principal: str | None = None, max_new_tokens: int | None = None, temperature: float = 0.0, *,
        ordering: Ordering | None = None, strategy: Strategy | None = None,
    ) -> AsyncAnswerStream:
        """`stream` for `async for` (call it inside a running event loop); then `.answer`."""
        return AsyncAnswerStream(lambda on_text: self.ask(
            query, budget_tokens, filters, principal, max_new_tokens, temperature,
            ordering=ordering, strategy=strategy, on_text=on_text,
        ), self._workers)

    async def _off_loop(self, work: Callable[[], _T]) -> _T:
        """`work` on the pipeline's pool, awaited."""
        result: _T = await result_of(self._workers.submit(work))
        return result

    def _per_call(
        self, budget_tokens: int | None = None, max_new_tokens: int | None = None, ordering: Ordering | None = None,
        strategy: Strategy | None = None,
    ) -> _PerCall:
        """A call's arguments, the settings' defaults where it gave none; a budget the model
        could not read is refused here, before any work."""
        s = self.settings
        budget_tokens = s.budget_tokens if budget_tokens is None else budget_tokens
        if budget_tokens > self.backend.context_window:
            raise BudgetTooLargeError(budget_tokens, self.backend.context_window)
        max_new_tokens = s.max_new_tokens if max_new_tokens is None else max_new_tokens
        effective = self.effective_tokens
        return _PerCall(
            budget_tokens=budget_tokens,
            read_tokens=budget_tokens if effective is None else min(budget_tokens, effective + max_new_tokens),
            max_new_tokens=max_new_tokens,
            ordering=ordering or s.ordering,
            strategy=strategy or s.strategy,
        )

    @property
    def effective_tokens(self) -> int | None:
        """Prompt tokens the reading model uses well (`Settings.effective_context`): a number
        set there, or its calibration (`calibrate`) where one was stored; None: the whole budget."""
        setting = self.settings.effective_context
        if setting == "window":
            return None
        if isinstance(setting, int):
            return setting
        if self._calibration is None:
            self._calibration = load_calibration(self.settings.cache_dir, self.backend.model_id) or False
        return self._calibration.effective_tokens if self._calibration else None

    def calibrate(self, seeds: int = 3, max_tokens: int | None = None) -> Calibration:
        """Measure how much of its window the reading model really uses, store it for this
        model in the cache, and read at most that much per window from now on (see
        `hybridctx.generate.calibration`). Minutes on a CPU: two probes times `seeds` at each
        length, doubling from 512 tokens up to the window (or `max_tokens`)."""
        found = calibrate(self.backend, seeds=seeds, max_tokens=max_tokens, show_progress=self.settings.show_progress)
        save_calibration(self.settings.cache_dir, found)
        self._calibration = found
        return found

    def session(
        self, filters: Mapping[str, Any] | None = None, principal: str | None = None, ordering: Ordering | None = None
    ) -> Session:
        """A conversation about the same material: each follow-up keeps the passages already
        shown in place and appends what it adds, so the prompt prefix (and the model's KV
        cache of it) carries over and each question pays only for new tokens."""
        return Session(self, _scope(filters, principal), ordering)

    def generate(
        self, context: PackedContext, max_new_tokens: int | None = None, temperature: float = 0.0,
        on_text: Callable[[str], None] | None = None, choices: Sequence[str] | None = None,
    ) -> Answer:
        """Answer from an already packed context (what `ask` does after `pack`); with
        `choices`, exactly one of them."""
        if max_new_tokens is None:
            max_new_tokens = self.settings.max_new_tokens
        generation = self.backend.generate(  # pieces trimmed so that, joined, they are Answer.text
            context, max_new_tokens=max_new_tokens, temperature=temperature,
            on_text=TrimmedText(on_text) if on_text is not None else None, choices=choices,
        )
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

    def documents(self, under: str | os.PathLike | None = None) -> list[DocumentInfo]:
        """The stored documents, by id, or those added from under the folder `under`; a listing
        of the whole KB is O(documents)."""
        return self.kb.store.document_list(None if under is None else folder_prefix(under))

    def stats(self) -> dict[str, int]:
        documents, chunks, _ = self.kb.store.totals()
        return {"documents": documents, "chunks": chunks}

    def close(self) -> None:
        self._workers.shutdown(cancel_futures=True)  # calls not started are dropped; running ones finish
        self.kb.close()
        if self._owns_backend and self._backend is not None:
            self._backend.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()




@dataclass(frozen=True)
class _PerCall:
    budget_tokens: int
    read_tokens: int  # what `ask` packs per window: the budget, or less where the model reads less well
    max_new_tokens: int
    ordering: Ordering
    strategy: Strategy


def _reported(context: PackedContext, found: Candidates, call: _PerCall) -> PackedContext:
    """`context` saying where its candidates came from, and that the model's effective context
    (not the caller's budget) cut it, where it did; refused where that cut left no passage."""
    update: dict[str, Any] = {"recall": found.recall_of(context)}
    if context.budget_tokens < call.budget_tokens and context.stopped_by == "budget":
        update["stopped_by"] = "effective_context"
        if not context.passages:  # the answer would read nothing
            raise InvalidArgumentError(
                f"the model's effective context leaves {context.budget_tokens - context.max_new_tokens:,} prompt "
                "tokens a window, and no passage fits there beside the prompt's instructions and question: raise "
                "Settings.effective_context, or set it to 'window'"
            )
    return context.model_copy(update=update)


def _scope(filters: Mapping[str, Any] | None, principal: str | None) -> Scope:
    try:
        return Scope(filters=None if filters is None else dict(filters), principal=principal)
    except (TypeError, ValueError, ValidationError) as exc:
        raise InvalidArgumentError(
            f"filters must map metadata names to values, and principal be a string: {exc}"
        ) from exc


class Session:
    """Follow-up questions sharing one growing prompt; made by `Pipeline.session()`."""

    def __init__(self, pipeline: Pipeline, scope: Scope, ordering: Ordering | None) -> None:
        self.pipeline = pipeline
        self.scope = scope
        self.ordering = ordering
        self.state = pipeline.packer.session()

    def pack(self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None) -> PackedContext:
        call = self.pipeline._per_call(budget_tokens, max_new_tokens, self.ordering)
        return self.pipeline._pack(query, call.budget_tokens, call, self.scope, session=self.state)

    def ask(
        self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None, temperature: float = 0.0,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Pack the follow-up into the session's prompt (at most what the model reads well) and answer."""
        call = self.pipeline._per_call(budget_tokens, max_new_tokens, self.ordering)
        context = self.pipeline._pack(query, call.read_tokens, call, self.scope, session=self.state)
        return self.pipeline.generate(context, max_new_tokens=max_new_tokens, temperature=temperature, on_text=on_text)

    def stream(
        self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None, temperature: float = 0.0
    ) -> AnswerStream:
        """`ask`, streamed (see `Pipeline.stream`)."""
        return AnswerStream(
            lambda on_text: self.ask(query, budget_tokens, max_new_tokens, temperature, on_text), self.pipeline._workers
        )

    async def aask(
        self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None, temperature: float = 0.0
    ) -> Answer:
        """`ask`, awaited."""
        return await self.pipeline._off_loop(lambda: self.ask(query, budget_tokens, max_new_tokens, temperature))

    def astream(
        self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None, temperature: float = 0.0
    ) -> AsyncAnswerStream:
        """`stream` for `async for` (inside a running event loop)."""
        return AsyncAnswerStream(
            lambda on_text: self.ask(query, budget_tokens, max_new_tokens, temperature, on_text), self.pipeline._workers
        )
