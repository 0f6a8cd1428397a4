"""Sources: folders with HTML and PDF (include/exclude globs, no symlink loops), JSONL, a git
repository at a revision, SQL tables through a URL (SQLite, for real). Each streams its
documents and reports bad items as failures without stopping."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess

import pytest

from hybridctx import Document, Pipeline
from hybridctx.errors import SourceNotFoundError
from hybridctx.schema import Failure
from hybridctx_connectors.sources import FolderSource, GitSource, JsonlSource, SqlSource

PYTHON = '''import os


@cache
def first_function(a, b):
    """Adds."""
    total = a + b

    return total


class Second:
    """A class."""

    def method(self):
        return 42
'''
HTML = """<html><head><title>Relay manual</title></head><body>
<nav><a href="/">Home</a> | <a href="/about">About us</a> | <a href="/shop">Shop</a></nav>
<article><h1>Relay manual</h1><p>The Zephyr relay restarts after 45 seconds of silence, as the
firmware watchdog requires. Operators should not power-cycle it by hand during that window.</p>
<p>Error ZR-118 means the fuse blew and must be replaced by a technician with the spare fuse
kept in the cabinet.</p></article>
<footer>Copyright 2026 Example Corp. All rights reserved. Cookie settings.</footer></body></html>"""


def make_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica: objects, a content stream, the xref table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def split(items):
    documents = [i for i in items if isinstance(i, Document)]
    failures = {os.path.basename(f.item): f.reason for f in items if isinstance(f, Failure)}
    return documents, failures


def test_a_folder_with_markdown_code_html_and_pdf(tmp_path):
    root = tmp_path / "docs"
    (root / "drafts").mkdir(parents=True)
    (root / "guide.md").write_text("# Guide\n\nRestart the relay with the red switch.\n")
    (root / "drafts" / "wip.md").write_text("Not ready yet.\n")
    (root / "tool.py").write_text(PYTHON)
    (root / "manual.html").write_text(HTML)
    (root / "spec.pdf").write_bytes(make_pdf("The pump delivers 40 litres per minute."))
    (root / "broken.pdf").write_bytes(make_pdf("Cut short")[:120])
    (root / "loop").symlink_to(root, target_is_directory=True)
    source = FolderSource(root, exclude=["drafts/**"])
    documents, failures = split(list(source.documents()))
    by_name = {d.metadata["name"]: d for d in documents}
    assert set(by_name) == {"guide.md", "tool.py", "manual.html", "spec.pdf"}  # no drafts, no loop
    assert "malformed PDF" in failures["broken.pdf"]
    assert "40 litres per minute" in by_name["spec.pdf"].text and by_name["spec.pdf"].metadata["format"] == "pdf"
    html = by_name["manual.html"].text
    assert "45 seconds of silence" in html and "ZR-118" in html
    assert "Cookie settings" not in html and "About us" not in html  # boilerplate dropped
    markdown = FolderSource(root, include=["**/*.md"]).documents()
    only_md = {d.metadata["name"] for d in markdown if isinstance(d, Document)}
    assert only_md == {"guide.md", "wip.md"}


def test_code_is_chunked_at_top_level_definitions(tokenizer):
    from hybridctx.chunk import StructuredChunker

    chunks = StructuredChunker(tokenizer, max_tokens=28, overlap_tokens=0).chunk(
        Document(id="tool.py", text=PYTHON, metadata={"suffix": ".py"}))
    # Cut at top-level definitions: the function keeps its decorator and inner blank line
    # (as prose, the blank line would split it before "return total").
    assert [c.text.splitlines()[0] for c in chunks] == ["import os", "@cache", "class Second:"]
    assert "return total" in chunks[1].text and "return 42" in chunks[2].text


@pytest.mark.slow
def test_folder_documents_index_and_answer_from_html_and_pdf(tmp_path, embedder):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "manual.html").write_text(HTML)
    (root / "spec.pdf").write_bytes(make_pdf("The pump delivers 40 litres per minute."))
    with Pipeline.open(tmp_path / "kb", embedder=embedder, show_progress=False) as pipe:
        report = pipe.add(FolderSource(root))
        assert report.documents_added == 2 and not report.failed
        assert pipe.retrieve("how much does the pump deliver", k=1)[0].chunk.metadata["name"] == "spec.pdf"
        assert pipe.retrieve("ZR-118", k=1)[0].chunk.metadata["name"] == "manual.html"


def test_jsonl_lines_become_documents_and_bad_lines_failures(tmp_path):
    path = tmp_path / "tickets.jsonl"
    lines = [json.dumps({"ticket": "T-1", "body": "Printer jams on tray 2.", "team": "it"}),
             "{this is not json",
             json.dumps({"ticket": "T-3", "title": "no body"}),
             "",
             json.dumps({"ticket": "T-4", "body": "VPN drops every hour."})]
    path.write_text("\n".join(lines) + "\n")
    items = list(JsonlSource(path, text_field="body", id_field="ticket").documents())
    documents = [i for i in items if isinstance(i, Document)]
    failures = {f.item.rsplit(":", 1)[1]: f.reason for f in items if isinstance(f, Failure)}
    assert [d.id for d in documents] == ["T-1", "T-4"] and documents[0].metadata["team"] == "it"
    assert failures["2"].startswith("not JSON") and failures["3"] == "no text field 'body'"


def test_jsonl_streams_without_reading_the_whole_file(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as handle:
        for i in range(200_000):
            handle.write(json.dumps({"id": i, "text": f"Record number {i} of the archive."}) + "\n")
    first = list(itertools.islice(JsonlSource(path).documents(), 3))
    assert [d.id for d in first] == ["0", "1", "2"]


def git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com",
           "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env, text=True).stdout


def test_a_git_repository_at_a_revision_with_commit_metadata(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README.md").write_text("# Project\n\nVersion one of the readme.\n")
    (repo / "src").mkdir()
    (repo / "src" / "app.py").write_text("def main():\n    return 1\n")
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "README.md").write_text("# Project\n\nVersion two of the readme.\n")
    git(repo, "commit", "-q", "-am", "second")
    (repo / "README.md").write_text("Uncommitted edits are not indexed.\n")
    (repo / "untracked.md").write_text("Untracked files are not indexed.\n")

    at_first = {d.metadata["path"]: d for d in GitSource(repo, revision=first).documents()}
    assert set(at_first) == {"README.md", "src/app.py"}  # tracked text files only
    assert "Version one" in at_first["README.md"].text and at_first["README.md"].metadata["commit"] == first
    assert at_first["README.md"].metadata["author"] == "Ada"
    head = {d.metadata["path"]: d for d in GitSource(repo, exclude=["src/**"]).documents()}
    assert set(head) == {"README.md"} and "Version two" in head["README.md"].text
    with pytest.raises(SourceNotFoundError):
        GitSource(repo, revision="no-such-branch")


def test_sql_table_rows_stream_as_documents(tmp_path):
    path = tmp_path / "kb.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE articles (id INTEGER PRIMARY KEY, title TEXT, body TEXT, views INTEGER)")
        db.executemany("INSERT INTO articles VALUES (?, ?, ?, ?)", [
            (1, "Relay", "The relay restarts after 45 seconds.", 10),
            (2, "Empty", None, 0),
            (3, "Pump", "The pump delivers 40 litres per minute.", 7),
        ])
    items = list(SqlSource(f"sqlite:///{path}", table="articles", text_column="body").documents())
    documents = [i for i in items if isinstance(i, Document)]
    assert [d.id for d in documents] == ["sql:articles:1", "sql:articles:3"]
    assert documents[0].metadata["title"] == "Relay" and documents[0].metadata["views"] == 10
    assert [f.item for f in items if isinstance(f, Failure)] == ["articles:2"]
    query = SqlSource(f"sqlite:///{path}", query="SELECT id, body FROM articles WHERE views > 8", text_column="body")
    assert [d.text for d in query.documents() if isinstance(d, Document)] == ["The relay restarts after 45 seconds."]
    with pytest.raises(SourceNotFoundError, match="nosuch"):
        SqlSource(f"sqlite:///{path}", table="nosuch")
