"""Exact token accounting of a prompt, without tokenizing it twice.

The prompt is `head + (header + body)... + tail`; each body is counted once, when its
candidate is considered, each header when the passages are numbered, and the tokens by which
a join between two pieces differs from the sum of their counts (e.g. a BOS token) are
measured once per counter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hybridctx.pack.prompt import PromptTemplate
from hybridctx.pack.spans import Span, sample_span
from hybridctx.schema import Passage
from hybridctx.tokens import CachedCounter, RecentValues, TokenCounter


class PromptCounter:
    """Counts the pieces of prompts made with one template in one reader's tokens, and
    remembers the body counts of recent chunk texts (they recur from question to question)."""

    def __init__(self, counter: TokenCounter, template: PromptTemplate) -> None:
        self.counter = CachedCounter(counter)
        self.template = template
        self._bodies = RecentValues(limit=200_000)  # chunk text -> tokens of its quoted body
        self._header_estimates: dict[tuple[str, int, int], int] = {}
        self.head_tokens = counter.count(template.head)
        self.joins = self._measure_joins()

    def count(self, text: str) -> int:
        return self.counter.count(text)

    def body_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each chunk text quoted as a passage body, remembered by text."""
        known = self._bodies
        new = [t for t in dict.fromkeys(texts) if t not in known]
        if new:
            known.update(dict(zip(new, self.count_bodies(new), strict=True)))
        return [known[t] for t in texts]

    def count_bodies(self, texts: Sequence[str]) -> list[int]:
        """Counted by the counter itself, not its cache: they are remembered by chunk text."""
        return self.counter.counter.count_many([self.template.body(t.strip()) for t in texts])

    def knows_body(self, text: str) -> bool:
        return text in self._bodies

    def remember_bodies(self, bodies: Mapping[str, int]) -> None:
        """Body counts worked out elsewhere (stored with the chunks at index time)."""
        self._bodies.update(dict(bodies))

    def piece_tokens(self, passages: Sequence[Passage], spans: Sequence[Span], rendered: Sequence[str]) -> list[int]:
        """Exact tokens of each rendered passage: header + known body count for a whole
        chunk, a full count for merged or partial passages (and for a chunk whose count is
        no longer remembered)."""
        bodies = [None if (c := span.whole_chunk) is None else self._bodies.get(c.text) for span in spans]
        headers = iter(self.counter.count_many(
            [self.template.header(p) for p, n in zip(passages, bodies, strict=True) if n is not None]
        ))
        pieces = iter(self.counter.count_many([piece for piece, n in zip(rendered, bodies, strict=True) if n is None]))
        return [next(pieces) if n is None else next(headers) + n + self.joins["header"] for n in bodies]

    def header_estimates(self, keys: Sequence[tuple[str, int, int]]) -> list[int]:
        """Tokens of a header (with joins) for each (source, digits of the passage number,
        digits of the line numbers), with the largest numbers of so many digits: an estimate
        that errs high, counted once per key."""
        estimates = self._header_estimates
        new = [key for key in dict.fromkeys(keys) if key not in estimates]
        if new:
            samples = [sample_span("", source, 10**lines - 1).passage(10**digits - 1) for source, digits, lines in new]
            counts = self.counter.count_many([self.template.header(sample) for sample in samples])
            for key, n in zip(new, counts, strict=True):
                estimates[key] = n + self.joins["header"] + self.joins["passage"]
        return [estimates[key] for key in keys]

    def total(self, tail_tokens: int, pieces: Sequence[int]) -> int:
        """Tokens of the whole prompt, from its pieces' counts and the joins between them."""
        j = self.joins
        if not pieces:
            return self.head_tokens + tail_tokens + j["empty"]
        return self.head_tokens + sum(pieces) + tail_tokens + j["head"] + (len(pieces) - 1) * j["passage"] + j["tail"]

    def prefix_tokens(self, pieces: Sequence[int]) -> int:
        """Tokens of the head and these leading passages: the prompt's reusable prefix."""
        if not pieces:
            return self.head_tokens
        return self.head_tokens + sum(pieces) + self.joins["head"] + (len(pieces) - 1) * self.joins["passage"]

    def _measure_joins(self) -> dict[str, int]:
        """Tokens by which joining two prompt pieces differs from counting them apart."""
        count, t = self.counter.count, self.template
        first, second = sample_span("Alpha beta.").passage(1), sample_span("Gamma (delta)").passage(12)
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
