"""One call from a tier name to an embedder (the pipeline, the CLI and Ray actors use it)."""

from __future__ import annotations

from pathlib import Path

from hybridctx.embed.base import TIERS, Embedder, source_model
from hybridctx.errors import InvalidArgumentError


def build_embedder(
    tier: str, model: str, *, device: str | None = None, batch_size: int = 64, cache_dir: Path | None = None
) -> Embedder:
    """`tier` of `model`: "transformer" (torch, CUDA fp16 when present) or "static" (distilled, CPU)."""
    model = source_model(model)
    if tier == "transformer":
        from hybridctx.embed.transformer import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(model, device=device, batch_size=batch_size)
    if tier == "static":
        from hybridctx.embed.static import StaticEmbedder

        return StaticEmbedder(model, cache_dir=cache_dir)
    raise InvalidArgumentError(f"embedder {tier!r}: expected one of {', '.join(TIERS)}")


def embedder_name(tier: str, model: str) -> str:
    """The name a KB built by `tier` of `model` records in its manifest."""
    model = source_model(model)
    return model if tier == "transformer" else f"{model}@{tier}"
