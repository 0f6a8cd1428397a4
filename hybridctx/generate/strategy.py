"""How `ask` answers: a strategy takes a `Question` (the query, what it may see, how it reads)
and returns an `Answer`, entering the pack stage (`ContextBuilder`, given explicitly) and the
model (`Reader`) once per window. Implementations: `direct`, `mapping` (map, the default),
`synthesis` (synthesis, self-route); `strategies` builds them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from hybridctx.schema import Answer, PackedContext, Reading, Scope

# What an answer may be: these strings, or those a function makes of the packed context.
Choices = Sequence[str] | Callable[[PackedContext], Sequence[str]]


class Question(BaseModel):
    """One call of `ask`, settled: `on_text` receives the answer's text as it is written
    (joined, the pieces are `Answer.text`); `choices` makes the answer one of them (direct only)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    query: str
    scope: Scope
    reading: Reading
    temperature: float = 0.0
    on_text: Callable[[str], None] | None = None
    choices: Choices | None = None


class AnswerStrategy(Protocol):
    def answer(self, question: Question) -> Answer:
        """The answer to `question`, with its citations checked against the prompts read."""
        ...
