"""Commands that measure: calibrate (the model's effective context), eval (needles, multi-needle,
RULER-style tasks against top-5 RAG and stuffing) and the demo."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.table import Table

from hybridctx.cli.common import JSON_OPTION, app, csv, friendly_errors, out, print_json, with_backend
from hybridctx.cli.output import print_answer, print_report
from hybridctx.errors import InvalidArgumentError, ModelUnavailableError


@app.command()
@friendly_errors
@with_backend
def calibrate(
    seeds: int = typer.Option(3, min=1, help="Questions per probe task and length"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Probe lengths up to this, not the whole window"),
    plot: Path = typer.Option(Path("calibration.png"), "--plot", help="Where the accuracy-vs-length plot goes"),
    backend: Any = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Measure how much of its window the model reads well (its effective context) and store it:
    `ask` then reads at most that much per window with this model."""
    from hybridctx.evals.calibrate import calibrate as probe
    from hybridctx.evals.calibrate import plot as plot_calibrations
    from hybridctx.generate.calibration import save_calibration
    from hybridctx.settings import Settings
    from hybridctx.stages import build_backend

    try:
        settings = Settings(backend=backend, budget_tokens=min(2048, backend.context_window))
    except ValidationError as exc:
        raise InvalidArgumentError(f"invalid settings: {exc}") from exc
    model = build_backend(settings)
    try:
        found = probe(model, seeds=seeds, max_tokens=max_tokens, show_progress=not as_json)
    finally:
        model.close()
    stored = save_calibration(settings.cache_dir, found)
    if as_json:
        print_json(found.model_dump(mode="json"))
        return
    grid = Table(title=f"Answered right, {found.model}")
    grid.add_column("prompt tokens", justify="right")
    for task in found.accuracy:
        grid.add_column(task, justify="right")
    for i, length in enumerate(found.lengths):
        grid.add_row(f"{length:,}", *(f"{scores[i]:.2f}" for scores in found.accuracy.values()))
    out.print(grid)
    out.print(f"effective context: [bold]{found.effective_tokens:,}[/] tokens of {found.window_tokens:,} "
              f"({found.seconds:.0f} s); stored in {stored}")
    try:
        out.print(f"plot: {plot_calibrations([found], plot)}")
    except ModelUnavailableError as exc:
        out.print(f"no plot: {exc}")


@app.command("eval")
@friendly_errors
@with_backend
def evaluate(
    quick: bool = typer.Option(False, "--quick", help="Small haystacks and budgets: a few minutes on a CPU"),
    tasks: str | None = typer.Option(None, help="Comma-separated tasks (default: all)"),
    lengths: str | None = typer.Option(None, help="Haystack lengths in tokens, e.g. 8000,32000,128000"),
    budgets: str | None = typer.Option(None, help="Prompt budgets compared, e.g. 4000,16000,64000"),
    depths: str | None = typer.Option(None, help="Single-needle depths, e.g. 0,0.5,1"),
    haystack: Path | None = typer.Option(None, help="A folder of your own documents as the haystack"),
    answers: bool = typer.Option(
        False, "--answers", help="Also ask the model (answer level): the embedded one, or --vllm-model / --openai-url"
    ),
    answer_budgets: str | None = typer.Option(None, "--answer-budgets", help="Budgets of answer-level runs"),
    answer_lengths: str | None = typer.Option(
        None, "--answer-lengths", help="Haystack lengths of answer-level runs (default: all)"
    ),
    seed: int = typer.Option(0),
    repeats: int = typer.Option(1, min=1, help="Cases per task, each in its own haystack (answer-level noise)"),
    out_dir: Path = typer.Option(Path("eval-results"), "--out", help="Where results.json and the plots go"),
    backend: Any = None,
) -> None:
    """Needle, multi-needle, hard-distractor and RULER-style evaluations of top-5 RAG, long-context
    stuffing and hybridctx at the same budgets; a table, results.json and plots."""
    from hybridctx.evals import EvalConfig, eval_settings, report, run_eval
    from hybridctx.pipeline import shared_pipelines
    from hybridctx.settings import Settings

    given = {
        "tasks": csv(tasks, str, "--tasks"), "lengths": csv(lengths, int, "--lengths"),
        "budgets": csv(budgets, int, "--budgets"), "depths": csv(depths, float, "--depths"),
        "answer_budgets": csv(answer_budgets, int, "--answer-budgets"),
        "answer_lengths": csv(answer_lengths, int, "--answer-lengths"), "haystack": haystack,
    }
    overrides = {key: value for key, value in given.items() if value is not None}
    try:
        config = (EvalConfig.quick if quick else EvalConfig)(answers=answers, seed=seed, repeats=repeats, **overrides)
    except ValidationError as exc:
        raise InvalidArgumentError(f"eval: {exc}") from exc
    if haystack is not None and not haystack.is_dir():
        raise InvalidArgumentError(f"--haystack {haystack}: not a folder")
    with shared_pipelines(eval_settings(config, Settings(backend=backend))) as open_kb:
        result = run_eval(config, open_kb)
    out.print(report.table(result, "context"))
    if config.answers:
        out.print(report.table(result, "answer"))
        out.print("\n".join(report.comparison(result, "answer")), highlight=False)
    for path in report.write(result, out_dir):
        out.print(f"wrote {path}", highlight=False)
    out.print(f"[dim]{len(result.records)} measurements in {result.seconds:.0f} s[/]")


@app.command()
@friendly_errors
@with_backend
def demo(
    kb: Path | None = typer.Option(None, "--kb", help="Where to keep the demo KB (default: in the cache)"),
    all_files: bool = typer.Option(False, "--all", help="Index the whole standard library, not ~300 files"),
    max_files: int = typer.Option(300, help="How many standard-library files to index"),
    backend: Any = None,
) -> None:
    """Index the Python standard library's source and answer questions about it."""
    from hybridctx.cache import default_cache_dir
    from hybridctx.demo import READ_TOKENS, answers, demo_files, one_at_a_time, stdlib_root
    from hybridctx.index.layout import checked_root
    from hybridctx.pipeline import Pipeline
    from hybridctx.settings import Settings

    kb = checked_root(kb or default_cache_dir() / "demo-kb")
    files = demo_files(None if all_files else max_files)
    out.rule("hybridctx demo")
    out.print(f"Corpus: {len(files)} files of the standard library in {stdlib_root()}")
    out.print(f"Knowledge base: {kb}")
    started = time.perf_counter()
    with one_at_a_time(kb, lambda: out.print("Another demo is using this KB; waiting for it to finish")), \
            Pipeline.open(kb, Settings(effective_context=READ_TOKENS, backend=backend)) as pipe:
        out.print(f"opened in {time.perf_counter() - started:.1f} s")
        print_report(pipe.add(files))
        for step in answers(pipe):
            out.rule()
            out.print(f"[bold]Question:[/] {step.question}", highlight=False)
            out.print("  top hits: " + ", ".join(step.top_hits))
            out.print(f"  [dim]retrieve {step.retrieve_ms:.0f} ms[/]")
            print_answer(step.answer)
