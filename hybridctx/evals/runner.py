"""Run the evaluation: plant every task's facts into haystacks of the chosen lengths, then
measure, for each strategy at each token budget, whether the facts reach the prompt
(context level, no LLM) and, optionally, whether the model's answer names them (answer level).

Strategies, all at the same token budget:
- `top5`: classic RAG, the 5 best chunks (hybrid retrieval) packed.
- `stuffing`: the first tokens of the haystack, as a long-context-only system reads it.
- `hybridctx`: generous hybrid recall packed by hybridctx (or the whole corpus when it fits).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from hybridctx.evals.calibrate import stuffed
from hybridctx.evals.essays import paul_graham_essays
from hybridctx.evals.tasks import (
    GENERATORS,
    TASKS,
    Case,
    TaskName,
    TaskRandom,
    aggregation_case,
    cut_haystack,
    plant_at_depths,
)
from hybridctx.generate.llama_cpp import LlamaCppSettings
from hybridctx.pack import Packer
from hybridctx.schema import Answer, Document, Hit, PackedContext
from hybridctx.settings import Settings
from hybridctx.sources import iter_documents
from hybridctx.text import names

StrategyName = Literal["top5", "stuffing", "hybridctx"]
STRATEGIES: tuple[StrategyName, ...] = ("top5", "stuffing", "hybridctx")


class Evaluated(Protocol):
    """What the evaluation asks of the system it measures: a `Pipeline` over one haystack's KB."""

    @property
    def packer(self) -> Packer: ...

    def add(self, items: Any) -> Any: ...

    def retrieve(self, query: str, k: int | None = None) -> list[Hit]: ...

    def pack(
        self, query: str, budget_tokens: int | None = None, hits: Sequence[Hit] | None = None, *,
        max_new_tokens: int | None = None,
    ) -> PackedContext: ...

    def ask(self, query: str, budget_tokens: int | None = None, *, max_new_tokens: int | None = None) -> Answer: ...

    def generate(self, context: PackedContext, max_new_tokens: int | None = None) -> Answer: ...

    def close(self) -> None: ...


OpenKB = Callable[[Path], Evaluated]  # a system over a new KB in the folder given


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskName] = Field(default_factory=lambda: list(TASKS))
    lengths: list[int] = Field([8_000, 32_000, 128_000], description="Haystack lengths, in the reader's tokens")
    budgets: list[int] = Field([4_000, 16_000, 64_000], description="Prompt budgets compared")
    depths: list[float] = Field([0.0, 0.25, 0.5, 0.75, 1.0], description="Needle depths of the single-needle task")
    strategies: list[StrategyName] = Field(default_factory=lambda: list(STRATEGIES))
    answers: bool = Field(False, description="Also ask the model (answer level)")
    answer_budgets: list[int] = Field([2_000], description="Budgets for answer-level runs (the model's window)")
    answer_lengths: list[int] | None = Field(None, description="Haystack lengths of answer-level runs; None: all")
    answer_tokens: int = Field(64, ge=1)
    repeats: int = Field(1, ge=1, description="Cases per task: each repeat plants fresh facts in its own KB")
    k: int | None = Field(None, ge=1, description="hybridctx's recall; None: the default, scaled to the budget")
    seed: int = 0
    haystack: Path | None = Field(None, description="A folder of the user's documents; default: Paul Graham's essays")

    @classmethod
    def quick(cls, **overrides) -> EvalConfig:
        """A few minutes on a CPU: small haystacks, three depths."""
        return cls(**{"lengths": [2_000, 8_000], "budgets": [1_000, 4_000], "depths": [0.0, 0.5, 1.0],
                      "answer_budgets": [1_000], **overrides})


class Record(BaseModel):
    """One measurement: a case, under one strategy and budget, in a haystack of one length."""

    task: TaskName
    question: str
    length: int
    budget: int
    strategy: StrategyName
    depths: list[float]
    context_score: float
    prompt_tokens: int
    needle_positions: list[float | None] = Field(description="Where each needle sits in the prompt, 0..1; None: absent")
    answer_score: float | None = None
    distractor_score: float | None = None
    citation_score: float | None = Field(
        None, description="The share of the passages the answer cites that hold one of the expected values; "
        "None: it cited none"
    )
    precision_score: float | None = Field(
        None, description="The share of the names (numbers, codes) the answer gives, beside the question's and "
        "its citations' locations, that are expected values; None: it gave none"
    )
    answer: str | None = None
    seconds: float = 0.0


