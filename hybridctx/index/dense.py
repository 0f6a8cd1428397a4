"""Index stage, dense half: a FAISS index from int64 vector ids to unit vectors.

The index type of a segment (segments.py) follows its size and the knowledge base's (`index_spec`):

- while the whole KB holds under 200k vectors, and for segments under 16k vectors (the
  newest), exact inner product (`IDMap2,Flat`): exact, and fast enough; a large KB's
  merged segments are inverted files, so that exact scans over many segments do not add up;
- up to 2M, an inverted file over full vectors (`IVF<nlist>,Flat`): a few ms per query;
- up to 20M, an inverted file over 8-bit scalar-quantised vectors (`IVF<nlist>,SQ8`): 384
  bytes a vector at 384 dimensions, so 4M vectors (a billion tokens in 256-token chunks)
  take about 1.6 GB of RAM instead of 6 GB, at recall@100 close to exact search;
- beyond, product-quantised codes (`IVF<nlist>,PQ<d/4>`, 96 bytes a vector): recall@100
  drops to about 0.75 (bench/RESULTS.md), the price of fitting tens of millions of vectors.

Every type is addressed by the chunk store's vector ids (adds and deletes are incremental)
and filtered inside the search with an id selector. Inverted-file searches probe enough
lists for the requested k (`nprobe_for`), and probe more when a filter leaves fewer than k
results, so a filter never shrinks results below k when enough allowed vectors exist.
Unfiltered searches use a GPU copy of the index when the installed faiss has GPU support
(faiss-gpu in place of faiss-cpu) and a GPU exists; filtered ones run on the CPU, as FAISS's
GPU indexes take no id selector.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import faiss as _faiss
import numpy as np

from hybridctx.errors import KnowledgeBaseFormatError
from hybridctx.index.visibility import VisibleIds

# faiss-cpu's generated stubs lack keyword arguments and attributes its SWIG classes have
# (SearchParameters(sel=...), DirectMap, IndexIDMap.id_map): it is typed as untyped.
faiss: Any = _faiss

FLAT_BELOW = 200_000
FLAT_SEGMENT_BELOW = 16_384
MIN_TRAIN = 50_000
SQ_FROM = 2_000_000
PQ_FROM = 20_000_000
# Lists probed at least, and how many times k worth of vectors the probed lists should hold.
MIN_NPROBE = 16
PROBE_MARGIN = 8


def index_spec(vectors: int, dimension: int, kb_vectors: int | None = None) -> str:
    """The FAISS factory string suited to a segment of `vectors` vectors in a knowledge base
    of `kb_vectors` (default: the segment is the whole KB)."""
    if (kb_vectors if kb_vectors is not None else vectors) < FLAT_BELOW or vectors < FLAT_SEGMENT_BELOW:
        return "IDMap2,Flat"
    nlist = 2 ** round(math.log2(2 * math.sqrt(vectors)))  # about 2 sqrt(n) lists: trainable on 2 cores
    if vectors < SQ_FROM:
        return f"IVF{nlist},Flat"
    if vectors < PQ_FROM:
        return f"IVF{nlist},SQ8"
    return f"IVF{nlist},PQ{_pq_subquantizers(dimension)}"


def _pq_subquantizers(dimension: int) -> int:
    """4 dimensions per byte-sized code (96 at 384 dimensions)."""
    m = dimension // 4
    while dimension % m:
        m -= 1
    return m


def nprobe_for(k: int, vectors: int, nlist: int) -> int:
    """Lists to probe so that they hold PROBE_MARGIN times k vectors, and at least MIN_NPROBE."""
    per_list = max(1.0, vectors / nlist)
    return min(nlist, max(MIN_NPROBE, math.ceil(PROBE_MARGIN * k / per_list)))


class VectorIndex(Protocol):
    dimension: int

    @property
    def spec(self) -> str: ...

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(
        self,
        vector: np.ndarray,
        k: int,
        allowed: VisibleIds | None = None,
        excluded_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids of the `k` nearest vectors, best first, among `allowed` if given
        (`len(allowed)`: how many of them this index holds), skipping `excluded_ids` if given."""
        ...

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All ids and their vectors (approximate for quantised indexes): for a merge."""
        ...

    def copy(self) -> VectorIndex: ...

    def save(self, path: Path) -> str: ...


class FaissIndex:
    """Any FAISS index type with ids: flat, IVF-Flat, IVF-SQ8 or IVF-PQ (see `index_spec`)."""

    def __init__(self, dimension: int, index: faiss.Index | None = None) -> None:
        self.dimension = dimension
        self._index = index if index is not None else faiss.index_factory(
            dimension, index_spec(0, dimension), faiss.METRIC_INNER_PRODUCT
        )
        self._ivf = _ivf_of(self._index)
        self._searcher: faiss.Index | None = None  # a GPU copy, made on first search
        self._scope_lists: dict[str, np.ndarray] = {}  # a scope's key -> its vectors in each IVF list
        self.mapped_from: Path | None = None  # the file this index is memory-mapped from

    @classmethod
    def build(cls, spec: str, ids: np.ndarray, vectors: np.ndarray, train_size: int = 64) -> FaissIndex:
        """A new index of type `spec` holding `vectors` (see `build_streamed`)."""
        return cls.build_streamed(spec, vectors.shape[1], len(ids), lambda: iter([(ids, vectors)]), train_size)

    @classmethod
    def build_streamed(
        cls, spec: str, dimension: int, count: int, batches: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
        train_size: int = 64,
    ) -> FaissIndex:
        """A new index of type `spec` holding the `count` vectors that `batches()` yields as
        (ids, vectors), trained on a sample of them (`train_size` per list, and at least
        MIN_TRAIN, which the quantisers' value ranges need). 64 vectors a list already give
        recall@100 of 0.97-1.0 at 1M-4M vectors (bench/RESULTS.md) and train four times faster
        than FAISS's 256. The batches are read twice (sample, then add), never held together:
        merging 10M vectors into one segment held them all decoded, 15 GB."""
        index = faiss.index_factory(dimension, spec, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            size = min(count, max(MIN_TRAIN, train_size * _ivf_of(index).nlist))
            rng = np.random.default_rng(0)
            sample, seen = [], 0
            for _, vectors in batches():  # each batch gives its share of the sample
                take = round(size * (seen + len(vectors)) / count) - round(size * seen / count)
                sample.append(vectors[np.sort(rng.choice(len(vectors), min(take, len(vectors)), replace=False))])
                seen += len(vectors)
            index.train(np.ascontiguousarray(np.concatenate(sample), dtype=np.float32))
        built = cls(dimension, index)
        for ids, vectors in batches():
            built.add(ids, vectors)
        return built

    @classmethod
    def load(
        cls, path: Path, dimension: int, mmap: bool = False, checksum: str | None = None, stamp: str | None = None
    ) -> FaissIndex:
        """`mmap`: map the file instead of reading it, so that a reader pages in only the
        lists its queries probe (an index larger than RAM); such an index is searched, not changed.
        `checksum`: what `save` returned; a file that does not match is refused (FAISS reads a
        damaged vector silently). A mapped file is read whole for that only when its `file_stamp`
        differs from `stamp`, taken when its checksum was last verified: any change made to the
        file since (a write, a copy, a restore) moves its ctime, which no program can set back,
        so an unchanged stamp proves the checked bytes, and opening stays O(1) in the file's size
        (a 1.5 GB IVF segment: under 2 ms, against 0.3-0.9 s to check it; bench/RESULTS.md)."""
        if checksum is not None and not (mmap and stamp is not None and file_stamp(path) == stamp):
            if file_checksum(path) != checksum:
                raise KnowledgeBaseFormatError(
                    f"FAISS index {path} is damaged: its checksum does not match the store's"
                )
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
        except RuntimeError as exc:
            raise KnowledgeBaseFormatError(f"cannot read FAISS index {path}: {exc}") from exc
        if index.d != dimension:
            raise KnowledgeBaseFormatError(
                f"FAISS index {path} has dimension {index.d}, the manifest says {dimension}"
            )
        loaded = cls(dimension, index)
        loaded.mapped_from = path if mmap else None
        return loaded

    @property
    def spec(self) -> str:
        if self._ivf is None:
            return "IDMap2,Flat"
        codes = faiss.downcast_index(self._ivf)
        if isinstance(codes, faiss.IndexIVFPQ):
            return f"IVF{self._ivf.nlist},PQ{codes.pq.M}"
        if isinstance(codes, faiss.IndexIVFScalarQuantizer):
            return f"IVF{self._ivf.nlist},SQ8"
        return f"IVF{self._ivf.nlist},Flat"

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            for start in range(0, len(ids), 100_000):  # bounded temporary memory in FAISS
                self._index.add_with_ids(
                    np.ascontiguousarray(vectors[start : start + 100_000], dtype=np.float32),
                    np.asarray(ids[start : start + 100_000], dtype=np.int64),
                )
            self._searcher = None
            self._scope_lists.clear()

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))
            self._searcher = None
            self._scope_lists.clear()

    def search(
        self,
        vector: np.ndarray,
        k: int,
        allowed: VisibleIds | None = None,
        excluded_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        empty = np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        selector = None
        reachable = len(self)
        if allowed is not None:
            if len(allowed) == 0:
                return empty
            selector = faiss.IDSelectorBitmap(len(allowed.bits), faiss.swig_ptr(allowed.bits))
            selector.referenced = allowed.bits  # FAISS reads the array in place: keep it alive
            reachable = min(reachable, len(allowed))
        elif excluded_ids is not None:
            excluded = faiss.IDSelectorBatch(np.asarray(excluded_ids, dtype=np.int64))
            selector = faiss.IDSelectorNot(excluded)
            selector.referenced = excluded  # SWIG does not keep the wrapped selector alive
            reachable = max(0, reachable - len(excluded_ids))
        k = min(k, len(self))
        if k == 0:
            return empty
        # FAISS's GPU indexes take no id selector: filtered searches run on the CPU copy.
        index = self._index if selector is not None else self._searcher_index()
        if self._ivf is None:
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
            return _best(*index.search(query, k, params=params))
        nprobe = (nprobe_for(k, len(self), self._ivf.nlist) if allowed is None
                  else self._nprobe_within(query, min(k, reachable), allowed))
        while True:  # probe more lists until k allowed vectors are found, or all lists are probed
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
            scores, ids = _best(*index.search(query, k, params=params))
            if len(ids) >= min(k, reachable) or nprobe >= self._ivf.nlist:
                return scores, ids
            nprobe = min(self._ivf.nlist, nprobe * 4)

    def _nprobe_within(self, query: np.ndarray, k: int, allowed: VisibleIds) -> int:
        """Lists to probe so that they hold PROBE_MARGIN times k of the scope's vectors, nearest
        lists first. A scope's vectors are seldom spread evenly: the essays, asked about vault
        codes at a billion tokens, were 14-30 of the nearest 264 lists' vectors and 1,000 of the
        nearest 1,056, so probing four times more each time searched 4 to 5 times a query. One
        search here, 12% faster a hybrid query; recall@1000 against probing every list 0.83
        (0.86 for the escalation's 2,176 lists) for the essays, 0.84 (0.82) for one team in 8."""
        nlist = self._ivf.nlist
        counts = self._scope_lists.get(allowed.key)
        if counts is None:  # once per scope and segment (segment files never change): 0.1 s at 9.8M
            invlists = self._ivf.invlists
            counts = np.zeros(nlist, dtype=np.int64)
            for i in range(nlist):
                if n := invlists.list_size(i):
                    counts[i] = allowed.mask(faiss.rev_swig_ptr(invlists.get_ids(i), n)).sum()
            if allowed.key:  # (a set made without a scope's key is not kept)
                if len(self._scope_lists) >= 64:
                    self._scope_lists.clear()
                self._scope_lists[allowed.key] = counts
        _, nearest = self._ivf.quantizer.search(query, nlist)
        held = np.cumsum(counts[nearest[0]])
        wanted = min(PROBE_MARGIN * k, int(held[-1]))
        return int(min(nlist, max(MIN_NPROBE, np.searchsorted(held, wanted) + 1)))

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.batches())
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dimension), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def batches(self, size: int = 100_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The index's ids and their vectors (as decoded, for quantised indexes), about `size`
        at a time: what a merge reads, 150 MB at a time at 384 dimensions."""
        if self._ivf is None:
            with_ids = faiss.downcast_index(self._index)
            storage = faiss.downcast_index(with_ids.index)
            ids = faiss.vector_to_array(with_ids.id_map)
            for start in range(0, len(ids), size):
                yield ids[start : start + size], storage.reconstruct_n(start, min(size, len(ids) - start))
            return
        invlists = self._ivf.invlists
        self._ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # ids are the store's, not 0..n-1
        try:
            pending: list[np.ndarray] = []
            held = 0
            for i in range(self._ivf.nlist):
                if n := invlists.list_size(i):
                    pending.append(faiss.rev_swig_ptr(invlists.get_ids(i), n).copy())
                    held += n
                if pending and (held >= size or i == self._ivf.nlist - 1):
                    ids = np.concatenate(pending)
                    yield ids, self._ivf.reconstruct_batch(ids)
                    pending, held = [], 0
        finally:
            self._ivf.set_direct_map_type(faiss.DirectMap.NoMap)

    def copy(self) -> FaissIndex:
        """A changeable copy in memory (FAISS cannot clone memory-mapped lists: read the file again)."""
        if self.mapped_from is not None:
            return FaissIndex.load(self.mapped_from, self.dimension)
        return FaissIndex(self.dimension, faiss.clone_index(self._index))

    def save(self, path: Path) -> str:
        """Write atomically (a reader never sees a half-written index file); returns the file's
        checksum, for `load`."""
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        checksum = file_checksum(tmp)
        os.replace(tmp, path)
        return checksum

    def _searcher_index(self) -> faiss.Index:
        """The index itself, or a copy on the GPU when faiss was built with GPU support."""
        if self._searcher is None:
            self._searcher = self._index
            if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
                self._searcher = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, self._index)
        return self._searcher


def file_stamp(path: Path) -> str:
    """'<device>:<inode>:<size>:<mtime>:<ctime>' of a file: what changes whenever its bytes do."""
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def file_checksum(path: Path) -> str:
    """'<size>:<crc32>' of a file, read in 16 MB blocks."""
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return f"{path.stat().st_size}:{crc:08x}"


def _ivf_of(index: Any) -> Any:
    """The IVF index inside `index`, or None if it has none."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _best(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ids[0] >= 0
    return scores[0][keep], ids[0][keep]
