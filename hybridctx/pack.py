"""Pack stage: turn a generous candidate list into the best prompt that fits a token budget.

Candidates are taken in rank order. Each one is dropped if its text is already shown
(`covered`: an overlapping chunk of the same document), if it no longer fits
(`over_budget`), or if it is an exact copy (`duplicate`) or near copy (`near_duplicate`,
MinHash) of a kept one. Kept chunks of one document that overlap or touch are merged back
into one passage in their original order. Passages are then ordered by a policy:

- `canonical` (default): by document and offset, independent of the query, so consecutive
  prompts share a long prefix that vLLM's prefix caching (or a provider's context cache)
  reuses, and passages read in their original order;
- `relevance`: best-ranked first;
- `edges`: best-ranked at the start and the end, weakest in the middle (against
  "lost in the middle").

A `PackSession` keeps the passages of earlier turns in place and appends what a follow-up
adds, so each follow-up only pays for new tokens.

What the packer needs to know of each chunk (its tokens as a passage body in the reading
model's tokenizer, its exact key, MinHash signature and shingles) is worked out at index time
(`chunk_facts`), stored with the chunk, and comes back with it from retrieval
(`Chunk.facts`), so that even a packer's first window does no tokenizing or hashing of the
chunks. Chunks without stored facts (hits from elsewhere, a KB indexed for another reader)
are counted and sketched as the scan reaches them, and remembered for the next question.

Budgets are exact in the reading model's tokens without tokenizing the prompt twice: the
prompt is `head + (header + body)... + tail`; each body is counted once, when its
candidate is considered, each header when the passages are numbered, and the tokens by which
a join between two pieces differs from the sum (e.g. a BOS token) are measured once per
packer. Small prompts are also recounted whole, as a check.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import math
import statistics
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from hybridctx.dedup import DuplicateFilter, sketch_batch
from hybridctx.errors import BudgetTooSmallError, EmptyQueryError, InvalidArgumentError
from hybridctx.prompt import PromptTemplate
from hybridctx.schema import Chunk, ChunkFacts, Hit, Ordering, PackedContext, Passage
from hybridctx.tokens import CachedCounter, RecentValues, TokenCounter

ORDERINGS: tuple[Ordering, ...] = ("canonical", "relevance", "edges")
# Chunks of one document separated by at most this many (whitespace) characters are one passage.
_MAX_JOIN_GAP = 2
# Prompts up to this size are recounted whole after packing, as a check on the piecewise count.
_RECOUNT_BELOW = 8192
# A second pass fills what cautious estimates left free, if that is more than this share of the room.
_TOP_UP_ABOVE = 0.004
# Candidates are counted in batches of this many, as the scan reaches them.
_COUNT_BATCH = 32


_gc_lock = threading.Lock()
_gc_pauses = 0  # packs in progress, in all threads
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while packs run (in any thread), and restore it
    as the caller had it when the last one ends. A window allocates thousands of objects that
    survive, which sets off full collections: each walks every object of the process (the
    hits, the packer's memory, the application's), and they took a third of a 1M-token pack.
    Packing makes no reference cycles of its own; any the process makes meanwhile are
    collected when the collector is back."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


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

    @property
    def whole_chunk(self) -> Chunk | None:
        """The chunk this span shows entirely and alone, if it does (its body count is known)."""
        if len(self.chunks) == 1 and self.text == self.chunks[0].text.strip():
            return self.chunks[0]
        return None

    def touches(self, other: _Span) -> bool:
        """Same document, and overlapping or at most a small whitespace gap apart."""
        return (
            self.doc_id == other.doc_id
            and other.start - self.end <= _MAX_JOIN_GAP
            and self.start - other.end <= _MAX_JOIN_GAP
        )


class _DocSpans:
    """The spans one document shows, kept sorted: they never overlap, so their starts and
    their ends are both sorted, and the ones near a chunk are found by bisection (a window
    shows many spans of a long document)."""

    def __init__(self) -> None:
        self.spans: list[_Span] = []
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, span: _Span) -> None:
        i = bisect.bisect_left(self._starts, span.start)
        self.spans.insert(i, span)
        self._starts.insert(i, span.start)
        self._ends.insert(i, span.end)

    def remove(self, span: _Span) -> None:
        i = [s is span for s in self.spans].index(True)
        del self.spans[i], self._starts[i], self._ends[i]

    def near(self, start: int, end: int) -> list[_Span]:
        """Spans overlapping [start, end) or at most _MAX_JOIN_GAP characters away from it."""
        low = bisect.bisect_left(self._ends, start - _MAX_JOIN_GAP)
        high = bisect.bisect_right(self._starts, end + _MAX_JOIN_GAP)
        return self.spans[low:high]


@dataclass
class PackSession:
    """The passages shown so far in a conversation about the same material, and the duplicate
    filter that knows their texts."""

    spans: list[_Span] = field(default_factory=list)
    anchor: int = 0  # the first question's passages: kept as the session's fixed prefix
    duplicates: DuplicateFilter | None = None


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
        self.counter = CachedCounter(counter)
        self._body_tokens = RecentValues(limit=200_000)  # chunk text -> tokens of its quoted body
        self._sketches = RecentValues(limit=100_000)  # MinHash sketches of recent chunk texts
        self.template = template or PromptTemplate()
        self.near_duplicate_threshold = near_duplicate_threshold
        self.follow_up_share = follow_up_share
        self.reader = reader_id(counter, self.template)
        self._head_tokens = counter.count(self.template.head)
        self.joins = self._measure_joins()
        self._header_estimates: dict[tuple[str, int, int], int] = {}

    def chunk_facts(self, texts: Sequence[str]) -> list[ChunkFacts]:
        """What packing needs to know of each chunk text, to be stored with it at index time:
        `sketch_facts`, and its tokens as a passage body when the counter names its tokenizer."""
        facts = sketch_facts(texts)
        if self.reader is None:
            return facts
        return [replace(f, reader=self.reader, tokens=n) for f, n in zip(facts, self._count_bodies(texts), strict=True)]

    def _recall(self, hits: Sequence[Hit]) -> dict[str, ChunkFacts]:
        """Take the token counts the knowledge base stored with these chunks (`Chunk.facts`)
        that this packer does not know yet; return the facts of those not sketched yet, by text."""
        bodies: dict[str, int] = {}
        sketches: dict[str, ChunkFacts] = {}
        for hit in hits:
            text, facts = hit.chunk.text, hit.chunk.facts
            if facts is None or facts.chars != len(text):  # none stored, or the text was changed since
                continue
            if facts.reader == self.reader and facts.reader is not None and text not in self._body_tokens:
                bodies[text] = facts.tokens  # type: ignore[assignment]
            if text not in self._sketches:
                sketches[text] = facts
        self._body_tokens.update(bodies)
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
        skeleton = self._head_tokens + tail_tokens + self.joins["empty"]
        if skeleton > limit:
            raise BudgetTooSmallError(limit, skeleton)

        state = session if session is not None else self.session()
        room = limit - skeleton
        if session is not None and not state.spans:  # a session's first question: keep room for follow-ups
            room = int(room * (1 - self.follow_up_share))
        stored_sketches = self._recall(hits)
        selection = _Selection(self, state, hits, room)
        selection.duplicates.remember(stored_sketches)
        selection.run()
        passages, spans, rendered, pieces, token_count = self._fit(selection, ordering, tail, tail_tokens, limit, skeleton)

        # Session passages before the first evicted one are unchanged: the reusable prefix.
        kept = next((i for i, s in enumerate(state.spans) if id(s) in selection.evicted), len(state.spans))
        prefix_tokens = self._head_tokens
        if kept:
            prefix_tokens += sum(pieces[:kept]) + self.joins["head"] + (kept - 1) * self.joins["passage"]
        _remember(state, spans)
        prompt = self.template.head + "".join(rendered) + tail
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
            dropped=[{"chunk_id": c, "reason": r, "kept": k} for c, r, k in selection.dropped],  # validated in one go
        )

    def _fit(
        self, selection: _Selection, ordering: Ordering, tail: str, tail_tokens: int, limit: int, skeleton: int
    ) -> tuple[list[Passage], list[_Span], list[str], list[int], int]:
        """Arrange and count the selection exactly; give back what overshoots, or fill (once)
        what cautious estimates left free."""
        topped_up = False
        while True:
            passages, spans = self._arrange(selection, ordering)
            rendered = [self.template.passage(p) for p in passages]
            pieces = self.piece_tokens(passages, spans, rendered)
            token_count = self._total(tail_tokens, pieces)
            if token_count <= _RECOUNT_BELOW:
                token_count = self.counter.count(self.template.head + "".join(rendered) + tail)
            slack = selection.room - (token_count - skeleton)
            if token_count > limit and selection.chosen:
                selection.give_back(token_count - limit)
            elif not topped_up and slack > _TOP_UP_ABOVE * selection.room and selection.top_up(slack):
                topped_up = True
            else:
                return passages, spans, rendered, pieces, token_count

    # -- counting ----------------------------------------------------------------------------
    def body_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each chunk text quoted as a passage body, remembered by text."""
        known = self._body_tokens
        new = [t for t in dict.fromkeys(texts) if t not in known]
        if new:
            known.update(dict(zip(new, self._count_bodies(new), strict=True)))
        return [known[t] for t in texts]

    def _count_bodies(self, texts: Sequence[str]) -> list[int]:
        """Counted by the counter itself, not its cache: they are remembered by chunk text."""
        return self.counter.counter.count_many([self.template.body(t.strip()) for t in texts])

    def piece_tokens(self, passages: Sequence[Passage], spans: Sequence[_Span], rendered: Sequence[str]) -> list[int]:
        """Exact tokens of each rendered passage: header + known body count for a whole
        chunk, a full count for merged or partial passages (and for a chunk whose count the
        packer no longer remembers)."""
        bodies = [None if (c := span.whole_chunk) is None else self._body_tokens.get(c.text) for span in spans]
        headers = iter(self.counter.count_many([self.template.header(p) for p, n in zip(passages, bodies) if n is not None]))
        pieces = iter(self.counter.count_many([piece for piece, n in zip(rendered, bodies) if n is None]))
        return [next(pieces) if n is None else next(headers) + n + self.joins["header"] for n in bodies]

    def header_estimates(self, keys: Sequence[tuple[str, int, int]]) -> list[int]:
        """Tokens of a header (with joins) for each (source, digits of the passage number,
        digits of the line numbers), with the largest numbers of so many digits: an estimate
        that errs high, counted once per key."""
        estimates = self._header_estimates
        new = [key for key in dict.fromkeys(keys) if key not in estimates]
        if new:
            samples = [
                Passage(number=10**digits - 1, doc_id="d", source=source, text="", start=0, end=0,
                        start_line=10**lines - 1, end_line=10**lines - 1, chunk_ids=[])
                for source, digits, lines in new
            ]
            counts = self.counter.count_many([self.template.header(sample) for sample in samples])
            for key, n in zip(new, counts, strict=True):
                estimates[key] = n + self.joins["header"] + self.joins["passage"]
        return [estimates[key] for key in keys]

    def _total(self, tail_tokens: int, pieces: list[int]) -> int:
        j = self.joins
        if not pieces:
            return self._head_tokens + tail_tokens + j["empty"]
        return self._head_tokens + sum(pieces) + tail_tokens + j["head"] + (len(pieces) - 1) * j["passage"] + j["tail"]

    def _measure_joins(self) -> dict[str, int]:
        """Tokens by which joining two prompt pieces differs from counting them apart."""
        count, t = self.counter.count, self.template
        first, second = _sample_passage(1, "Alpha beta."), _sample_passage(12, "Gamma (delta)")
        rendered_first, rendered_second = t.passage(first), t.passage(second)
        tail = t.tail("What is it?")

        def joined(a: str, b: str) -> int:
            return count(a + b) - count(a) - count(b)

        return {
            "head": joined(t.head, rendered_first),
            "passage": joined(rendered_first, rendered_second),
            "tail": joined(rendered_second, tail),
            "empty": joined(t.head, tail),
            "header": joined(t.header(first), t.body(first.text)),
        }

    # -- arrangement ---------------------------------------------------------------------------
    def _arrange(self, selection: _Selection, ordering: Ordering) -> tuple[list[Passage], list[_Span]]:
        """Session passages stay where they were; new ones are merged and ordered after them."""
        kept = [s for s in selection.session.spans if id(s) not in selection.evicted]
        spans = kept + _order(_merge(selection.chosen), ordering)
        passages = [
            Passage(
                number=n, doc_id=s.doc_id, source=s.chunks[0].source, text=s.text, start=s.start, end=s.end,
                start_line=s.start_line, end_line=s.end_line, chunk_ids=[c.id for c in s.chunks],
            )
            for n, s in enumerate(spans, start=1)
        ]
        return passages, spans


