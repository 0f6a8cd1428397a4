"""The data that crosses stage boundaries: documents, chunks, hits, packed contexts, answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NewType

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, ValidationError, field_validator
from pydantic.json_schema import SkipJsonSchema

from hybridctx.errors import InvalidArgumentError

# The most candidates one retrieval may ask for: a 1M-token window holds about 8,000 chunks
# of 128 tokens, so this is generous recall many times over; beyond it, a typo (k=10**9 made
# tantivy try to allocate 32 GB and abort the process) is refused with a typed error.
MAX_K = 100_000

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


# The tokenizer and prompt template whose counts a profile holds: a 64-bit hash
# (`hybridctx.pack.profiles.reader_id`), signed so that SQLite stores it as an integer.
ReaderId = NewType("ReaderId", int)


@dataclass(frozen=True, slots=True)
class ChunkProfile:
    """What the packer needs to know of a chunk, worked out once at index time and stored with
    it, so that packing a window of thousands of chunks neither tokenizes nor hashes them:
    its exact-duplicate key, its MinHash signature (None: the text has no words) and word
    3-gram hashes (pack/dedup.py), the tokens it takes as a prompt passage's body for one
    reader (None: not counted), and the length of the text it profiles. A plain dataclass:
    a window reads thousands of them."""

    exact: bytes
    signature: bytes | None
    shingles: bytes
    reader: ReaderId | None
    tokens: int | None
    chars: int


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
    profile: SkipJsonSchema[SkipValidation[ChunkProfile | None]] = Field(
        None, exclude=True, repr=False,
        description="Set by the knowledge base: what the packer needs to know of this text",
    )

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


DropReason = Literal["duplicate", "near_duplicate", "covered", "over_budget", "filtered"]


class DroppedCandidate(BaseModel):
    """A candidate left out of the prompt; `kept` names the chunk that made it redundant."""

    chunk_id: str
    reason: DropReason
    kept: str | None = None


class Passage(BaseModel):
    """What the model reads as one numbered passage: one chunk, or neighbouring chunks of one
    document merged back in their original order. Offsets and lines span the whole passage."""

    number: int
    doc_id: str
    source: str
    text: str
    start: int
    end: int
    start_line: int
    end_line: int
    chunk_ids: list[str]

    @property
    def location(self) -> str:
        return f"{self.source}:{self.start_line}-{self.end_line}"


Ordering = Literal["canonical", "relevance", "edges"]
Recall = Literal["retrieved", "whole_corpus"]
# Why packing stopped: the budget was full, the candidates ran out first, or the budget was
# cut to the reading model's measured effective context (`Pipeline.calibrate`).
StopReason = Literal["budget", "candidates", "effective_context"]


class PackedContext(BaseModel):
    """The prompt sent to the model and an account of how it was built.

    `token_count` is exact for the prompt and at most `budget_tokens - max_new_tokens`
    (`max_new_tokens`: the room kept for the answer). `prefix_token_count` counts the tokens
    before the first query-dependent one: the instructions, plus in a session the passages
    already shown. `recall` says whether everything the principal may read was packed
    ("whole_corpus") or a retrieved selection ("retrieved"); `stopped_by` why no more was packed.
    """

    query: str
    prompt: str
    chunks: list[Chunk]
    passages: list[Passage] = Field(default_factory=list)
    token_count: int
    budget_tokens: int
    max_new_tokens: int = 0
    prefix_token_count: int
    ordering: Ordering = "canonical"
    recall: Recall = "retrieved"
    stopped_by: StopReason = Field(
        "candidates", description="budget: the budget was full; candidates: they ran out first; effective_context: "
        "the budget was cut to what the reading model was measured to use (`Pipeline.calibrate`)",
    )
    dropped: list[DroppedCandidate] = Field(default_factory=list)

    def passage(self, number: int) -> Passage | None:
        """The passage shown as `[number]` (1-based, prompt order)."""
        return self.passages[number - 1] if 1 <= number <= len(self.passages) else None


class Citation(BaseModel):
    passage: int
    chunk_ids: list[str]
    doc_id: str
    location: str
    explicit: bool = Field(description="True if the model wrote [n]; False if attributed by text overlap")


class Usage(BaseModel):
    prompt_tokens: int
    generated_tokens: int
    cached_tokens: int | None = Field(None, description="Prompt tokens served from the backend's prefix cache")
    seconds: float = Field(0.0, description="Wall time of the whole call: prompt processing and generation")
    first_token_seconds: float | None = Field(None, description="Time to the first generated token, when measured")


class Fact(BaseModel):
    """A fact the model listed before answering, with the passages it cited for it."""

    text: str
    citations: list[Citation] = Field(default_factory=list)


Route = Literal["direct", "map", "synthesis", "map_reduce"]
# How `ask` answers (`hybridctx.generate.synthesis.answer_by`); `Answer.route` says how it did.
Strategy = Literal["map", "direct", "synthesis", "self_route"]
Calibrated = Literal["calibrated"]  # the strategy measured best for the reading model


class Answer(BaseModel):
    """The model's answer, its checked citations, and how it was reached.

    `route`: "direct" (one prompt), "map" (the values that passages about the question, each
    read on its own, name: `facts` holds their sentences with citations, `windows` the
    prompts read, `context` the one whose answer leads; or, where none names a value, the
    first window's answer, `context` that window), "synthesis" (facts listed with their
    passages, then the answer) or "map_reduce" (facts extracted from several windows, then
    reduced to one answer; `windows` holds their contexts and `context` the reduce prompt,
    whose passages are the facts). `escalated`: self-routing found the cheap answer wanting and answered
    again with the model's whole window. `unsupported_citations`: passage numbers the model
    cited that were not in its prompt (dropped from `citations`).
    """

    text: str
    citations: list[Citation]
    context: PackedContext
    usage: Usage
    route: Route = "direct"
    escalated: bool = False
    facts: list[Fact] = Field(default_factory=list)
    unsupported_citations: list[int] = Field(default_factory=list)
    windows: list[PackedContext] = Field(default_factory=list)


class Scope(BaseModel):
    """What a query may see, carried together from the caller to the store: chunks whose
    metadata pass `filters` (equality, or membership in a list of values), of documents
    `principal` may read (documents without an ACL are readable by all; `principal=None`
    reads only those)."""

    model_config = ConfigDict(frozen=True)

    filters: dict[str, Any] | None = None
    principal: str | None = None

    @classmethod
    def of(cls, filters: Any = None, principal: Any = None) -> Scope:
        """A caller's `filters` and `principal`, checked (`InvalidArgumentError` names what is wrong)."""
        try:
            return cls(filters=None if filters is None else dict(filters), principal=principal)
        except (TypeError, ValueError, ValidationError) as exc:
            raise InvalidArgumentError(
                f"filters must map metadata names to values, and principal be a string: {exc}"
            ) from exc


