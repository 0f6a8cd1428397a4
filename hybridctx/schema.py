"""The data that crosses stage boundaries: documents, chunks, hits, packed contexts, answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Document(BaseModel):
    """A unit of source material. `acl=None` means every principal may read it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    acl: frozenset[str] | None = None

    @field_validator("acl", mode="before")
    @classmethod
    def _acl_as_set(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset([value])
        return value


class Chunk(BaseModel):
    """A piece of a document; `start`/`end` are character offsets, lines are 1-based and inclusive."""

    model_config = ConfigDict(frozen=True)

    id: str
    doc_id: str
    text: str
    start: int
    end: int
    start_line: int
    end_line: int
    token_count: int
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.metadata.get("source", self.doc_id))

    @property
    def location(self) -> str:
        """Human-readable citation target: source and line range."""
        return f"{self.source}:{self.start_line}-{self.end_line}"


class Hit(BaseModel):
    chunk: Chunk
    score: float
    rank: int

    @property
    def source(self) -> str:
        return self.chunk.source


DropReason = Literal["duplicate", "over_budget", "filtered"]


class DroppedCandidate(BaseModel):
    chunk_id: str
    reason: DropReason


class PackedContext(BaseModel):
    """The prompt sent to the model and an account of how it was built."""

    query: str
    prompt: str
    chunks: list[Chunk]
    token_count: int
    budget_tokens: int
    prefix_token_count: int
    dropped: list[DroppedCandidate] = Field(default_factory=list)

    def passage(self, number: int) -> Chunk | None:
        """The chunk shown as passage `[number]` (1-based, prompt order)."""
        return self.chunks[number - 1] if 1 <= number <= len(self.chunks) else None


class Citation(BaseModel):
    passage: int
    chunk_id: str
    doc_id: str
    location: str
    explicit: bool = Field(description="True if the model wrote [n]; False if attributed by text overlap")


class Usage(BaseModel):
    prompt_tokens: int
    generated_tokens: int
    cached_tokens: int | None = None
    seconds: float = Field(0.0, description="Wall time of the whole call: prompt processing and generation")


class Answer(BaseModel):
    text: str
    citations: list[Citation]
    context: PackedContext
    usage: Usage


class Failure(BaseModel):
    item: str
    reason: str


class AddReport(BaseModel):
    """What one `add` did; `seconds` holds the wall time of each stage."""

    documents_added: int = 0
    documents_replaced: int = 0
    documents_unchanged: int = 0
    chunks_added: int = 0
    tokens_added: int = 0
    failed: list[Failure] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def chunks_per_second(self) -> float:
        total = sum(self.seconds.values())
        return self.chunks_added / total if total > 0 else 0.0
