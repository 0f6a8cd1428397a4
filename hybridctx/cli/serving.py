"""Commands that serve a knowledge base to other programs: MCP (agents) and an OpenAI-compatible chat API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hybridctx.cli.common import KB_OPTION, PRINCIPAL_OPTION, app, err, friendly_errors, open_kb, with_backend


@app.command()
@friendly_errors
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
@friendly_errors
@with_backend
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
    backend: Any = None,
) -> None:
    """Serve the knowledge base as an OpenAI-compatible chat model (/v1/chat/completions, streamed or not)."""
    from hybridctx_connectors.openai_server import read_keys
    from hybridctx_connectors.openai_server import serve as serve_app

    principals = read_keys(keys) if keys is not None else None
    overrides: dict[str, Any] = {"backend": backend}
    if budget is not None:
        overrides["budget_tokens"] = budget
    with open_kb(kb, quiet=True, **overrides) as pipe:
        err.print(f"serving {kb} at http://{host}:{port}/v1 (OpenAI-compatible)", highlight=False)
        serve_app(pipe, host=host, port=port, keys=principals, max_sessions=max_sessions)
