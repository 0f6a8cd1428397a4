"""Pack stage: fill a token budget with the best retrieved chunks, question last.

Chunks are *selected* by rank and *ordered* canonically (by document, then offset), so
the instructions form a stable, query-independent prefix and passages read in their
original order. The budget is checked on the exact final prompt with the generating
model's tokenizer: the prompt never exceeds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hybridctx.errors import BudgetTooSmallError, EmptyQueryError, InvalidArgumentError
from hybridctx.schema import Chunk, DroppedCandidate, Hit, PackedContext
from hybridctx.tokens import TokenCounter


@dataclass(frozen=True)
class PromptTemplate:
    """Instructions (with a one-shot example, which small base models need to answer in
    the right shape), numbered passages, then the question last."""

    instructions: str = (
        "Below are numbered passages from a knowledge base, then a question. Answer the question "
        "using only the information in the passages, and cite the passages you use by their "
        "numbers in square brackets. If the passages do not contain the answer, say that the "
        "documents do not say.\n\n"
        "Example:\n[1] handbook.md, lines 3-4\n"
        "The office opens at 9 am on weekdays and at 10 am on Saturdays.\n\n"
        "Based on the documents above, answer the question and cite the passage numbers.\n"
        "Question: When does the office open on Saturdays?\n"
        "Answer: On Saturdays the office opens at 10 am [1].\n\n"
        "Passages:\n\n"
    )
    passage: str = "[{number}] {location}\n{text}\n\n"
    question: str = (
        "Based on the documents above, answer the question and cite the passage numbers.\n"
        "Question: {query}\n"
        "Answer:"
    )

    def render(self, query: str, chunks: Sequence[Chunk]) -> str:
        passages = "".join(
            self.passage.format(number=n, location=_location(c), text=c.text)
            for n, c in enumerate(chunks, start=1)
        )
        return self.instructions + passages + self.question.format(query=query)


def _location(chunk: Chunk) -> str:
    return f"{chunk.source}, lines {chunk.start_line}-{chunk.end_line}"


class Packer(Protocol):
    def pack(self, query: str, hits: Sequence[Hit], budget_tokens: int) -> PackedContext: ...


class BudgetPacker:
    def __init__(self, counter: TokenCounter, template: PromptTemplate | None = None) -> None:
        self.counter = counter
        self.template = template or PromptTemplate()
        # Query-independent, so counted once: the cacheable prefix, and the tokens every
        # count includes (e.g. BOS) that a passage joined into the prompt does not add.
        self._prefix_tokens = counter.count(self.template.instructions)
        self._count_overhead = counter.count("")

    def pack(self, query: str, hits: Sequence[Hit], budget_tokens: int) -> PackedContext:
        query = query.strip()
        if not query:
            raise EmptyQueryError()
        if budget_tokens < 1:
            raise InvalidArgumentError(f"budget_tokens must be positive, got {budget_tokens}")
        skeleton_tokens = self.counter.count(self.template.render(query, []))
        if skeleton_tokens > budget_tokens:
            raise BudgetTooSmallError(budget_tokens, skeleton_tokens)

        chosen: list[Hit] = []
        dropped: list[DroppedCandidate] = []
        seen: set[str] = set()
        used = skeleton_tokens
        for hit in sorted(hits, key=lambda h: h.rank):
            digest = hashlib.sha1(" ".join(hit.chunk.text.split()).encode("utf-8", "replace")).hexdigest()
            if digest in seen:
                dropped.append(DroppedCandidate(chunk_id=hit.chunk.id, reason="duplicate"))
                continue
            cost = self.counter.count(
                self.template.passage.format(number=len(chosen) + 1, location=_location(hit.chunk), text=hit.chunk.text)
            ) - self._count_overhead
            if used + cost > budget_tokens:
                dropped.append(DroppedCandidate(chunk_id=hit.chunk.id, reason="over_budget"))
                continue
            chosen.append(hit)
            seen.add(digest)
            used += cost

        # Token counts are not exactly additive across joins: trim on the exact prompt.
        while True:
            chunks = sorted((h.chunk for h in chosen), key=lambda c: (c.doc_id, c.start))
            prompt = self.template.render(query, chunks)
            token_count = self.counter.count(prompt)
            if token_count <= budget_tokens:
                break
            worst = chosen.pop()
            dropped.append(DroppedCandidate(chunk_id=worst.chunk.id, reason="over_budget"))

        return PackedContext(
            query=query,
            prompt=prompt,
            chunks=chunks,
            token_count=token_count,
            budget_tokens=budget_tokens,
            prefix_token_count=self._prefix_tokens,
            dropped=dropped,
        )
