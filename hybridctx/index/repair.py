"""`hybridctx repair`: every file a search reads checked in full, and what can be rebuilt from
the chunk store rebuilt (the lexical index always; a damaged dense segment given an embedder)."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, computed_field
from tqdm import tqdm

from hybridctx.embed import Embedder
from hybridctx.errors import EmbeddingModelMismatchError, KnowledgeBaseNotFoundError
from hybridctx.index import layout
from hybridctx.index.dense import FaissIndex, file_checksum, file_stamp, index_spec
from hybridctx.index.lexical import LexicalIndex
from hybridctx.index.segments import SegmentInfo
from hybridctx.index.store import ChunkStore


class RepairReport(BaseModel):
    """What `repair` found and did. `ok`: every file a search reads is sound now."""

    store_problems: list[str]  # SQLite's integrity_check: restore chunks.sqlite from a backup
    damaged_segments: list[str]  # dense segment files found missing or failing their checksum
    rebuilt_segments: list[str]  # those of them replaced by a segment embedded again from the store
    damaged_chunks: list[str]  # chunk ids whose stored text fails its checksum
    documents_to_add_again: list[str]  # the documents still damaged: delete them and index them again
    lexical_chunks: int  # chunks the rebuilt lexical index holds

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        unmended = set(self.damaged_segments) - set(self.rebuilt_segments)
        return not (self.store_problems or unmended or self.damaged_chunks)


def repair(
    root: str | Path, embedder: Callable[[], Embedder] | None = None, show_progress: bool = False
) -> RepairReport:
    """Check, in full, every file a search reads; rebuild the lexical index from the chunk store's
    checked texts (it holds nothing the store does not) and, given `embedder` (called only when a
    dense segment is damaged or missing: it may load the KB's model), each damaged segment from
    the texts of the chunks still alive in its id range, embedded again. O(corpus): a
    maintenance command, run under the write lock, committed like an `add` (new files first, the
    store last), so an interrupted repair leaves the KB as it was.

    Opening checks less: dense segments by their CRC-32 (memory-mapped ones only when their file
    changed since it was last verified, which repair records), chunk texts as they are read,
    tantivy its own files. What cannot be mended (a damaged chunk text; a segment without an
    embedder) is named with the documents it holds, to delete and index again."""
    root = layout.checked_root(root)
    if not (root / layout.MANIFEST).is_file():
        raise KnowledgeBaseNotFoundError(root)
    manifest = layout.read_manifest(root / layout.MANIFEST)
    layout.check_store_present(root)
    with layout.write_lock(root):
        store = ChunkStore(root / layout.STORE)
        try:
            problems = store.integrity_problems()
            generation, segments_json, _ = store.index_state()
            infos = [SegmentInfo.model_validate(s) for s in json.loads(segments_json or "[]")]
            sound = {info.name: stamped for info in infos if (stamped := _verified(root, info)) is not None}
            bad = [info for info in infos if info.name not in sound]
            rebuilt: dict[str, SegmentInfo | None] = {}
            if bad and embedder is not None:
                rebuilt = _reembedded(root, store, manifest, bad, infos, embedder(), generation + 1, show_progress)
                generation += 1
            bad_chunks: list[tuple[str, str]] = []
            _rebuild_lexical(root, store, generation, bad_chunks, show_progress)
            store.begin()
            mended = [(info.min_id, info.max_id) for info in bad if info.name in rebuilt]
            store.update_dead_vectors(np.zeros(0, dtype=np.int64), mended)
            kept = [sound.get(i.name) or rebuilt.get(i.name, i) for i in infos]
            store.set_meta("segments", json.dumps([i.model_dump() for i in kept if i is not None]))
            store.set_meta("generation", str(generation))
            store.commit()
            for info in bad:
                if info.name in rebuilt:
                    (root / info.name).unlink(missing_ok=True)
            lexical_chunks = store.totals()[1] - len(bad_chunks)
            documents = {doc_id for _, doc_id in bad_chunks}
            for info in bad:
                if info.name not in rebuilt:
                    documents.update(store.documents_between(info.min_id, info.max_id))
        finally:
            store.close()
    return RepairReport(
        store_problems=problems, damaged_segments=[info.name for info in bad],
        rebuilt_segments=list(rebuilt),
        damaged_chunks=[chunk_id for chunk_id, _ in bad_chunks], documents_to_add_again=sorted(documents),
        lexical_chunks=lexical_chunks,
    )


def _verified(root: Path, info: SegmentInfo) -> SegmentInfo | None:
    """`info` with the stamp of its file now that its checksum is verified in full (so that
    memory-mapped opens trust the file again, e.g. after a copy); None if the file is damaged or missing."""
    path = root / info.name
    if not path.is_file() or (info.checksum is not None and file_checksum(path) != info.checksum):
        return None
    return info.model_copy(update={"stamp": file_stamp(path) if info.checksum is not None else None})


def _reembedded(
    root: Path, store: ChunkStore, manifest: layout.Manifest, bad: list[SegmentInfo], infos: list[SegmentInfo],
    embedder: Embedder, generation: int, show_progress: bool,
) -> dict[str, SegmentInfo | None]:
    """New segment files for the damaged ones, from their live chunks' stored texts (a damaged
    text is left out; the lexical rebuild reports it): damaged name -> new info (None: no chunk
    of it is alive). Vectors of a segment are held in memory, as when it was merged."""
    if embedder.name != manifest.embedding_model:
        raise EmbeddingModelMismatchError(root, manifest.embedding_model, embedder.name)
    kb_vectors = sum(info.live for info in infos)
    names = (f"dense-{generation}-{n}.faiss" for n in itertools.count())
    rebuilt: dict[str, SegmentInfo | None] = {}
    with tqdm(desc="chunks embedded again", unit="chunk", disable=not show_progress) as bar:
        for info in bad:
            rows = list(store.chunk_texts([], between=(info.min_id, info.max_id)))
            if not rows:
                rebuilt[info.name] = None
                continue
            ids, texts, _ = zip(*rows)
            parts = []
            for start in range(0, len(texts), embedder.texts_per_call):
                parts.append(embedder.embed(texts[start : start + embedder.texts_per_call]))
                bar.update(len(parts[-1]))
            index = FaissIndex.build(
                index_spec(len(ids), manifest.dimension, kb_vectors), np.asarray(ids, np.int64), np.concatenate(parts)
            )
            new = SegmentInfo(name=next(names), count=len(ids), min_id=info.min_id, max_id=info.max_id)
            rebuilt[info.name] = layout.seal_segment(new, index, root)
    return rebuilt


def _rebuild_lexical(
    root: Path, store: ChunkStore, generation: int, damaged: list[tuple[str, str]], show_progress: bool
) -> None:
    """Build a new lexical index beside the old one from the chunk texts that pass their
    checksum (the others go to `damaged`), then swap them: a reader opening meanwhile finds one
    or the other."""
    fresh, old = root / f"{layout.LEXICAL}.new", root / f"{layout.LEXICAL}.old"
    for leftover in (fresh, old):
        shutil.rmtree(leftover, ignore_errors=True)
    lexical = LexicalIndex(fresh)
    try:
        lexical.rebuild(store.chunk_texts(damaged), generation, store.totals()[1], show_progress)
    finally:
        lexical.close()
    if (root / layout.LEXICAL).exists():
        (root / layout.LEXICAL).rename(old)
    fresh.rename(root / layout.LEXICAL)
    shutil.rmtree(old, ignore_errors=True)
