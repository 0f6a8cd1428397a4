"""Killing the indexing process (SIGKILL, in a real subprocess) at any point of a commit leaves
a knowledge base that opens, agrees between chunk store, dense segments and lexical index, and
holds exactly the documents of its last completed commit; running the same `add` again
finishes the job without duplicates. Damaged files are named on open, never read silently."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hybridctx import Document, Pipeline
from hybridctx.errors import KnowledgeBaseFormatError

DOCS = 48
PER_COMMIT = 8

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import hybridctx.index.segments
    from hybridctx import Pipeline
    from hybridctx.index.dense import FaissIndex
    from hybridctx.index.lexical import LexicalIndex
    from hybridctx.index.store import ChunkStore
    sys.path.insert(0, sys.argv[4])
    from test_durability import documents

    hybridctx.index.segments.TIER_BASE = 8  # four commits of 8 chunks merge: kills land in merges too
    kb, point, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen = 0

    def patch(cls, name, die_before):
        real = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            global seen
            seen += 1
            if die_before and seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            result = real(self, *args, **kwargs)
            if not die_before and seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(cls, name, wrapper)

    if point != "none":
        cls, name, die_before = {
            "segment-file-written": (FaissIndex, "save", False),
            "lexical-committed": (LexicalIndex, "commit", False),
            "before-sqlite-commit": (ChunkStore, "commit", True),
            "after-sqlite-commit": (ChunkStore, "commit", False),
        }[point]
        patch(cls, name, die_before)
    with Pipeline.open(kb, commit_every_chunks=PER_COMMIT, show_progress=False) as pipe:
        pipe.add(documents())
    print("finished")
    """
).replace("PER_COMMIT", str(PER_COMMIT))


def documents() -> list[Document]:
    """One chunk each, each with a code only it contains (for lexical lookups)."""
    return [
        Document(id=f"doc-{i:03d}", text=f"Maintenance record RX{i:04d}: valve {i} of the cooling loop was replaced.")
        for i in range(DOCS)
    ]


def run_child(kb: Path, point: str, nth: int) -> subprocess.CompletedProcess:
    script = kb.parent / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(script), str(kb), point, str(nth), str(Path(__file__).parent)],
        capture_output=True, text=True, env=env, timeout=300,
    )


def assert_consistent(pipe: Pipeline) -> int:
    """The store, the dense index and the lexical index hold the same chunks; returns how many."""
    kb = pipe.kb
    documents_, chunks, _ = kb.store.totals()
    assert documents_ == chunks  # one chunk per document
    ids, _ = kb.index.vectors()
    stored = sorted(int(i) for i, _, _ in kb.store.chunk_texts())
    assert sorted(ids.tolist()) == stored
    live = {info.name for info in kb.index.infos}
    assert {p.name for p in kb.root.glob("dense-*.faiss")} >= live
    return chunks


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "nth", "commits_kept"),
    [
        ("segment-file-written", 2, 1),  # the second commit's segment is on disk, nothing else
        ("lexical-committed", 3, 1),  # (the first call builds the empty index) one generation ahead
        ("before-sqlite-commit", 4, 3),  # the fourth commit merges four segments
        ("after-sqlite-commit", 5, 5),  # committed, old segment files not yet removed
    ],
)
def test_a_killed_indexing_run_leaves_the_last_commit_and_resumes(tmp_path, embedder, point, nth, commits_kept):
    kb = tmp_path / "kb"
    child = run_child(kb, point, nth)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    with Pipeline.open(kb, embedder=embedder, commit_every_chunks=PER_COMMIT, show_progress=False) as pipe:
        committed = assert_consistent(pipe)
        assert committed == commits_kept * PER_COMMIT
        ids = {f"doc-{i:03d}" for i in range(committed)}
        assert {h.chunk.doc_id for h in pipe.retrieve("maintenance record valve", k=DOCS)} == ids
        report = pipe.add(documents())  # resumes
        assert report.documents_unchanged == committed and report.documents_added == DOCS - committed
        assert assert_consistent(pipe) == DOCS
        for i in (0, DOCS - 1):  # identifier lookups reach both old and resumed documents, once
            hits = pipe.retrieve(f"RX{i:04d}", k=3)
            assert hits[0].chunk.doc_id == f"doc-{i:03d}"
        assert len({h.chunk.doc_id for h in pipe.retrieve("cooling loop", k=100)}) == DOCS


