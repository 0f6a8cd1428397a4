"""The reading model as a question meets it: how much of its window it reads well, and its
answers with checked citations.

A 270M model answers far worse from a full 2,048-token window than from 512 tokens (RULER;
`Pipeline.calibrate` measures it), so a call's `Reading` packs at most the model's effective
context per window, while the caller's budget still sizes the retrieval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from hybridctx.errors import BudgetTooLargeError
from hybridctx.generate.backend import Backend
from hybridctx.generate.calibration import Calibration, load_calibration
from hybridctx.generate.citations import cite, unsupported_citations
from hybridctx.generate.streaming import TrimmedText
from hybridctx.schema import Answer, Ordering, PackedContext, Reading, Strategy

EffectiveContext = int | Literal["calibrated", "window"]


class Reader:
    """`backend` read through its effective context (`Settings.effective_context`: a number
    of prompt tokens, "window" for the whole budget, or "calibrated": the calibration stored
    for this model in `cache_dir`, else the whole budget). The defaults fill what a call
    leaves out."""

    def __init__(
        self, backend: Backend, *, effective_context: EffectiveContext = "calibrated", cache_dir: Path,
        budget_tokens: int, max_new_tokens: int, ordering: Ordering = "canonical",
    ) -> None:
        self.backend = backend
        self.effective_context = effective_context
        self.cache_dir = cache_dir
        self.budget_tokens = budget_tokens
        self.max_new_tokens = max_new_tokens
        self.ordering: Ordering = ordering
        self._calibration: Calibration | Literal[False] | None = None  # False: looked up, none stored

    @property
    def calibration(self) -> Calibration | None:
        """The model's stored calibration (looked up once), or None."""
        if self._calibration is None:
            self._calibration = load_calibration(self.cache_dir, self.backend.model_id) or False
        return self._calibration or None

    @property
    def effective_tokens(self) -> int | None:
        """Prompt tokens the model uses well; None: the whole budget."""
        if self.effective_context == "window":
            return None
        if isinstance(self.effective_context, int):
            return self.effective_context
        return self.calibration.effective_tokens if self.calibration else None

    @property
    def strategy(self) -> Strategy:
        """The strategy measured best for this model; direct where none was measured: it reads
        the whole window, as a capable long-context model should be read."""
        return self.calibration.strategy if self.calibration and self.calibration.strategy else "direct"

    def calibrated(self, calibration: Calibration) -> None:
        """Read at most `calibration`'s effective length per window from now on."""
        self._calibration = calibration

    def reading(
        self, budget_tokens: int | None = None, max_new_tokens: int | None = None, ordering: Ordering | None = None,
        *, per_window: bool = True,
    ) -> Reading:
        """A call's reading, the defaults where it gave none; `per_window=False` packs the whole
        budget (`pack`: the caller asked for that prompt). A budget the model could not read is
        refused here, before any work."""
        budget_tokens = self.budget_tokens if budget_tokens is None else budget_tokens
        if budget_tokens > self.backend.context_window:
            raise BudgetTooLargeError(budget_tokens, self.backend.context_window)
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        effective = self.effective_tokens if per_window else None
        return Reading(
            budget_tokens=budget_tokens,
            read_tokens=budget_tokens if effective is None else min(budget_tokens, effective + max_new_tokens),
            max_new_tokens=max_new_tokens,
            ordering=ordering or self.ordering,
        )

    def answer(
        self, context: PackedContext, max_new_tokens: int | None = None, temperature: float = 0.0,
        on_text: Callable[[str], None] | None = None, choices: Sequence[str] | None = None,
    ) -> Answer:
        """The model's answer to a packed context, its citations checked against the prompt's
        passages; with `choices`, exactly one of them."""
        generation = self.backend.generate(  # pieces trimmed so that, joined, they are Answer.text
            context, max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens,
            temperature=temperature, on_text=TrimmedText(on_text) if on_text is not None else None, choices=choices,
        )
        return Answer(
            text=generation.text,
            citations=cite(generation.text, context),
            context=context,
            usage=generation.usage,
            unsupported_citations=unsupported_citations(generation.text, context),
        )
