"""Tools an agent calls to fetch context: `search`, `get_context`, `ask` (and, when enabled,
`add_documents`), with OpenAI-style function definitions generated from pydantic models.

    toolbox = Toolbox(Pipeline.open("kb/"), principal="alice")
    client.chat.completions.create(..., tools=toolbox.definitions())
    reply = toolbox.call(tool_call)        # a JSON string to send back as the tool's output

The principal comes from the toolbox's owner (the server's configuration), never from a tool
argument: an agent cannot widen what it may read. Bad arguments come back as a JSON error the
model can act on, naming the argument, rather than as an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hybridctx import Document, PackedContext, Pipeline
from hybridctx.errors import HybridCtxError

FilterValue = str | int | float | bool | list[str | int | float | bool]


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown argument (e.g. "principal") is an error


class SearchArguments(_Arguments):
    query: str = Field(description="What to look for: a question, keywords or an identifier")
    k: int = Field(10, ge=1, le=2000, description="Number of ranked passages to return")
    filters: dict[str, FilterValue] | None = Field(
        None, description="Metadata equality filters, e.g. {\"suffix\": [\".md\", \".rst\"]}"
    )


class GetContextArguments(_Arguments):
    query: str = Field(description="The question the context is for")
    budget_tokens: int = Field(8192, ge=256, description="Size of the packed context, in tokens")
    filters: dict[str, FilterValue] | None = Field(None, description="Metadata equality filters")


class AskArguments(_Arguments):
    question: str = Field(description="The question to answer from the knowledge base")
    budget_tokens: int | None = Field(None, ge=256, description="Context size for the answering model")


class NewDocument(_Arguments):
    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    metadata: dict[str, FilterValue] = Field(default_factory=dict)


class AddDocumentsArguments(_Arguments):
    documents: list[NewDocument] = Field(min_length=1, max_length=1000)


class Toolbox:
    """The tools over one pipeline, read as one fixed principal."""

    def __init__(self, pipeline: Pipeline, principal: str | None = None, allow_add: bool = False) -> None:
        self.pipeline = pipeline
        self.principal = principal
        self.tools: dict[str, tuple[type[_Arguments], Callable[[Any], dict[str, Any]], str]] = {
            "search": (
                SearchArguments, self.search, "Ranked passages of the knowledge base for a query, with sources."
            ),
            "get_context": (
                GetContextArguments, self.get_context,
                "A packed, cited context for a question (deduplicated passages within a token budget), "
                "ready to paste into a prompt.",
            ),
            "ask": (AskArguments, self.ask, "An answer from the knowledge base, with citations."),
        }
        if allow_add:
            self.tools["add_documents"] = (
                AddDocumentsArguments, self.add_documents,
                "Add or replace your own documents in the knowledge base (readable by you alone).",
            )

    def definitions(self) -> list[dict[str, Any]]:
        """OpenAI-style tool definitions (`tools=` of a chat completion)."""
        return [
            {
                "type": "function",
                "function": {"name": name, "description": text, "parameters": model.model_json_schema()},
            }
            for name, (model, _, text) in self.tools.items()
        ]

    def call(self, tool_call: dict[str, Any]) -> str:
        """Run a tool call, as OpenAI returns it (`{"function": {"name", "arguments": "<json>"}}`)
        or plain (`{"name", "arguments": {...}}`), and give its JSON result."""
        function = tool_call.get("function", tool_call)
        name, arguments = function.get("name"), function.get("arguments") or {}
        if name not in self.tools:
            return _error(f"unknown tool {name!r}; available: {', '.join(self.tools)}")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
            return json.dumps(self.run(name, parsed), ensure_ascii=False)
        except json.JSONDecodeError as exc:
            return _error(f"{name}: arguments are not valid JSON: {exc}")
        except (ValidationError, HybridCtxError) as exc:
            return _error(describe_failure(name, exc))

    def run(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The result of tool `name` (raises on bad arguments)."""
        model, run, _ = self.tools[name]
        return run(model.model_validate(arguments))

    def search(self, args: SearchArguments) -> dict[str, Any]:
        """Ranked passages without their scores: BM25 statistics are global to the KB, so a
        score moves with documents the caller may not read (docs/guide.md, "Access control")."""
        hits = self.pipeline.retrieve(args.query, k=args.k, filters=args.filters, principal=self.principal)
        return {"passages": [
            {"rank": h.rank, "chunk_id": h.chunk.id, "doc_id": h.chunk.doc_id,
             "source": h.chunk.source, "location": h.chunk.location, "text": h.chunk.text}
            for h in hits
        ]}

    def get_context(self, args: GetContextArguments) -> dict[str, Any]:
        ctx = self.pipeline.pack(args.query, budget_tokens=args.budget_tokens, filters=args.filters,
                                 principal=self.principal)
        return {
            "context": quoted_passages(self.pipeline, ctx),
            "passages": [{"id": p.number, "source": p.source, "lines": f"{p.start_line}-{p.end_line}",
                          "chunk_ids": p.chunk_ids} for p in ctx.passages],
            "token_count": ctx.token_count,
        }

    def ask(self, args: AskArguments) -> dict[str, Any]:
        answer = self.pipeline.ask(args.question, budget_tokens=args.budget_tokens, principal=self.principal)
        return {
            "answer": answer.text,
            "citations": [{"passage": c.passage, "doc_id": c.doc_id, "location": c.location} for c in answer.citations],
        }

    def add_documents(self, args: AddDocumentsArguments) -> dict[str, Any]:
        """Documents an agent adds live under its principal's own ids (`agent:<principal>:<id>`)
        and are readable by that principal alone. With the ids as given, bob adding a document
        with alice's id replaced her text and took over its ACL, and "added 0" against "added 1"
        told him which ids exist; in its own namespace an add can only replace the caller's
        own documents, and answers the same whatever others hold."""
        acl = {self.principal} if self.principal is not None else None  # an agent adds only what it may read
        documents = [
            Document(id=self.own_id(d.id), text=d.text, metadata=d.metadata, acl=acl) for d in args.documents
        ]
        report = self.pipeline.add(documents)
        return {"added": report.documents_added, "unchanged": report.documents_unchanged,
                "ids": [d.id for d in documents], "failed": [f.model_dump() for f in report.failed]}

    def own_id(self, document_id: str) -> str:
        """The id an agent's document is stored under."""
        return f"agent:{self.principal or ''}:{document_id}"


def describe_failure(tool: str, exc: ValidationError | HybridCtxError) -> str:
    """What went wrong in a tool call, naming the argument at fault, for the model to read."""
    if isinstance(exc, ValidationError):
        return f"{tool}: " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
    return f"{tool}: {exc}"


def quoted_passages(pipeline: Pipeline, ctx: PackedContext) -> str:
    """The packed passages as the prompt quotes them (delimited, with ids and sources), without
    the instructions and the question: context for another model's prompt."""
    return "".join(pipeline.packer.template.passage(p) for p in ctx.passages)


def _error(message: str) -> str:
    return json.dumps({"error": message})
