"""One call from a tier name to an embedder (the pipeline, the CLI and Ray actors use it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hybridctx.embed.base import TIERS, Embedder, resolve_model_path, source_model
from hybridctx.errors import InvalidArgumentError, ModelUnavailableError


def build_embedder(
    tier: str, model: str, *, device: str | None = None, batch_size: int = 64, cache_dir: Path | None = None
) -> Embedder:
    """`tier` of `model`: "transformer" (torch, CUDA fp16 when present), "onnx" (int8, CPU)
    or "static" (distilled, CPU)."""
    model = source_model(model)
    if tier == "transformer":
        from hybridctx.embed.transformer import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(model, device=device, batch_size=batch_size)
    if tier == "onnx":
        from hybridctx.embed.onnx import OnnxEmbedder

        return OnnxEmbedder(model, cache_dir=cache_dir)
    if tier == "static":
        from hybridctx.embed.static import StaticEmbedder

        return StaticEmbedder(model, cache_dir=cache_dir)
    raise InvalidArgumentError(f"embedder {tier!r}: expected one of {', '.join(TIERS)}")


def embedder_name(tier: str, model: str) -> str:
    """The name a KB built by `tier` of `model` records in its manifest."""
    model = source_model(model)
    return model if tier == "transformer" else f"{model}@{tier}"


def prepare(tier: str, model: str, cache_dir: Path | None = None) -> int:
    """Make what `tier` derives from `model` (the distilled table, the int8 export) if it is not
    cached yet, and return the tier's embedding size, without loading the model: a driver calls
    it once so that its workers load the derived model rather than all make it at once."""
    if tier == "static":
        from hybridctx.embed.static import STATIC_DIMENSION, static_model_folder

        static_model_folder(model, cache_dir)
        return STATIC_DIMENSION
    if tier == "onnx":
        from hybridctx.embed.onnx import CONFIG_FILE, onnx_model_folder

        return int(json.loads((onnx_model_folder(model, cache_dir) / CONFIG_FILE).read_text())["dimension"])
    if tier not in TIERS:
        raise InvalidArgumentError(f"embedder {tier!r}: expected one of {', '.join(TIERS)}")
    path = resolve_model_path(model)
    pooling = next(iter(sorted(path.glob("*Pooling/config.json"))), None)
    config: dict[str, Any] = json.loads((pooling or path / "config.json").read_text())
    dimension = config.get("word_embedding_dimension") or config.get("hidden_size")
    if not dimension:
        raise ModelUnavailableError(f"cannot tell the embedding dimension of {path}")
    return int(dimension)