@pytest.mark.slow
def test_a_kill_at_a_random_moment_leaves_a_consistent_kb(tmp_path, embedder):
    kb = tmp_path / "kb"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(kb), "none", "0", str(Path(__file__).parent)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until two commits landed, then kill mid-run
        try:
            with sqlite3.connect(f"file:{kb / 'chunks.sqlite'}?mode=ro", uri=True) as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
            if row and int(row[0]) >= 2:
                break
        except sqlite3.OperationalError:
            pass  # the child has not created the store (or its tables) yet
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    with Pipeline.open(kb, embedder=embedder, commit_every_chunks=PER_COMMIT, show_progress=False) as pipe:
        committed = assert_consistent(pipe)
        assert committed % PER_COMMIT == 0 and committed >= 2 * PER_COMMIT
        pipe.add(documents())
        assert assert_consistent(pipe) == DOCS


@pytest.mark.parametrize("mmap_index", [False, True], ids=["read", "mapped"])
def test_a_damaged_segment_file_is_named_on_open(tmp_path, embedder, mmap_index):
    kb = tmp_path / "kb"
    with Pipeline.open(kb, embedder=embedder, show_progress=False) as pipe:
        pipe.add(documents()[:8])
    [segment] = kb.glob("dense-*.faiss")
    written = segment.stat()
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte among the vectors: FAISS would read it silently
    segment.write_bytes(bytes(data))
    os.utime(segment, ns=(written.st_atime_ns, written.st_mtime_ns))  # its mtime put back does not hide it
    with pytest.raises(KnowledgeBaseFormatError, match=segment.name):
        Pipeline.open(kb, embedder=embedder, show_progress=False, mmap_index=mmap_index).retrieve("valve", k=3)
    segment.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    with pytest.raises(KnowledgeBaseFormatError, match=segment.name):
        Pipeline.open(kb, embedder=embedder, show_progress=False, mmap_index=mmap_index).retrieve("valve", k=3)


def test_mapped_segments_are_read_whole_only_when_changed_since_verified(tmp_path, embedder, monkeypatch):
    """Opening maps segments without reading them (an index larger than RAM opens at once), yet a
    file changed since its checksum was verified, by a write or a copy, is checked in full first."""
    import shutil

    import hybridctx.index.dense as dense

    kb = tmp_path / "kb"
    with Pipeline.open(kb, embedder=embedder, show_progress=False, commit_every_chunks=4, retrieval="dense") as pipe:
        pipe.add(documents()[:8])
        expected = [(h.chunk.id, h.score) for h in pipe.retrieve("valve 3 of the cooling loop", k=5)]
    read_whole: list[str] = []
    real = dense.file_checksum
    monkeypatch.setattr(dense, "file_checksum", lambda path: read_whole.append(path.name) or real(path))

    def search(root: Path) -> list[tuple[str, float]]:
        with Pipeline.open(root, embedder=embedder, show_progress=False, mmap_index=True, retrieval="dense") as pipe:
            return [(h.chunk.id, h.score) for h in pipe.retrieve("valve 3 of the cooling loop", k=5)]

    assert search(kb) == expected and read_whole == []  # as written: trusted by stamp
    copy = tmp_path / "copy"
    shutil.copytree(kb, copy)  # same bytes and mtimes, new files: verified in full
    assert search(copy) == expected and sorted(read_whole) == sorted(p.name for p in kb.glob("dense-*.faiss"))
    code, report = _repair(copy)  # verifies every segment and records the copies' stamps
    assert code == 0 and report["ok"]
    read_whole.clear()
    assert search(copy) == expected and read_whole == []


def test_a_damaged_chunk_store_is_named_on_open(tmp_path, embedder):
    kb = tmp_path / "kb"
    with Pipeline.open(kb, embedder=embedder, show_progress=False) as pipe:
        pipe.add(documents()[:8])
    store = kb / "chunks.sqlite"
    data = bytearray(store.read_bytes())
    data[:16] = b"not a database!!"
    store.write_bytes(bytes(data))
    with pytest.raises(KnowledgeBaseFormatError, match="chunks.sqlite"):
        Pipeline.open(kb, embedder=embedder, show_progress=False)


