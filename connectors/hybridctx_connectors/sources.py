"""Sources beyond plain text files: folders with HTML and PDF, JSONL files, git repositories
and SQL tables. Each is a `hybridctx.sources.Source`: it streams `Document`s (bounded memory
on large inputs) and reports a bad item as a `Failure` with its reason, without stopping.

    pipe.add(FolderSource("docs/", include=["**/*.md", "**/*.pdf"], exclude=["drafts/**"]))
    pipe.add(JsonlSource("tickets.jsonl", text_field="body", id_field="ticket_id"))
    pipe.add(GitSource("~/src/project", revision="v2.1"))
    pipe.add(SqlSource("sqlite:///kb.db", table="articles", text_column="body", id_column="id"))

HTML keeps its main text (trafilatura drops navigation and boilerplate); PDF gives its text
page by page (pypdf). Each needs its extra: `html`, `pdf`, `sql`.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from hybridctx.errors import InvalidArgumentError, ModelUnavailableError, SourceNotFoundError, UnreadableDocumentError
from hybridctx.schema import Document, Failure
from hybridctx.sources import (
    MAX_FILE_BYTES,
    TEXT_SUFFIXES,
    check_size,
    decode_text,
    document_id,
    read_regular_file,
    walk_files,
)

HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
PDF_SUFFIXES = frozenset({".pdf"})
READABLE_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES


def _matches(relative: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Glob match on the path relative to the source's root ('**/' also matches no folder)."""

    def any_match(patterns: Sequence[str]) -> bool:
        return any(fnmatch.fnmatch(relative, p) or (p.startswith("**/") and fnmatch.fnmatch(relative, p[3:]))
                   for p in patterns)

    return any_match(include) and not any_match(exclude)


