"""The dense index as segments: a commit writes only its own vectors, deletions are skipped
inside the search, similar-sized neighbours merge, and the knowledge base stays consistent."""

from __future__ import annotations

import itertools
import json
import sqlite3

import numpy as np
import pytest
from pyroaring import BitMap64

import hybridctx.index.segments as segments_module
from hybridctx.index.dense import FaissIndex
from hybridctx.index.kb import KnowledgeBase
from hybridctx.index.segments import SegmentedIndex, merge_plan, tier
from hybridctx.index.visibility import VisibleIds
from hybridctx.schema import Chunk, Document

DIM = 16


def unit(n: int, seed: int) -> np.ndarray:
    data = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


class Names:
    """Fresh segment names, unique across the tests as generation-numbered names are in a KB."""

    used = itertools.count()

    def __call__(self) -> str:
        return f"seg-{next(self.used)}"


def grown(batches: list[tuple[np.ndarray, np.ndarray]]) -> SegmentedIndex:
    index, names = SegmentedIndex(DIM), Names()
    for ids, vectors in batches:
        index = index.with_changes(np.zeros(0, np.int64), ids, vectors, names).index
    return index


def test_tiers_and_merge_plans():
    assert tier(1) == tier(4096 * 4 - 1) == 0 and tier(4096 * 4) == 1 and tier(4096 * 64) == 3
    assert merge_plan([100, 100, 100]) is None
    assert merge_plan([10**6, 100, 200, 300, 400]) == range(1, 5)
    assert merge_plan([10**6, 100, 200, 10**6, 400]) is None  # only neighbours of one tier merge


def test_search_over_segments_equals_exact_search_over_all_vectors():
    vectors = unit(300, 0)
    ids = np.arange(300, dtype=np.int64) + 1
    index = grown([(ids[:100], vectors[:100]), (ids[100:200], vectors[100:200]), (ids[200:], vectors[200:])])
    assert len(index.segments) == 3 and len(index) == 300
    exact = FaissIndex.build("IDMap2,Flat", ids, vectors)
    for query in unit(5, 1):
        scores, found = index.search(query, 20)
        assert found.tolist() == exact.search(query, 20)[1].tolist()
        assert np.all(np.diff(scores) <= 1e-6)
    allowed = ids[::7]
    found = index.search(vectors[0], 500, allowed=VisibleIds(BitMap64(allowed.tolist())))[1]
    assert sorted(found.tolist()) == sorted(allowed.tolist())  # every allowed id, from every segment


def test_deleted_vectors_are_skipped_and_k_is_still_filled():
    vectors = unit(200, 2)
    ids = np.arange(200, dtype=np.int64) + 1
    index = grown([(ids[:100], vectors[:100]), (ids[100:], vectors[100:])])
    nearest = index.search(vectors[5], 10)[1]
    removed = nearest[:3]  # fewer than an eighth of a segment: marked dead, not rewritten
    changes = index.with_changes(removed, np.zeros(0, np.int64), np.zeros((0, DIM), np.float32), Names())
    after = changes.index
    assert changes.written == [] and sorted(changes.dead_added.tolist()) == sorted(removed.tolist())
    assert len(after) == 197
    found = after.search(vectors[5], 10)[1]
    assert len(found) == 10 and not set(found.tolist()) & set(removed.tolist())
    assert found.tolist()[:7] == nearest.tolist()[3:]


def test_a_segment_an_eighth_dead_is_rewritten_without_its_dead_vectors():
    vectors = unit(200, 3)
    ids = np.arange(200, dtype=np.int64) + 1
    index = grown([(ids[:100], vectors[:100]), (ids[100:], vectors[100:])])
    changes = index.with_changes(ids[:13], np.zeros(0, np.int64), np.zeros((0, DIM), np.float32), Names())
    [(info, rewritten)] = changes.written
    assert info.count == 87 and info.dead == 0 and len(rewritten) == 87
    assert changes.dead_cleared == [(1, 100)] and len(changes.index.dead_ids) == 0
    assert changes.index.infos[1] == index.infos[1]  # the untouched segment is not rewritten


