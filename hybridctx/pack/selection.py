"""The candidate scan: one pass over the hits in rank order, deciding what is kept and why.

Each candidate is dropped if its text is already shown (`covered`), if it no longer fits
(`over_budget`), or if it is an exact (`duplicate`) or near copy (`near_duplicate`) of a
kept one. Its cost is estimated from its body count and a header estimate that errs high;
the packer then counts the arranged prompt exactly and has the selection give back or top up.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from hybridctx.pack.counting import PromptCounter
from hybridctx.pack.dedup import DuplicateFilter
from hybridctx.pack.spans import DocSpans, Span, neighbours, uncovered
from hybridctx.schema import Chunk, Hit

# Candidates are counted in batches of this many, as the scan reaches them.
_COUNT_BATCH = 32


@dataclass
class PackSession:
    """The passages shown so far in a conversation about the same material, and the duplicate
    filter that knows their texts."""

    spans: list[Span] = field(default_factory=list)
    anchor: int = 0  # the first question's passages: kept as the session's fixed prefix
    duplicates: DuplicateFilter | None = None


class Selection:
    """One scan over the candidates in rank order, deciding what is kept and why."""

    def __init__(
        self, prompt: PromptCounter, duplicates: DuplicateFilter, session: PackSession, hits: Sequence[Hit],
        passage_budget: int,
    ) -> None:
        self.prompt = prompt
        self.duplicates = duplicates
        self.session = session
        self.hits = sorted(hits, key=lambda h: h.rank)
        self.passage_budget = passage_budget
        self.chosen: list[Span] = []
        self.costs: list[int] = []
        self.dropped: list[tuple[str, str, str | None]] = []  # (chunk id, reason, kept chunk id)
        self.over_budget: list[int] = []  # hit indices, for a top-up once the exact count is known
        # What the prompt shows so far, by document, and the chunks behind it.
        self.shown: dict[str, DocSpans] = defaultdict(DocSpans)
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
        self.stale: list[Span] = []
        self.stale = self._stale_spans()
        self.stale_cost = sum(self.session_costs[id(s)] for s in self.stale)  # room they would free
        for span in reversed(session.spans):  # the window shrank since the last turn
            if self.used <= passage_budget:
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
        passages = [s.passage(n) for n, s in enumerate(self.session.spans, start=1)]
        rendered = [self.prompt.template.passage(p) for p in passages]
        pieces = self.prompt.piece_tokens(passages, self.session.spans, rendered)
        return [n + self.prompt.joins["passage"] for n in pieces]

    def _show(self, span: Span) -> None:
        self.shown[span.doc_id].add(span)
        for chunk in span.chunks:
            self.kept[chunk.id] = chunk

    def _hide(self, span: Span) -> None:
        self.shown[span.doc_id].remove(span)
        still_shown = {c.id for s in self.shown[span.doc_id].spans for c in s.chunks}
        for chunk in span.chunks:
            if chunk.id not in still_shown:
                self.kept.pop(chunk.id, None)
                self.duplicates.remove(chunk.id)

    def _evict(self, span: Span) -> None:
        self.evicted.add(id(span))
        self.used -= self.session_costs[id(span)]
        self._hide(span)

    def _cost_alone(self, i: int, budget_left: float) -> tuple[int, int] | None:
        """(body tokens, header tokens + joins) of candidate i, or None when it cannot fit in
        `budget_left` tokens anyway (so it is never counted): counting is packing's main cost."""
        if i not in self.costs_alone:
            if not self._may_fit(i, budget_left):
                return None
            batch = [j for j in range(i, min(len(self.hits), i + _COUNT_BATCH))
                     if j not in self.costs_alone and self._may_fit(j, budget_left)]
            chunks = [self.hits[j].chunk for j in batch]
            bodies = self.prompt.body_tokens([c.text for c in chunks])
            self.duplicates.prepare([c.text for c in chunks])
            if not self.number_digits:
                passages = len(self.session.spans) + self.passage_budget / (statistics.median(bodies) + 16)
                self.number_digits = len(str(math.ceil(passages)))
            headers = self.prompt.header_estimates(
                [(c.source, self.number_digits, len(str(c.end_line))) for c in chunks]
            )
            for j, chunk, body, header in zip(batch, chunks, bodies, headers, strict=True):
                self.costs_alone[j] = (body, header)
                self.chars_per_token = max(self.chars_per_token, len(chunk.text) / max(1, body))
        return self.costs_alone[i]

    def _may_fit(self, i: int, budget_left: float) -> bool:
        return not self.chars_per_token or len(self.hits[i].chunk.text) / self.chars_per_token <= budget_left

    def _stale_spans(self) -> list[Span]:
        """Follow-up passages of the session (after its anchor) that the current question would
        not pack on its own: none of their chunks ranks among the candidates a fresh window
        of this size would take."""
        if len(self.session.spans) <= self.session.anchor:
            return []
        wanted, total = set(), 0
        for i, hit in enumerate(self.hits):
            cost = self._cost_alone(i, budget_left=self.passage_budget - total)
            if cost is None or total + sum(cost) > self.passage_budget:
                break
            total += sum(cost)
            wanted.add(hit.chunk.id)
        follow_ups = self.session.spans[self.session.anchor :]
        return [s for s in follow_ups if not any(c.id in wanted for c in s.chunks)]

    # -- decisions ----------------------------------------------------------------------------
    def _consider(self, i: int, hit: Hit) -> None:
        chunk = hit.chunk
        budget_left = self.passage_budget - self.used + self.stale_cost
        nearby = self.shown[chunk.doc_id].near(chunk.start, chunk.end) if chunk.doc_id in self.shown else []
        if not nearby and not self._may_fit(i, budget_left):  # the common case once the window is full
            self._over_budget(i)
            return
        overlapping = [s for s in nearby if s.start < chunk.end and chunk.start < s.end]
        parts = uncovered(chunk, overlapping, hit.rank)
        if not parts:
            self._drop(chunk, "covered", overlapping[0].chunks[0].id)
            return
        alone = self._cost_alone(i, budget_left=budget_left)
        if alone is None:
            self._over_budget(i)
            return
        body, header = alone
        joins = any(p.touches(s) for p in parts for s in nearby)
        shown_share = sum(len(p.text) for p in parts) / max(1, len(chunk.text.strip()))
        cost = math.ceil(body * shown_share) + (0 if joins else header)
        if self.used + cost > self.passage_budget and not self._evict_for(cost):
            self._over_budget(i)
            return
        copy = self.duplicates.exact_copy_of(chunk.text)
        if copy is not None:
            self._drop(chunk, "duplicate", copy)
            return
        near = self.duplicates.near_copy_of(
            chunk.text, ignore=lambda key: neighbours(self.kept[key], chunk), around=self._around
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
                if neighbours(c, chunk)]

    def _evict_for(self, cost: int) -> bool:
        """Make room for a fresh passage by evicting stale follow-up passages, last first."""
        while self.used + cost > self.passage_budget and self.stale:
            span = self.stale.pop()
            self.stale_cost -= self.session_costs[id(span)]
            if id(span) not in self.evicted:
                self._evict(span)
        return self.used + cost <= self.passage_budget

    def top_up(self, slack: int) -> bool:
        """With the exact count known, reconsider the candidates dropped as over budget for
        the `slack` tokens still free; True if any was added."""
        retry = self.over_budget
        self.over_budget = []
        retried = {self.hits[i].chunk.id for i in retry}  # (what give_back dropped stays dropped)
        self.dropped = [d for d in self.dropped if d[1] != "over_budget" or d[0] not in retried]
        self.used = self.passage_budget - slack
        added = len(self.chosen)
        for i in retry:
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
