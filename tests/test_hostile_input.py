"""A folder of hostile files: indexing finishes, lists each bad file with its reason, and
indexes every good one."""

from __future__ import annotations

import os

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
