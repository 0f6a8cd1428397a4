"""How the commands show reports, hits, packed contexts and answers."""

from __future__ import annotations

from collections import Counter

from rich.markup import escape
from rich.table import Table

from hybridctx.cli.common import err, out
from hybridctx.schema import AddReport, Answer, Hit, PackedContext


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
