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

import errno
import fcntl
import itertools
import json
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ValidationError, computed_field
from tqdm import tqdm

from hybridctx.embed import Embedder
from hybridctx.errors import (
    DiskFullError,
    EmbeddingModelMismatchError,
    InvalidArgumentError,
    KnowledgeBaseError,
    KnowledgeBaseFormatError,
    KnowledgeBaseLockedError,
    KnowledgeBaseNotFoundError,
)
from hybridctx.index.dense import FaissIndex, file_checksum, file_stamp, index_spec
from hybridctx.index.lexical import LexicalIndex
from hybridctx.index.segments import SegmentedIndex, SegmentInfo
from hybridctx.index.store import ChunkStore
from hybridctx.index.visibility import VisibleIds
from hybridctx.schema import Chunk, ChunkProfile, Document, Scope

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
STORE = "chunks.sqlite"
LOCK = "write.lock"
LEXICAL = "lexical"
VISIBLE_CACHED = 64  # scopes whose visible ids a reader keeps (each about max vector id / 8 bytes)


class Manifest(BaseModel):
    format_version: int
    embedding_model: str
    dimension: int
    created_at: str


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
            manifest = _read_manifest(manifest_path)
            if manifest.embedding_model != embedding_model:
                raise EmbeddingModelMismatchError(root, manifest.embedding_model, embedding_model)
            _check_store_present(root)
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
            _write_manifest(manifest_path, manifest)
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
        with _write_lock(self.root):
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
                if _is_disk_full(exc):  # the last commit stands: what was not committed is not half there
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

    def _remove_stale_index_files(self) -> None:
        live = {info.name for info in self.index.infos}
        for path in self.root.glob("dense-*.faiss*"):
            if path.name not in live:
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
        sealed = {info.name: _sealed(info, index, kb.root) for info, index in changes.written}
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
        live = {info.name for info in changes.index.infos}
        stale = [info.name for info in kb.index.infos if info.name not in live]
        with kb._loading:
            kb.index, kb.generation = changes.index, generation
        for name in stale:
            (kb.root / name).unlink(missing_ok=True)
        if kb.manifest.format_version != FORMAT_VERSION:
            kb.manifest = kb.manifest.model_copy(update={"format_version": FORMAT_VERSION})
            _write_manifest(kb.root / MANIFEST, kb.manifest)
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


def _sealed(info: SegmentInfo, index: FaissIndex, root: Path) -> SegmentInfo:
    """Write a new segment file; its info with the file's checksum and stamp."""
    checksum = index.save(root / info.name)
    return info.model_copy(update={"checksum": checksum, "stamp": file_stamp(root / info.name)})


@contextmanager
def _write_lock(root: Path) -> Iterator[None]:
    lock_path = root / LOCK
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise KnowledgeBaseLockedError(
                f"knowledge base {root} is being written by another process ({lock_path})"
            ) from exc
        yield


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
    root = checked_root(root)
    if not (root / MANIFEST).is_file():
        raise KnowledgeBaseNotFoundError(root)
    manifest = _read_manifest(root / MANIFEST)
    _check_store_present(root)
    with _write_lock(root):
        store = ChunkStore(root / STORE)
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
    root: Path, store: ChunkStore, manifest: Manifest, bad: list[SegmentInfo], infos: list[SegmentInfo],
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
            rebuilt[info.name] = _sealed(new, index, root)
    return rebuilt


def _rebuild_lexical(
    root: Path, store: ChunkStore, generation: int, damaged: list[tuple[str, str]], show_progress: bool
) -> None:
    """Build a new lexical index beside the old one from the chunk texts that pass their
    checksum (the others go to `damaged`), then swap them: a reader opening meanwhile finds one
    or the other."""
    fresh, old = root / f"{LEXICAL}.new", root / f"{LEXICAL}.old"
    for leftover in (fresh, old):
        shutil.rmtree(leftover, ignore_errors=True)
    lexical = LexicalIndex(fresh)
    try:
        lexical.rebuild(store.chunk_texts(damaged), generation, store.totals()[1], show_progress)
    finally:
        lexical.close()
    if (root / LEXICAL).exists():
        (root / LEXICAL).rename(old)
    fresh.rename(root / LEXICAL)
    shutil.rmtree(old, ignore_errors=True)


def _check_store_present(root: Path) -> None:
    """Refuse a KB whose chunk store is gone or emptied while its indexes remain: SQLite opened
    it as a new, empty store, and the next add deleted the old dense segments for good."""
    store = root / STORE
    if store.is_file() and store.stat().st_size > 0:
        return
    kept = sorted(p.name for p in root.iterdir() if p.name not in (MANIFEST, LOCK) and not p.name.startswith(STORE))
    if kept:
        raise KnowledgeBaseFormatError(
            f"{store} is missing or empty, but {root} still holds {', '.join(kept[:3])}: not opened, since "
            f"writing would discard them. Restore {STORE} from a backup, or index into a new folder"
        )


def _is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, from any of the stores (SQLite, FAISS, tantivy, plain files), says the disk is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "database or disk is full" in text or "Disk quota exceeded" in text


def checked_root(root: str | Path) -> Path:
    """`root` as a KB folder, refused with a typed error naming it when it cannot be one."""
    if "\x00" in str(root):
        raise InvalidArgumentError(f"knowledge base path {str(root)!r} holds a NUL character")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise KnowledgeBaseFormatError(f"{root} is a file, not a knowledge base folder")
    return root


def built_with(root: str | Path) -> str | None:
    """The embedder name the KB at `root` records (e.g. "all-MiniLM-L6-v2@static"); None if no KB is there."""
    path = checked_root(root) / MANIFEST
    return _read_manifest(path).embedding_model if path.exists() else None


def _read_manifest(path: Path) -> Manifest:
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
        raise KnowledgeBaseFormatError(f"{path} is not a valid hybridctx manifest: {exc}") from exc
    if manifest.format_version not in READABLE_VERSIONS:
        raise KnowledgeBaseFormatError(
            f"{path} has format version {manifest.format_version}; this hybridctx reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    return manifest


def _write_manifest(path: Path, manifest: Manifest) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2))
    tmp.replace(path)
