"""The lexical index: BM25 over chunk texts with tantivy, beside the dense FAISS index.

Why tantivy rather than bm25s: the index lives on disk and takes incremental adds and
deletes (segments, merged in the background), so it follows every commit of the knowledge
base without a rebuild, and its top-k search (block-max WAND) stays fast at millions of
chunks without loading the corpus into memory. bm25s is faster to build but in-memory and
rebuilt on every change.

Consistency with the chunk store: each commit also writes a marker document holding the
knowledge base generation it belongs to, in the same tantivy commit. A knowledge base whose
marker disagrees with the chunk store's generation (a crash between the two commits) gets
its lexical index rebuilt from the chunk texts, which the store keeps; readers meanwhile
fall back to dense retrieval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridctx.errors import KnowledgeBaseFormatError
from hybridctx.index.visibility import VisibleIds

_MARKER = "generation-marker"
_WRITER_HEAP = 64_000_000
# Queries ask tantivy for this many times k first, then more while filters remove too many.
_OVERFETCH = 2


def _schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("vector_id", stored=True, indexed=True, fast=True)
    builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
    builder.add_text_field("kind", stored=False, tokenizer_name="raw")
    builder.add_unsigned_field("generation", stored=True, indexed=True)
    return builder.build()


class LexicalIndex:
    """BM25 search over chunk texts, keyed by the chunk store's vector ids."""

    def __init__(self, path: Path) -> None:
        import tantivy

        self.path = path
        self._schema = _schema()
        try:
            if (path / "meta.json").exists():
                self._index = tantivy.Index.open(str(path))
            elif any(path.glob("*.idx")):  # tantivy would start a new, empty index over them
                raise KnowledgeBaseFormatError(
                    f"lexical index {path} has lost its meta.json; `hybridctx repair` rebuilds it from the chunk store"
                )
            else:
                path.mkdir(parents=True, exist_ok=True)
                self._index = tantivy.Index(self._schema, path=str(path))
        except ValueError as exc:
            raise KnowledgeBaseFormatError(
                f"lexical index {path} cannot be opened: {exc}; `hybridctx repair` rebuilds it from the chunk store"
            ) from exc
        self._writer: Any = None

    # -- reading -----------------------------------------------------------------------------
    def reload(self) -> None:
        self._index.reload()

    @property
    def generation(self) -> int:
        """The knowledge base generation this index was last committed for (-1: none)."""
        import tantivy

        searcher = self._index.searcher()
        hits = searcher.search(tantivy.Query.term_query(self._schema, "kind", _MARKER), 1).hits
        return int(searcher.doc(hits[0][1])["generation"][0]) if hits else -1

    def search(self, query: str, k: int, allowed: VisibleIds | None = None) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores and vector ids of the `k` best chunks, best first, among `allowed` ids.

        Filtering happens on tantivy's ranked results, fetching more until `k` allowed ones
        are found or the matches run out, so a filter never shrinks the result below `k`
        when `k` allowed matches exist.
        """
        parsed, _errors = self._index.parse_query_lenient(query, ["text"])  # never fails on odd syntax
        searcher = self._index.searcher()
        # tantivy allocates for `fetch` up front; unfiltered, k and the generation marker are enough
        # (fetching 2k read 1,000 stored documents more a query: a third of a k=1000 hybrid retrieve)
        fetch = k + 1
        if allowed is not None:  # as many as hold k allowed ones if the filter is unrelated to the query
            fetch = math.ceil(k * _OVERFETCH * searcher.num_docs / max(1, len(allowed)))
        fetch = min(max(fetch, 10), searcher.num_docs + 1)
        while True:
            hits = searcher.search(parsed, fetch).hits
            scores, ids = [], []
            for score, address in hits:
                vector_id = searcher.doc(address)["vector_id"]
                if vector_id:  # not the generation marker
                    scores.append(score)
                    ids.append(vector_id[0])
            found = np.asarray(ids, dtype=np.int64)
            seen = allowed.mask(found) if allowed is not None else np.ones(len(found), dtype=bool)
            if seen.sum() >= k or len(hits) < fetch:
                return np.asarray(scores, dtype=np.float32)[seen][:k], found[seen][:k]
            fetch = min(fetch * 4, searcher.num_docs + 1)

    # -- writing (under the knowledge base's write lock) ---------------------------------------
    def stage(self, add: Iterable[tuple[int, str]] = (), remove: Sequence[int] = ()) -> None:
        """Queue chunk additions and removals for the next `commit`."""
        import tantivy

        writer = self._open_writer()
        if len(remove):
            writer.delete_documents_by_query(
                tantivy.Query.term_set_query(self._schema, "vector_id", [int(i) for i in remove])
            )
        for vector_id, text in add:
            doc = tantivy.Document()
            doc.add_unsigned("vector_id", int(vector_id))
            doc.add_text("text", text)
            writer.add_document(doc)

    def commit(self, generation: int) -> None:
        """Make the staged changes durable, marked as belonging to `generation`."""
        import tantivy

        writer = self._open_writer()
        writer.delete_documents_by_query(tantivy.Query.term_query(self._schema, "kind", _MARKER))
        marker = tantivy.Document()
        marker.add_text("kind", _MARKER)
        marker.add_unsigned("generation", generation)
        writer.add_document(marker)
        writer.commit()
        self._index.reload()

    def rollback(self) -> None:
        if self._writer is not None:
            self._writer.rollback()

    def rebuild(self, chunks: Iterable[tuple[int, str]], generation: int) -> None:
        """Replace everything with `chunks` (vector id, text), marked as `generation`, in one
        commit: readers see the old index or the new one, and no file is removed under them."""
        self._open_writer().delete_all_documents()
        self.stage(add=chunks)
        self.commit(generation)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.wait_merging_threads()
            self._writer = None

    def _open_writer(self) -> Any:
        if self._writer is None:
            self._writer = self._index.writer(heap_size=_WRITER_HEAP, num_threads=1)
        return self._writer
