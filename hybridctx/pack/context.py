"""The pack stage as a question meets it: enough candidates for the budget, packed into one
prompt or into consecutive windows of what the model reads well, each saying where its
candidates came from.

`ContextBuilder` is the one place a question's retrieval happens: it asks its `Retriever`
once for as many candidates as the budget calls for (`recall_k`), or for everything the scope
sees when that is about the budget's size, and again, larger, only when a pack came out short
with more left in the corpus. The answering strategies (generate/) take it explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hybridctx.errors import InvalidArgumentError
from hybridctx.pack.packer import Packer
from hybridctx.pack.selection import PackSession
from hybridctx.retrieve import DEFAULT_K, Retriever
from hybridctx.schema import MAX_K, Hit, Ordering, PackedContext, Passage, Reading, Recall, Scope

# Everything a scope sees is packed whole when its embedding-model tokens are at most this
# many times the budget (the reader's tokenizer may count the same text differently).
WHOLE_CORPUS_SLACK = 1.5
# Candidates for a budget: enough chunks to fill it this many times over, so that what
# duplicates, overlaps already shown and near copies take out still fills it; and never
# fewer than the classic generous recall. A pack left short retrieves this many times more.
RECALL_PER_BUDGET = 3
MORE_RECALL = 4
# A pack filling less of its budget than this, with candidates left in the corpus, retrieves more.
FILL_TARGET = 0.9


class Corpus(Protocol):
    """What the builder asks of the chunk store: how much a scope sees, counted no further
    than needed (`ChunkStore.visible_size`)."""

    def visible_size(self, scope: Scope, tokens_above: int | None = None) -> tuple[int, int]:
        """(chunks, embedding-model tokens) the scope sees; tokens counted up to `tokens_above`."""
        ...


@dataclass
class Candidates:
    """What a question's packs start from, and whether it is everything the scope sees."""

    hits: list[Hit]
    whole_corpus: bool
    k: int = 0  # how many were asked for: fewer came back when the scope holds fewer

    def short_of(self, context: PackedContext) -> bool:
        """True if `context` ran out of these candidates well short of its budget while the
        scope holds more: a larger retrieval would fill it."""
        room = context.budget_tokens - context.max_new_tokens
        return (
            context.stopped_by == "candidates" and not self.whole_corpus and len(self.hits) >= self.k
            and self.k < MAX_K and context.token_count < FILL_TARGET * room
        )

    @property
    def more(self) -> int:
        """How many to retrieve when these came out short: `MORE_RECALL` times as many, within MAX_K."""
        return min(MAX_K, self.k * MORE_RECALL)

    def recall_of(self, context: PackedContext) -> Recall:
        """"whole_corpus" if the whole corpus was retrieved and all of it fitted the window."""
        if self.whole_corpus and not any(d.reason == "over_budget" for d in context.dropped):
            return "whole_corpus"
        return "retrieved"


@dataclass(frozen=True)
class Windows:
    """One retrieval and the consecutive windows packed from it (a passage read on its own is
    packed from the same candidates: `ContextBuilder.alone`)."""

    candidates: Candidates
    contexts: list[PackedContext]


def recall_k(budget_tokens: int, chunk_stride_tokens: int) -> int:
    """How many candidates a budget calls for: `RECALL_PER_BUDGET` times the chunks it holds
    (`chunk_stride_tokens`: the new tokens each chunk adds past its overlap), at least `DEFAULT_K`.
    A fixed k=100 filled 12,191 tokens of a 64k budget over a 250k-token corpus."""
    return min(MAX_K, max(DEFAULT_K, math.ceil(RECALL_PER_BUDGET * budget_tokens / chunk_stride_tokens)))


def pack_windows(
    packer: Packer, query: str, hits: Sequence[Hit], budget_tokens: int, max_new_tokens: int, max_windows: int,
    ordering: Ordering = "canonical",
) -> list[PackedContext]:
    """The hits packed into consecutive windows of `budget_tokens`, each taking what the
    previous ones left over (at least one window, empty when there are no hits)."""
    windows: list[PackedContext] = []
    remaining = list(hits)
    while remaining and len(windows) < max_windows:
        window = packer.pack(query, remaining, budget_tokens, max_new_tokens=max_new_tokens, ordering=ordering)
        if not window.passages:
            break
        windows.append(window)
        over = {d.chunk_id for d in window.dropped if d.reason == "over_budget"}
        remaining = [h for h in remaining if h.chunk.id in over]
    return windows or [packer.pack(query, hits, budget_tokens, max_new_tokens=max_new_tokens, ordering=ordering)]


