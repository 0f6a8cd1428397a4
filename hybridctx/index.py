"""Index stage, dense half: a FAISS index from int64 vector ids to unit vectors.

Exact inner product (`IndexFlatIP`) behind an `IndexIDMap2`, so vectors are addressed by
the chunk store's ids and can be removed when a document changes. Filtering is done
inside the search with an id selector, so a filter never shrinks results below k when
enough allowed vectors exist.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from hybridctx.errors import KnowledgeBaseFormatError


class VectorIndex(Protocol):
    dimension: int

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(
        self, vector: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids of the `k` nearest vectors, best first, among `allowed_ids` if given."""
        ...

    def copy(self) -> VectorIndex: ...

    def save(self, path: Path) -> None: ...


class FlatFaissIndex:
    def __init__(self, dimension: int, index: faiss.Index | None = None) -> None:
        self.dimension = dimension
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))

    @classmethod
    def load(cls, path: Path, dimension: int) -> FlatFaissIndex:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise KnowledgeBaseFormatError(f"cannot read FAISS index {path}: {exc}") from exc
        if index.d != dimension:
            raise KnowledgeBaseFormatError(
                f"FAISS index {path} has dimension {index.d}, the manifest says {dimension}"
            )
        return cls(dimension, index)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
            )

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(
        self, vector: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        params = None
        if allowed_ids is not None:
            if len(allowed_ids) == 0:
                return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
            selector = faiss.IDSelectorBatch(np.asarray(allowed_ids, dtype=np.int64))
            params = faiss.SearchParameters(sel=selector)
        k = min(k, len(self))
        if k == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        scores, ids = self._index.search(query, k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def copy(self) -> FlatFaissIndex:
        return FlatFaissIndex(self.dimension, faiss.clone_index(self._index))

    def save(self, path: Path) -> None:
        """Write atomically: a reader never sees a half-written index file."""
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
