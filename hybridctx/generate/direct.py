"""The direct strategy: one packed prompt of what the model reads well, answered as written."""

from __future__ import annotations

from hybridctx.generate.reader import Reader
from hybridctx.generate.strategy import Question
from hybridctx.pack.context import ContextBuilder
from hybridctx.schema import Answer, PackedContext


class DirectStrategy:
    """Pack one window (`Question.reading.read_tokens`) and answer from it, streaming as the model writes."""

    def __init__(self, builder: ContextBuilder, reader: Reader) -> None:
        self.builder = builder
        self.reader = reader

    def answer(self, question: Question) -> Answer:
        return self.read(question, self.builder.pack(question.query, question.reading, question.scope))

    def read(self, question: Question, context: PackedContext) -> Answer:
        """The answer from an already packed `context` (choices made of it where they are a function)."""
        choices = question.choices(context) or None if callable(question.choices) else question.choices
        return self.reader.answer(
            context, question.reading.max_new_tokens, question.temperature, question.on_text, choices=choices
        )
