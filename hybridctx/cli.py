"""The `hybridctx` command line: index, delete, list, stats, search, pack, ask, eval, mcp, serve, compact, repair,
demo.

`--json` on index, delete, list, stats, search and ask prints the result as JSON for scripts.

Exit codes: 0 success; 1 indexing finished but some items failed (listed); 2 bad input or
an unusable knowledge base (message on stderr, no traceback).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hybridctx.errors import HybridCtxError, InvalidArgumentError, KnowledgeBaseNotFoundError, ModelUnavailableError
from hybridctx.pack import ORDERINGS
from hybridctx.schema import AddReport, Answer, Hit, PackedContext

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Generous retrieval + long-context answers.")
out = Console()
err = Console(stderr=True)

KB_OPTION = typer.Option(..., "--kb", help="Knowledge base directory (created if missing)")
FILTER_OPTION = typer.Option([], "--filter", help="KEY=VALUE metadata filter (repeatable)")
PRINCIPAL_OPTION = typer.Option(None, help="Read as this principal (access control)")
JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON (for scripts), not a table")


def print_json(value: Any) -> None:
    """`value` (a pydantic model, or JSON-able data) as JSON on stdout, nothing else."""
    print(value.model_dump_json(indent=2) if isinstance(value, BaseModel) else json.dumps(value, indent=2))


def _friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except HybridCtxError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)  # "[...]" in it is text, not markup
            raise typer.Exit(2) from None

    return run


def _parse_filters(pairs: list[str]) -> dict[str, Any] | None:
    """`--filter KEY=VALUE` pairs as filters; a value that reads as a number also matches that
    number (`--filter year=2024` found nothing when the metadata held the integer 2024)."""
    filters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--filter {pair!r}: expected KEY=VALUE")
        filters.setdefault(key, []).extend([value, *_as_number(value)])
    return filters or None


def _as_number(value: str) -> list[int | float]:
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        return [number] if number == number and abs(number) != float("inf") else []  # not NaN nor infinity
    return []


def _open(
    kb: Path, quiet: bool = False, embedder_instance: Any = None, create: bool = False, **overrides: Any
) -> Any:
    """The pipeline on `kb`; `overrides` are settings fields (a `backend` override is the
    generating model's settings, VLLMSettings or OpenAISettings, not a backend object).
    An existing KB is opened with the embedder tier it was built with unless one is given;
    only `create` (indexing) makes a new one."""
    from hybridctx.index.kb import MANIFEST, checked_root
    from hybridctx.pipeline import Pipeline
    from hybridctx.settings import Settings

    if not create and not (checked_root(kb) / MANIFEST).is_file():
        raise KnowledgeBaseNotFoundError(kb)

    if overrides.get("embedder") is None:
        overrides["embedder"] = _built_tier(kb)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise InvalidArgumentError(f"invalid settings: {exc}") from exc
    return Pipeline.open(kb, settings, show_progress=not quiet, embedder=embedder_instance)


def _built_tier(kb: Path) -> str:
    """The embedder tier the KB at `kb` was built with ("transformer" for a new one)."""
    from hybridctx.embed import tier_of
    from hybridctx.index.kb import built_with

    return tier_of(built_with(kb) or "")


def print_report(report: AddReport) -> None:
    table = Table(title="Indexing summary", show_header=False)
    table.add_row("documents added", str(report.documents_added))
    table.add_row("documents replaced", str(report.documents_replaced))
    table.add_row("documents unchanged (skipped)", str(report.documents_unchanged))
    table.add_row("documents removed (files gone)", str(report.documents_removed))
    table.add_row("documents failed", str(len(report.failed)))
    table.add_row("chunks added", str(report.chunks_added))
    table.add_row("tokens added", f"{report.tokens_added:,}")
    for stage, seconds in report.seconds.items():
        table.add_row(f"time: {stage}", f"{seconds:.2f} s")
    if report.chunks_added:
        table.add_row("throughput", f"{report.chunks_per_second:.1f} chunks/s")
    out.print(table)
    for failure in report.failed:
        err.print(f"[yellow]skipped[/] {failure.item}: {failure.reason}", highlight=False)


def print_hits(hits: list[Hit], snippet_chars: int = 160) -> None:
    table = Table(title=f"{len(hits)} hits")
    for column in ("rank", "score", "location", "text"):
        table.add_column(column)
    for hit in hits:
        snippet = " ".join(hit.chunk.text.split())[:snippet_chars]
        table.add_row(str(hit.rank), f"{hit.score:.3f}", hit.chunk.location, snippet)
    out.print(table)


def describe_context(context: PackedContext) -> str:
    """One line: size, passages, recall, why packing stopped, and how many candidates were dropped for what."""
    dropped = Counter(d.reason for d in context.dropped)
    left_out = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(dropped.items()))
    return (
        f"{context.token_count} prompt tokens ({len(context.passages)} passages from {len(context.chunks)} chunks, "
        f"{context.ordering} order, {context.recall.replace('_', ' ')}, budget {context.budget_tokens}, "
        f"{_STOPPED[context.stopped_by]}{'; left out: ' + left_out if left_out else ''})"
    )


_STOPPED = {"budget": "budget full", "candidates": "candidates ran out",
            "effective_context": "cut to the model's effective context"}


def print_answer(answer: Answer, streamed: bool = False) -> None:
    """The answer with its facts, citations and usage; `streamed`: its text is on screen already."""
    for fact in answer.facts:
        sources = ", ".join(c.location for c in fact.citations) or "no passage"
        out.print(f"  [dim]- {fact.text} ({sources})[/]", highlight=False)
    read = "passages read on their own" if answer.route == "map" and answer.facts else "windows"
    route = answer.route + (f" over {len(answer.windows)} {read}" if answer.windows else "")
    route += ", escalated" if answer.escalated else ""
    text = "" if streamed else f"[bold]Answer:[/] {escape(answer.text) or '(empty)'}  "
    out.print(f"{text}[dim]({route})[/]", highlight=False)
    for c in answer.citations:
        how = "cited" if c.explicit else "attributed"
        out.print(f"  [{c.passage}] {c.location} ({how})", highlight=False)
    if answer.unsupported_citations:
        out.print(f"  [yellow]cited passages that were not in the prompt (dropped): {answer.unsupported_citations}[/]")
    u = answer.usage
    out.print(
        f"  [dim]{describe_context(answer.context)}; {u.cached_tokens or 0} cached, "
        f"{u.generated_tokens} generated; {u.seconds:.1f} s[/]",
        highlight=False,
    )


@app.command()
@_friendly_errors
def index(
    paths: list[Path] = typer.Argument(..., help="Files or folders to index"),
    kb: Path = KB_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars"),
    ray: bool = typer.Option(False, "--ray", help="Embed on a Ray cluster (or a local Ray) with an actor pool"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster to join, e.g. auto"),
    ray_actors: int = typer.Option(2, "--ray-actors", help="Copies of the embedding model (one per GPU or CPU slot)"),
    ray_gpus: float = typer.Option(0, "--ray-gpus-per-actor", help="GPUs per actor (1: one actor per GPU)"),
    embedder_tier: str | None = typer.Option(
        None, "--embedder",
        help="transformer (default for a new KB), onnx (int8; ~1.8x faster on a CPU) "
        "or static (distilled once; ~100x faster on a CPU, lower recall)",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Index files and folders into a knowledge base: text, code, HTML (main text) and PDF.

    Unchanged files are skipped; re-indexing a folder removes the documents of files gone from it.
    """
    from hybridctx_connectors.sources import FolderSource

    embedder = None
    if ray:
        from hybridctx.embed.ray import RayEmbedder
        from hybridctx.settings import Settings

        embedder = RayEmbedder(Settings().embedding_model, tier=embedder_tier or _built_tier(kb),
                               actors=ray_actors, gpus_per_actor=ray_gpus, address=ray_address)
    # On Ray each commit is one job whose actors load the model: commit in larger groups.
    overrides: dict[str, Any] = {"embedder": embedder_tier}
    if embedder is not None:
        overrides["commit_every_chunks"] = embedder.texts_per_call
    with _open(kb, quiet or as_json, embedder, create=True, **overrides) as pipe:
        report = pipe.add([FolderSource(path, max_file_bytes=pipe.settings.max_file_bytes) for path in paths])
    if as_json:
        print_json(report)
    else:
        print_report(report)
    if report.failed:
        raise typer.Exit(1)


@app.command()
@_friendly_errors
def search(
    query: str = typer.Argument(...),
    kb: Path = KB_OPTION,
    k: int = typer.Option(10, "-k", help="Number of hits"),
    filter: list[str] = FILTER_OPTION,
    principal: str | None = PRINCIPAL_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Print the ranked hits for a query."""
    with _open(kb, quiet=as_json) as pipe:
        hits = pipe.retrieve(query, k=k, filters=_parse_filters(filter), principal=principal)
    if as_json:
        print_json([{"rank": h.rank, "score": h.score, "chunk_id": h.chunk.id, "doc_id": h.chunk.doc_id,
                     "location": h.chunk.location, "text": h.chunk.text} for h in hits])
    else:
        print_hits(hits)


BUDGET_OPTION = typer.Option(None, "--budget", help="Tokens for the prompt plus the answer")
ORDERING_OPTION = typer.Option(None, "--ordering", help="Passage order: canonical, relevance or edges")
# Which model answers (ask, eval): the embedded one unless one of these is given.
VLLM_MODEL_OPTION = typer.Option(None, "--vllm-model", help="Answer with vLLM from this model folder")
MAX_MODEL_LEN_OPTION = typer.Option(8192, "--max-model-len", help="vLLM's context window")
ENFORCE_EAGER_OPTION = typer.Option(
    False, "--enforce-eager", help="vLLM without graph compilation: starts in seconds, steps more slowly"
)
OPENAI_URL_OPTION = typer.Option(
    None, "--openai-url", help="Answer with an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
)
OPENAI_MODEL_OPTION = typer.Option(None, "--openai-model", help="The server's model name")
TOKENIZER_OPTION = typer.Option(
    None, help="With --openai-url: cl100k_base, o200k_base, or the served model's folder (to count tokens)"
)


def _packing(budget: int | None, ordering: str | None, filters: list[str], principal: str | None) -> dict[str, Any]:
    """The keyword arguments `pack` and `ask` share, checked."""
    if ordering is not None and ordering not in ORDERINGS:
        raise InvalidArgumentError(f"--ordering must be one of {', '.join(ORDERINGS)}, got {ordering!r}")
    return {"budget_tokens": budget, "ordering": ordering, "filters": _parse_filters(filters), "principal": principal}


@app.command()
@_friendly_errors
def pack(
    question: str = typer.Argument(...),
    kb: Path = KB_OPTION,
    budget: int | None = BUDGET_OPTION,
    ordering: str | None = ORDERING_OPTION,
    filter: list[str] = FILTER_OPTION,
    principal: str | None = PRINCIPAL_OPTION,
) -> None:
    """Print the prompt `ask` would send (to stdout) and how it was packed (to stderr)."""
    with _open(kb) as pipe:
        context = pipe.pack(question, **_packing(budget, ordering, filter, principal))
    print(context.prompt)
    err.print(f"[dim]{describe_context(context)}[/]", highlight=False)


@app.command()
@_friendly_errors
def ask(
    question: str = typer.Argument(...),
    kb: Path = KB_OPTION,
    budget: int | None = BUDGET_OPTION,
    ordering: str | None = ORDERING_OPTION,
    filter: list[str] = FILTER_OPTION,
    principal: str | None = PRINCIPAL_OPTION,
    strategy: str | None = typer.Option(
        None, help="map (default: each passage about the question read on its own, the values they name cited), "
        "direct, synthesis (facts with passages first; map-reduce beyond one window) or self_route"
    ),
    vllm_model: Path | None = VLLM_MODEL_OPTION,
    max_model_len: int = MAX_MODEL_LEN_OPTION,
    enforce_eager: bool = ENFORCE_EAGER_OPTION,
    openai_url: str | None = OPENAI_URL_OPTION,
    openai_model: str | None = OPENAI_MODEL_OPTION,
    tokenizer: str | None = TOKENIZER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Answer a question from the knowledge base, with citations (embedded model unless told otherwise)."""
    backend = _backend_settings(vllm_model, max_model_len, enforce_eager, openai_url, openai_model, tokenizer)
    overrides = {"backend": backend} if backend is not None else {}
    packing = _packing(budget, ordering, filter, principal)
    with _open(kb, quiet=as_json, **overrides) as pipe:
        if as_json:  # the prompt stays out: `hybridctx pack` prints it
            answer = pipe.ask(question, strategy=strategy, **packing)
            without_prompts = {"context": {"prompt"}, "windows": {"__all__": {"prompt"}}}
            print_json(answer.model_dump(mode="json", exclude=without_prompts))
            return
        stream = pipe.stream(question, strategy=strategy, **packing)
        shown = False
        for piece in stream:  # printed as the model writes it, once the models have loaded
            if not shown:
                out.print("[bold]Answer:[/] ", end="")
                shown = True
            out.out(piece, end="", highlight=False)
            out.file.flush()
        out.print("" if shown else "[bold]Answer:[/] (empty)")
        print_answer(stream.text(), streamed=True)


@app.command()
@_friendly_errors
def calibrate(
    seeds: int = typer.Option(3, min=1, help="Questions per probe task and length"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Probe lengths up to this, not the whole window"),
    context_window: int = typer.Option(8192, "--context-window", help="The embedded model's window"),
    plot: Path = typer.Option(Path("calibration.png"), "--plot", help="Where the accuracy-vs-length plot goes"),
    vllm_model: Path | None = VLLM_MODEL_OPTION,
    max_model_len: int = MAX_MODEL_LEN_OPTION,
    enforce_eager: bool = ENFORCE_EAGER_OPTION,
    openai_url: str | None = OPENAI_URL_OPTION,
    openai_model: str | None = OPENAI_MODEL_OPTION,
    tokenizer: str | None = TOKENIZER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Measure how much of its window the model reads well (its effective context) and store it:
    `ask` then reads at most that much per window with this model."""
    from hybridctx.generate.calibration import calibrate as probe
    from hybridctx.generate.calibration import plot as plot_calibrations
    from hybridctx.generate.calibration import save_calibration
    from hybridctx.pipeline import build_backend
    from hybridctx.settings import Settings

    backend_settings = _backend_settings(vllm_model, max_model_len, enforce_eager, openai_url, openai_model, tokenizer)
    try:
        settings = Settings(backend=backend_settings, context_window=context_window,
                            budget_tokens=min(2048, context_window))
    except ValidationError as exc:
        raise InvalidArgumentError(f"invalid settings: {exc}") from exc
    backend = build_backend(settings)
    try:
        found = probe(backend, seeds=seeds, max_tokens=max_tokens, show_progress=not as_json)
    finally:
        backend.close()
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


def _backend_settings(
    vllm_model: Path | None, max_model_len: int, enforce_eager: bool, openai_url: str | None,
    openai_model: str | None, tokenizer: str | None,
) -> Any:
    """The generating model's settings the flags name; None for the embedded model."""
    from hybridctx.generate.openai_compatible import OpenAISettings
    from hybridctx.generate.vllm import VLLMSettings

    if vllm_model is not None and openai_url is not None:
        raise InvalidArgumentError("--vllm-model and --openai-url: choose one backend")
    if vllm_model is not None:
        return VLLMSettings(model=str(vllm_model), max_model_len=max_model_len, enforce_eager=enforce_eager)
    if openai_url is not None:
        if not openai_model:
            raise InvalidArgumentError("--openai-url needs --openai-model (the name the server knows)")
        return OpenAISettings(base_url=openai_url, model=openai_model, tokenizer=tokenizer)
    return None


@app.command()
@_friendly_errors
def delete(
    targets: list[str] = typer.Argument(..., help="Document ids, or the files and folders they were indexed from"),
    kb: Path = KB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Remove documents: by id, or by the path given to `index` (relative or absolute; a folder: all under it)."""
    with _open(kb, quiet=True) as pipe:
        before = pipe.stats()
        chunks = pipe.delete(targets)
        after = pipe.stats()
    removed = {"documents_removed": before["documents"] - after["documents"], "chunks_removed": chunks}
    if as_json:
        print_json(removed)
    else:
        out.print(f"removed {removed['documents_removed']} documents ({chunks} chunks)")


@app.command("list")
@_friendly_errors
def list_documents(
    kb: Path = KB_OPTION,
    under: Path | None = typer.Option(None, "--under", help="Only the documents indexed from under this folder"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the knowledge base's documents: id, source, chunks and tokens."""
    with _open(kb, quiet=True) as pipe:
        documents = pipe.documents(under)
    if as_json:
        print_json([d.model_dump() for d in documents])
        return
    table = Table("source", "chunks", "tokens", "acl", "id")
    for d in documents:
        table.add_row(d.source, str(d.chunks), f"{d.tokens:,}", "yes" if d.restricted else "", d.id)
    out.print(table)


@app.command()
@_friendly_errors
def stats(kb: Path = KB_OPTION, as_json: bool = JSON_OPTION) -> None:
    """How many documents and chunks the knowledge base holds, and its dense index type."""
    with _open(kb, quiet=True) as pipe:
        figures: dict[str, Any] = {**pipe.stats(), "index": pipe.kb.index.spec, "embedding_model": pipe.embedding_model}
    if as_json:
        print_json(figures)
    else:
        out.print(", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in figures.items()), highlight=False)


@app.command("prepare-model")
@_friendly_errors
def prepare_model(
    safetensors: bool = typer.Option(False, "--safetensors", help="The Hugging Face folder vLLM loads, not the GGUF"),
) -> None:
    """Prepare the embedded model once in the cache and print its path (e.g. for a vLLM server's --model)."""
    from hybridctx.generate.models import embedded_gguf, embedded_safetensors
    from hybridctx.settings import default_cache_dir

    prepare = embedded_safetensors if safetensors else embedded_gguf
    print(prepare(default_cache_dir()))


@app.command()
@_friendly_errors
def mcp(
    kb: Path = KB_OPTION,
    http: str | None = typer.Option(None, "--http", help="Serve streamable HTTP at HOST:PORT instead of stdio"),
    principal: str | None = PRINCIPAL_OPTION,
    allow_add: bool = typer.Option(False, "--allow-add", help="Offer the add_documents tool"),
) -> None:
    """Serve the knowledge base to agents over MCP: tools search, get_context, ask; documents as resources."""
    from hybridctx_connectors.mcp import serve

    serve(str(kb), principal=principal, http=http, allow_add=allow_add)


@app.command()
@_friendly_errors
def serve(
    kb: Path = KB_OPTION,
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on"),
    keys: Path | None = typer.Option(
        None, help="JSON file mapping API keys to principals (without it: no key, no principal)"
    ),
    budget: int | None = typer.Option(None, help="Token budget of each answer's context"),
    max_sessions: int = typer.Option(
        256, min=1, help="Chats kept for follow-ups (each holds its prompt's passages: about 60 bytes per budget token)"
    ),
    vllm_model: Path | None = VLLM_MODEL_OPTION,
    max_model_len: int = MAX_MODEL_LEN_OPTION,
    enforce_eager: bool = ENFORCE_EAGER_OPTION,
    openai_url: str | None = OPENAI_URL_OPTION,
    openai_model: str | None = OPENAI_MODEL_OPTION,
    tokenizer: str | None = TOKENIZER_OPTION,
) -> None:
    """Serve the knowledge base as an OpenAI-compatible chat model (/v1/chat/completions, streamed or not)."""
    from hybridctx_connectors.openai_server import read_keys
    from hybridctx_connectors.openai_server import serve as serve_app

    principals = read_keys(keys) if keys is not None else None
    backend = _backend_settings(vllm_model, max_model_len, enforce_eager, openai_url, openai_model, tokenizer)
    overrides: dict[str, Any] = {"backend": backend} if backend is not None else {}
    if budget is not None:
        overrides["budget_tokens"] = budget
    with _open(kb, quiet=True, **overrides) as pipe:
        err.print(f"serving {kb} at http://{host}:{port}/v1 (OpenAI-compatible)", highlight=False)
        serve_app(pipe, host=host, port=port, keys=principals, max_sessions=max_sessions)


def _csv(value: str | None, convert: Callable[[str], Any], option: str) -> list[Any] | None:
    if value is None:
        return None
    try:
        return [convert(part.strip()) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InvalidArgumentError(f"{option} {value!r}: expected a comma-separated list") from None


@app.command("eval")
@_friendly_errors
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
    vllm_model: Path | None = VLLM_MODEL_OPTION,
    max_model_len: int = MAX_MODEL_LEN_OPTION,
    enforce_eager: bool = ENFORCE_EAGER_OPTION,
    openai_url: str | None = OPENAI_URL_OPTION,
    openai_model: str | None = OPENAI_MODEL_OPTION,
    tokenizer: str | None = TOKENIZER_OPTION,
) -> None:
    """Needle, multi-needle, hard-distractor and RULER-style evaluations of top-5 RAG, long-context
    stuffing and hybridctx at the same budgets; a table, results.json and plots."""
    from hybridctx.evals import EvalConfig, report, run_eval
    from hybridctx.settings import Settings

    given = {
        "tasks": _csv(tasks, str, "--tasks"), "lengths": _csv(lengths, int, "--lengths"),
        "budgets": _csv(budgets, int, "--budgets"), "depths": _csv(depths, float, "--depths"),
        "answer_budgets": _csv(answer_budgets, int, "--answer-budgets"),
        "answer_lengths": _csv(answer_lengths, int, "--answer-lengths"), "haystack": haystack,
    }
    overrides = {key: value for key, value in given.items() if value is not None}
    try:
        config = (EvalConfig.quick if quick else EvalConfig)(answers=answers, seed=seed, repeats=repeats, **overrides)
    except ValidationError as exc:
        raise InvalidArgumentError(f"eval: {exc}") from exc
    if haystack is not None and not haystack.is_dir():
        raise InvalidArgumentError(f"--haystack {haystack}: not a folder")
    backend = _backend_settings(vllm_model, max_model_len, enforce_eager, openai_url, openai_model, tokenizer)
    result = run_eval(config, settings=Settings(backend=backend) if backend is not None else None)
    out.print(report.table(result, "context"))
    if config.answers:
        out.print(report.table(result, "answer"))
        out.print("\n".join(report.comparison(result, "answer")), highlight=False)
    for path in report.write(result, out_dir):
        out.print(f"wrote {path}", highlight=False)
    out.print(f"[dim]{len(result.records)} measurements in {result.seconds:.0f} s[/]")


@app.command()
@_friendly_errors
def compact(kb: Path = KB_OPTION) -> None:
    """Merge the dense index into one segment retrained on the current vectors (after many deletes or updates)."""
    with _open(kb, quiet=True) as pipe:
        started = time.perf_counter()
        spec = pipe.rebuild_index()
        seconds = time.perf_counter() - started
        out.print(f"dense index rebuilt as {spec} ({len(pipe.kb.index):,} vectors) in {seconds:.1f} s")


@app.command()
@_friendly_errors
def repair(
    kb: Path = KB_OPTION,
    embed: bool = typer.Option(True, help="Rebuild a damaged dense segment by embedding its chunks again"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Check every file a search reads, in full; rebuild the lexical index from the chunk store, and
    a damaged dense segment from the stored texts of its chunks, embedded again with the KB's model.

    Exit 0 when the KB is sound after it; 1 when damage remains that only indexing again or a backup
    mends (it names the documents to index again)."""
    from hybridctx.embed import build_embedder, tier_of
    from hybridctx.index.kb import built_with
    from hybridctx.index.kb import repair as repair_kb

    def embedder() -> Any:
        name = built_with(kb) or ""
        return build_embedder(tier_of(name), name)

    report = repair_kb(kb, embedder if embed else None, show_progress=not as_json)
    if as_json:
        print_json(report)
    else:
        out.print(f"lexical index rebuilt from the chunk store: {report.lexical_chunks:,} chunks")
        for problem in report.store_problems:
            err.print(f"[red]chunk store:[/] {problem}", highlight=False)
        for name in report.damaged_segments:
            mended = "embedded again" if name in report.rebuilt_segments else "[red]not rebuilt[/]"
            err.print(f"[red]dense segment damaged or missing:[/] {name} ({mended})", highlight=False)
        for chunk_id in report.damaged_chunks:
            err.print(f"[red]chunk text damaged:[/] {chunk_id}", highlight=False)
        if report.documents_to_add_again:
            err.print("documents to index again (delete them and add them again; into a new KB while a "
                      "segment stays damaged): " + ", ".join(report.documents_to_add_again), highlight=False)
        out.print("sound" if report.ok else "[red]damaged[/]")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@_friendly_errors
def demo(
    kb: Path | None = typer.Option(None, "--kb", help="Where to keep the demo KB (default: in the cache)"),
    all_files: bool = typer.Option(False, "--all", help="Index the whole standard library, not ~300 files"),
    max_files: int = typer.Option(300, help="How many standard-library files to index"),
) -> None:
    """Index the Python standard library's source and answer questions about it."""
    from hybridctx.demo import READ_TOKENS, answers, one_at_a_time, stdlib_files, stdlib_root
    from hybridctx.index.kb import checked_root
    from hybridctx.pipeline import Pipeline
    from hybridctx.settings import default_cache_dir

    kb = checked_root(kb or default_cache_dir() / "demo-kb")
    files = stdlib_files(None if all_files else max_files)
    out.rule("hybridctx demo")
    out.print(f"Corpus: {len(files)} files of the standard library in {stdlib_root()}")
    out.print(f"Knowledge base: {kb}")
    started = time.perf_counter()
    with one_at_a_time(kb, lambda: out.print("Another demo is using this KB; waiting for it to finish")), \
            Pipeline.open(kb, effective_context=READ_TOKENS) as pipe:
        out.print(f"opened in {time.perf_counter() - started:.1f} s")
        print_report(pipe.add(files))
        for step in answers(pipe):
            out.rule()
            out.print(f"[bold]Question:[/] {step.question}", highlight=False)
            out.print("  top hits: " + ", ".join(step.top_hits))
            out.print(f"  [dim]retrieve {step.retrieve_ms:.0f} ms[/]")
            print_answer(step.answer)


def main() -> None:
    app()