class _Selection:
    """One scan over the candidates in rank order, deciding what is kept and why."""

    def __init__(self, packer: Packer, session: PackSession, hits: Sequence[Hit], room: int) -> None:
        self.packer = packer
        self.session = session
        self.duplicates = session.duplicates or packer.duplicate_filter()
        session.duplicates = self.duplicates
        self.hits = sorted(hits, key=lambda h: h.rank)
        self.room = room
        self.chosen: list[_Span] = []
        self.costs: list[int] = []
        self.dropped: list[tuple[str, str, str | None]] = []  # (chunk id, reason, kept chunk id)
        self.over_budget: list[int] = []  # hit indices, for a top-up once the exact count is known
        # What the prompt shows so far, by document, and the chunks behind it.
        self.shown: dict[str, _DocSpans] = defaultdict(_DocSpans)
        self.kept: dict[str, Chunk] = {}
        for span in session.spans:
            self._show(span)
        self.evicted: set[int] = set()
        self.session_costs = dict(zip(map(id, session.spans), self._session_costs(), strict=True))
        self.used = sum(self.session_costs.values())
        # Cost of each candidate as a passage of its own, counted in batches as the scan
        # reaches them; headers are estimated with numbers as long as the window could need.
        self.costs_alone: dict[int, tuple[int, int]] = {}  # hit index -> (body, header + joins)
        self.number_digits = 0  # of the last passage number, estimated from the first bodies counted
        self.chars_per_token = 0.0  # the most seen so far; 0 until something is counted
        self.stale: list[_Span] = []
        self.stale = self._stale_spans()
        self.stale_cost = sum(self.session_costs[id(s)] for s in self.stale)  # room they would free
        for span in reversed(session.spans):  # the window shrank since the last turn
            if self.used <= room:
                break
            self._evict(span)

    def run(self) -> None:
        seen: set[str] = set()
        for i, hit in enumerate(self.hits):
            if hit.chunk.id not in seen:
                seen.add(hit.chunk.id)
                self._consider(i, hit)

    # -- bookkeeping ---------------------------------------------------------------------
    def _session_costs(self) -> list[int]:
        passages = [_passage_of(s, n) for n, s in enumerate(self.session.spans, start=1)]
        rendered = [self.packer.template.passage(p) for p in passages]
        pieces = self.packer.piece_tokens(passages, self.session.spans, rendered)
        return [n + self.packer.joins["passage"] for n in pieces]

    def _show(self, span: _Span) -> None:
        self.shown[span.doc_id].add(span)
        for chunk in span.chunks:
            self.kept[chunk.id] = chunk

    def _hide(self, span: _Span) -> None:
        self.shown[span.doc_id].remove(span)
        still_shown = {c.id for s in self.shown[span.doc_id].spans for c in s.chunks}
        for chunk in span.chunks:
            if chunk.id not in still_shown:
                self.kept.pop(chunk.id, None)
                self.duplicates.remove(chunk.id)

    def _evict(self, span: _Span) -> None:
        self.evicted.add(id(span))
        self.used -= self.session_costs[id(span)]
        self._hide(span)

    def _cost_alone(self, i: int, left: float) -> tuple[int, int] | None:
        """(body tokens, header tokens + joins) of candidate i, or None when it cannot fit in
        `left` tokens anyway (so it is never counted): counting is the packer's main cost."""
        if i not in self.costs_alone:
            if not self._may_fit(i, left):
                return None
            batch = [j for j in range(i, min(len(self.hits), i + _COUNT_BATCH))
                     if j not in self.costs_alone and self._may_fit(j, left)]
            chunks = [self.hits[j].chunk for j in batch]
            bodies = self.packer.body_tokens([c.text for c in chunks])
            self.duplicates.prepare([c.text for c in chunks])
            if not self.number_digits:
                passages = len(self.session.spans) + self.room / (statistics.median(bodies) + 16)
                self.number_digits = len(str(math.ceil(passages)))
            headers = self.packer.header_estimates(
                [(c.source, self.number_digits, len(str(c.end_line))) for c in chunks]
            )
            for j, chunk, body, header in zip(batch, chunks, bodies, headers, strict=True):
                self.costs_alone[j] = (body, header)
                self.chars_per_token = max(self.chars_per_token, len(chunk.text) / max(1, body))
        return self.costs_alone[i]

    def _may_fit(self, i: int, left: float) -> bool:
        return not self.chars_per_token or len(self.hits[i].chunk.text) / self.chars_per_token <= left

    def _stale_spans(self) -> list[_Span]:
        """Follow-up passages of the session (after its anchor) that the current question would
        not pack on its own: none of their chunks ranks among the candidates a fresh window
        of this size would take."""
        if len(self.session.spans) <= self.session.anchor:
            return []
        wanted, total = set(), 0
        for i, hit in enumerate(self.hits):
            cost = self._cost_alone(i, left=self.room - total)
            if cost is None or total + sum(cost) > self.room:
                break
            total += sum(cost)
            wanted.add(hit.chunk.id)
        follow_ups = self.session.spans[self.session.anchor :]
        return [s for s in follow_ups if not any(c.id in wanted for c in s.chunks)]

    # -- decisions ----------------------------------------------------------------------------
    def _consider(self, i: int, hit: Hit) -> None:
        chunk = hit.chunk
        left = self.room - self.used + self.stale_cost
        nearby = self.shown[chunk.doc_id].near(chunk.start, chunk.end) if chunk.doc_id in self.shown else []
        if not nearby and not self._may_fit(i, left):  # the common case once the window is full
            self._over_budget(i)
            return
        overlapping = [s for s in nearby if s.start < chunk.end and chunk.start < s.end]
        parts = _uncovered(chunk, overlapping, hit.rank)
        if not parts:
            self._drop(chunk, "covered", overlapping[0].chunks[0].id)
            return
        alone = self._cost_alone(i, left=left)
        if alone is None:
            self._over_budget(i)
            return
        body, header = alone
        joins = any(p.touches(s) for p in parts for s in nearby)
        shown_share = sum(len(p.text) for p in parts) / max(1, len(chunk.text.strip()))
        cost = math.ceil(body * shown_share) + (0 if joins else header)
        if self.used + cost > self.room and not self._evict_for(cost):
            self._over_budget(i)
            return
        copy = self.duplicates.exact_copy_of(chunk.text)
        if copy is not None:
            self._drop(chunk, "duplicate", copy)
            return
        near = self.duplicates.near_copy_of(
            chunk.text, ignore=lambda key: _neighbours(self.kept[key], chunk), around=self._around
        )
        if near is not None:
            self._drop(chunk, "near_duplicate", near)
            return
        self.duplicates.add(chunk.id, chunk.text)
        for part in parts:
            self._show(part)
        self.chosen += parts
        self.costs += [cost] + [0] * (len(parts) - 1)
        self.used += cost

    def _around(self, chunk_id: str) -> list[str]:
        """The kept chunk and the kept chunks touching it: what one passage will show."""
        chunk = self.kept[chunk_id]
        return [c.id for s in self.shown[chunk.doc_id].near(chunk.start, chunk.end) for c in s.chunks
                if _neighbours(c, chunk)]

    def _evict_for(self, cost: int) -> bool:
        """Make room for a fresh passage by evicting stale follow-up passages, last first."""
        while self.used + cost > self.room and self.stale:
            span = self.stale.pop()
            self.stale_cost -= self.session_costs[id(span)]
            if id(span) not in self.evicted:
                self._evict(span)
        return self.used + cost <= self.room

    def top_up(self, slack: int) -> bool:
        """With the exact count known, reconsider the candidates dropped as over budget for
        the `slack` tokens still free; True if any was added."""
        retry = self.over_budget
        self.over_budget = []
        self.dropped = [d for d in self.dropped if d[1] != "over_budget"]
        self.used = self.room - slack
        added = len(self.chosen)
        for n, i in enumerate(retry):
            alone = self.costs_alone.get(i)
            fits = alone[0] <= slack if alone is not None else self._may_fit(i, slack)
            if fits:
                self._consider(i, self.hits[i])
            else:
                self._over_budget(i)
        return len(self.chosen) > added

    def give_back(self, tokens: int) -> None:
        """The prompt came out `tokens` over: drop the worst-ranked kept candidates until their
        estimated cost covers it (at least one)."""
        order = sorted(range(len(self.chosen)), key=lambda i: self.chosen[i].rank, reverse=True)
        freed, worst = 0, set()
        for i in order:
            worst.add(i)
            freed += max(self.costs[i], 1)
            if freed >= tokens:
                break
        for i in sorted(worst, reverse=True):
            span = self.chosen.pop(i)
            self.used -= self.costs.pop(i)
            self._hide(span)
            if span.chunks[0].id not in self.kept:
                self._drop(span.chunks[0], "over_budget")

    def _over_budget(self, i: int) -> None:
        self.over_budget.append(i)
        self._drop(self.hits[i].chunk, "over_budget")

    def _drop(self, chunk: Chunk, reason: str, kept: str | None = None) -> None:
        self.dropped.append((chunk.id, reason, kept))