class Reading(BaseModel):
    """How one call reads, settled before any work (`Reader.reading`) and handed from the
    pipeline through the pack stage to the answering strategy: the caller's budget, what is
    packed per window (less where the model reads less well: `Pipeline.calibrate`), the room
    kept for the answer, and the passage order."""

    model_config = ConfigDict(frozen=True)

    budget_tokens: int
    read_tokens: int
    max_new_tokens: int
    ordering: Ordering = "canonical"

    def at(self, budget_tokens: int) -> Reading:
        """The same reading for another budget (self-route's whole window), still read per window."""
        read_tokens = min(budget_tokens, self.read_tokens)
        return self.model_copy(update={"budget_tokens": budget_tokens, "read_tokens": read_tokens})


class DocumentInfo(BaseModel):
    """A stored document as `Pipeline.documents()` lists it; `tokens` in the embedding model's
    tokens; `restricted`: it has an ACL."""

    id: str
    source: str
    chunks: int
    tokens: int
    restricted: bool = False


class Failure(BaseModel):
    item: str
    reason: str


class AddReport(BaseModel):
    """What one `add` did; `seconds` holds the wall time of each stage."""

    documents_added: int = 0
    documents_replaced: int = 0
    documents_unchanged: int = 0
    documents_removed: int = Field(0, description="Documents of a re-added folder whose files are gone")
    chunks_added: int = 0
    tokens_added: int = 0
    failed: list[Failure] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def chunks_per_second(self) -> float:
        total = sum(self.seconds.values())
        return self.chunks_added / total if total > 0 else 0.0
