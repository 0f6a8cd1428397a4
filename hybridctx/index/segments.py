"""Index stage, dense half at knowledge-base scale: the dense index as immutable segments.

Rewriting one index file per commit costs O(N): 1.5 GB to add 4,096 chunks to a 4M-vector
knowledge base. So, as in LSM trees and Lucene, the dense index is a list of segments:

- a commit writes one new segment holding only the vectors it added;
- a deletion marks its vectors dead (ids kept in the chunk store, committed with the
  deletion), and searches skip dead vectors inside FAISS; a segment is rewritten without
  them once an eighth of it is dead;
- FANOUT consecutive segments of one size tier are merged into one segment of the type
  its size and the KB's call for (`index.index_spec`), so a vector is rewritten about
  log4(N / 4,096) times in its life, and a KB holds a few segments per tier;
- a search runs on every segment and merges the best k by score (the query-side merge of a
  sharded index); `compact` merges everything into one freshly trained segment.

Segment files never change once written, so a reader reloads only the new ones after a commit.
Quantised (SQ8/PQ) segments merge from the vectors their codes decode to.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel

from hybridctx.index.dense import FaissIndex, index_spec
from hybridctx.index.visibility import VisibleIds

FANOUT = 4
TIER_BASE = 4096
REWRITE_DEAD_FRACTION = 1 / 8

_NO_IDS = np.zeros(0, dtype=np.int64)


class SegmentInfo(BaseModel):
    """What the chunk store records of one segment file; its ids lie in [min_id, max_id]."""

    name: str
    count: int
    dead: int = 0
    min_id: int
    max_id: int
    checksum: str | None = None  # of the file, set when it is written (none for format 1 files)
    stamp: str | None = None  # the file's `file_stamp` when its checksum was last verified

    @property
    def live(self) -> int:
        return self.count - self.dead


def tier(live: int) -> int:
    """Size class: 0 below FANOUT x TIER_BASE vectors, then one more per FANOUT-fold growth."""
    return max(0, math.floor(math.log(max(live, 1) / TIER_BASE, FANOUT)))


def merge_plan(lives: Sequence[int]) -> range | None:
    """The first run of FANOUT consecutive segments in one tier, or None. Only neighbours
    merge, so id ranges of segments never overlap."""
    for start in range(len(lives) - FANOUT + 1):
        if len({tier(n) for n in lives[start : start + FANOUT]}) == 1:
            return range(start, start + FANOUT)
    return None


@dataclass
class SegmentChanges:
    """The outcome of one commit: the new index and what must be made durable with it."""

    index: SegmentedIndex
    written: list[tuple[SegmentInfo, FaissIndex]]  # new segment files to write
    dead_added: np.ndarray  # ids to record as dead
    dead_cleared: list[tuple[int, int]] = field(default_factory=list)  # id ranges whose dead ids are gone


class SegmentedIndex:
    """The knowledge base's dense index: segments searched together, dead vectors skipped."""

    def __init__(
        self,
        dimension: int,
        segments: Sequence[tuple[SegmentInfo, FaissIndex]] = (),
        dead_ids: np.ndarray = _NO_IDS,
    ) -> None:
        self.dimension = dimension
        self.segments = list(segments)
        self.dead_ids = np.sort(np.asarray(dead_ids, dtype=np.int64))

    @property
    def infos(self) -> list[SegmentInfo]:
        return [info for info, _ in self.segments]

    @property
    def spec(self) -> str:
        """The segments' index types, e.g. 'IVF1024,Flat + 3 x IDMap2,Flat'."""
        if not self.segments:
            return index_spec(0, self.dimension)
        counts = Counter(index.spec for _, index in self.segments)
        return " + ".join(spec if n == 1 else f"{n} x {spec}" for spec, n in counts.items())

    def __len__(self) -> int:
        return sum(info.live for info in self.infos)

    def search(self, vector: np.ndarray, k: int, allowed: VisibleIds | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids of the `k` nearest live vectors over all segments, best first."""
        scores: list[np.ndarray] = []
        ids: list[np.ndarray] = []
        for info, index in self.segments:
            if allowed is not None:  # the store's visible ids are live ones
                within = allowed.within(info.min_id, info.max_id)
                if len(within) == 0:
                    continue
                found = index.search(vector, k, allowed=within)
            else:
                dead = _within(self.dead_ids, info)
                found = index.search(vector, k, excluded_ids=dead if len(dead) else None)
            scores.append(found[0])
            ids.append(found[1])
        if not scores:
            return np.zeros(0, dtype=np.float32), _NO_IDS
        all_scores, all_ids = np.concatenate(scores), np.concatenate(ids)
        best = np.argsort(-all_scores, kind="stable")[:k]
        return all_scores[best], all_ids[best]

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All live ids and their vectors (as decoded, for quantised segments)."""
        parts = [self._live_vectors(info, index) for info, index in self.segments]
        if not parts:
            return _NO_IDS, np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def with_changes(
        self,
        removed_ids: np.ndarray,
        added_ids: np.ndarray,
        added_vectors: np.ndarray,
        name: Callable[[], str],
        compact: bool = False,
    ) -> SegmentChanges:
        """This index after a commit: dead vectors marked, a segment for the added ones, too-dead
        segments rewritten, neighbours of one tier merged (all of them when `compact`).
        `name()` gives a fresh file name for each new segment."""
        removed = np.unique(np.asarray(removed_ids, dtype=np.int64))
        added_ids = np.asarray(added_ids, dtype=np.int64)
        added_here = np.isin(added_ids, removed)  # added and deleted again before this commit
        added_ids, added_vectors = added_ids[~added_here], added_vectors[~added_here]
        # New ids are above every segment's range: only earlier vectors become dead.

        dead = np.union1d(self.dead_ids, removed[self._in_some_segment(removed)])
        segments = [
            (info.model_copy(update={"dead": len(_within(dead, info))}), index) for info, index in self.segments
        ]
        kb_vectors = sum(info.live for info, _ in segments) + len(added_ids)

        def built(ids: np.ndarray, vectors: np.ndarray) -> tuple[SegmentInfo, FaissIndex]:
            info = SegmentInfo(name=name(), count=len(ids), min_id=int(ids.min()), max_id=int(ids.max()))
            return info, FaissIndex.build(index_spec(len(ids), self.dimension, kb_vectors), ids, vectors)

        if len(added_ids):
            segments.append(built(added_ids, added_vectors))
        rebuilt: list[SegmentInfo] = []  # segments whose dead vectors are dropped now

        def merged(run: Sequence[tuple[SegmentInfo, FaissIndex]]) -> list[tuple[SegmentInfo, FaissIndex]]:
            """One segment of the run's live vectors, streamed: memory holds the new index and a
            batch, not the run's vectors decoded (15 GB at 10M vectors)."""
            rebuilt.extend(info for info, _ in run)
            live = sum(info.live for info, _ in run)
            if not live:
                return []

            bounds = [np.iinfo(np.int64).max, np.iinfo(np.int64).min]  # of the live ids, as they pass

            def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                for info, index in run:
                    dead_here = _within(dead, info)
                    for ids, vectors in index.batches():
                        alive = ~np.isin(ids, dead_here)
                        if alive.any():
                            bounds[:] = min(bounds[0], int(ids[alive].min())), max(bounds[1], int(ids[alive].max()))
                        yield ids[alive], vectors[alive]

            index = FaissIndex.build_streamed(
                index_spec(live, self.dimension, kb_vectors), self.dimension, live, batches
            )
            return [(SegmentInfo(name=name(), count=live, min_id=bounds[0], max_id=bounds[1]), index)]

        def rewritten(info: SegmentInfo, index: FaissIndex) -> list[tuple[SegmentInfo, FaissIndex]]:
            """A segment with many dead vectors, rewritten without them; others as they are."""
            if info.dead >= max(1, info.count * REWRITE_DEAD_FRACTION):
                return merged([(info, index)])
            return [(info, index)]

        segments = [piece for info, index in segments for piece in rewritten(info, index)]
        if compact and segments:
            segments = merged(segments)
        while (run := merge_plan([info.live for info, _ in segments])) is not None:
            segments[run.start : run.stop] = merged(segments[run.start : run.stop])

        old_names = {info.name for info in self.infos}
        cleared = [(info.min_id, info.max_id) for info in rebuilt]
        kept_dead = dead[~_in_ranges(dead, cleared)]
        return SegmentChanges(
            index=SegmentedIndex(self.dimension, segments, kept_dead),
            written=[(info, index) for info, index in segments if info.name not in old_names],
            dead_added=np.setdiff1d(kept_dead, self.dead_ids),
            dead_cleared=cleared,
        )

    def _in_some_segment(self, ids: np.ndarray) -> np.ndarray:
        return _in_ranges(ids, [(info.min_id, info.max_id) for info in self.infos])

    def _live_vectors(
        self, info: SegmentInfo, index: FaissIndex, dead: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ids, vectors = index.vectors()
        alive = ~np.isin(ids, _within(self.dead_ids if dead is None else dead, info))
        return ids[alive], vectors[alive]


def _within(sorted_ids: np.ndarray, info: SegmentInfo) -> np.ndarray:
    """The ids of a sorted array that fall in the segment's id range."""
    lo, hi = np.searchsorted(sorted_ids, [info.min_id, info.max_id + 1])
    return sorted_ids[lo:hi]


def _in_ranges(ids: np.ndarray, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
    inside = np.zeros(len(ids), dtype=bool)
    for low, high in ranges:
        inside |= (ids >= low) & (ids <= high)
    return inside