def test_fanout_neighbours_merge_and_compaction_leaves_one_segment(monkeypatch):
    monkeypatch.setattr(segments_module, "TIER_BASE", 8)
    vectors = unit(400, 4)
    ids = np.arange(400, dtype=np.int64) + 1
    batches = [(ids[i : i + 10], vectors[i : i + 10]) for i in range(0, 30, 10)]
    index = grown(batches)
    assert [info.live for info in index.infos] == [10, 10, 10]
    changes = index.with_changes(np.zeros(0, np.int64), ids[30:40], vectors[30:40], Names())
    assert [info.live for info in changes.index.infos] == [40]  # four of tier 0 became one
    assert [info.count for info, _ in changes.written] == [40]  # the new batch went into the merge
    bigger = changes.index.with_changes(ids[[0, 1]], ids[40:400], vectors[40:400], Names()).index
    assert [info.live for info in bigger.infos] == [38, 360]
    compacted = bigger.with_changes(np.zeros(0, np.int64), np.zeros(0, np.int64), vectors[:0], Names(), compact=True)
    [(info, merged)] = compacted.written
    assert info.live == 398 and info.min_id == 3 and info.max_id == 400 and len(compacted.index.dead_ids) == 0
    back_ids, back = merged.vectors()
    order = np.argsort(back_ids)
    assert np.allclose(back[order], vectors[2:], atol=1e-6)


def test_vectors_added_and_deleted_in_one_commit_never_reach_a_segment():
    vectors = unit(20, 5)
    ids = np.arange(20, dtype=np.int64) + 1
    index = grown([(ids[:10], vectors[:10])])
    changes = index.with_changes(ids[[12, 13]], ids[10:], vectors[10:], Names())
    assert changes.index.infos[1].count == 8 and len(changes.index.dead_ids) == 0


# The knowledge base: files, snapshots, crashes and the older format.


def kb_at(path) -> KnowledgeBase:
    return KnowledgeBase.open(path, "test-model", lambda: DIM)


def add_docs(kb: KnowledgeBase, first: int, n: int, seed: int) -> None:
    with kb.writer() as writer:
        for i, vector in zip(range(first, first + n), unit(n, seed)):
            doc = Document(id=f"doc-{i}", text=f"text {i}")
            chunk = Chunk(id=f"doc-{i}#0", doc_id=doc.id, text=doc.text, start=0, end=len(doc.text),
                          start_line=1, end_line=1, token_count=2)
            writer.replace_document(doc, f"hash-{i}", [chunk], vector[None, :])
        writer.commit()


def segment_files(path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in path.glob("dense-*.faiss")}


def test_a_commit_writes_only_its_new_segment_and_readers_reload_only_that(tmp_path):
    kb = kb_at(tmp_path / "kb")
    add_docs(kb, 0, 50, seed=0)
    reader = kb_at(tmp_path / "kb")
    first_files = segment_files(tmp_path / "kb")
    [(_, first_segment)] = reader.index.segments
    add_docs(kb, 50, 30, seed=1)
    files = segment_files(tmp_path / "kb")
    assert len(files) == 2 and all(files[name] == ino for name, ino in first_files.items())  # untouched
    reader.refresh()
    assert len(reader.index) == 80 and reader.index.segments[0][1] is first_segment
    with kb.writer() as writer:
        writer.delete_documents(["doc-3"])
        writer.commit()
    assert segment_files(tmp_path / "kb") == files  # a deletion alone writes no index file
    reader.refresh()
    assert len(reader.index) == 79 and len(reader.index.search(unit(1, 9)[0], 80)[1]) == 79
    kb.close()
    reader.close()


def test_a_commit_that_fails_in_sqlite_leaves_the_last_one_and_no_files(tmp_path, monkeypatch):
    kb = kb_at(tmp_path / "kb")
    add_docs(kb, 0, 20, seed=0)
    files = segment_files(tmp_path / "kb")
    from hybridctx.index.store import ChunkStore

    def fail(self):
        raise OSError("disk full")

    monkeypatch.setattr(ChunkStore, "commit", fail)
    with pytest.raises(OSError, match="disk full"):
        add_docs(kb, 20, 20, seed=1)
    monkeypatch.undo()
    assert segment_files(tmp_path / "kb") == files
    kb.close()
    again = kb_at(tmp_path / "kb")
    assert len(again.index) == 20 and again.store.totals()[:2] == (20, 20)
    add_docs(again, 20, 20, seed=1)
    assert len(again.index) == 40
    again.close()


