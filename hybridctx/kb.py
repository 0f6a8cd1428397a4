"""The knowledge base on disk: manifest, chunk store and dense index kept consistent.

Layout of a KB directory:
    manifest.json          format version, embedding model, dimension
    chunks.sqlite          documents and chunks (store.py); meta.generation names the live index
    dense-<generation>.faiss   the FAISS index of that generation (index.py)
    lexical/               the BM25 index (tantivy, lexical.py), marked with its generation
    write.lock             held by the one process writing

A commit writes the next generation's index file first, then commits the lexical index
(with a marker naming the new generation), then commits SQLite (which switches
`generation` in the same transaction as the chunk rows), then removes the old file. A crash
at any point leaves one consistent generation readable; re-running the same `add` skips
what was committed and finishes the rest. A lexical index whose marker disagrees with the
store is rebuilt from the stored chunk texts by the next writer (readers use dense
retrieval alone meanwhile).
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from hybridctx.errors import (
    EmbeddingModelMismatchError,
    KnowledgeBaseFormatError,
    KnowledgeBaseLockedError,
)
from hybridctx.index import FaissIndex, VectorIndex, needs_rebuild, retrain
from hybridctx.lexical import LexicalIndex
from hybridctx.schema import Chunk, Document
from hybridctx.store import ChunkStore

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE = "chunks.sqlite"
LOCK = "write.lock"
LEXICAL = "lexical"


class Manifest(BaseModel):
    format_version: int
    embedding_model: str
    dimension: int
    created_at: str


def _index_path(root: Path, generation: int) -> Path:
    return root / f"dense-{generation}.faiss"


class KnowledgeBase:
    def __init__(self, root: Path, manifest: Manifest, mmap_index: bool = False) -> None:
        self.root = root
        self.manifest = manifest
        self.mmap_index = mmap_index
        self.store = ChunkStore(root / STORE)
        self.generation = -1
        self.index: VectorIndex = FaissIndex(manifest.dimension)
        self.lexical = LexicalIndex(root / LEXICAL)
        self.lexical_current = False
        self.refresh()

    @classmethod
    def open(
        cls, root: str | Path, embedding_model: str, dimension: Callable[[], int], mmap_index: bool = False
    ) -> KnowledgeBase:
        """Open the KB at `root`, creating it if the directory is empty or missing.

        `dimension` is called only to create a new KB (it may load the embedding model).
        `mmap_index`: map the dense index file rather than read it into memory.
        """
        root = Path(root)
        manifest_path = root / MANIFEST
        if manifest_path.exists():
            manifest = _read_manifest(manifest_path)
            if manifest.embedding_model != embedding_model:
                raise EmbeddingModelMismatchError(root, manifest.embedding_model, embedding_model)
        else:
            if root.exists() and any(root.iterdir()):
                raise KnowledgeBaseFormatError(
                    f"{root} is not empty and holds no {MANIFEST}: not a hybridctx knowledge base"
                )
            root.mkdir(parents=True, exist_ok=True)
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                embedding_model=embedding_model,
                dimension=dimension(),
                created_at=datetime.now(timezone.utc).isoformat(),
            )
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(manifest.model_dump_json(indent=2))
            tmp.replace(manifest_path)
        return cls(root, manifest, mmap_index)

    def close(self) -> None:
        self.lexical.close()
        self.store.close()

    def refresh(self) -> None:
        """Load the indexes of the latest committed generation if another writer moved it on."""
        generation = int(self.store.get_meta("generation") or 0)
        if generation != self.generation:
            self._load_dense()
            self.lexical.reload()
            self.lexical_current = self.lexical.generation == self.generation

    def _load_dense(self) -> None:
        for _ in range(3):
            generation = int(self.store.get_meta("generation") or 0)
            if generation == self.generation:
                return
            path = _index_path(self.root, generation)
            if generation == 0 and not path.exists():
                self.index, self.generation = FaissIndex(self.manifest.dimension), 0
                return
            if path.exists():
                try:
                    self.index = FaissIndex.load(path, self.manifest.dimension, mmap=self.mmap_index)
                    self.generation = generation
                    return
                except KnowledgeBaseFormatError:
                    if path.exists():
                        raise
            # A writer committed a newer generation and removed this file meanwhile: read again.
        raise KnowledgeBaseFormatError(f"index file {path} named by {self.store.path} is missing")

    def search(
        self, vector: np.ndarray, k: int, filters: Mapping[str, Any] | None, principal: str | None
    ) -> list[tuple[Chunk, float]]:
        """The `k` best chunks for `vector` that pass the filters and ACL, best first."""
        self.refresh()
        allowed = self.store.allowed_vector_ids(filters, principal)
        scores, ids = self.index.search(vector, k, allowed)
        return self._chunks_of(scores, ids)

    def search_lexical(
        self, query: str, k: int, filters: Mapping[str, Any] | None, principal: str | None
    ) -> list[tuple[Chunk, float]]:
        """The `k` best chunks for `query` by BM25 that pass the filters and ACL, best first
        (none while the lexical index awaits a rebuild after an interrupted commit)."""
        self.refresh()
        if not self.lexical_current:
            return []
        allowed = self.store.allowed_vector_ids(filters, principal)
        scores, ids = self.lexical.search(query, k, allowed)
        return self._chunks_of(scores, ids)

    def _chunks_of(self, scores: np.ndarray, ids: np.ndarray) -> list[tuple[Chunk, float]]:
        chunks = self.store.chunks(ids.tolist())
        return [(chunks[i], float(s)) for s, i in zip(scores, ids.tolist()) if i in chunks]

    @contextmanager
    def writer(self) -> Iterator[KnowledgeBaseWriter]:
        """Exclusive write access; a second writer gets `KnowledgeBaseLockedError`."""
        lock_path = self.root / LOCK
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise KnowledgeBaseLockedError(
                    f"knowledge base {self.root} is being written by another process ({lock_path})"
                ) from exc
            self.refresh()
            self._remove_stale_index_files()
            if not self.lexical_current:
                self.lexical.rebuild(self.store.chunk_texts(), self.generation)
                self.lexical_current = True
            writer = KnowledgeBaseWriter(self)
            try:
                yield writer
            finally:
                writer.close()

    def _remove_stale_index_files(self) -> None:
        live = _index_path(self.root, self.generation)
        for path in self.root.glob("dense-*.faiss*"):
            if path != live:
                path.unlink()


class KnowledgeBaseWriter:
    """Stages document replacements and deletions; `commit()` makes them durable at once."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb
        self._store = ChunkStore(kb.store.path)
        self._lexical = kb.lexical
        self._removed: list[int] = []
        self._added_ids: list[int] = []
        self._added_vectors: list[np.ndarray] = []
        self._in_transaction = False
        self._rebuild = False

    def document_hash(self, doc_id: str) -> str | None:
        return self._store.document_hash(doc_id)

    def _begin(self) -> None:
        if not self._in_transaction:
            self._store.begin()
            self._in_transaction = True

    def replace_document(
        self, document: Document, content_hash: str, chunks: Sequence[Chunk], vectors: np.ndarray
    ) -> None:
        self._begin()
        removed, added = self._store.replace_document(document, content_hash, chunks)
        self._lexical.stage(add=zip(added, (c.text for c in chunks), strict=True), remove=removed)
        self._removed += removed
        self._added_ids += added
        self._added_vectors.append(vectors)

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        self._begin()
        removed = self._store.delete_documents(doc_ids)
        self._lexical.stage(remove=removed)
        self._removed += removed
        return len(removed)

    def rebuild_index(self) -> None:
        """Retrain the dense index on the current vectors at the next commit, as the type their
        number calls for: after many deletes or updates, when IVF lists no longer fit the data."""
        self._begin()
        self._rebuild = True

    def commit(self) -> None:
        if not self._in_transaction:
            return
        kb = self.kb
        index = kb.index.copy()
        index.remove(np.asarray(self._removed, dtype=np.int64))
        if self._added_ids:
            index.add(np.asarray(self._added_ids, dtype=np.int64), np.concatenate(self._added_vectors))
        if self._rebuild or needs_rebuild(index.spec, len(index), kb.manifest.dimension):
            index = retrain(index)
        generation = kb.generation + 1
        index.save(_index_path(kb.root, generation))
        self._lexical.commit(generation)  # if SQLite then fails, the marker disagrees: rebuilt on next write
        try:
            self._store.set_meta("generation", str(generation))
            self._store.commit()
        except BaseException:
            _index_path(kb.root, generation).unlink(missing_ok=True)
            kb.lexical_current = False  # it is one generation ahead now: rebuilt by the next writer
            raise
        self._in_transaction = False
        old = _index_path(kb.root, kb.generation)
        kb.index, kb.generation = index, generation
        old.unlink(missing_ok=True)
        self._removed, self._added_ids, self._added_vectors = [], [], []
        self._rebuild = False

    def close(self) -> None:
        """Roll back anything not committed."""
        if self._in_transaction:
            self._store.rollback()
            self._lexical.rollback()
            self._in_transaction = False
        self._lexical.close()
        self._store.close()


def _read_manifest(path: Path) -> Manifest:
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
        raise KnowledgeBaseFormatError(f"{path} is not a valid hybridctx manifest: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise KnowledgeBaseFormatError(
            f"{path} has format version {manifest.format_version}; this hybridctx reads "
            f"version {FORMAT_VERSION}"
        )
    return manifest