class ContextBuilder:
    """Candidates for a budget from `retriever`, packed by `packer`.

    `k`: a fixed recall (`Settings.k`); None scales it to the budget, and a pack that comes out
    short with more in the corpus retrieves `MORE_RECALL` times more. `chunk_stride_tokens`:
    the new tokens each chunk adds past its overlap (what `recall_k` divides by)."""

    def __init__(
        self, retriever: Retriever, corpus: Corpus, packer: Packer, *, k: int | None, chunk_stride_tokens: int
    ) -> None:
        self.retriever = retriever
        self.corpus = corpus
        self.packer = packer
        self.k = k
        self.chunk_stride_tokens = chunk_stride_tokens

    def candidates(self, query: str, budget_tokens: int, scope: Scope, k: int | None = None) -> Candidates:
        """A generous retrieval for the budget (`k`, else the builder's, else `recall_k`);
        everything the scope sees when it is about the budget's size (then nothing is lost to
        retrieval). What the scope sees is counted only as far as the budget calls for: O(1)
        for everything, O(budget) for a scope."""
        k = k or self.k or recall_k(budget_tokens, self.chunk_stride_tokens)
        chunks, tokens = self.corpus.visible_size(scope, tokens_above=math.ceil(WHOLE_CORPUS_SLACK * budget_tokens))
        whole_corpus = 0 < chunks and tokens <= WHOLE_CORPUS_SLACK * budget_tokens
        k = min(MAX_K, max(k, chunks)) if whole_corpus else k
        return Candidates(self.retriever.retrieve(query, k, scope), whole_corpus, k)

    def pack(
        self, query: str, reading: Reading, scope: Scope, hits: Sequence[Hit] | None = None,
        session: PackSession | None = None,
    ) -> PackedContext:
        """One prompt of `reading.read_tokens`: from `hits` when given, else from candidates for
        that budget, retrieving more while the pack comes out short (not in a session, whose
        state a pack moves on, nor with a fixed k)."""
        found = self.candidates(query, reading.read_tokens, scope) if hits is None else Candidates(list(hits), False)
        while True:
            context = self.packer.pack(
                query, found.hits, reading.read_tokens, max_new_tokens=reading.max_new_tokens,
                ordering=reading.ordering, session=session,
            )
            if hits is not None or session is not None or self.k is not None or not found.short_of(context):
                return _reported(context, found, reading)
            found = self.candidates(query, reading.read_tokens, scope, k=found.more)

    def windows(self, query: str, reading: Reading, scope: Scope, max_windows: int) -> Windows:
        """Candidates for the whole budget, packed into at most `max_windows` consecutive windows
        of `reading.read_tokens` (at least one)."""
        found = self.candidates(query, reading.budget_tokens, scope)
        packed = pack_windows(
            self.packer, query, found.hits, reading.read_tokens, reading.max_new_tokens, max_windows, reading.ordering
        )
        return Windows(found, [_reported(w, found, reading) for w in packed])

    def alone(self, query: str, windows: Windows, passage: Passage, reading: Reading) -> PackedContext:
        """`passage` of one of `windows` packed on its own, from the candidates it was made of."""
        ids = set(passage.chunk_ids)
        hits = [h for h in windows.candidates.hits if h.chunk.id in ids]
        context = self.packer.pack(
            query, hits, reading.read_tokens, max_new_tokens=reading.max_new_tokens, ordering=reading.ordering
        )
        return _reported(context, windows.candidates, reading)


def _reported(context: PackedContext, found: Candidates, reading: Reading) -> PackedContext:
    """`context` saying where its candidates came from, and that the model's effective context
    (not the caller's budget) cut it, where it did; refused where that cut left no passage."""
    update: dict[str, Any] = {"recall": found.recall_of(context)}
    if context.budget_tokens < reading.budget_tokens and context.stopped_by == "budget":
        update["stopped_by"] = "effective_context"
        if not context.passages:  # the answer would read nothing
            raise InvalidArgumentError(
                f"the model's effective context leaves {context.budget_tokens - context.max_new_tokens:,} prompt "
                "tokens a window, and no passage fits there beside the prompt's instructions and question: raise "
                "Settings.effective_context, or set it to 'window'"
            )
    return context.model_copy(update=update)
