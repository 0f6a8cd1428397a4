"""A folder of hostile files: indexing finishes, lists each bad file with its reason, and
indexes every good one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hybridctx import Pipeline


def hostile_folder(root):
    good = {
        "guide.md": "# Guide\n\nThe relay restarts after 45 seconds of silence.\n",
        "notes.txt": "Part number ZX-4471 fits the older housings only.\n",
    }
    for name, text in good.items():
        (root / name).write_text(text)
    (root / "binary.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    (root / "latin1.txt").write_bytes("Café au lait, naïve façade".encode("latin-1"))
    (root / "empty.md").write_bytes(b"")
    (root / "blank.md").write_text("\n   \n\t\n")
    (root / "huge-line.txt").write_bytes(b"x" * (33 * 2**20))  # one 33 MiB line, over the 32 MiB limit
    deep = root
    for level in range(120):
        deep = deep / f"d{level}"
    deep.mkdir(parents=True)
    (deep / "bottom.md").write_text("The deepest note says the password rotates every 90 days.\n")
    (root / "loop").symlink_to(root, target_is_directory=True)  # a symlink loop: never followed
    (root / "alias.md").symlink_to(root / "guide.md")  # a file symlink: skipped, not indexed twice
    locked = root / "locked.txt"
    locked.write_text("You should not be able to read this.\n")
    locked.chmod(0)
    return {"guide.md", "notes.txt", "bottom.md"}


@pytest.mark.slow
def test_hostile_files_are_listed_and_good_ones_indexed(tmp_path, embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = hostile_folder(corpus)
    with Pipeline.open(tmp_path / "kb", embedder=embedder, show_progress=False) as pipe:
        report = pipe.add(corpus)
        reasons = {os.path.basename(f.item): f.reason for f in report.failed}
        assert "binary" in reasons["binary.txt"]
        assert "not UTF-8" in reasons["latin1.txt"]
        assert reasons["empty.md"] == reasons["blank.md"] == "empty file"
        assert "larger than max_file_bytes" in reasons["huge-line.txt"]
        if os.geteuid() != 0:  # root reads any file
            assert "cannot read" in reasons["locked.txt"]
        indexed = {os.path.basename(d) for d in pipe.kb.store.document_ids()}
        assert good <= indexed and not indexed & set(reasons)
        assert "alias.md" not in indexed
        assert pipe.retrieve("how often does the password rotate", k=1)[0].chunk.doc_id.endswith("bottom.md")
        assert pipe.retrieve("ZX-4471", k=1)[0].chunk.doc_id.endswith("notes.txt")
        again = pipe.add(corpus)  # nothing new, the same failures, no duplicates
        assert again.documents_added == 0 and len(again.failed) == len(report.failed)
        assert pipe.stats()["documents"] == len(indexed)


@pytest.mark.timeout(60)  # a FIFO used to block `index` forever at open
def test_fifos_devices_and_symlinks_are_listed_with_their_reason_never_read(tmp_path):
    from hybridctx.sources import PathSource
    from hybridctx_connectors.sources import FolderSource

    secret = tmp_path / "secret.txt"
    secret.write_text("outside the indexed folder\n")
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.md").write_text("The relay restarts after 45 seconds.\n")
    os.mkfifo(root / "pipe.md")
    (root / "alias.md").symlink_to(secret)
    for source in (PathSource([root]), FolderSource(root)):
        items = list(source.documents())
        reasons = {os.path.basename(i.item): i.reason for i in items if not hasattr(i, "text")}
        assert "a FIFO" in reasons["pipe.md"] and "symbolic link" in reasons["alias.md"]
        assert [os.path.basename(i.id) for i in items if hasattr(i, "text")] == ["good.md"]

    link = tmp_path / "link-to-secret"
    link.symlink_to(secret)
    folder_link = tmp_path / "link-to-docs"
    folder_link.symlink_to(root, target_is_directory=True)
    for named in (link, folder_link):  # named on the command line: still not followed
        for source in (PathSource([named]), FolderSource(named)):
            (failure,) = source.documents()
            assert "symbolic link" in failure.reason and failure.item == str(named)
            assert source.folders() == []  # so a re-add never removes the target folder's documents
    (device,) = PathSource([Path("/dev/zero")]).documents()
    assert "a device" in device.reason


def test_a_folder_too_deep_to_list_is_reported_not_skipped(tmp_path):
    from hybridctx.sources import PathSource

    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 names of 250 characters: past PATH_MAX (4,096)
            os.mkdir("d" * 250, dir_fd=fd)
            inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with os.fdopen(os.open("note.md", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as note:
            note.write("unreachable by path\n")
    finally:
        os.close(fd)
    items = list(PathSource([root]).documents())
    assert items and all("cannot list the folder" in i.reason for i in items)
    assert any("too long" in i.reason.lower() for i in items)


@pytest.mark.slow
def test_bad_query_and_k_arguments_are_typed_errors(open_pipe):
    from hybridctx.errors import InvalidArgumentError
    from hybridctx.schema import MAX_K

    pipe = open_pipe()
    pipe.add(["The relay restarts after 45 seconds of silence."])
    for k in (10**9, MAX_K + 1, 0, 2**63, 1.5, "10", True):
        with pytest.raises(InvalidArgumentError, match="k must"):
            pipe.retrieve("relay", k=k)
    for query in (None, 42, "relay \ud800"):
        with pytest.raises(InvalidArgumentError, match="query"):
            pipe.retrieve(query, k=5)
    assert len(pipe.retrieve("relay", k=MAX_K)) == 1  # the largest k is answered, from what there is
    with pytest.raises(InvalidArgumentError, match="k"):
        Pipeline.open(pipe.kb.root, embedder=pipe.embedder, k=10**9)


@pytest.mark.slow
def test_the_cli_refuses_bad_kbs_and_arguments_with_exit_2_and_creates_nothing(corpus, tmp_path):
    from typer.testing import CliRunner

    from hybridctx.cli import app

    runner = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})

    def run(*args):
        return runner.invoke(app, [str(a) for a in args])

    typo = tmp_path / "typo"
    for command in (["search", "relay"], ["ask", "relay?"], ["list"], ["stats"]):
        result = run(*command, "--kb", typo)
        assert result.exit_code == 2 and "no knowledge base at" in result.output, result.output
    assert not typo.exists()  # reading commands never create a KB
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a knowledge base")
    for command in (["search", "relay"], ["index", corpus]):
        result = run(*command, "--kb", a_file)
        assert result.exit_code == 2 and "is a file" in result.output, result.output
    result = run("mcp", "--kb", tmp_path / "kb", "--http", "127.0.0.1:notaport")
    assert result.exit_code == 2 and "HOST:PORT" in result.output
    assert run("index", corpus, "--kb", tmp_path / "kb", "--quiet").exit_code == 0
    result = run("search", "How many times does the client retry?", "--kb", tmp_path / "kb", "-k", 10**9)
    assert result.exit_code == 2 and "k must be between" in result.output, result.output


@pytest.mark.slow
def test_a_full_disk_is_a_typed_error_and_the_kb_stays_at_its_last_commit(open_pipe, monkeypatch):
    import faiss

    from hybridctx.errors import DiskFullError

    pipe = open_pipe()
    pipe.add(["The relay restarts after 45 seconds of silence."])

    def full(*_):  # what FAISS raises when a write fails for want of space
        raise RuntimeError("Error: 'ret == (size_t)1' failed: write error in dense.faiss: No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(faiss, "write_index", full)
        with pytest.raises(DiskFullError, match="full"):
            pipe.add(["Part number ZX-4471 fits the older housings only."])
    assert pipe.stats()["documents"] == 1
    assert "relay" in pipe.retrieve("relay restarts", k=1)[0].chunk.text
    # Space again: the same add finishes.
    assert pipe.add(["Part number ZX-4471 fits the older housings only."]).documents_added == 1
    assert pipe.retrieve("ZX-4471", k=1)[0].chunk.text.startswith("Part number")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_kb_whose_store_is_gone_is_refused_and_its_index_kept(open_pipe, tmp_path, damage):
    from hybridctx.errors import KnowledgeBaseFormatError

    pipe = open_pipe()
    pipe.add(["The relay restarts after 45 seconds of silence."])
    pipe.close()
    store = tmp_path / "kb" / "chunks.sqlite"
    for wal in store.parent.glob("chunks.sqlite-*"):
        wal.unlink()
    store.unlink() if damage == "delete" else store.write_bytes(b"")
    segments = sorted(p.name for p in store.parent.glob("dense-*"))
    assert segments
    with pytest.raises(KnowledgeBaseFormatError, match="chunks.sqlite is missing or empty"):
        open_pipe()
    assert sorted(p.name for p in store.parent.glob("dense-*")) == segments  # nothing was discarded