class EvalResult(BaseModel):
    config: EvalConfig
    records: list[Record]
    seconds: float


def eval_settings(config: EvalConfig, settings: Settings | None = None) -> Settings:
    """`settings` (default: the embedded models) as the evaluation opens each KB: with its
    recall `k`, no progress bars of its own, and the embedded model's window widened to the
    largest budget measured (context level measures what a reader of that window is shown)."""
    settings = settings or Settings()
    window = max(settings.window_tokens, *config.budgets, *(config.answer_budgets if config.answers else []))
    backend = settings.backend
    if isinstance(backend, LlamaCppSettings):
        backend = backend.model_copy(update={"context_window": window})
    return settings.model_copy(update={"k": config.k, "show_progress": False, "backend": backend})


def run_eval(config: EvalConfig, open_kb: OpenKB, show_progress: bool = True) -> EvalResult:
    """Run `config`; `open_kb(folder)` makes the system measured over each haystack's KB
    (`hybridctx.pipeline.shared_pipelines(eval_settings(config))`: pipelines sharing one
    embedding model and one backend)."""
    started = time.perf_counter()
    source = _source_documents(config.haystack)
    rng = TaskRandom(config.seed)
    records: list[Record] = []
    per_length = sum(len(config.depths) if t == "needle" else 1 for t in config.tasks)
    with tempfile.TemporaryDirectory(prefix="hybridctx-eval-") as tmp, tqdm(
        total=per_length * len(config.lengths) * config.repeats, desc="eval", unit="case", disable=not show_progress
    ) as bar:
        for length, repeat in ((n, r) for n in config.lengths for r in range(config.repeats)):
            # One KB per haystack: all fact tasks planted together (each one's facts are noise to
            # the others), and the word list of the aggregation task on its own.
            fact_cases = [c for t in config.tasks if t != "aggregation" for c in GENERATORS[t](rng, config.depths)]
            jobs = ([fact_cases] if fact_cases else []) + ([[]] if "aggregation" in config.tasks else [])
            for index, cases in enumerate(jobs):
                pipe = open_kb(Path(tmp) / f"kb-{length}-{repeat}-{index}")
                try:
                    counter = pipe.packer.counter
                    if cases:
                        documents = _planted_haystack(source, counter, length, cases)
                    else:
                        aggregation, document = aggregation_case(rng, counter, length)
                        documents, cases = [document], [aggregation]
                    pipe.add(documents)
                    for case in cases:
                        records += _measure(pipe, case, documents, length, config)
                        bar.update(1)
                finally:
                    pipe.close()
    return EvalResult(config=config, records=records, seconds=time.perf_counter() - started)


def _source_documents(folder: Path | None) -> list[Document]:
    if folder is None:
        return paul_graham_essays()
    return [d for d in iter_documents(folder, 32 * 1024 * 1024) if isinstance(d, Document)]


def _planted_haystack(source: list[Document], counter, length: int, cases: list[Case]) -> list[Document]:
    haystack = cut_haystack(source, counter, length)
    sentences = [(s, d) for c in cases for s, d in zip(c.needles, c.depths)]
    sentences += [(s, random.Random(s).random()) for c in cases for s in c.distractors]
    return plant_at_depths(haystack, sentences)


def _measure(pipe: Evaluated, case: Case, haystack: list[Document], length: int, config: EvalConfig) -> list[Record]:
    records = []
    for budget in config.budgets:
        for strategy in config.strategies:
            context = _context(pipe, strategy, case.question, haystack, budget)
            records.append(_record(case, length, budget, strategy, context))
    if config.answers and (config.answer_lengths is None or length in config.answer_lengths):
        for budget in config.answer_budgets:
            for strategy in config.strategies:
                started = time.perf_counter()
                if strategy == "hybridctx":  # the default `ask`: recall, packing, what the model reads well
                    answer = pipe.ask(case.question, budget, max_new_tokens=config.answer_tokens)
                else:
                    context = _context(pipe, strategy, case.question, haystack, budget, config.answer_tokens)
                    answer = pipe.generate(context, max_new_tokens=config.answer_tokens)
                record = _record(case, length, budget, strategy, answer.context)
                records.append(record.model_copy(update={
                    "answer": answer.text, "answer_score": case.answer_score(answer.text),
                    "distractor_score": case.distractor_score(answer.text) if case.distractor_values else None,
                    "citation_score": _citation_score(case, answer),
                    "precision_score": _precision_score(case, answer),
                    "seconds": time.perf_counter() - started,
                }))
    return records


