"""Commands on one knowledge base: index, search, pack, ask, delete, list, stats, compact,
repair, and prepare-model (the embedded model's files, for another server)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from hybridctx.cli.common import (
    FILTER_OPTION,
    JSON_OPTION,
    KB_OPTION,
    PRINCIPAL_OPTION,
    app,
    built_tier,
    err,
    friendly_errors,
    open_kb,
    out,
    parse_filters,
    print_json,
    with_backend,
    with_packing,
)
from hybridctx.cli.output import describe_context, print_answer, print_hits, print_report
from hybridctx.generate.models import DEFAULT_READER, PACKAGED


@app.command()
@friendly_errors
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

        embedder = RayEmbedder(Settings().embedding_model, tier=embedder_tier or built_tier(kb),
                               actors=ray_actors, gpus_per_actor=ray_gpus, address=ray_address)
    # On Ray each commit is one job whose actors load the model: commit in larger groups.
    overrides: dict[str, Any] = {"embedder": embedder_tier}
    if embedder is not None:
        overrides["commit_every_chunks"] = embedder.texts_per_call
    with open_kb(kb, quiet or as_json, embedder, create=True, **overrides) as pipe:
        report = pipe.add([FolderSource(path, max_file_bytes=pipe.settings.max_file_bytes) for path in paths])
    if as_json:
        print_json(report)
    else:
        print_report(report)
    if report.failed:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def search(
    query: str = typer.Argument(...),
    kb: Path = KB_OPTION,
    k: int = typer.Option(10, "-k", help="Number of hits"),
    filter: list[str] = FILTER_OPTION,
    principal: str | None = PRINCIPAL_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Print the ranked hits for a query."""
    with open_kb(kb, quiet=as_json) as pipe:
        hits = pipe.retrieve(query, k=k, filters=parse_filters(filter), principal=principal)
    if as_json:
        print_json([{"rank": h.rank, "score": h.score, "chunk_id": h.chunk.id, "doc_id": h.chunk.doc_id,
                     "location": h.chunk.location, "text": h.chunk.text} for h in hits])
    else:
        print_hits(hits)


@app.command()
@friendly_errors
@with_packing
def pack(question: str = typer.Argument(...), kb: Path = KB_OPTION, packing: Any = None) -> None:
    """Print the prompt `ask` would send (to stdout) and how it was packed (to stderr)."""
    with open_kb(kb) as pipe:
        context = pipe.pack(question, **packing)
    print(context.prompt)
    err.print(f"[dim]{describe_context(context)}[/]", highlight=False)


@app.command()
@friendly_errors
@with_packing
@with_backend
def ask(
    question: str = typer.Argument(...),
    kb: Path = KB_OPTION,
    strategy: str | None = typer.Option(
        None, help="map (default: each passage about the question read on its own, the values they name cited), "
        "direct, synthesis (facts with passages first; map-reduce beyond one window) or self_route"
    ),
    as_json: bool = JSON_OPTION,
    packing: Any = None,
    backend: Any = None,
) -> None:
    """Answer a question from the knowledge base, with citations (embedded model unless told otherwise)."""
    with open_kb(kb, quiet=as_json, backend=backend) as pipe:
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
@friendly_errors
def delete(
    targets: list[str] = typer.Argument(..., help="Document ids, or the files and folders they were indexed from"),
    kb: Path = KB_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Remove documents: by id, or by the path given to `index` (relative or absolute; a folder: all under it)."""
    with open_kb(kb, quiet=True) as pipe:
        before = pipe.stats()
        chunks = pipe.delete(targets)
        after = pipe.stats()
    removed = {"documents_removed": before["documents"] - after["documents"], "chunks_removed": chunks}
    if as_json:
        print_json(removed)
    else:
        out.print(f"removed {removed['documents_removed']} documents ({chunks} chunks)")


@app.command("list")
@friendly_errors
def list_documents(
    kb: Path = KB_OPTION,
    under: Path | None = typer.Option(None, "--under", help="Only the documents indexed from under this folder"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the knowledge base's documents: id, source, chunks and tokens."""
    with open_kb(kb, quiet=True) as pipe:
        documents = pipe.documents(under)
    if as_json:
        print_json([d.model_dump() for d in documents])
        return
    table = Table("source", "chunks", "tokens", "acl", "id")
    for d in documents:
        table.add_row(d.source, str(d.chunks), f"{d.tokens:,}", "yes" if d.restricted else "", d.id)
    out.print(table)


@app.command()
@friendly_errors
def stats(kb: Path = KB_OPTION, as_json: bool = JSON_OPTION) -> None:
    """How many documents and chunks the knowledge base holds, and its dense index type."""
    with open_kb(kb, quiet=True) as pipe:
        figures: dict[str, Any] = {**pipe.stats(), "index": pipe.kb.index.spec, "embedding_model": pipe.embedding_model}
    if as_json:
        print_json(figures)
    else:
        out.print(", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in figures.items()), highlight=False)


@app.command("prepare-model")
@friendly_errors
def prepare_model(
    model: str = typer.Option(
        DEFAULT_READER, "--model", help=f"A packaged model ({', '.join(PACKAGED)}) or a GGUF file's path"
    ),
    safetensors: bool = typer.Option(False, "--safetensors", help="The Hugging Face folder vLLM loads, not the GGUF"),
) -> None:
    """Prepare a model once in the cache and print its path (e.g. for a vLLM server's --model)."""
    from hybridctx.cache import default_cache_dir
    from hybridctx.generate.models import gguf_file, safetensors_folder

    prepare = safetensors_folder if safetensors else gguf_file
    print(prepare(model, default_cache_dir()))


@app.command()
@friendly_errors
def compact(kb: Path = KB_OPTION) -> None:
    """Merge the dense index into one segment retrained on the current vectors (after many deletes or updates)."""
    with open_kb(kb, quiet=True) as pipe:
        started = time.perf_counter()
        spec = pipe.rebuild_index()
        seconds = time.perf_counter() - started
        out.print(f"dense index rebuilt as {spec} ({len(pipe.kb.index):,} vectors) in {seconds:.1f} s")


@app.command()
@friendly_errors
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
    from hybridctx.index.layout import built_with
    from hybridctx.index.repair import repair as repair_kb

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
