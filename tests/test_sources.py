"""Reading files and items: typed errors that name the input, no symlink loops."""

from __future__ import annotations

import os

import pytest

from hybridctx import Document
from hybridctx.errors import InvalidArgumentError, SourceNotFoundError, UnreadableDocumentError
from hybridctx.schema import Failure
from hybridctx.sources import PathSource, iter_documents, read_text_file


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"  \n", "empty file"), (b"PK\x03\x04\x00\x00", "binary"), (b"caf\xe9", "not UTF-8")],
)
def test_unreadable_files_raise_a_typed_error_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(UnreadableDocumentError, match=reason) as info:
        read_text_file(path)
    assert str(path) in str(info.value)


def test_utf8_bom_is_stripped_and_metadata_names_the_file(tmp_path):
    path = tmp_path / "notes.md"
    path.write_bytes(b"\xef\xbb\xbfHello")
    doc = read_text_file(path)
    assert doc.text == "Hello" and doc.id == str(path.resolve())
    assert doc.metadata == {"source": str(path), "name": "notes.md", "suffix": ".md"}


def test_folder_walk_takes_text_files_skips_vcs_dirs_and_survives_symlink_loops(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.md").write_text("alpha")
    (root / "sub" / "b.py").write_text("beta = 1")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / ".git" / "config.txt").write_text("git internals")
    os.symlink(root, root / "sub" / "loop")
    names = sorted(p.name for p in PathSource([root]).files())
    assert names == ["a.md", "b.py"]


def test_items_mix_documents_texts_and_paths(tmp_path):
    (tmp_path / "a.md").write_text("alpha")
    items = [Document(id="x", text="doc"), "some raw text to index", tmp_path / "a.md", "   "]
    produced = list(iter_documents(items))
    kinds = {type(p) for p in produced}
    assert kinds == {Document, Failure}
    texts = sorted(p.text for p in produced if isinstance(p, Document))
    assert texts == ["alpha", "doc", "some raw text to index"]
    [failure] = [p for p in produced if isinstance(p, Failure)]
    assert failure.reason == "empty text"


def test_long_texts_and_texts_with_nul_are_texts_not_paths():
    """The OS refuses a file name of more than 255 bytes (or with a NUL) instead of saying it does not exist."""
    long_line = "The Zephyr client retries a failed request up to 7 times. " * 10
    texts = [long_line, long_line + "\n\nSecond paragraph.", "a NUL \x00 in the text"]
    produced = list(iter_documents(texts))
    assert [p.text for p in produced] == texts


def test_missing_paths_and_odd_items_are_refused_up_front(tmp_path):
    with pytest.raises(SourceNotFoundError, match="missing.md"):
        iter_documents(["missing.md"])
    with pytest.raises(SourceNotFoundError, match="nope"):
        iter_documents([tmp_path / "nope"])
    with pytest.raises(InvalidArgumentError, match="int"):
        iter_documents([42])
    for odd in (None, 42, {"a": "b"}):  # not items, nor a list of them (a dict would index its keys)
        with pytest.raises(InvalidArgumentError, match=type(odd).__name__):
            iter_documents(odd)


def test_demo_corpus_is_the_standard_library_without_tests_or_empty_files():
    from hybridctx.demo import QUESTIONS, demo_files
    from hybridctx.evals.stdlib import stdlib_files, stdlib_root

    everything = stdlib_files(None)
    demo = demo_files(300)
    assert len(everything) > len(demo) >= 300
    assert all(p.stat().st_size > 0 and "test" not in p.relative_to(stdlib_root()).parts for p in everything)
    assert {stdlib_root() / module for _, module, _ in QUESTIONS} <= set(demo)


def test_stream_knows_how_many_items_to_expect(tmp_path):
    (tmp_path / "a.md").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")
    stream = iter_documents([tmp_path, Document(id="x", text="doc"), "raw text"])
    assert stream.total == 4 == len(list(stream))
