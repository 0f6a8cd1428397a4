"""The knowledge base on disk: manifest, chunk store and dense index kept consistent.

Layout of a KB directory:
    manifest.json          format version, embedding model, dimension
    chunks.sqlite          documents and chunks (store.py), with what the packer needs to know of
                           each chunk (its profile, table chunk_facts); its meta names the live generation and the
                           dense index segments, dead_vectors the deleted vectors in them
    dense-<generation>-<n>.faiss   dense index segments (segments.py), never changed once written
    lexical/               the BM25 index (tantivy, lexical.py), marked with its generation
    write.lock             held by the one process writing

A commit writes its new segment files first, then commits the lexical index (with a marker
naming the new generation), then commits SQLite (which switches `generation` and the segment
list in the same transaction as the chunk rows), then removes the segment files no longer
listed. A crash at any point leaves one consistent generation readable; re-running the same
`add` skips what was committed and finishes the rest. A lexical index whose marker disagrees
with the store is rebuilt from the stored chunk texts by the next writer (readers use dense
retrieval alone meanwhile). Format version 1 (one `dense-<generation>.faiss` rewritten per
commit) is read as a single segment and becomes version 2 at its next commit.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hybridctx.errors import (
    DiskFullError,
    EmbeddingModelMismatchError,
    KnowledgeBaseError,
    KnowledgeBaseFormatError,
)
from hybridctx.index.dense import FaissIndex
from hybridctx.index.layout import (
    FORMAT_VERSION,
    LEXICAL,
    MANIFEST,
    STORE,
    Manifest,
    check_store_present,
    checked_root,
    is_disk_full,
    read_manifest,
    write_lock,
    write_manifest,
)
from hybridctx.index.lexical import LexicalIndex
from hybridctx.index.segments import SegmentedIndex, SegmentInfo
from hybridctx.index.store import ChunkStore
from hybridctx.index.visibility import VisibleIds
from hybridctx.index.writer import KnowledgeBaseWriter
from hybridctx.schema import Chunk, Scope

VISIBLE_CACHED = 64  # scopes whose visible ids a reader keeps (each about max vector id / 8 bytes)


class KnowledgeBase:
    def __init__(self, root: Path, manifest: Manifest, mmap_index: bool = False, show_progress: bool = False) -> None:
        self.root = root
        self.manifest = manifest
        self.mmap_index = mmap_index
        self.show_progress = show_progress  # for what a writer may have to do first (a lexical rebuild)
        self.store = ChunkStore(root / STORE)
        self.generation = -1
        self.index = SegmentedIndex(manifest.dimension)
        self.lexical = LexicalIndex(root / LEXICAL)
        self.lexical_current = False
        self._told_stale = False
        self._loading = threading.Lock()  # one thread loads a new generation at a time
        self._visible: dict[tuple[int, str], VisibleIds | None] = {}  # (generation, scope) -> its ids
        self.refresh()

    @classmethod
    def open(
        cls, root: str | Path, embedding_model: str, dimension: Callable[[], int], mmap_index: bool = False,
        show_progress: bool = False,
    ) -> KnowledgeBase:
        """Open the KB at `root`, creating it if the directory is empty or missing.

        `dimension` is called only to create a new KB (it may load the embedding model).
        `mmap_index`: map the dense index file rather than read it into memory.
        """
        root = checked_root(root)
        manifest_path = root / MANIFEST
        if manifest_path.exists():
            manifest = read_manifest(manifest_path)
            if manifest.embedding_model != embedding_model:
                raise EmbeddingModelMismatchError(root, manifest.embedding_model, embedding_model)
            check_store_present(root)
        else:
            if root.exists() and any(root.iterdir()):
                raise KnowledgeBaseFormatError(
                    f"{root} is not empty and holds no {MANIFEST}: not a hybridctx knowledge base"
                )
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise KnowledgeBaseError(f"cannot create a knowledge base at {root}: {exc.strerror or exc}") from exc
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                embedding_model=embedding_model,
                dimension=dimension(),
                created_at=datetime.now(timezone.utc).isoformat(),
            )
            write_manifest(manifest_path, manifest)
        return cls(root, manifest, mmap_index, show_progress)

    def close(self) -> None:
        self.lexical.close()
        self.store.close()

    def refresh(self) -> None:
        """Load the indexes of the latest committed generation if a writer moved it on."""
        with self._reading():
            pass

    @contextmanager
    def _reading(self) -> Iterator[SegmentedIndex]:
        """A snapshot of the chunk store, and the dense index of the generation it shows:
        what a reader queries together, consistent while writers commit (threads included)."""
        for _ in range(5):
            with self.store.snapshot():
                generation, segments_json, dead_ids = self.store.index_state()
                with self._loading:
                    if generation > self.generation and not self._load(generation, segments_json, dead_ids):
                        continue  # its files were merged away meanwhile: take a newer snapshot
                    index, loaded = self.index, self.generation
                if generation < loaded:
                    continue  # another thread loaded a newer generation: take a newer snapshot
                yield index
                return
        raise KnowledgeBaseFormatError(f"index files named by {self.store.path} keep disappearing or are missing")

    def _load(self, generation: int, segments_json: str | None, dead_ids: np.ndarray) -> bool:
        """Load the segments of `generation` (reusing those already loaded); False if a file is
        gone (a writer committed after this snapshot and removed it)."""
        loaded = {info.name: index for info, index in self.index.segments}
        infos = self._segment_infos(generation, segments_json)
        segments = []
        for info in infos:
            path = self.root / info.name
            if info.name in loaded:
                segments.append((info, loaded[info.name]))
                continue
            if not path.exists():
                return False
            try:
                index = FaissIndex.load(
                    path, self.manifest.dimension, mmap=self.mmap_index, checksum=info.checksum, stamp=info.stamp
                )
            except KnowledgeBaseFormatError:
                if not path.exists():
                    return False
                raise
            segments.append((info, index))
        self.index = SegmentedIndex(self.manifest.dimension, segments, dead_ids)
        self.generation = generation
        self.lexical.reload()
        lexical_generation = self.lexical.generation
        self.lexical_current = lexical_generation == generation
        if 0 < generation and lexical_generation < generation and not self._told_stale:  # ahead: a commit under way
            self._told_stale = True
            warnings.warn(
                f"the lexical index of {self.root} is behind its chunk store (an interrupted commit, or made by an "
                "older hybridctx): searches use the dense index alone until the next write rebuilds it "
                "(any add or delete, or `hybridctx repair`)", stacklevel=2,
            )
        return True

    def _segment_infos(self, generation: int, segments_json: str | None) -> list[SegmentInfo]:
        if segments_json is not None:
            return [SegmentInfo.model_validate(s) for s in json.loads(segments_json)]
        legacy = self.root / f"dense-{generation}.faiss"  # format version 1: one index file
        if generation == 0 or not legacy.exists():
            return []
        count = len(FaissIndex.load(legacy, self.manifest.dimension, mmap=True))
        return [SegmentInfo(name=legacy.name, count=count, min_id=0, max_id=self.store.max_vector_id())]

    def search(self, vector: np.ndarray, k: int, scope: Scope) -> list[tuple[Chunk, float]]:
        """The `k` best chunks for `vector` that `scope` sees, best first."""
        with self._reading() as index:
            return self._chunks_of(*index.search(vector, k, self._visible_ids(scope)))

    def search_lexical(self, query: str, k: int, scope: Scope) -> list[tuple[Chunk, float]]:
        """The `k` best chunks for `query` by BM25 that `scope` sees, best first
        (none while the lexical index awaits a rebuild after an interrupted commit). The
        lexical index may be a commit ahead of the snapshot; ids the snapshot lacks are dropped."""
        with self._reading():
            if not self.lexical_current:
                return []
            return self._chunks_of(*self.lexical.search(query, k, self.store.visible_names(scope)))

    def _visible_ids(self, scope: Scope) -> VisibleIds | None:
        """The vector ids `scope` sees, worked out once per generation: a query and its hops
        search with the same ones."""
        key = (self.generation, scope.model_dump_json())
        try:
            return self._visible[key]
        except KeyError:  # (another thread may clear the cache between a check and a read: no check)
            visible = self._visible[key] = self.store.visible_ids(scope)
            if len(self._visible) > VISIBLE_CACHED:
                self._visible.clear()
            return visible

    def _chunks_of(self, scores: np.ndarray, ids: np.ndarray) -> list[tuple[Chunk, float]]:
        chunks = self.store.chunks(ids.tolist())
        return [(chunks[i], float(s)) for s, i in zip(scores, ids.tolist()) if i in chunks]

    @contextmanager
    def writer(self) -> Iterator[KnowledgeBaseWriter]:
        """Exclusive write access; a second writer gets `KnowledgeBaseLockedError`."""
        with write_lock(self.root):
            self.refresh()
            self._remove_stale_index_files()
            if not self.lexical_current:
                self.lexical.rebuild(self.store.chunk_texts(), self.generation, self.store.totals()[1],
                                     self.show_progress)
                self.lexical_current = True
            writer = KnowledgeBaseWriter(self)
            try:
                yield writer
            except Exception as exc:
                if is_disk_full(exc):  # the last commit stands: what was not committed is not half there
                    raise DiskFullError(
                        f"the disk holding {self.root} is full: the knowledge base stands at its last commit; "
                        "free some space and run the command again to finish (an add skips what it already committed)"
                    ) from exc
                raise
            finally:
                writer.close()

    def mapped(self, info: SegmentInfo, index: FaissIndex) -> FaissIndex:
        """A segment just written, mapped from its file when the KB maps its index: a writer
        kept every segment it wrote in memory, 7.4 GB at 5M vectors when the kernel killed it."""
        if not self.mmap_index:
            return index
        return FaissIndex.load(self.root / info.name, self.manifest.dimension, mmap=True, checksum=info.checksum,
                               stamp=info.stamp)

    def committed(self, index: SegmentedIndex, generation: int) -> None:
        """A writer's commit, now durable: searches go to `index` from here, the segment files it
        no longer lists are removed, and a KB of an older format records the current one."""
        live = {info.name for info in index.infos}
        stale = [info.name for info in self.index.infos if info.name not in live]
        with self._loading:
            self.index, self.generation = index, generation
        for name in stale:
            (self.root / name).unlink(missing_ok=True)
        if self.manifest.format_version != FORMAT_VERSION:
            self.manifest = self.manifest.model_copy(update={"format_version": FORMAT_VERSION})
            write_manifest(self.root / MANIFEST, self.manifest)

    def _remove_stale_index_files(self) -> None:
        live = {info.name for info in self.index.infos}
        for path in self.root.glob("dense-*.faiss*"):
            if path.name not in live:
                path.unlink()
