"""The one writer of a knowledge base: it stages document replacements and deletions, and a
commit makes them durable at once (new segment files, then the lexical index, then SQLite;
see `kb` for why a crash at any point leaves one consistent generation)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hybridctx.index.layout import seal_segment
from hybridctx.index.store import ChunkStore
from hybridctx.schema import Chunk, ChunkProfile, Document

if TYPE_CHECKING:
    from hybridctx.index.kb import KnowledgeBase


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
        self, document: Document, content_hash: str, chunks: Sequence[Chunk], vectors: np.ndarray,
        profiles: Sequence[ChunkProfile] | None = None,
    ) -> None:
        self._begin()
        removed, added, names = self._store.replace_document(document, content_hash, chunks, profiles)
        self._lexical.stage(add=((i, c.text, names) for i, c in zip(added, chunks, strict=True)), remove=removed)
        self._removed += removed
        self._added_ids += added
        self._added_vectors.append(vectors)

    def put_profiles(self, vector_ids: Sequence[int], profiles: Sequence[ChunkProfile]) -> None:
        """Store the packer's profiles of chunks already committed, in a transaction of their
        own: they touch no index, so no new generation."""
        if self._in_transaction:
            raise RuntimeError("put_profiles: commit the staged changes first")
        self._store.begin()
        self._store.put_profiles(vector_ids, profiles)
        self._store.commit()

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        self._begin()
        removed = self._store.delete_documents(doc_ids)
        self._lexical.stage(remove=removed)
        self._removed += removed
        return len(removed)

    def rebuild_index(self) -> None:
        """Merge all dense index segments into one, trained afresh as the type their number
        calls for, at the next commit: after many deletes or updates, when IVF lists no
        longer fit the data, or to make searches touch one segment."""
        self._begin()
        self._rebuild = True

    def commit(self) -> None:
        if not self._in_transaction:
            return
        kb = self.kb
        generation = kb.generation + 1
        names = (f"dense-{generation}-{n}.faiss" for n in itertools.count())
        added_vectors = (
            np.concatenate(self._added_vectors) if self._added_vectors
            else np.zeros((0, kb.manifest.dimension), dtype=np.float32)
        )
        changes = kb.index.with_changes(
            np.asarray(self._removed, dtype=np.int64), np.asarray(self._added_ids, dtype=np.int64),
            added_vectors, name=lambda: next(names), compact=self._rebuild,
        )
        sealed = {info.name: seal_segment(info, index, kb.root) for info, index in changes.written}
        changes.index.segments = [
            (sealed[info.name], kb.mapped(sealed[info.name], index)) if info.name in sealed else (info, index)
            for info, index in changes.index.segments
        ]
        self._lexical.commit(generation)  # if SQLite then fails, the marker disagrees: rebuilt on next write
        try:
            self._store.update_dead_vectors(changes.dead_added, changes.dead_cleared)
            self._store.set_meta("segments", json.dumps([info.model_dump() for info in changes.index.infos]))
            self._store.set_meta("generation", str(generation))
            self._store.commit()
        except BaseException:
            for info, _ in changes.written:
                (kb.root / info.name).unlink(missing_ok=True)
            kb.lexical_current = False  # it is one generation ahead now: rebuilt by the next writer
            raise
        self._in_transaction = False
        kb.committed(changes.index, generation)
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
