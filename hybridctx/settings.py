"""Settings for a knowledge base and its pipeline. Defaults run on a CPU-only machine."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybridctx.cache import default_cache_dir
from hybridctx.errors import BudgetTooLargeError
from hybridctx.generate.llama_cpp import LlamaCppSettings
from hybridctx.generate.openai_compatible import OpenAISettings
from hybridctx.generate.vllm import VLLMSettings
from hybridctx.schema import MAX_K, Calibrated, Ordering, Strategy
from hybridctx.sources import MAX_FILE_BYTES

__all__ = ["Settings", "Strategy", "default_cache_dir"]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # chunk
    chunk_tokens: int = Field(
        128, ge=16,
        description="Chunk size in embedding-model tokens: small units pack precisely (neighbours are merged "
        "back into passages), see bench/RESULTS.md",
    )
    chunk_overlap_tokens: int = Field(32, ge=0)
    # embed
    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="A packaged model name or the path of a sentence-transformers folder",
    )
    embedder: Literal["transformer", "onnx", "static"] = Field(
        "transformer",
        description="Tier of the embedding model: the transformer (torch; CUDA fp16 when present), its int8 "
        "ONNX export (about 1.8x faster on a CPU), or a static table distilled from it once (model2vec; "
        "~100x faster on a CPU, lower recall). Figures: bench/RESULTS.md, 'Embedding tiers'",
    )
    embedding_batch_size: int = Field(64, ge=1)
    device: str | None = Field(None, description="torch device; None picks CUDA when present")
    # index
    max_file_bytes: int = Field(
        MAX_FILE_BYTES, ge=1, description="Larger files are listed as failures, not read (bounded memory)"
    )
    commit_every_chunks: int = Field(
        4096, ge=1, description="Commit (and make resumable) after this many new chunks"
    )
    mmap_index: bool = Field(
        False, description="Map the dense index file instead of reading it: a KB larger than RAM pages in "
        "only the inverted lists its queries probe",
    )
    # retrieve
    k: int | None = Field(
        None, ge=1, le=MAX_K, strict=True, description="Candidates retrieved for pack/ask/sessions; None: scaled "
        "to the budget (three times the chunks it holds, at least 100; more when a pack comes out short), and "
        "100 for `retrieve`",
    )
    retrieval: Literal["hybrid", "dense", "lexical"] = Field(
        "hybrid", description="Dense (embeddings), lexical (BM25) or both fused (their scores, each scaled to 0..1, "
        "weighted by dense_weight and lexical_weight)"
    )
    dense_weight: float = Field(1.0, ge=0.0, description="Weight of the dense ranking in hybrid fusion")
    lexical_weight: float = Field(1.0, ge=0.0, description="Weight of the lexical ranking in hybrid fusion")
    hops: int = Field(
        3, ge=0, le=8, description="Follow-up retrievals for chained facts (X = Y; Y = 7): lexical searches for the "
        "names that the best hits' sentences about the question's names mention (the question's own names are "
        "looked up exactly first); 0: one retrieval",
    )
    rrf_k: int = Field(
        60, ge=1, description="Multi-hop: the ranking is rescored 1 / (rrf_k + rank), and each link ranks just below "
        "the hit that named it; larger flattens rank differences",
    )
    fusion_depth: int = Field(
        100, ge=1, description="Hybrid retrieval fuses each ranking this deep (at least k): any k up to it is "
        "a prefix of a larger one",
    )
    # pack + generate
    budget_tokens: int = Field(
        2048, ge=64,
        description="Tokens of the model's window that `pack`/`ask` fill: the prompt plus room for "
        "max_new_tokens of answer; suits the small CPU model",
    )
    ordering: Ordering = Field("canonical", description="Passage order: canonical, relevance or edges")
    near_duplicate_threshold: float | None = Field(
        0.8, gt=0.0, le=1.0, description="Word 3-gram Jaccard at which passages count as near copies; None: off"
    )
    follow_up_share: float = Field(
        0.1, ge=0.0, le=1.0, description="In a session, the share of the window kept for follow-ups' new passages: "
        "the rest, the first question's passages, stays a cached prefix (lower: more reuse, less new room; "
        "raise it for windows of a few thousand tokens)",
    )
    max_new_tokens: int = Field(200, ge=1)
    strategy: Strategy | Calibrated = Field(
        "calibrated", description="How `ask` answers: calibrated (the strategy stored with the reading model's "
        "calibration as measured best for it: map for Gemma 270M, from its answer-level needle figures; direct "
        "where none is stored, as for the default reader); map (each passage holding a sentence about the question "
        "that names a value read on its own, the answer the values the readings take from those sentences, "
        "each cited; without such passages, as direct); direct "
        "(one window); synthesis (list the facts with their passages, then answer; map-reduce over windows "
        "when the material exceeds the window); self_route (direct, escalating to synthesis over the model's "
        "whole window when the documents seem not to say)",
    )
    max_windows: int = Field(8, ge=1, description="map and map-reduce: at most this many windows, and map at "
                             "most this many passages read on their own, per question")
    effective_context: int | Literal["calibrated", "window"] = Field(
        "calibrated", description="Prompt tokens `ask` reads per window: 'calibrated' (the model's effective "
        "length measured by `Pipeline.calibrate`, where it was; else the budget), 'window' (the whole budget), "
        "or a number of tokens. Small models read far less well than their window (RULER)",
    )
    backend: LlamaCppSettings | VLLMSettings | OpenAISettings = Field(
        default_factory=LlamaCppSettings, discriminator="kind", description="The generating model: a GGUF on "
        "llama.cpp (by default the packaged Qwen2.5-Coder 0.5B Instruct: bench/RESULTS.md, 'real questions'), "
        "vLLM, or an OpenAI-compatible server",
    )
    max_concurrency: int = Field(
        4, ge=1, description="Threads running async and streamed calls (aask, astream, the OpenAI-compatible "
        "server), sharing the pipeline's models; more calls wait their turn",
    )
    cache_dir: Path = Field(default_factory=default_cache_dir)
    show_progress: bool = True

    @property
    def window_tokens(self) -> int:
        """The generating model's context window."""
        return self.backend.context_window

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError("chunk_overlap_tokens must be smaller than chunk_tokens")
        if self.budget_tokens > self.window_tokens:
            raise BudgetTooLargeError(self.budget_tokens, self.window_tokens)
        if self.dense_weight + self.lexical_weight == 0:
            raise ValueError("dense_weight and lexical_weight cannot both be 0")
        if isinstance(self.effective_context, int) and self.effective_context < 256:
            raise ValueError("effective_context must be at least 256 tokens, 'calibrated' or 'window'")
        if self.max_new_tokens >= self.budget_tokens:
            raise ValueError("max_new_tokens must be smaller than budget_tokens")
        return self
