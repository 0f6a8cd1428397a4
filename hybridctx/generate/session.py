"""A conversation about the same material (`Pipeline.session()`): each follow-up keeps the
passages already shown in place and appends what it adds, so the prompt prefix (and the
model's KV cache of it) carries over and each question pays only for new tokens
(bench/RESULTS.md, "fill": 0.91 of a follow-up's prompt is the cached prefix)."""

from __future__ import annotations

from collections.abc import Callable

from hybridctx.generate.reader import Reader
from hybridctx.generate.streaming import AnswerStream, AsyncAnswerStream, Workers
from hybridctx.pack.context import ContextBuilder
from hybridctx.schema import Answer, Ordering, PackedContext, Scope


class Session:
    """Follow-up questions sharing one growing prompt, packed by `builder`, answered by `reader`;
    streamed and async calls run on `workers`."""

    def __init__(
        self, builder: ContextBuilder, reader: Reader, workers: Workers, scope: Scope, ordering: Ordering | None
    ) -> None:
        self.builder = builder
        self.reader = reader
        self.workers = workers
        self.scope = scope
        self.ordering = ordering
        self.state = builder.packer.session()

    def pack(self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None) -> PackedContext:
        """The follow-up packed into the session's prompt, at the whole budget."""
        reading = self.reader.reading(budget_tokens, max_new_tokens, self.ordering, per_window=False)
        return self.builder.pack(query, reading, self.scope, session=self.state)

    def ask(
        self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None, temperature: float = 0.0,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """Pack the follow-up into the session's prompt (at most what the model reads well) and answer."""
        reading = self.reader.reading(budget_tokens, max_new_tokens, self.ordering)
        context = self.builder.pack(query, reading, self.scope, session=self.state)
        return self.reader.answer(context, reading.max_new_tokens, temperature, on_text)

    def stream(
        self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None, temperature: float = 0.0
    ) -> AnswerStream:
        """`ask`, streamed (see `Pipeline.stream`)."""
        return self.workers.stream(lambda on_text: self.ask(query, budget_tokens, max_new_tokens, temperature, on_text))

    async def aask(
        self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None, temperature: float = 0.0
    ) -> Answer:
        """`ask`, awaited."""
        return await self.workers.run(lambda: self.ask(query, budget_tokens, max_new_tokens, temperature))

    def astream(
        self, query: str, budget_tokens: int | None = None, max_new_tokens: int | None = None, temperature: float = 0.0
    ) -> AsyncAnswerStream:
        """`stream` for `async for` (inside a running event loop)."""
        return self.workers.astream(
            lambda on_text: self.ask(query, budget_tokens, max_new_tokens, temperature, on_text)
        )