def _citation_score(case: Case, answer: Answer) -> float | None:
    """The share of cited passages that hold one of the case's values (a right citation). A
    citation is looked up by its chunks in every prompt the answer read (`map` cites passages
    of several windows)."""
    shown = {tuple(p.chunk_ids): p for context in (answer.context, *answer.windows) for p in context.passages}
    cited = [p for c in answer.citations if (p := shown.get(tuple(c.chunk_ids))) is not None]
    if not cited:
        return None
    return sum(any(v.lower() in p.text.lower() for v in case.values) for p in cited) / len(cited)


def _precision_score(case: Case, answer: Answer) -> float | None:
    """The share of the names the answer gives that are the case's values: an answer naming
    every number it saw ("4951063, 4951064, 4951065, ...") names the right one too."""
    text = answer.text
    for citation in answer.citations:
        text = text.replace(citation.location, " ")
    given = {n.lower() for n in names(text) - names(case.question)}
    return len(given & {v.lower() for v in case.values}) / len(given) if given else None


def _context(
    pipe: Evaluated, strategy: StrategyName, question: str, haystack: list[Document], budget_tokens: int,
    max_new_tokens: int = 0,
) -> PackedContext:
    if strategy == "top5":
        return pipe.pack(question, budget_tokens, hits=pipe.retrieve(question, k=5), max_new_tokens=max_new_tokens)
    if strategy == "stuffing":
        return _stuffed(pipe, question, haystack, budget_tokens, max_new_tokens)
    # generous recall (settings.k), or the whole corpus
    return pipe.pack(question, budget_tokens, max_new_tokens=max_new_tokens)


def _stuffed(
    pipe: Evaluated, question: str, haystack: list[Document], budget_tokens: int, max_new_tokens: int
) -> PackedContext:
    """The haystack's first tokens as one passage, cut to fill the budget."""
    return stuffed(pipe.packer, question, tuple(d.text for d in haystack), budget_tokens, max_new_tokens)


def _record(case: Case, length: int, budget: int, strategy: StrategyName, context: PackedContext) -> Record:
    prompt = " ".join(context.prompt.split())
    positions = []
    for needle in case.needles:
        at = prompt.find(" ".join(needle.split()))
        positions.append(None if at < 0 else round(at / max(1, len(prompt)), 3))
    return Record(
        task=case.task, question=case.question, length=length, budget=budget, strategy=strategy,
        depths=case.depths, context_score=case.context_score(context.prompt), prompt_tokens=context.token_count,
        needle_positions=positions,
    )


def measured(result: EvalResult, level: Literal["context", "answer"]) -> list[Record]:
    """The records of one level: answer-level ones are those with an answer."""
    return [r for r in result.records if (level == "answer") == (r.answer is not None)]


def summary(result: EvalResult, level: Literal["context", "answer"] = "context") -> dict[tuple[str, str, int], float]:
    """Mean score per (task, strategy, budget), at the longest haystack measured at that level."""
    records = measured(result, level)
    if not records:
        return {}
    longest = max(r.length for r in records)
    groups: dict[tuple[str, str, int], list[float]] = {}
    for r in records:
        score = r.context_score if level == "context" else r.answer_score
        if r.length == longest and score is not None:
            groups.setdefault((r.task, r.strategy, r.budget), []).append(score)
    return {key: sum(v) / len(v) for key, v in groups.items()}


def sweep(result: EvalResult, strategy: str, budget: int, level: Literal["context", "answer"] = "context"
          ) -> dict[tuple[float, int], float]:
    """Single-needle score per (depth, haystack length): the needle heatmap's cells."""
    cells: dict[tuple[float, int], list[float]] = {}
    for r in measured(result, level):
        score = r.context_score if level == "context" else r.answer_score
        if r.task == "needle" and r.strategy == strategy and r.budget == budget and score is not None:
            cells.setdefault((r.depths[0], r.length), []).append(score)
    return {key: sum(v) / len(v) for key, v in cells.items()}

