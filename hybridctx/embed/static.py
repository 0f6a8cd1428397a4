"""The fast CPU tier: a static embedding table distilled locally from the configured model.

model2vec's `distill` runs every vocabulary token through the sentence-transformers model once
(about 20 s on 2 quiet cores, 110 s busy), reduces the vectors to 256 dimensions with PCA, and
keeps one vector per token: a chunk's embedding is then the mean of its tokens' rows, with no
network at all. That encodes about two orders of magnitude faster than the transformer on a
CPU (figures in bench/RESULTS.md, "Embedding tiers"), which is what makes corpora of billions
of tokens affordable without a GPU; what it costs in retrieval quality is measured there too.

The table is distilled once per source model and cached under `cache_dir/models/`, keyed by a
hash of the model's weights (`base.derived_model_folder`).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybridctx.embed.base import derived_model_folder, source_model
from hybridctx.errors import ModelUnavailableError

STATIC_DIMENSION = 256  # PCA size: model2vec's default, and half MiniLM's 384 (smaller index too)


def static_model_folder(model: str, cache_dir: Path | None = None) -> Path:
    """The distilled table of `model`, made on first use (progress shown by model2vec)."""
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        raise ModelUnavailableError(
            "the static embedder needs model2vec and skeletoken: pip install 'hybridctx[static]'"
        ) from exc

    def make(source: Path, folder: Path) -> None:
        distill(model_name=str(source), pca_dims=STATIC_DIMENSION, device="cpu").save_pretrained(str(folder))

    return derived_model_folder(f"static-{STATIC_DIMENSION}", model, cache_dir, make)


class StaticEmbedder:
    """Mean of distilled token vectors; the name in the manifest is `<model>@static`."""

    texts_per_call = 4096  # thousands of chunks a second: larger steps, same smooth progress bar

    def __init__(self, model: str = "all-MiniLM-L6-v2", cache_dir: Path | None = None) -> None:
        from model2vec import StaticModel

        model = source_model(model)
        self.name = f"{model}@static"
        folder = static_model_folder(model, cache_dir)
        self._model = StaticModel.from_pretrained(str(folder))
        # The table is saved in float16; means over float32 rows encode 1.3x faster (3,500 -> 4,500
        # chunks/s on 2 cores) for 15 MB more, and are exact to float32.
        self._model.embedding = np.asarray(self._model.embedding, dtype=np.float32)
        self.dimension = int(self._model.dim)
        gc.collect()  # as SentenceTransformerEmbedder: keep full collections off the query path
        gc.freeze()

    def release(self) -> None:
        """Nothing to free: the model serves queries too."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # One process: multiprocessing would fork a copy of the caller (the indexer, the server).
        vectors = np.asarray(self._model.encode(list(texts), use_multiprocessing=False), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12))
