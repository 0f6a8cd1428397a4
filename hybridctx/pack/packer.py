"""The packer: turn a generous candidate list into the best prompt that fits a token budget.

Candidates are taken in rank order (`selection`): each one is dropped if its text is already
shown (`covered`: an overlapping chunk of the same document), if it no longer fits
(`over_budget`), or if it is an exact copy (`duplicate`) or near copy (`near_duplicate`,
MinHash, `dedup`) of a kept one. Kept chunks of one document that overlap or touch are
merged back into one passage in their original order (`spans`). Passages are then ordered
by a policy:

- `canonical` (default): by document and offset, independent of the query, so consecutive
  prompts share a long prefix that vLLM's prefix caching (or a provider's context cache)
  reuses, and passages read in their original order;
- `relevance`: best-ranked first;
- `edges`: best-ranked at the start and the end, weakest in the middle (against
  "lost in the middle").

A `PackSession` keeps the passages of earlier turns in place and appends what a follow-up
adds, so each follow-up only pays for new tokens.

What the packer needs to know of each chunk comes stored with it (`Chunk.profile`,
`profiles`), so a window does no tokenizing or hashing of chunks a knowledge base profiled
for this reader. Chunks without a profile (hits from elsewhere, a KB indexed for another
reader) are counted and sketched as the scan reaches them, and remembered for the next
question. Budgets are exact in the reading model's tokens (`counting`); small prompts are
also recounted whole, as a check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from hybridctx.errors import BudgetTooSmallError, EmptyQueryError, InvalidArgumentError
from hybridctx.pack.counting import PromptCounter
from hybridctx.pack.dedup import DuplicateFilter
from hybridctx.pack.gc_pause import gc_paused
from hybridctx.pack.profiles import reader_id, sketch_profiles
from hybridctx.pack.prompt import PromptTemplate
from hybridctx.pack.selection import PackSession, Selection
from hybridctx.pack.spans import Span, merge, order
from hybridctx.schema import ChunkProfile, Hit, Ordering, PackedContext, Passage
from hybridctx.tokens import RecentValues, TokenCounter

ORDERINGS: tuple[Ordering, ...] = ("canonical", "relevance", "edges")
# Prompts up to this size are recounted whole after packing, as a check on the piecewise count.
_RECOUNT_BELOW = 8192
# A second pass fills what cautious estimates left free, if that is more than this share of the room.
_TOP_UP_ABOVE = 0.004


class Packer:
    """Fills a budget from ranked hits; see the module docstring for the policy."""

    def __init__(
        self,
        counter: TokenCounter,
        template: PromptTemplate | None = None,
        near_duplicate_threshold: float | None = 0.8,
        follow_up_share: float = 0.1,
    ) -> None:
        """`follow_up_share`: the share of the window a session keeps for follow-ups. The first
        question of a session fills the rest, and those passages stay, the session's cached
        prefix; each follow-up appends its new passages after them, evicting stale follow-up
        passages from the end of the window when it is full."""
        if not 0.0 <= follow_up_share <= 1.0:
            raise InvalidArgumentError(f"follow_up_share must be in [0, 1], got {follow_up_share}")
        DuplicateFilter(near_duplicate_threshold)  # validates the threshold now, not on first pack
        self.template = template or PromptTemplate()
        self.prompt = PromptCounter(counter, self.template)
        self.counter = self.prompt.counter
        self._sketches = RecentValues(limit=100_000)  # MinHash sketches of recent chunk texts
        self.near_duplicate_threshold = near_duplicate_threshold
        self.follow_up_share = follow_up_share
        self.reader = reader_id(counter, self.template)

    def chunk_profiles(self, texts: Sequence[str]) -> list[ChunkProfile]:
        """What packing needs to know of each chunk text, to be stored with it at index time:
        `sketch_profiles`, and its tokens as a passage body when the counter names its tokenizer."""
        profiles = sketch_profiles(texts)
        if self.reader is None:
            return profiles
        bodies = self.prompt.count_bodies(texts)
        return [replace(p, reader=self.reader, tokens=n) for p, n in zip(profiles, bodies, strict=True)]

    def _recall(self, hits: Sequence[Hit]) -> dict[str, ChunkProfile]:
        """Take the body counts the knowledge base stored with these chunks (`Chunk.profile`)
        that this packer does not know yet; return the profiles of those not sketched yet, by text."""
        bodies: dict[str, int] = {}
        sketches: dict[str, ChunkProfile] = {}
        for hit in hits:
            text, profile = hit.chunk.text, hit.chunk.profile
            if profile is None or profile.chars != len(text):  # none stored, or the text was changed since
                continue
            if (profile.tokens is not None and profile.reader == self.reader is not None
                    and not self.prompt.knows_body(text)):
                bodies[text] = profile.tokens
            if text not in self._sketches:
                sketches[text] = profile
        self.prompt.remember_bodies(bodies)
        return sketches

    def session(self) -> PackSession:
        return PackSession(duplicates=self.duplicate_filter())

    def duplicate_filter(self) -> DuplicateFilter:
        """A fresh filter sharing this packer's memory of sketched texts."""
        return DuplicateFilter(self.near_duplicate_threshold, sketches=self._sketches)

    @gc_paused()
    def pack(
        self,
        query: str,
        hits: Sequence[Hit],
        budget_tokens: int,
        *,
        max_new_tokens: int = 0,
        ordering: Ordering = "canonical",
        session: PackSession | None = None,
    ) -> PackedContext:
        """Pack `hits` for `query` into `budget_tokens - max_new_tokens` prompt tokens
        (`max_new_tokens`: the room kept for the answer)."""
        query = query.strip()
        if not query:
            raise EmptyQueryError()
        if ordering not in ORDERINGS:
            raise InvalidArgumentError(f"ordering must be one of {', '.join(ORDERINGS)}, got {ordering!r}")
        if budget_tokens < 1 or max_new_tokens < 0 or max_new_tokens >= budget_tokens:
            raise InvalidArgumentError(
                f"budget_tokens ({budget_tokens}) must be positive and larger than max_new_tokens ({max_new_tokens})"
            )
        prompt_budget = budget_tokens - max_new_tokens
        tail = self.template.tail(query)
        tail_tokens = self.counter.count(tail)
        skeleton = self.prompt.total(tail_tokens, [])
        if skeleton > prompt_budget:
            raise BudgetTooSmallError(prompt_budget, skeleton)

        state = session if session is not None else self.session()
        if state.duplicates is None:
            state.duplicates = self.duplicate_filter()
        passage_budget = prompt_budget - skeleton
        if session is not None and not state.spans:  # a session's first question: keep room for follow-ups
            passage_budget = int(passage_budget * (1 - self.follow_up_share))
        stored_sketches = self._recall(hits)
        selection = Selection(self.prompt, state.duplicates, state, hits, passage_budget)
        selection.duplicates.remember(stored_sketches)
        selection.run()
        passages, spans, rendered, pieces, token_count = self._fit(
            selection, ordering, tail, tail_tokens, prompt_budget, skeleton
        )

        # Session passages before the first evicted one are unchanged: the reusable prefix.
        kept = next((i for i, s in enumerate(state.spans) if id(s) in selection.evicted), len(state.spans))
        prefix_tokens = self.prompt.prefix_tokens(pieces[:kept])
        _remember(state, spans)
        prompt = self.template.head + "".join(rendered) + tail
        return PackedContext(
            query=query,
            prompt=prompt,
            chunks=[c for s in spans for c in s.chunks],
            passages=passages,
            token_count=token_count,
            budget_tokens=budget_tokens,
            max_new_tokens=max_new_tokens,
            prefix_token_count=prefix_tokens,
            ordering=ordering,
            stopped_by="budget" if any(d[1] == "over_budget" for d in selection.dropped) else "candidates",
            dropped=[{"chunk_id": c, "reason": r, "kept": k} for c, r, k in selection.dropped],  # validated in one go
        )

    def _fit(
        self, selection: Selection, ordering: Ordering, tail: str, tail_tokens: int, prompt_budget: int, skeleton: int
    ) -> tuple[list[Passage], list[Span], list[str], list[int], int]:
        """Arrange and count the selection exactly; give back what overshoots, or fill (once)
        what cautious estimates left free."""
        topped_up = False
        while True:
            spans = _arrange(selection, ordering)
            passages = [s.passage(n) for n, s in enumerate(spans, start=1)]
            rendered = [self.template.passage(p) for p in passages]
            pieces = self.prompt.piece_tokens(passages, spans, rendered)
            token_count = self.prompt.total(tail_tokens, pieces)
            if token_count <= _RECOUNT_BELOW:
                token_count = self.counter.count(self.template.head + "".join(rendered) + tail)
            slack = selection.passage_budget - (token_count - skeleton)
            if token_count > prompt_budget and selection.chosen:
                selection.give_back(token_count - prompt_budget)
            elif not topped_up and slack > _TOP_UP_ABOVE * selection.passage_budget and selection.top_up(slack):
                topped_up = True
            else:
                return passages, spans, rendered, pieces, token_count


def _arrange(selection: Selection, ordering: Ordering) -> list[Span]:
    """Session passages stay where they were; new ones are merged and ordered after them."""
    kept = [s for s in selection.session.spans if id(s) not in selection.evicted]
    return kept + order(merge(selection.chosen), ordering)


def _remember(state: PackSession, spans: list[Span]) -> None:
    """Keep what the prompt shows for the session's next turn."""
    if not state.spans:
        state.anchor = len(spans)
    state.spans = spans
    state.anchor = min(state.anchor, len(spans))