def sketch_facts(texts: Sequence[str]) -> list[ChunkFacts]:
    """The reader-independent facts of chunk texts: exact keys, MinHash signatures and shingles."""
    return [
        ChunkFacts(
            exact=s.exact, signature=None if s.signature is None else s.signature.astype("<u4").tobytes(),
            shingles=s.shingles.astype("<u4").tobytes(), reader=None, tokens=None, chars=len(text),
        )
        for s, text in zip(sketch_batch(texts), texts, strict=True)
    ]


def reader_id(counter: TokenCounter, template: PromptTemplate) -> int | None:
    """A 64-bit name for the counts a packer makes: its counter's tokenizer (`counter.key`)
    and how its template quotes a body. None when the counter does not name its tokenizer:
    its counts are then never stored."""
    key = getattr(counter, "key", None)
    if key is None:
        return None
    probe = template.body("Probe <passage id=\"1\"> text </passage> <|im_start|> end")
    digest = hashlib.blake2b(f"{key}\n{type(template).__qualname__}\n{probe}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)  # SQLite integers are signed 64-bit


def _remember(state: PackSession, spans: list[_Span]) -> None:
    """Keep what the prompt shows for the session's next turn."""
    if not state.spans:
        state.anchor = len(spans)
    state.spans = spans
    state.anchor = min(state.anchor, len(spans))


def _neighbours(a: Chunk, b: Chunk) -> bool:
    """Overlapping or touching chunks of one document share text by design: they merge, not dedup."""
    return a.doc_id == b.doc_id and b.start - a.end <= _MAX_JOIN_GAP and a.start - b.end <= _MAX_JOIN_GAP


def _uncovered(chunk: Chunk, shown: list[_Span], rank: int) -> list[_Span]:
    """The parts of `chunk` not already shown, whitespace-trimmed (none if fully covered)."""
    if not shown and chunk.text == chunk.text.strip():  # the common case, made cheap
        return [_Span(chunk.doc_id, chunk.start, chunk.end, chunk.start_line, chunk.text, rank, [chunk])]
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


def _passage_of(span: _Span, number: int) -> Passage:
    return Passage(
        number=number, doc_id=span.doc_id, source=span.chunks[0].source, text=span.text, start=span.start,
        end=span.end, start_line=span.start_line, end_line=span.end_line, chunk_ids=[],
    )


def _sample_passage(number: int, text: str) -> Passage:
    return Passage(
        number=number, doc_id="d", source="docs/sample.md", text=text, start=0, end=len(text),
        start_line=1, end_line=1, chunk_ids=[],
    )
