"""An MCP server over a knowledge base (the official `mcp` SDK): the toolbox's tools
(`search`, `get_context`, `ask`, and `add_documents` when enabled) and the documents as
resources, served over stdio or streamable HTTP.

    hybridctx mcp --kb kb/ [--principal alice] [--http 127.0.0.1:8765] [--allow-add]

The principal is the server's, set when it starts; no tool argument can change it, and the
resources list and read only the documents it may read. Install with the `mcp` extra.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any
from urllib.parse import quote

from hybridctx import Pipeline
from hybridctx.errors import HybridCtxError, InvalidArgumentError, ModelUnavailableError
from hybridctx.schema import Chunk
from hybridctx_connectors.tools import Toolbox, describe_failure

DOCUMENTS_URI = "hybridctx://documents"


def build_server(toolbox: Toolbox, name: str = "hybridctx") -> Any:
    """An `MCPServer` exposing the toolbox's tools and the readable documents."""
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ResourceNotFoundError
        from mcp.server.mcpserver.resources.templates import ResourceSecurity
    except ImportError as exc:
        raise ModelUnavailableError("the MCP server needs the mcp extra: pip install 'hybridctx[mcp]'") from exc

    server = MCPServer(
        name,
        instructions="Search a knowledge base, fetch a packed and cited context for a question, or ask it.",
    )
    for tool_name, (model, _, description) in toolbox.tools.items():
        server.add_tool(_tool_function(toolbox, tool_name, model), name=tool_name, description=description)

    store = toolbox.pipeline.kb.store

    @server.resource(DOCUMENTS_URI, name="documents", mime_type="application/json",
                     description="The documents this server's principal may read: id and source.")
    def documents() -> list[dict[str, str]]:
        return [{"id": doc_id, "source": source, "uri": document_uri(doc_id)}
                for doc_id, source in store.visible_documents(toolbox.principal)]

    # An id is a key the store looks up under the principal's ACL, never a file path: the SDK's
    # path checks (which refused ids like "/srv/bob/todo.md") do not apply to it.
    @server.resource(DOCUMENTS_URI + "/{doc_id}", name="document", mime_type="text/plain",
                     description="The text of one document, reassembled from its chunks.",
                     security=ResourceSecurity(exempt_params={"doc_id"}))
    def document(doc_id: str) -> str:
        chunks = store.document_chunks(doc_id, toolbox.principal)
        if not chunks:
            raise ResourceNotFoundError(f"no document {doc_id!r}")  # absent and forbidden look alike
        return reassemble(chunks)

    return server


def serve(kb: str, principal: str | None = None, http: str | None = None, allow_add: bool = False) -> None:
    """Serve the knowledge base at `kb` over stdio, or over streamable HTTP at `http` (HOST:PORT)."""
    address = None if http is None else host_and_port(http)  # checked before the KB is opened
    with Pipeline.open(kb, show_progress=False) as pipeline:
        server = build_server(Toolbox(pipeline, principal=principal, allow_add=allow_add))
        if address is None:
            server.run("stdio")
        else:
            server.run("streamable-http", host=address[0], port=address[1])


def host_and_port(http: str) -> tuple[str, int]:
    """`HOST:PORT` (or `:PORT`, on 127.0.0.1) as a host and a port number."""
    host, _, port = http.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgumentError(f"--http {http!r}: expected HOST:PORT with a port from 1 to 65535")
    return host or "127.0.0.1", int(port)


def document_uri(doc_id: str) -> str:
    """The resource URI of a document: its id percent-encoded whole, slashes included, so that
    any id ("/srv/bob/todo.md", "a b?c") is one path segment and reads back as itself."""
    return f"{DOCUMENTS_URI}/{quote(doc_id, safe='')}"


def reassemble(chunks: list[Chunk]) -> str:
    """A document's text from its chunks in order: overlaps shown once, the whitespace the
    chunker trimmed between chunks put back as line breaks (or a space)."""
    text, end, end_line = "", 0, 1
    for chunk in chunks:
        if chunk.end <= end:
            continue
        if chunk.start >= end:
            gap_lines = chunk.start_line - end_line
            text += ("\n" * gap_lines if gap_lines > 0 else " ") if text else ""
            text += chunk.text
        else:
            text += chunk.text[end - chunk.start :]
        end, end_line = chunk.end, chunk.end_line
    return text


def _tool_function(toolbox: Toolbox, name: str, model: Any) -> Any:
    """A function whose signature is the argument model's fields (the SDK builds the tool's
    JSON schema from it), running the toolbox's tool; failures reach the model as tool errors."""
    from mcp.server.mcpserver.exceptions import ToolError
    from pydantic import ValidationError

    def tool(**arguments: Any) -> dict[str, Any]:
        try:
            return toolbox.run(name, arguments)
        except (ValidationError, HybridCtxError) as exc:
            raise ToolError(describe_failure(name, exc)) from exc

    tool.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter(
            field, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[info.annotation, info],
            default=inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True),
        )
        for field, info in model.model_fields.items()
    ])
    tool.__name__ = name
    return tool
