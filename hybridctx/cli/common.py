"""What the commands share: the consoles, the common options, errors turned into exit 2, and
opening a knowledge base."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape

from hybridctx.errors import HybridCtxError, InvalidArgumentError, KnowledgeBaseNotFoundError
from hybridctx.pack import ORDERINGS

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


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except HybridCtxError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)  # "[...]" in it is text, not markup
            raise typer.Exit(2) from None

    return run


def parse_filters(pairs: list[str]) -> dict[str, Any] | None:
    """`--filter KEY=VALUE` pairs as filters; a value that reads as a number also matches that
    number (`--filter year=2024` found nothing when the metadata held the integer 2024)."""
    filters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--filter {pair!r}: expected KEY=VALUE")
        filters.setdefault(key, []).extend([value, *as_number(value)])
    return filters or None


def as_number(value: str) -> list[int | float]:
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        return [number] if number == number and abs(number) != float("inf") else []  # not NaN nor infinity
    return []


def open_kb(
    kb: Path, quiet: bool = False, embedder_instance: Any = None, create: bool = False, **overrides: Any
) -> Any:
    """The pipeline on `kb`; `overrides` are settings fields (a `backend` override is the
    generating model's settings, VLLMSettings or OpenAISettings, not a backend object).
    An existing KB is opened with the embedder tier it was built with unless one is given;
    only `create` (indexing) makes a new one."""
    from hybridctx.index.layout import MANIFEST, checked_root
    from hybridctx.pipeline import Pipeline
    from hybridctx.settings import Settings

    if not create and not (checked_root(kb) / MANIFEST).is_file():
        raise KnowledgeBaseNotFoundError(kb)

    if overrides.get("embedder") is None:
        overrides["embedder"] = built_tier(kb)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise InvalidArgumentError(f"invalid settings: {exc}") from exc
    return Pipeline.open(kb, settings, show_progress=not quiet, embedder=embedder_instance)


def built_tier(kb: Path) -> str:
    """The embedder tier the KB at `kb` was built with ("transformer" for a new one)."""
    from hybridctx.embed import tier_of
    from hybridctx.index.layout import built_with

    return tier_of(built_with(kb) or "")


# (parameter, its type, its option): a group of options that several commands take alike.
Options = list[tuple[str, Any, Any]]


def taking(options: Options, name: str, make: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator giving a command the `options`, one definition for every command that takes
    them: the command receives `make(*their values)` as its parameter `name` instead."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        kept = [p for key, p in signature.parameters.items() if key != name]
        added = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                 for key, kind, option in options]

        @wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            return command(*args, **{name: make(*(kwargs.pop(key) for key, _, _ in options))}, **kwargs)

        run.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]  # typer reads it
        run.__annotations__ = {
            **{key: kind for key, kind in command.__annotations__.items() if key != name},
            **{key: kind for key, kind, _ in options},
        }
        return run

    return decorate


def packing(budget: int | None, ordering: str | None, filters: list[str], principal: str | None) -> dict[str, Any]:
    """The keyword arguments of `pack` and `ask`, checked."""
    if ordering is not None and ordering not in ORDERINGS:
        raise InvalidArgumentError(f"--ordering must be one of {', '.join(ORDERINGS)}, got {ordering!r}")
    return {"budget_tokens": budget, "ordering": ordering, "filters": parse_filters(filters), "principal": principal}


# What a prompt is packed of (pack, ask): the command receives `packing`, the keyword arguments.
with_packing = taking([
    ("budget", int | None, typer.Option(None, "--budget", help="Tokens for the prompt plus the answer")),
    ("ordering", str | None, typer.Option(None, "--ordering", help="Passage order: canonical, relevance or edges")),
    ("filter", list[str], FILTER_OPTION),
    ("principal", str | None, PRINCIPAL_OPTION),
], "packing", packing)


def backend_settings(
    model: str | None, gguf: Path | None, context_window: int, vllm_model: Path | None, max_model_len: int,
    enforce_eager: bool, openai_url: str | None, openai_model: str | None, tokenizer: str | None,
) -> Any:
    """The generating model's settings the flags name (llama.cpp's default reader without any)."""
    from hybridctx.generate.llama_cpp import LlamaCppSettings
    from hybridctx.generate.openai_compatible import OpenAISettings
    from hybridctx.generate.vllm import VLLMSettings

    named = [flag for flag, value in (("--model", model), ("--gguf", gguf), ("--vllm-model", vllm_model),
                                      ("--openai-url", openai_url)) if value is not None]
    if len(named) > 1:
        raise InvalidArgumentError(f"{' and '.join(named)}: choose one model")
    if vllm_model is not None:
        return VLLMSettings(model=str(vllm_model), max_model_len=max_model_len, enforce_eager=enforce_eager)
    if openai_url is not None:
        if not openai_model:
            raise InvalidArgumentError("--openai-url needs --openai-model (the name the server knows)")
        return OpenAISettings(base_url=openai_url, model=openai_model, tokenizer=tokenizer)
    if gguf is not None and not gguf.is_file():
        raise InvalidArgumentError(f"--gguf {gguf}: no such file")
    chosen = str(gguf) if gguf is not None else model
    return LlamaCppSettings(context_window=context_window, **({"model": chosen} if chosen else {}))


def csv(value: str | None, convert: Callable[[str], Any], option: str) -> list[Any] | None:
    if value is None:
        return None
    try:
        return [convert(part.strip()) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InvalidArgumentError(f"{option} {value!r}: expected a comma-separated list") from None


# Which model answers (ask, serve, calibrate, eval, demo): llama.cpp's default reader unless one
# of these is given. The command receives `backend`, their settings.
with_backend = taking([
    ("model", str | None, typer.Option(
        None, "--model", help="A packaged reader on llama.cpp: qwen2.5-coder-0.5b-instruct (the default), "
        "qwen2.5-coder-1.5b-instruct, gemma-3-270m, smollm2-135m-instruct"
    )),
    ("gguf", Path | None, typer.Option(None, "--gguf", help="Answer with llama.cpp from this GGUF file")),
    ("context_window", int, typer.Option(8192, "--context-window", help="llama.cpp's window (prompt plus answer)")),
    ("vllm_model", Path | None, typer.Option(None, "--vllm-model", help="Answer with vLLM from this model folder")),
    ("max_model_len", int, typer.Option(8192, "--max-model-len", help="vLLM's context window")),
    ("enforce_eager", bool, typer.Option(
        False, "--enforce-eager", help="vLLM without graph compilation: starts in seconds, steps more slowly"
    )),
    ("openai_url", str | None, typer.Option(
        None, "--openai-url", help="Answer with an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
    )),
    ("openai_model", str | None, typer.Option(None, "--openai-model", help="The server's model name")),
    ("tokenizer", str | None, typer.Option(
        None, help="With --openai-url: cl100k_base, o200k_base, or the served model's folder (to count tokens)"
    )),
], "backend", backend_settings)
