"""What people look at after an evaluation: a table, the JSON, and two pictures, the needle
heatmap (depth x haystack length, colour = score) and coverage against budget per strategy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from hybridctx.errors import ModelUnavailableError
from hybridctx.evals.runner import EvalResult, Record, measured, summary, sweep

Level = Literal["context", "answer"]


def table(result: EvalResult, level: Level = "context") -> Table:
    """Mean score per task and strategy (rows) and budget (columns), at the longest haystack."""
    scores = summary(result, level)
    budgets = sorted({b for _, _, b in scores})
    lengths = [r.length for r in measured(result, level)]
    title = (f"{'Needles in the prompt' if level == 'context' else 'Values in the answer'} "
             f"(haystack of {max(lengths, default=0):,} tokens)")
    grid = Table(title=title)
    grid.add_column("task")
    grid.add_column("strategy")
    for budget in budgets:
        grid.add_column(f"{budget:,}", justify="right")
    for task in dict.fromkeys(t for t, _, _ in scores):
        for strategy in result.config.strategies:
            cells = [scores.get((task, strategy, b)) for b in budgets]
            if any(c is not None for c in cells):
                grid.add_row(task, strategy, *("-" if c is None else f"{c:.2f}" for c in cells))
    return grid


def markdown_table(result: EvalResult, level: Level = "context") -> list[str]:
    scores = summary(result, level)
    budgets = sorted({b for _, _, b in scores})
    lines = ["| task | " + " | ".join(f"{s} @ {b // 1000}k" for b in budgets for s in result.config.strategies) + " |",
             "|---|" + "---|" * (len(budgets) * len(result.config.strategies))]
    for task in dict.fromkeys(t for t, _, _ in scores):
        cells = [scores.get((task, s, b)) for b in budgets for s in result.config.strategies]
        lines.append(f"| {task} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    return lines


def paired_difference(pairs: list[tuple[float, float]], resamples: int = 10_000, seed: int = 0
                      ) -> tuple[float, float, float]:
    """Mean of `a - b` over paired scores, with a 95% bootstrap interval (percentile)."""
    import random

    differences = [a - b for a, b in pairs]
    rng = random.Random(seed)
    n = len(differences)
    means = sorted(sum(rng.choices(differences, k=n)) / n for _ in range(resamples))
    return sum(differences) / n, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def comparison(result: EvalResult, level: Level = "answer", ours: str = "hybridctx") -> list[str]:
    """Markdown rows: per task and budget, each strategy's mean, and `ours` minus the stronger
    other strategy on the same questions with its 95% interval; how often `ours` cited a
    passage holding a value (citation precision); and, where a task plants wrong answers, the
    share of them `ours` and that other strategy named; and the share of the names (numbers,
    codes) each answer gave that were right (an answer naming every number it saw would score
    well on values alone)."""
    records = measured(result, level)
    others = [s for s in result.config.strategies if s != ours]
    # Per task and budget, per strategy, each question's records in run order: the i-th time a
    # question was asked (repeats ask the aggregation question again) pairs across strategies.
    by_key: dict[tuple[str, int], dict[str, dict[tuple[str, int, int], Record]]] = {}
    asked: dict[tuple[str, int, str, str, int], int] = {}
    for r in records:
        key = (r.task, r.budget, r.strategy, r.question, r.length)
        asked[key] = asked.get(key, -1) + 1
        by_key.setdefault((r.task, r.budget), {}).setdefault(r.strategy, {})[(r.question, r.length, asked[key])] = r
    lines = ["| task | budget | n | " + " | ".join(result.config.strategies)
             + f" | {ours} - best other (95% CI) | {ours} citations holding a value | wrong values named"
             " | names given that are right |",
             "|---|---|---|" + "---|" * len(result.config.strategies) + "---|---|---|---|"]

    def score(r: Record) -> float:
        return (r.context_score if level == "context" else r.answer_score) or 0.0

    for (task, budget), strategies in by_key.items():
        if ours not in strategies:
            continue
        questions = strategies[ours]
        means = {s: sum(score(r) for r in strategies[s].values()) / len(strategies[s]) for s in strategies}
        best = max(others, key=lambda s: means.get(s, -1.0))
        pairs = [(score(r), score(strategies[best][q])) for q, r in questions.items() if q in strategies[best]]
        diff, low, high = paired_difference(pairs)
        cited = [r.citation_score for r in questions.values() if r.citation_score is not None]
        citation = f"{sum(cited) / len(cited):.2f} ({len(cited)} cited)" if cited else "-"
        named, right = (_side_by_side(strategies, (ours, best), f) for f in ("distractor_score", "precision_score"))
        lines.append(f"| {task} | {budget:,} | {len(questions)} | "
                     + " | ".join(f"{means[s]:.2f}" if s in means else "-" for s in result.config.strategies)
                     + f" | {diff:+.2f} [{low:+.2f}, {high:+.2f}] vs {best} | {citation} | {named} | {right} |")
    return lines


def _side_by_side(strategies: dict[str, dict[Any, Record]], names: tuple[str, str], field: str) -> str:
    """"0.06 hybridctx, 0.09 top5": each strategy's mean of `field` over the records that have
    one; "-" where either has none (no wrong values planted, no names given)."""
    means = []
    for name in names:
        scores = [score for r in strategies[name].values() if (score := getattr(r, field)) is not None]
        if not scores:
            return "-"
        means.append(f"{sum(scores) / len(scores):.2f} {name}")
    return ", ".join(means)


def write(result: EvalResult, folder: Path) -> list[Path]:
    """results.json, and the plots (needs matplotlib): heatmap.png, coverage.png, and
    answer_heatmap.png for an answer-level run."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "results.json"]
    written[0].write_text(json.dumps(result.model_dump(mode="json"), indent=1), encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ModelUnavailableError("the evaluation plots need matplotlib: pip install 'hybridctx[eval]'") from exc
    if "needle" in result.config.tasks:
        budget = min(result.config.budgets)
        written.append(_heatmaps(plt, result, budget, "context", folder / "heatmap.png"))
        if result.config.answers:
            written.append(_heatmaps(plt, result, min(result.config.answer_budgets), "answer",
                                     folder / "answer_heatmap.png"))
    written.append(_coverage(plt, result, folder / "coverage.png"))
    return written


def _heatmaps(plt, result: EvalResult, budget: int, level: Level, path: Path) -> Path:
    strategies = result.config.strategies
    depths = sorted(result.config.depths)
    sweeps = {strategy: sweep(result, strategy, budget, level) for strategy in strategies}
    lengths = sorted({n for cells in sweeps.values() for _, n in cells})  # those measured at this level
    figure, axes = plt.subplots(1, len(strategies), figsize=(4 * len(strategies), 3.6), squeeze=False)
    for index, (axis, strategy) in enumerate(zip(axes[0], strategies)):
        cells = sweeps[strategy]
        grid = [[cells.get((d, n), float("nan")) for n in lengths] for d in depths]
        image = axis.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        axis.set_title(f"{strategy}, {budget:,}-token budget")
        axis.set_xticks(range(len(lengths)), [f"{n // 1000}k" for n in lengths])
        axis.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        axis.set_xlabel("haystack length (tokens)")
        if index == 0:
            axis.set_ylabel("needle depth")
    figure.colorbar(image, ax=axes[0].tolist(), label="needle in prompt" if level == "context" else "answer correct")
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def _coverage(plt, result: EvalResult, path: Path) -> Path:
    scores = summary(result, "context")
    budgets = sorted({b for _, _, b in scores})
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for strategy in result.config.strategies:
        means = []
        for b in budgets:
            values = [v for (t, s, bb), v in scores.items() if s == strategy and bb == b]
            means.append(sum(values) / len(values) if values else float("nan"))
        axis.plot(budgets, means, marker="o", label=strategy)
    axis.set_xscale("log")
    axis.minorticks_off()  # only the budgets' own ticks
    axis.set_xticks(budgets, [f"{b // 1000}k" for b in budgets])
    axis.set_ylim(0, 1.05)
    axis.set_xlabel("prompt budget (tokens)")
    axis.set_ylabel("facts in the prompt, mean over tasks")
    axis.set_title(f"Coverage vs budget, {max(result.config.lengths):,}-token haystack")
    axis.legend()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
