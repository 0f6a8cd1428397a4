"""Embed stage: chunk texts to L2-normalized float32 vectors.

- `base`: the `Embedder` interface and where models come from (packaged or a local folder);
- `transformer`: `SentenceTransformerEmbedder`, the model on this machine (CUDA fp16 or CPU);
- `onnx`: `OnnxEmbedder`, that model exported once to ONNX in int8 (onnxruntime): the middle CPU tier;
- `static`: `StaticEmbedder`, a token table distilled once from that model (model2vec): the fast CPU tier;
- `factory`: `build_embedder(tier, model)`, the name each tier records in a KB's manifest, and `prepare`;
- `ray`: `RayEmbedder`, the same model on a pool of Ray actors (`hybridctx[ray]`).
"""

from hybridctx.embed.base import PACKAGED_MODELS, TIERS, Embedder, resolve_model_path, tier_of, tokenizer_file
from hybridctx.embed.factory import build_embedder, embedder_name
from hybridctx.embed.onnx import OnnxEmbedder
from hybridctx.embed.static import StaticEmbedder
from hybridctx.embed.transformer import SentenceTransformerEmbedder

__all__ = [
    "PACKAGED_MODELS", "TIERS", "Embedder", "OnnxEmbedder", "SentenceTransformerEmbedder", "StaticEmbedder",
    "build_embedder", "embedder_name", "resolve_model_path", "tier_of", "tokenizer_file",
]
