"""Pack stage: turn a generous candidate list into the best prompt that fits a token budget.

Candidates are taken in rank order. Each one is dropped if its text is already shown
(`covered`: an overlapping chunk of the same document), an exact copy of a kept one
(`duplicate`) or a near copy (`near_duplicate`, MinHash), or if it no longer fits
(`over_budget`). Kept chunks of one document that overlap or touch are merged back into one
passage in their original order. Passages are then ordered by a policy:

- `canonical` (default): by document and offset, independent of the query, so consecutive
  prompts share a long prefix that vLLM's prefix caching (or a provider's context cache)
  reuses, and passages read in their original order;
- `relevance`: best-ranked first;
- `edges`: best-ranked at the start and the end, weakest in the middle (against
  "lost in the middle").

A `PackSession` keeps the passages of earlier turns in place and appends what a follow-up
adds, so each follow-up only pays for new tokens.

Budgets are exact in the reading model's tokens without tokenizing the whole prompt: the
prompt is `head + passages + tail`, each piece is counted once, and the few tokens by which
a boundary between two pieces differs from the sum (e.g. a BOS token) are measured once per
packer. Small prompts are recounted whole as a check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from hybridctx.dedup import DuplicateFilter
from hybridctx.errors import BudgetTooSmallError, EmptyQueryError, InvalidArgumentError
from hybridctx.prompt import PromptTemplate
from hybridctx.schema import Chunk, DroppedCandidate, Hit, Ordering, PackedContext, Passage
from hybridctx.tokens import TokenCounter

ORDERINGS: tuple[Ordering, ...] = ("canonical", "relevance", "edges")
# Chunks of one document separated by at most this many (whitespace) characters are one passage.
_MAX_JOIN_GAP = 2
# Prompts up to this size are recounted whole after packing, as a check on the piecewise count.
_RECOUNT_BELOW = 8192
# Candidates are counted in batches of this many, as the scan reaches them.
_COUNT_BATCH = 256
# A follow-up may evict stale passages of its session for at most this share of the window.
_FOLLOW_UP_SHARE = 0.5


@dataclass
class _Span:
    """A visible piece of one document: the uncovered part of a chunk, or a merged passage."""

    doc_id: str
    start: int
    end: int
    start_line: int
    text: str
    rank: int
    chunks: list[Chunk]

    @property
    def end_line(self) -> int:
        return self.start_line + self.text.count("\n")

    def touches(self, other: _Span) -> bool:
        """Same document, and overlapping or at most a small whitespace gap apart."""
        return (
            self.doc_id == other.doc_id
            and other.start - self.end <= _MAX_JOIN_GAP
            and self.start - other.end <= _MAX_JOIN_GAP
        )


@dataclass
class PackSession:
    """The passages shown so far in a conversation about the same material."""

    spans: list[_Span] = field(default_factory=list)
    duplicates: DuplicateFilter | None = None


class Packer:
    """Fills a budget from ranked hits; see the module docstring for the policy."""

    def __init__(
        self,
        counter: TokenCounter,
        template: PromptTemplate | None = None,
        near_duplicate_threshold: float | None = 0.8,
    ) -> None:
        self.counter = counter
        self.template = template or PromptTemplate()
        self.near_duplicate_threshold = near_duplicate_threshold
        DuplicateFilter(near_duplicate_threshold)  # validates the threshold now, not on first pack
        self._head_tokens = counter.count(self.template.head)
        self._boundaries = self._measure_boundaries()
        self._empty_tokens = counter.count("")
        sample = self.template.passage(_sample_passage(1, ""))
        self._header_tokens = counter.count(sample) - self._empty_tokens + self._boundaries["passage"]

    def session(self) -> PackSession:
        return PackSession(duplicates=DuplicateFilter(self.near_duplicate_threshold))

    def pack(
        self,
        query: str,
        hits: Sequence[Hit],
        budget_tokens: int,
        *,
        reserve_tokens: int = 0,
        ordering: Ordering = "canonical",
        session: PackSession | None = None,
    ) -> PackedContext:
        """Pack `hits` for `query` into `budget_tokens - reserve_tokens` prompt tokens.

        `reserve_tokens` is the room kept for the answer.
        """
        query = query.strip()
        if not query:
            raise EmptyQueryError()
        if ordering not in ORDERINGS:
            raise InvalidArgumentError(f"ordering must be one of {', '.join(ORDERINGS)}, got {ordering!r}")
        if budget_tokens < 1 or reserve_tokens < 0 or reserve_tokens >= budget_tokens:
            raise InvalidArgumentError(
                f"budget_tokens ({budget_tokens}) must be positive and larger than reserve_tokens ({reserve_tokens})"
            )
        limit = budget_tokens - reserve_tokens
        tail = self.template.tail(query)
        tail_tokens = self.counter.count(tail)
        skeleton = self._head_tokens + tail_tokens + self._boundaries["empty"]
        if skeleton > limit:
            raise BudgetTooSmallError(limit, skeleton)

        state = session if session is not None else self.session()
        selection = _Selection(self, state, hits, limit - skeleton)
        selection.run()
        while True:
            passages, spans = self._arrange(selection, ordering)
            pieces = [self.template.passage(p) for p in passages]
            counts = self.counter.count_many(pieces)
            token_count = self._total(tail_tokens, counts)
            prompt = self.template.head + "".join(pieces) + tail
            if token_count <= _RECOUNT_BELOW:
                token_count = self.counter.count(prompt)
            if token_count <= limit or not selection.chosen:
                break
            selection.give_back_worst()

        # Session passages before the first evicted one are unchanged: the reusable prefix.
        kept = next((i for i, s in enumerate(state.spans) if id(s) in selection.evicted), len(state.spans))
        prefix_tokens = self._head_tokens
        if kept:
            prefix_tokens += sum(counts[:kept]) + self._boundaries["head"] + (kept - 1) * self._boundaries["passage"]
        state.spans = spans
        return PackedContext(
            query=query,
            prompt=prompt,
            chunks=[c for s in spans for c in s.chunks],
            passages=passages,
            token_count=token_count,
            budget_tokens=budget_tokens,
            reserved_tokens=reserve_tokens,
            prefix_token_count=prefix_tokens,
            ordering=ordering,
            dropped=selection.dropped,
        )

    # -- arrangement and counting --------------------------------------------------------
    def _arrange(self, selection: _Selection, ordering: Ordering) -> tuple[list[Passage], list[_Span]]:
        """Session passages stay where they were; new ones are merged and ordered after them."""
        kept = [s for s in selection.session.spans if id(s) not in selection.evicted]
        new = _order(_merge(selection.chosen), ordering)
        spans = kept + new
        passages = [
            Passage(
                number=n, doc_id=s.doc_id, source=s.chunks[0].source, text=s.text, start=s.start, end=s.end,
                start_line=s.start_line, end_line=s.end_line, chunk_ids=[c.id for c in s.chunks],
            )
            for n, s in enumerate(spans, start=1)
        ]
        return passages, spans

    def _total(self, tail_tokens: int, passage_counts: list[int]) -> int:
        b = self._boundaries
        if not passage_counts:
            return self._head_tokens + tail_tokens + b["empty"]
        return (
            self._head_tokens + sum(passage_counts) + tail_tokens
            + b["head"] + (len(passage_counts) - 1) * b["passage"] + b["tail"]
        )

    def _measure_boundaries(self) -> dict[str, int]:
        """Tokens by which joining two prompt pieces differs from counting them apart."""
        count, t = self.counter.count, self.template
        first, second = t.passage(_sample_passage(1, "Alpha beta.")), t.passage(_sample_passage(12, "Gamma (delta)"))
        tail = t.tail("What is it?")

        def joined(a: str, b: str) -> int:
            return count(a + b) - count(a) - count(b)

        return {
            "head": joined(t.head, first),
            "passage": joined(first, second),
            "tail": joined(second, tail),
            "empty": joined(t.head, tail),
        }

    def estimate(self, text_tokens: int, joins_neighbour: bool) -> int:
        """What adding this many text tokens costs: plus a passage header unless it joins one."""
        return text_tokens + (0 if joins_neighbour else self._header_tokens)

    def text_tokens(self, texts: Sequence[str]) -> list[int]:
        return [n - self._empty_tokens for n in self.counter.count_many(texts)]

    def passage_costs(self, spans: Sequence[_Span]) -> list[int]:
        """What each already-rendered passage adds to a prompt."""
        pieces = [self.template.passage(_passage_of(s)) for s in spans]
        return [n + self._boundaries["passage"] for n in self.text_tokens(pieces)]


class _Selection:
    """One scan over the candidates in rank order, deciding what is kept and why."""

    def __init__(self, packer: Packer, session: PackSession, hits: Sequence[Hit], room: int) -> None:
        self.packer = packer
        self.session = session
        self.duplicates = session.duplicates or DuplicateFilter(packer.near_duplicate_threshold)
        session.duplicates = self.duplicates
        self.hits = sorted(hits, key=lambda h: h.rank)
        self.room = room
        self.chosen: list[_Span] = []
        self.costs: list[int] = []
        self.dropped: list[DroppedCandidate] = []
        self.evicted: set[int] = set()
        self.session_costs = dict(zip(map(id, session.spans), packer.passage_costs(session.spans), strict=True))
        self.used = sum(self.session_costs.values())
        self.fresh_room = int(_FOLLOW_UP_SHARE * room)
        relevant = {h.chunk.id for h in self.hits}
        self.stale = [s for s in session.spans if not any(c.id in relevant for c in s.chunks)]
        for span in reversed(session.spans):  # the window shrank since the last turn
            if self.used <= room:
                break
            self._evict(span)

    def _evict(self, span: _Span) -> None:
        self.evicted.add(id(span))
        self.used -= self.session_costs[id(span)]
        for c in span.chunks:
            self.duplicates.remove(c.id)

    def run(self) -> None:
        seen: set[str] = set()
        counts: list[int] = []
        for i, hit in enumerate(self.hits):
            if i == len(counts):
                counts += self.packer.text_tokens([h.chunk.text for h in self.hits[i : i + _COUNT_BATCH]])
            if hit.chunk.id in seen:
                continue
            seen.add(hit.chunk.id)
            self._consider(hit, counts[i])

    def _visible(self) -> list[_Span]:
        return [s for s in self.session.spans if id(s) not in self.evicted] + self.chosen

    def _consider(self, hit: Hit, text_tokens: int) -> None:
        chunk = hit.chunk
        shown = [s for s in self._visible() if s.doc_id == chunk.doc_id and s.start < chunk.end and chunk.start < s.end]
        parts = _uncovered(chunk, shown, hit.rank)
        if not parts:
            self._drop(chunk, "covered", shown[0].chunks[0].id)
            return
        copy = self.duplicates.exact_copy_of(chunk.text)
        if copy is not None:
            self._drop(chunk, "duplicate", copy)
            return
        visible_chars = sum(len(p.text) for p in parts)
        joins = any(p.touches(s) for p in parts for s in self._visible())
        cost = self.packer.estimate(-(-text_tokens * visible_chars // max(1, len(chunk.text))), joins)
        if self.used + cost > self.room and not self._evict_for(cost):
            self._drop(chunk, "over_budget")
            return
        near = self.duplicates.near_copy_of(chunk.text, ignore=lambda key: self._is_neighbour(key, chunk))
        if near is not None:
            self._drop(chunk, "near_duplicate", near)
            return
        self.duplicates.add(chunk.id, chunk.text)
        self.chosen += parts
        self.costs += [cost] + [0] * (len(parts) - 1)
        self.used += cost
        self.fresh_room -= cost

    def _is_neighbour(self, key: str, chunk: Chunk) -> bool:
        """Overlapping chunks of one document share text by design: they merge, not dedup."""
        probe = _Span(chunk.doc_id, chunk.start, chunk.end, chunk.start_line, chunk.text, 0, [chunk])
        return any(s.touches(probe) for s in self._visible() if any(c.id == key for c in s.chunks))

    def _evict_for(self, cost: int) -> bool:
        """Make room for a fresh passage by evicting stale session passages, last first."""
        if cost > self.fresh_room:
            return False
        while self.used + cost > self.room and self.stale:
            span = self.stale.pop()
            if id(span) not in self.evicted:
                self._evict(span)
        return self.used + cost <= self.room

    def give_back_worst(self) -> None:
        """The piecewise estimate overshot: drop the worst-ranked kept candidate."""
        worst = max(range(len(self.chosen)), key=lambda i: self.chosen[i].rank)
        span = self.chosen.pop(worst)
        self.used -= self.costs.pop(worst)
        chunk = span.chunks[0]
        if not any(chunk in s.chunks for s in self.chosen):
            self.duplicates.remove(chunk.id)
            self._drop(chunk, "over_budget")

    def _drop(self, chunk: Chunk, reason: str, kept: str | None = None) -> None:
        self.dropped.append(DroppedCandidate(chunk_id=chunk.id, reason=reason, kept=kept))  # type: ignore[arg-type]


def _uncovered(chunk: Chunk, shown: list[_Span], rank: int) -> list[_Span]:
    """The parts of `chunk` not already shown, whitespace-trimmed (none if fully covered)."""
    parts, cursor = [], chunk.start
    for s in sorted(shown, key=lambda s: s.start):
        if s.start > cursor:
            parts.append((cursor, s.start))
        cursor = max(cursor, s.end)
    if cursor < chunk.end:
        parts.append((cursor, chunk.end))
    spans = []
    for a, b in parts:
        text = chunk.text[a - chunk.start : b - chunk.start]
        stripped = text.strip()
        if not stripped:
            continue
        lead = len(text) - len(text.lstrip())
        a += lead
        line = chunk.start_line + chunk.text.count("\n", 0, a - chunk.start)
        spans.append(_Span(chunk.doc_id, a, a + len(stripped), line, stripped, rank, [chunk]))
    return spans


def _merge(spans: list[_Span]) -> list[_Span]:
    """Overlapping or touching spans of one document become one, in document order."""
    merged: list[_Span] = []
    for s in sorted(spans, key=lambda s: (s.doc_id, s.start)):
        last = merged[-1] if merged else None
        if last is None or not last.touches(s):
            merged.append(_Span(s.doc_id, s.start, s.end, s.start_line, s.text, s.rank, list(s.chunks)))
            continue
        if s.end > last.end:
            if s.start >= last.end:
                gap_lines = s.start_line - last.end_line
                last.text += "\n" * gap_lines if gap_lines > 0 else " " if s.start > last.end else ""
                last.text += s.text
            else:
                last.text += s.text[last.end - s.start :]
            last.end = s.end
        last.rank = min(last.rank, s.rank)
        last.chunks += [c for c in s.chunks if c not in last.chunks]
    return merged


def _order(spans: list[_Span], ordering: Ordering) -> list[_Span]:
    if ordering == "canonical":
        return spans  # _merge leaves them by document and offset
    by_rank = sorted(spans, key=lambda s: s.rank)
    if ordering == "relevance":
        return by_rank
    return by_rank[0::2] + by_rank[1::2][::-1]  # edges: 1, 3, 5, ... 6, 4, 2


def _passage_of(span: _Span) -> Passage:
    return Passage(
        number=0, doc_id=span.doc_id, source=span.chunks[0].source, text=span.text, start=span.start,
        end=span.end, start_line=span.start_line, end_line=span.end_line, chunk_ids=[],
    )


def _sample_passage(number: int, text: str) -> Passage:
    return Passage(
        number=number, doc_id="d", source="docs/sample.md", text=text, start=0, end=len(text),
        start_line=1, end_line=1, chunk_ids=[],
    )
