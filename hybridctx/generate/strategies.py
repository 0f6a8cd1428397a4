"""The answering strategies by name (`Settings.strategy`, `ask(strategy=...)`), each built once
over the same pack stage and model."""

from __future__ import annotations

from hybridctx.errors import InvalidArgumentError
from hybridctx.generate.direct import DirectStrategy
from hybridctx.generate.mapping import MapStrategy
from hybridctx.generate.reader import Reader
from hybridctx.generate.strategy import AnswerStrategy
from hybridctx.generate.synthesis import SelfRouteStrategy, Synthesizer
from hybridctx.pack.context import ContextBuilder
from hybridctx.pack.prompt import PromptTemplate
from hybridctx.schema import Calibrated, Strategy


class Strategies:
    """`builder` packs `ask`'s prompts, `facts_builder` synthesis's (`FACTS_TEMPLATE`);
    map and map-reduce read at most `max_windows` windows (and passages on their own)."""

    def __init__(
        self, builder: ContextBuilder, facts_builder: ContextBuilder, reader: Reader, answer_template: PromptTemplate,
        max_windows: int,
    ) -> None:
        self.reader = reader
        direct = DirectStrategy(builder, reader)
        synthesis = Synthesizer(facts_builder, reader, answer_template, max_windows)
        self.by_name: dict[str, AnswerStrategy] = {
            "map": MapStrategy(builder, reader, max_windows),
            "direct": direct,
            "synthesis": synthesis,
            "self_route": SelfRouteStrategy(direct, synthesis, reader.backend.context_window),
        }

    def choose(
        self, asked: Strategy | Calibrated | None, default: Strategy | Calibrated, choices: object | None = None,
    ) -> AnswerStrategy:
        """The strategy asked for, else `default`; "calibrated": the one measured best for the
        model (`Reader.strategy`); with `choices`, direct (another is refused)."""
        if choices is not None and asked not in (None, "direct"):
            raise InvalidArgumentError(f"choices answer from one packed prompt: use strategy='direct', not {asked!r}")
        name = "direct" if choices is not None else asked or default
        if name == "calibrated":
            name = self.reader.strategy
        if name not in self.by_name:
            raise InvalidArgumentError(f"strategy must be one of {', '.join(self.by_name)}, got {name!r}")
        return self.by_name[name]
