"""Embed stage: chunk texts to L2-normalized float32 vectors.

- `base`: the `Embedder` interface and where models come from (packaged or a local folder);
- `transformer`: `SentenceTransformerEmbedder`, the model on this machine (CUDA fp16 or CPU);
- `ray`: `RayEmbedder`, the same model on a pool of Ray actors (`hybridctx[ray]`).
"""

from hybridctx.embed.base import PACKAGED_MODELS, Embedder, resolve_model_path, tokenizer_file
from hybridctx.embed.transformer import SentenceTransformerEmbedder

__all__ = ["PACKAGED_MODELS", "Embedder", "SentenceTransformerEmbedder", "resolve_model_path", "tokenizer_file"]
