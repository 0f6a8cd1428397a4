"""`Pipeline`: the public entry point. It builds the stages from `Settings` and wires them; a
question goes retrieve -> pack -> generate through them (`ask` hands it to a strategy, which
packs with the `ContextBuilder` and answers with the `Reader`), each entered once per window.

    pipe = Pipeline.open("kb/")
    pipe.add(["docs/", "notes.md"])
    answer = pipe.ask("How do I configure retries?")
    for piece in (stream := pipe.stream("And timeouts?")):   # the answer as it is written
        print(piece, end="")
    stream.answer                                              # then the whole Answer

Each query method has an async twin (`aretrieve`, `apack`, `aask`, `astream`) that runs on the
pipeline's `Settings.max_concurrency` worker threads, sharing its one copy of each model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hybridctx.embed import Embedder
from hybridctx.errors import InvalidArgumentError
from hybridctx.evals.calibrate import calibrate
from hybridctx.generate import Backend, OpenAISettings, VLLMSettings
from hybridctx.generate.calibration import Calibration, save_calibration
from hybridctx.generate.session import Session
from hybridctx.generate.strategy import Choices, Question
from hybridctx.generate.streaming import AnswerStream, AsyncAnswerStream, Workers
from hybridctx.index.indexer import Indexer, refresh_profiles
from hybridctx.pack import Packer, PackSession
from hybridctx.retrieve import DEFAULT_K
from hybridctx.schema import AddReport, Answer, DocumentInfo, Hit, Ordering, PackedContext, Scope, Strategy
from hybridctx.settings import Settings
from hybridctx.sources import Item, document_id, folder_prefix, iter_documents
from hybridctx.stages import Stages, build_backend, embedder_from

__all__ = ["Pipeline", "Session", "build_backend", "embedder_from", "shared_pipelines"]


class Pipeline:
    """A persistent knowledge base with the stages that fill and query it.

    Models load lazily: opening a KB is fast; the embedding model loads on the first
    `add`/`retrieve`, the generating model on the first `ask`.
    """

    def __init__(
        self, path: str | Path, settings: Settings | None = None, *, embedder: Embedder | None = None,
        backend: Backend | None = None,
    ) -> None:
        if isinstance(backend, (VLLMSettings, OpenAISettings)):
            raise InvalidArgumentError(
                f"backend= takes a loaded Backend object, and {type(backend).__name__} is settings: pass them as "
                f"Settings(backend={type(backend).__name__}(...)), or Pipeline.open(path, settings) with them there"
            )
        self.settings = settings or Settings()
        self.workers = Workers(self.settings.max_concurrency)
        self.stages = Stages(path, self.settings, embedder, backend)
        self.kb = self.stages.kb
        self.embedding_model = self.kb.manifest.embedding_model

    @classmethod
    def open(
        cls, path: str | Path, settings: Settings | None = None, *, embedder: Embedder | str | None = None,
        backend: Backend | None = None, **overrides: Any,
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

    @property
    def embedder(self) -> Embedder:
        return self.stages.embedder

    @property
    def backend(self) -> Backend:
        return self.stages.backend

    @property
    def packer(self) -> Packer:
        return self.stages.packer

    # -- filling the KB ---------------------------------------------------------------
    def add(self, items: Item | Iterable[Item]) -> AddReport:
        """Index documents, texts, files/folders or a Source; unchanged documents are skipped."""
        documents = iter_documents(items, self.settings.max_file_bytes)  # raises now if a path does not exist
        profile, _ = self.stages.profiler()
        return Indexer(
            self.kb, self.stages.chunker, self.embedder, commit_every_chunks=self.settings.commit_every_chunks,
            show_progress=self.settings.show_progress, profile=profile,
        ).add(documents)

    def refresh_profiles(self) -> int:
        """Store what the packer needs to know of each chunk (`Chunk.profile`) where it is missing
        or counted for another model than this pipeline's, so that packing does no tokenizing;
        returns how many chunks. `add` stores it for what it adds; this is for an older KB."""
        profile, reader = self.stages.profiler()
        return refresh_profiles(self.kb, profile, reader, show_progress=self.settings.show_progress)

    def delete(self, doc_ids: str | os.PathLike | Sequence[str | os.PathLike]) -> int:
        """Delete documents by id, or by the path they were added from (a file's document, or
        every document under a folder; relative or absolute); returns the number of chunks removed."""
        targets = [doc_ids] if isinstance(doc_ids, (str, os.PathLike)) else list(doc_ids)
        exact = [str(t) for t in targets] + [document_id(t) for t in targets]
        with self.kb.writer() as writer:
            removed = writer.delete_documents(self.kb.store.matching_ids(exact, [folder_prefix(t) for t in targets]))
            writer.commit()
        return removed

    def rebuild_index(self) -> str:
        """Merge the dense segments into one, retrained on the current vectors, and return its
        FAISS type: for a KB changed much by deletes and updates, or the fastest searches."""
        with self.kb.writer() as writer:
            writer.rebuild_index()
            writer.commit()
        return self.kb.index.spec

    # -- questions --------------------------------------------------------------------
    def retrieve(
        self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None, principal: str | None = None
    ) -> list[Hit]:
        """The `k` best chunks (default: `settings.k`, else 100) that the scope sees."""
        k = k if k is not None else self.settings.k or DEFAULT_K
        return self.stages.retriever.retrieve(query, k, Scope.of(filters, principal))

    def pack(
        self, query: str, budget_tokens: int | None = None, hits: Sequence[Hit] | None = None,
        filters: Mapping[str, Any] | None = None, principal: str | None = None, *, ordering: Ordering | None = None,
        max_new_tokens: int | None = None, session: PackSession | None = None,
    ) -> PackedContext:
        """Pack a prompt of at most `budget_tokens - max_new_tokens` tokens (room kept for the answer).

        Without `hits`: everything the principal may read when it fits (`recall="whole_corpus"`),
        else a generous retrieval scaled to the budget (`settings.k` overrides it). A budget larger
        than the model's window is refused (`BudgetTooLargeError`); `stopped_by` says whether the
        budget or the candidates ran out."""
        reading = self.stages.reader.reading(budget_tokens, max_new_tokens, ordering, per_window=False)
        return self.stages.builder.pack(query, reading, Scope.of(filters, principal), hits, session)

    def ask(
        self, query: str, budget_tokens: int | None = None, filters: Mapping[str, Any] | None = None,
        principal: str | None = None, max_new_tokens: int | None = None, temperature: float = 0.0, *,
        ordering: Ordering | None = None, strategy: Strategy | None = None,
        on_text: Callable[[str], None] | None = None, choices: Choices | None = None,
    ) -> Answer:
        """Retrieve, pack and generate; the backend refuses a prompt that overflows its window.

        `strategy` (default `settings.strategy`, "calibrated": the one measured best for the
        reading model, direct where none was): "map" reads each passage about the question on
        its own; "direct" answers from one packed prompt; "synthesis" lists the facts with their
        passages first, over several windows when the material exceeds one (map-reduce);
        "self_route" answers directly and, when the model says the documents do not contain the
        answer, again by synthesis over the model's whole window (`Answer.escalated`).

        `on_text` receives the answer's text as the model writes it (`stream` iterates over it
        instead); for synthesis and self-route, whose model output is facts first, the answer
        once it is parsed. `choices`: the answer is one of these strings, or of those a function
        makes of the packed context (`generate.grounded.defined_symbols`); "direct" only."""
        answering = self.stages.strategies.choose(strategy, self.settings.strategy, choices)
        return answering.answer(Question(
            query=query, scope=Scope.of(filters, principal), reading=self.stages.reader.reading(
            budget_tokens, max_new_tokens, ordering), temperature=temperature, on_text=on_text, choices=choices,
        ))

    def stream(
        self, query: str, budget_tokens: int | None = None, filters: Mapping[str, Any] | None = None,
        principal: str | None = None, max_new_tokens: int | None = None, temperature: float = 0.0, *,
        ordering: Ordering | None = None, strategy: Strategy | None = None,
    ) -> AnswerStream:
        """`ask`, streamed: iterate for the answer's text as the model writes it; then `.answer`."""
        return self.workers.stream(lambda on_text: self.ask(
            query, budget_tokens, filters, principal, max_new_tokens, temperature, ordering=ordering,
            strategy=strategy, on_text=on_text,
        ))

    def session(
        self, filters: Mapping[str, Any] | None = None, principal: str | None = None, ordering: Ordering | None = None
    ) -> Session:
        """A conversation about the same material: follow-ups keep the passages shown in place,
        so the prompt prefix (and the model's KV cache of it) carries over."""
        return Session(self.stages.builder, self.stages.reader, self.workers, Scope.of(filters, principal), ordering)

    def generate(
        self, context: PackedContext, max_new_tokens: int | None = None, temperature: float = 0.0,
        on_text: Callable[[str], None] | None = None, choices: Sequence[str] | None = None,
    ) -> Answer:
        """Answer from an already packed context (what `ask` does after `pack`); with
        `choices`, exactly one of them."""
        return self.stages.reader.answer(context, max_new_tokens, temperature, on_text, choices)

    # -- async twins: the same work on a worker thread, the event loop free meanwhile ---
    async def aretrieve(self, query: str, k: int | None = None, filters: Mapping[str, Any] | None = None,
                        principal: str | None = None) -> list[Hit]:
        return await self.workers.run(lambda: self.retrieve(query, k, filters, principal))

    async def apack(self, query: str, budget_tokens: int | None = None, hits: Sequence[Hit] | None = None,
                    filters: Mapping[str, Any] | None = None, principal: str | None = None, *,
                    ordering: Ordering | None = None, max_new_tokens: int | None = None) -> PackedContext:
        return await self.workers.run(lambda: self.pack(
            query, budget_tokens, hits, filters, principal, ordering=ordering, max_new_tokens=max_new_tokens
        ))

    async def aask(self, query: str, budget_tokens: int | None = None, filters: Mapping[str, Any] | None = None,
                   principal: str | None = None, max_new_tokens: int | None = None, temperature: float = 0.0, *,
                   ordering: Ordering | None = None, strategy: Strategy | None = None) -> Answer:
        return await self.workers.run(lambda: self.ask(
            query, budget_tokens, filters, principal, max_new_tokens, temperature, ordering=ordering, strategy=strategy
        ))

    def astream(self, query: str, budget_tokens: int | None = None, filters: Mapping[str, Any] | None = None,
                principal: str | None = None, max_new_tokens: int | None = None, temperature: float = 0.0, *,
                ordering: Ordering | None = None, strategy: Strategy | None = None) -> AsyncAnswerStream:
        """`stream` for `async for` (call it inside a running event loop); then `.answer`."""
        return self.workers.astream(lambda on_text: self.ask(
            query, budget_tokens, filters, principal, max_new_tokens, temperature, ordering=ordering,
            strategy=strategy, on_text=on_text,
        ))

    # -- the reading model's effective context ----------------------------------------
    @property
    def effective_tokens(self) -> int | None:
        """Prompt tokens the reading model uses well (`Settings.effective_context`); None: the whole budget."""
        return self.stages.reader.effective_tokens

    def calibrate(self, seeds: int = 3, max_tokens: int | None = None) -> Calibration:
        """Measure how much of its window the reading model really uses (`evals.calibrate`),
        store it for this model in the cache and read at most that much per window from now on.
        Minutes on a CPU: two probes times `seeds` per length, doubling from 512 tokens."""
        found = calibrate(self.backend, seeds=seeds, max_tokens=max_tokens, show_progress=self.settings.show_progress)
        save_calibration(self.settings.cache_dir, found)
        self.stages.reader.calibrated(found)
        return found

    # -- what the KB holds --------------------------------------------------------------
    def documents(self, under: str | os.PathLike | None = None) -> list[DocumentInfo]:
        """The stored documents, by id, or those added from under `under`; O(documents)."""
        return self.kb.store.document_list(None if under is None else folder_prefix(under))

    def stats(self) -> dict[str, int]:
        documents, chunks, _ = self.kb.store.totals()
        return {"documents": documents, "chunks": chunks}

    def close(self) -> None:
        self.workers.close()
        self.stages.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def shared_pipelines(settings: Settings) -> Iterator[Callable[[Path], Pipeline]]:
    """`open(folder)`: pipelines over many KBs sharing one embedding model and one backend,
    loaded once and closed on leaving (the evaluation opens a KB per haystack)."""
    embedder, backend = embedder_from(settings), build_backend(settings)
    try:
        yield lambda folder: Pipeline(folder, settings, embedder=embedder, backend=backend)
    finally:
        backend.close()
