"""Readers (threads and a process) query while one writer process commits: every answer shows
one committed state, never half a commit; a second writer is refused with a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hybridctx import Document, Pipeline
from hybridctx.errors import KnowledgeBaseLockedError

BATCHES = 10
PER_BATCH = 6

WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from hybridctx import Pipeline
    from test_concurrency import PER_BATCH, batch
    with Pipeline.open(sys.argv[1], retrieval="dense", show_progress=False, commit_every_chunks=PER_BATCH + 1) as pipe:
        # One add, holding the write lock throughout, committing after each batch and its status.
        pipe.add([document for b in range(1, int(sys.argv[3])) for document in batch(b)])
    """
)

READER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from hybridctx import Pipeline
    from test_concurrency import check
    queries = 0
    with Pipeline.open(sys.argv[1], retrieval="dense", show_progress=False) as pipe:
        deadline = time.monotonic() + float(sys.argv[3])
        while time.monotonic() < deadline or queries < 3:
            check(pipe)
            queries += 1
    print("queries", queries)
    """
)


def batch(b: int) -> list[Document]:
    """A commit's documents: new records, and a status document replaced by every commit."""
    records = [Document(id=f"b{b:02d}-{i}", text=f"Inventory record {i} of shipment batch {b}: {i + b} crates.")
               for i in range(PER_BATCH)]
    return [*records, Document(id="status", text=f"Inventory status: the last shipment batch is {b}.")]


def check(pipe: Pipeline) -> int:
    """One query; its hits must be whole batches 0..n-1 and the status of batch n-1 (one
    committed state: a query mixing two would lose the replaced status). Returns n."""
    hits = pipe.retrieve("inventory record of a shipment", k=1000)
    docs = {h.chunk.doc_id for h in hits}
    batches = (len(docs) - 1) // PER_BATCH
    expected = {d.id for b in range(batches) for d in batch(b)}
    assert docs == expected, f"a reader saw a state no commit made: {sorted(docs ^ expected)[:5]}"
    status = next(h.chunk.text for h in hits if h.chunk.doc_id == "status")
    assert status.endswith(f"batch is {batches - 1}."), status
    return batches


@pytest.mark.slow
def test_readers_see_whole_commits_while_a_writer_adds(tmp_path, embedder):
    kb = tmp_path / "kb"
    here = str(Path(__file__).parent)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with Pipeline.open(kb, embedder=embedder, retrieval="dense", show_progress=False) as pipe:
        pipe.add(batch(0))
        (tmp_path / "writer.py").write_text(WRITER)
        (tmp_path / "reader.py").write_text(READER)
        writer = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(kb), here, str(BATCHES)],
                                  env=env, stderr=subprocess.PIPE, text=True)
        reader = subprocess.Popen([sys.executable, str(tmp_path / "reader.py"), str(kb), here, "25"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen: list[int] = []
        errors: list[BaseException] = []

        def read() -> None:
            try:
                while writer.poll() is None:
                    seen.append(check(pipe))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(3)]
        for thread in threads:
            thread.start()
        refused = False
        while writer.poll() is None and not refused:  # a second writer, once the writer holds the lock
            if seen and max(seen) >= 2:
                try:
                    with pipe.kb.writer():
                        raise AssertionError("a second writer got the lock while the first was adding")
                except KnowledgeBaseLockedError as exc:
                    refused = "another process" in str(exc)
            time.sleep(0.05)
        for thread in threads:
            thread.join(timeout=300)
        assert writer.wait(timeout=300) == 0, writer.stderr.read()[-2000:]
        assert not errors, errors[0]
        assert refused
        assert len(set(seen)) >= 3  # the readers watched commits land
        assert check(pipe) == BATCHES
    out, err = reader.communicate(timeout=300)
    assert reader.returncode == 0, err[-2000:]
    assert int(out.split()[-1]) >= 3


def test_threads_that_come_and_go_leave_no_open_connections_behind(tmp_path, embedder):
    """Servers query from pools whose threads come and go; each thread gets its own SQLite
    connection, and those of ended threads are closed (they were all kept open: the MCP server's
    memory grew with every client)."""

    def open_store_files() -> int:
        return sum("chunks.sqlite" in os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                   if os.path.islink(f"/proc/self/fd/{fd}"))

    with Pipeline.open(tmp_path / "kb", embedder=embedder, show_progress=False) as pipe:
        pipe.add(batch(1))
        pipe.retrieve("valve", k=3)
        before = open_store_files()
        for _ in range(30):  # one after another, as a pool retires idle workers and starts new ones
            worker = threading.Thread(target=pipe.retrieve, args=("valve",), kwargs={"k": 3})
            worker.start()
            worker.join()
        assert open_store_files() <= before + 3  # the newest thread's connection (database, WAL, shm)
    assert open_store_files() == 0