@pytest.mark.parametrize("flipped", [ord("W") ^ ord("X"), 0xFF], ids=["letter", "not-utf8"])
def test_a_flipped_byte_in_a_stored_chunk_text_is_refused_not_served(tmp_path, embedder, flipped):
    kb = tmp_path / "kb"
    with Pipeline.open(kb, embedder=embedder, show_progress=False) as pipe:
        pipe.add(["The Wolfram valve closes at 40 bar.", "Pumps are serviced every spring."])
    store = kb / "chunks.sqlite"
    data = bytearray(store.read_bytes())
    at = data.index(b"Wolfram valve")
    data[at] ^= flipped  # "Xolfram", or a byte that is no UTF-8
    store.write_bytes(bytes(data))
    with Pipeline.open(kb, embedder=embedder, show_progress=False) as pipe:
        with pytest.raises(KnowledgeBaseFormatError, match="is damaged") as raised:
            pipe.retrieve("valve closing pressure", k=2)
        assert "chunks.sqlite" in str(raised.value)
    with Pipeline.open(kb, embedder=embedder, show_progress=False, retrieval="lexical") as pipe:
        hits = pipe.retrieve("pumps serviced", k=2)  # sound chunks are still served
        assert [h.chunk.text for h in hits] == ["Pumps are serviced every spring."]


def _repair(kb: Path, *options: str):
    from typer.testing import CliRunner

    from hybridctx.cli import app

    result = CliRunner().invoke(app, ["repair", "--kb", str(kb), "--json", *options])
    return result.exit_code, json.loads(result.stdout)


def test_a_lost_lexical_meta_json_is_refused_and_repair_rebuilds_it_from_the_store(tmp_path, embedder):
    kb = tmp_path / "kb"
    with Pipeline.open(kb, embedder=embedder, show_progress=False, retrieval="lexical") as pipe:
        pipe.add(documents()[:8])
        before = [(h.chunk.id, h.score) for h in pipe.retrieve("valve", k=5)]
    (kb / "lexical" / "meta.json").unlink()  # tantivy would open an empty index: 0 hits, silently
    with pytest.raises(KnowledgeBaseFormatError, match="meta.json.*hybridctx repair"):
        Pipeline.open(kb, embedder=embedder, show_progress=False)
    code, report = _repair(kb)
    assert code == 0 and report["ok"] and report["lexical_chunks"] == 8
    with Pipeline.open(kb, embedder=embedder, show_progress=False, retrieval="lexical") as pipe:
        assert [(h.chunk.id, h.score) for h in pipe.retrieve("valve", k=5)] == before
        pipe.add(documents()[8:10])  # and it takes writes again
        assert pipe.stats()["chunks"] == 10


def test_repair_embeds_a_damaged_segment_again_and_names_the_documents_of_damaged_texts(tmp_path, embedder):
    kb = tmp_path / "kb"
    question = "valve 3 of the cooling loop"
    with Pipeline.open(kb, embedder=embedder, show_progress=False, commit_every_chunks=4, retrieval="dense") as pipe:
        pipe.add(documents()[:8])
        first = next(info for info, _ in pipe.kb.index.segments if info.min_id == 1)
        first_segment_docs = {c.doc_id for c in pipe.kb.store.chunks(range(1, first.max_id + 1)).values()}
        expected = [(h.chunk.id, h.score) for h in pipe.retrieve(question, k=8)]
    code, report = _repair(kb)
    assert code == 0 and report["ok"]  # a sound KB is found sound
    assert len(list(kb.glob("dense-*.faiss"))) == 2
    segment = kb / first.name
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    store = kb / "chunks.sqlite"
    data = bytearray(store.read_bytes())
    at = data.index(b"RX0007")
    data[at] ^= ord("a") ^ ord("b")
    store.write_bytes(bytes(data))

    code, report = _repair(kb, "--no-embed")  # names what it does not mend
    assert code == 1 and not report["ok"] and report["store_problems"] == []
    assert report["damaged_segments"] == [segment.name] and report["rebuilt_segments"] == []
    assert [c.split("#")[0] for c in report["damaged_chunks"]] == [documents()[7].id]
    assert report["documents_to_add_again"] == sorted({*first_segment_docs, documents()[7].id})
    assert report["lexical_chunks"] == 7  # the damaged text is left out of the rebuilt index

    code, report = _repair(kb)  # embeds the damaged segment's chunks again, from their stored texts
    assert code == 1 and report["rebuilt_segments"] == report["damaged_segments"] == [segment.name]
    assert report["documents_to_add_again"] == [documents()[7].id]  # only the damaged text is left
    assert not segment.exists()
    with Pipeline.open(kb, embedder=embedder, show_progress=False, retrieval="dense") as pipe:
        pipe.delete([documents()[7].id])  # as the report says: delete it and add it again
        pipe.add([documents()[7]])
        hits = pipe.retrieve(question, k=8)
    assert [h.chunk.id for h in hits] == [chunk_id for chunk_id, _ in expected]
    assert [h.score for h in hits] == pytest.approx([score for _, score in expected], abs=1e-5)
    code, report = _repair(kb)
    assert code == 0 and report["ok"] and report["damaged_segments"] == [] and report["lexical_chunks"] == 8
