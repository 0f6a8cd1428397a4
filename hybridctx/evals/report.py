"""What people look at after an evaluation: a table, the JSON, and two pictures, the needle
heatmap (depth x haystack length, colour = score) and coverage against budget per strategy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from rich.table import Table

from hybridctx.errors import ModelUnavailableError
from hybridctx.evals.runner import EvalResult, measured, summary, sweep

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