def document_from_bytes(data: bytes, name: str, metadata: dict[str, Any]) -> Document:
    """A Document from a file's bytes, read by its suffix: HTML's main text, PDF's text,
    otherwise UTF-8 text. Raises `UnreadableDocumentError` with the reason."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in HTML_SUFFIXES:
        text = _html_main_text(data, name)
    elif suffix in PDF_SUFFIXES:
        text, metadata = _pdf_text(data, name), {**metadata, "format": "pdf"}
    else:
        text = decode_text(data, name)
    if not text.strip():
        raise UnreadableDocumentError(name, "no text in it")
    return Document(id=name, text=text, metadata={**metadata, "source": name, "suffix": suffix})


class FolderSource:
    """Files under a folder that match `include` and not `exclude` (globs relative to the
    folder), never following symlinks (a symlink, FIFO or device is listed as a failure with
    its reason); text, markdown, reStructuredText, code, HTML and PDF.
    `root` may also be one file, read whatever its suffix. A file whose format needs an extra
    that is not installed is listed as a failure naming the extra."""

    def __init__(
        self,
        root: str | os.PathLike,
        include: Sequence[str] = ("**/*",),
        exclude: Sequence[str] = (),
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise SourceNotFoundError(self.root)
        self.include, self.exclude, self.max_file_bytes = list(include), list(exclude), max_file_bytes

    def folders(self) -> list[Path]:
        """The root, when every file under it is listed (no include or exclude patterns): a
        re-add then removes the documents of files that are gone (`hybridctx.sources.FolderWalk`)."""
        unfiltered = self.include == ["**/*"] and not self.exclude
        return [self.root] if self._is_folder() and unfiltered else []

    def _is_folder(self) -> bool:
        return self.root.is_dir() and not self.root.is_symlink()  # a symlinked root is read (and refused) as a file

    def documents(self) -> Iterator[Document | Failure]:
        if not self._is_folder():
            yield self._read(self.root, self.root.name)
            return
        for path in walk_files(self.root):
            if isinstance(path, Failure):
                yield path
                continue
            relative = path.relative_to(self.root).as_posix()
            if path.suffix.lower() in READABLE_SUFFIXES and _matches(relative, self.include, self.exclude):
                yield self._read(path, relative)

    def _read(self, path: Path, relative: str) -> Document | Failure:
        try:
            data = read_regular_file(path, self.max_file_bytes)
            document = document_from_bytes(data, str(path), {"name": path.name, "path": relative})
            return document.model_copy(update={"id": document_id(path)})
        except OSError as exc:
            return Failure(item=str(path), reason=f"cannot read: {exc.strerror or exc}")
        except UnreadableDocumentError as exc:
            return Failure(item=str(path), reason=exc.reason)
        except ModelUnavailableError as exc:  # an HTML or PDF file without its extra: listed, with the extra to install
            return Failure(item=str(path), reason=str(exc))


class JsonlSource:
    """One document per line of a JSON Lines file: `text_field` holds the text, `id_field`
    the id (default: file and line number); the other fields become metadata."""

    def __init__(self, path: str | os.PathLike, text_field: str = "text", id_field: str | None = "id") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceNotFoundError(self.path)
        self.text_field, self.id_field = text_field, id_field

    def documents(self) -> Iterator[Document | Failure]:
        with open(self.path, encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                item = f"{self.path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield Failure(item=item, reason=f"not JSON: {exc.msg} at column {exc.colno}")
                    continue
                if not isinstance(record, dict) or not isinstance(record.get(self.text_field), str):
                    yield Failure(item=item, reason=f"no text field {self.text_field!r}")
                    continue
                if not record[self.text_field].strip():
                    yield Failure(item=item, reason="empty text")
                    continue
                doc_id = record.get(self.id_field) if self.id_field else None
                metadata = {k: v for k, v in record.items() if k not in (self.text_field, self.id_field)}
                yield Document(id=str(doc_id) if doc_id is not None else item, text=record[self.text_field],
                               metadata={**metadata, "source": item})


class GitSource:
    """The tracked files of a git repository at `revision` (read from git's objects, so the
    working tree does not matter), with the commit's id, author and date as metadata."""

    def __init__(
        self,
        repository: str | os.PathLike,
        revision: str = "HEAD",
        include: Sequence[str] = ("**/*",),
        exclude: Sequence[str] = (),
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.repository = Path(repository).expanduser()
        self.include, self.exclude, self.max_file_bytes = list(include), list(exclude), max_file_bytes
        try:
            commit = self._git("log", "-1", "--format=%H%x00%an%x00%aI", revision, "--").decode().strip()
        except UnreadableDocumentError as exc:
            raise SourceNotFoundError(f"{self.repository} at {revision}: {exc.reason}") from exc
        self.commit, self.author, self.date = commit.split("\x00")

    def documents(self) -> Iterator[Document | Failure]:
        listing = self._git("ls-tree", "-r", "-z", "--long", self.commit).split(b"\x00")
        for entry in filter(None, listing):
            meta, _, raw_path = entry.partition(b"\t")
            mode, kind, blob, size = meta.decode().split()
            path = raw_path.decode("utf-8", "replace")
            if kind != "blob" or mode == "120000" or PurePosixPath(path).suffix.lower() not in READABLE_SUFFIXES:
                continue  # submodules, symlinks, other files
            if not _matches(path, self.include, self.exclude):
                continue
            name = f"{self.repository.name}@{self.commit[:12]}:{path}"
            try:
                check_size(name, int(size), self.max_file_bytes)
                document = document_from_bytes(self._git("cat-file", "blob", blob), name, {
                    "path": path, "commit": self.commit, "author": self.author, "date": self.date,
                    "repository": str(self.repository),
                })
                yield document.model_copy(update={"id": f"git:{self.repository.resolve()}:{path}"})
            except UnreadableDocumentError as exc:
                yield Failure(item=name, reason=exc.reason)

    def _git(self, *args: str) -> bytes:
        done = subprocess.run(["git", "-C", str(self.repository), *args], capture_output=True)
        if done.returncode != 0:
            raise UnreadableDocumentError(self.repository, done.stderr.decode(errors="replace").strip())
        return done.stdout


class SqlSource:
    """Rows of a SQL table (or query) through a SQLAlchemy connection URL, streamed: the
    `text_column` holds the text, `id_column` the id; the other columns become metadata."""

    def __init__(
        self,
        url: str,
        table: str | None = None,
        text_column: str = "text",
        id_column: str = "id",
        query: str | None = None,
        batch_size: int = 1000,
    ) -> None:
        if (table is None) == (query is None):
            raise InvalidArgumentError("SqlSource: give a table or a query, not both")
        try:
            import sqlalchemy
        except ImportError as exc:
            raise ModelUnavailableError("SQL sources need the sql extra: pip install 'hybridctx[sql]'") from exc
        self.engine = sqlalchemy.create_engine(url)
        if table is not None:
            try:
                reflected = sqlalchemy.Table(table, sqlalchemy.MetaData(), autoload_with=self.engine)
            except sqlalchemy.exc.NoSuchTableError as exc:
                raise SourceNotFoundError(f"table {table!r} in {url}") from exc
            self.statement: sqlalchemy.Executable = sqlalchemy.select(reflected)
        elif query is not None:
            self.statement = sqlalchemy.text(query)
        self.table = table
        self.text_column, self.id_column, self.batch_size = text_column, id_column, batch_size

    def documents(self) -> Iterator[Document | Failure]:
        source = self.table or "query"
        with self.engine.connect() as connection:
            rows = connection.execution_options(stream_results=True, yield_per=self.batch_size).execute(self.statement)
            for row in rows.mappings():
                item = f"{source}:{row.get(self.id_column)}"
                text = row.get(self.text_column)
                if not isinstance(text, str) or not text.strip():
                    yield Failure(item=item, reason=f"no text in column {self.text_column!r}")
                    continue
                metadata = {k: _plain(v) for k, v in row.items() if k not in (self.text_column, self.id_column)}
                yield Document(id=f"sql:{source}:{row.get(self.id_column)}", text=text,
                               metadata={**metadata, "source": item})


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _html_main_text(data: bytes, name: str) -> str:
    try:
        import trafilatura
    except ImportError as exc:
        raise ModelUnavailableError("HTML needs the html extra: pip install 'hybridctx[html]'") from exc
    text = trafilatura.extract(data, include_comments=False, include_tables=True, favor_recall=True)
    if not text:
        raise UnreadableDocumentError(name, "no main text found in the HTML")
    return text


def _pdf_text(data: bytes, name: str) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:
        raise ModelUnavailableError("PDF needs the pdf extra: pip install 'hybridctx[pdf]'") from exc
    try:
        pages = [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableDocumentError(name, f"malformed PDF: {exc}") from exc
    return "\n\n".join(page.strip() for page in pages if page.strip())