def test_a_format_1_knowledge_base_is_read_and_upgraded_at_its_next_commit(tmp_path):
    root = tmp_path / "kb"
    kb = kb_at(root)
    add_docs(kb, 0, 30, seed=0)
    query = unit(1, 7)[0]
    expected = kb.index.search(query, 5)[1].tolist()
    kb.close()
    # Turn it into the version 1 layout: one dense-<generation>.faiss, no segment list.
    [segment] = root.glob("dense-*.faiss")
    segment.rename(root / "dense-1.faiss")
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with sqlite3.connect(root / "chunks.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key = 'segments'")
    old = kb_at(root)
    assert old.index.search(query, 5)[1].tolist() == expected
    add_docs(old, 30, 10, seed=1)
    assert json.loads((root / "manifest.json").read_text())["format_version"] == 2
    assert "dense-1.faiss" in segment_files(root) and len(old.index) == 40
    with old.writer() as writer:
        writer.delete_documents(["doc-0"])
        writer.commit()
    assert 1 not in old.index.search(unit(1, 0)[0], 40)[1].tolist()  # doc-0's vector is skipped
    old.close()


def test_a_merge_streams_its_segments_and_never_reads_one_whole(monkeypatch):
    """Merging 10M vectors read them all decoded at once (15 GB): a merge reads each segment
    in bounded batches (twice where the new segment is trained: the sample, then the adds)."""
    monkeypatch.setattr(segments_module, "TIER_BASE", 8)
    vectors = unit(40, 11)
    ids = np.arange(40, dtype=np.int64) + 1
    index = grown([(ids[i : i + 10], vectors[i : i + 10]) for i in range(0, 30, 10)])
    read: list[int] = []
    batches = FaissIndex.batches

    def small_batches(self: FaissIndex, size: int = 100_000):
        for part in batches(self, size=4):
            read.append(len(part[0]))
            yield part

    monkeypatch.setattr(FaissIndex, "batches", small_batches)
    monkeypatch.setattr(FaissIndex, "vectors", lambda self: pytest.fail("a merge read a whole segment"))
    changes = index.with_changes(ids[[3]], ids[30:40], vectors[30:40], Names())
    [(info, merged)] = changes.written
    assert info.live == 39 and (info.min_id, info.max_id) == (1, 40)
    assert max(read) <= 4 and sum(read) == 40  # four at a time; a flat segment needs no training pass
    monkeypatch.undo()
    back_ids, back = merged.vectors()
    order = np.argsort(back_ids)
    live = np.delete(np.arange(40), 3)
    assert np.array_equal(back_ids[order], ids[live]) and np.allclose(back[order], vectors[live], atol=1e-6)


def test_an_inverted_file_gives_back_every_vector_in_bounded_batches():
    vectors = unit(300, 12)
    ids = np.arange(300, dtype=np.int64) * 3 + 5
    index = FaissIndex.build("IVF8,Flat", ids, vectors)
    parts = list(index.batches(size=50))
    largest_list = max(index._ivf.invlists.list_size(i) for i in range(8))
    assert all(len(i) <= 50 + largest_list for i, _ in parts) and len(parts) > 1
    back_ids = np.concatenate([i for i, _ in parts])
    back = np.concatenate([v for _, v in parts])
    order = np.argsort(back_ids)
    assert np.array_equal(back_ids[order], ids) and np.allclose(back[order], vectors, atol=1e-6)


def test_a_streamed_inverted_file_is_trained_on_a_sample_of_every_batch_then_filled():
    vectors = unit(300, 13)
    ids = np.arange(300, dtype=np.int64) + 1
    passes: list[int] = []

    def batches():
        passes.append(0)
        for start in range(0, 300, 50):
            passes[-1] += 1
            yield ids[start : start + 50], vectors[start : start + 50]

    index = FaissIndex.build_streamed("IVF8,Flat", DIM, 300, batches)
    assert passes == [6, 6] and index.spec == "IVF8,Flat" and len(index) == 300
    scores, found = index.search(vectors[7], 1)
    assert found.tolist() == [8] and scores[0] == pytest.approx(1.0, abs=1e-5)


def test_a_mapped_writer_keeps_no_segment_it_wrote_in_memory(tmp_path, monkeypatch):
    """With `mmap_index`, each segment a commit writes (merges too) is mapped from its file
    at once: a billion-token build that kept them was killed for memory at 5M vectors."""
    monkeypatch.setattr(segments_module, "TIER_BASE", 8)
    kb = KnowledgeBase.open(tmp_path / "kb", "test-model", lambda: DIM, mmap_index=True)
    for batch in range(6):
        add_docs(kb, 10 * batch, 10, seed=batch)
    assert len(kb.index) == 60 and len(kb.index.segments) < 6  # merged on the way
    assert all(index.mapped_from == tmp_path / "kb" / info.name for info, index in kb.index.segments)
    scores, ids = kb.index.search(unit(6, 5)[3], 1)
    assert ids.tolist() == [54]  # doc-53's vector: ids start at 1
    kb.close()
