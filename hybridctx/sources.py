"""Sources: turn what a user passes to `add` (texts, paths, Documents, a Source) into Documents.

Per-file problems (empty, binary, not UTF-8, unreadable) become `Failure`s that the
indexing summary lists; a top-level path that does not exist raises at once, before
anything is written, because it is almost always a typo.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from hybridctx.errors import InvalidArgumentError, SourceNotFoundError, UnreadableDocumentError
from hybridctx.schema import Document, Failure

TEXT_SUFFIXES = frozenset(
    ".txt .md .markdown .rst .adoc .py .pyi .ipynb .js .jsx .ts .tsx .java .kt .scala .c .h .cc"
    " .cpp .hpp .cs .go .rs .rb .php .swift .sh .bash .sql .toml .yaml .yml .json .jsonl .ini"
    " .cfg .conf .html .htm .xml .css .tex .csv .tsv .r .jl .lua .pl .el .hs .ml .proto".split()
)
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox"})
_BINARY_SNIFF_BYTES = 8192
# Files above this size are listed as failures rather than read: memory stays bounded, and a
# single file this large is rarely prose (logs, dumps, minified bundles). Settings.max_file_bytes.
MAX_FILE_BYTES = 32 * 2**20


@runtime_checkable
class Source(Protocol):
    """Anything that streams documents (or per-item failures) for indexing."""

    def documents(self) -> Iterator[Document | Failure]: ...


@runtime_checkable
class FolderWalk(Source, Protocol):
    """A source that lists folders in full: a stored document under one of `folders()` that it
    does not yield (nor report as a failure) belongs to a file that is gone, and re-adding the
    source removes it."""

    def folders(self) -> list[Path]: ...


Item = Document | str | os.PathLike | Source


def document_id(path: str | os.PathLike) -> str:
    """The id of a file's document: its absolute path (so a relative and an absolute path to
    one file name one document)."""
    return str(Path(path).expanduser().resolve())


def folder_prefix(path: str | os.PathLike) -> str:
    """What the ids of the documents of files under a folder start with."""
    return document_id(path).rstrip(os.sep) + os.sep


class PathSource:
    """Files and folders; folders are walked for text-like files, never following symlinks.

    Explicitly named files are read whatever their suffix; inside folders only files with a
    suffix in `suffixes` are taken.
    """

    def __init__(
        self,
        paths: Iterable[str | os.PathLike],
        suffixes: Iterable[str] = TEXT_SUFFIXES,
        max_file_bytes: int = MAX_FILE_BYTES,
    ):
        self.paths = [Path(p) for p in paths]
        self.suffixes = frozenset(suffixes)
        self.max_file_bytes = max_file_bytes
        for path in self.paths:
            if not path.exists():
                raise SourceNotFoundError(path)

    def folders(self) -> list[Path]:
        return [p for p in self.paths if _is_folder(p)]

    def files(self) -> Iterator[Path | Failure]:
        for path in self.paths:
            if _is_folder(path):
                for file in walk_files(path):
                    if isinstance(file, Failure) or file.suffix.lower() in self.suffixes:
                        yield file
            else:
                yield path

    def documents(self) -> Iterator[Document | Failure]:
        for file in self.files():
            if isinstance(file, Failure):
                yield file
                continue
            try:
                yield read_text_file(file, self.max_file_bytes)
            except UnreadableDocumentError as exc:
                yield Failure(item=str(file), reason=exc.reason)


def _is_folder(path: Path) -> bool:
    """A folder to walk: a symlink to one is not (symlinks are never followed)."""
    return path.is_dir() and not path.is_symlink()


def walk_files(root: Path) -> Iterator[Path | Failure]:
    """Every file under `root`, sorted, outside SKIPPED_DIRS, never entering a symlinked
    folder (it comes as a file, which reading refuses). A folder that cannot be listed (no
    permission, a path longer than PATH_MAX) comes as a Failure: nothing under a root is left
    out without a reason."""
    errors: list[OSError] = []
    for folder, dirs, names in os.walk(root, onerror=errors.append):
        yield from _listing_failures(errors)
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and d not in links)
        for name in sorted(names + links):
            yield Path(folder, name)
    yield from _listing_failures(errors)


def _listing_failures(errors: list[OSError]) -> Iterator[Failure]:
    while errors:
        error = errors.pop(0)
        yield Failure(item=str(error.filename), reason=f"cannot list the folder: {error.strerror or error}")


def read_regular_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file, opened without following a symlink and without blocking.

    Checked on the open file, not before opening it: a FIFO in an indexed folder hung `index`
    forever at open, and a symlink named on the command line indexed its target (/etc/passwd).
    Anything but a regular file raises UnreadableDocumentError saying what it is.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableDocumentError(path, "a symbolic link: not followed (name its target)") from exc
        raise UnreadableDocumentError(path, f"cannot read: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno())
        if not stat.S_ISREG(mode.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode.st_mode) else "a device" if stat.S_ISCHR(mode.st_mode)
                    or stat.S_ISBLK(mode.st_mode) else "a folder" if stat.S_ISDIR(mode.st_mode) else "a special file")
            raise UnreadableDocumentError(path, f"{kind}, not a regular file: not read")
        check_size(path, mode.st_size, max_bytes)
        try:
            return file.read()
        except OSError as exc:
            raise UnreadableDocumentError(path, f"cannot read: {exc.strerror or exc}") from exc


def read_text_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> Document:
    """A UTF-8 text file as a Document whose id is its absolute path."""
    data = read_regular_file(path, max_bytes)
    return Document(
        id=document_id(path),
        text=decode_text(data, path),
        metadata={"source": str(path), "name": path.name, "suffix": path.suffix.lower()},
    )


def check_size(name: str | Path, size: int, max_bytes: int) -> None:
    """Refuse a file over `max_bytes` before reading it (bounded memory)."""
    if size > max_bytes:
        raise UnreadableDocumentError(
            name, f"{size / 2**20:.0f} MiB, larger than max_file_bytes ({max_bytes / 2**20:.0f} MiB)"
        )


def decode_text(data: bytes, name: str | Path) -> str:
    """The text of a file's bytes: refused when empty, binary or not UTF-8 (naming `name`)."""
    if not data.strip():
        raise UnreadableDocumentError(name, "empty file")
    if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        raise UnreadableDocumentError(name, "binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableDocumentError(name, f"not UTF-8 text (invalid byte at offset {exc.start})") from exc


def text_document(text: str) -> Document:
    """A Document for raw text; its id is derived from the content, so re-adding is a no-op."""
    if not text.strip():
        raise UnreadableDocumentError("text item", "empty text")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return Document(id=f"text:{digest}", text=text, metadata={"source": f"text:{digest}"})


def _is_existing_path(text: str) -> bool:
    """Whether a text names an existing file or folder; a long text is no path (the OS refuses
    names of more than 255 bytes rather than answering no)."""
    try:
        return Path(text).exists()
    except (OSError, ValueError):  # name too long; an embedded NUL
        return False


def _looks_like_path(text: str) -> bool:
    return (
        "\n" not in text
        and len(text) < 1024
        and (os.sep in text or text.endswith("/") or Path(text).suffix.lower() in TEXT_SUFFIXES)
    )


class DocumentStream:
    """Documents (or failures) read lazily, with the number of items to expect when known."""

    def __init__(self, entries: list[Document | Source | Failure]) -> None:
        self._entries = entries
        # Folders some entry lists in full: what the add does not meet under them is gone.
        self.folders = [folder for e in entries if isinstance(e, FolderWalk) for folder in e.folders()]
        counts = [_count(e) for e in entries]
        self.total: int | None = None if None in counts else sum(counts)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Document | Failure]:
        for entry in self._entries:
            if isinstance(entry, (Document, Failure)):
                yield entry
            else:
                yield from entry.documents()


def _count(entry: Document | Source | Failure) -> int | None:
    """How many items an entry yields, if that is cheap to know (a folder walk is)."""
    if isinstance(entry, (Document, Failure)):
        return 1
    if isinstance(entry, PathSource):
        return sum(1 for _ in entry.files())
    return None


def iter_documents(items: Item | Iterable[Item], max_file_bytes: int = MAX_FILE_BYTES) -> DocumentStream:
    """Documents (or failures) from a mix of items.

    Checks every item now (a missing path raises before anything is read); reads lazily.
    """
    if isinstance(items, (Document, str, os.PathLike, Source)):
        items = [items]
    elif isinstance(items, Mapping) or not isinstance(items, Iterable):  # a dict would index its keys as texts
        raise InvalidArgumentError(
            f"add: cannot index a {type(items).__name__}; pass Documents, texts, paths or a Source, or a list of them"
        )
    resolved: list[Document | Source | Failure] = []
    for item in items:
        if isinstance(item, (Document, Source)):
            resolved.append(item)
        elif isinstance(item, os.PathLike) or (isinstance(item, str) and _is_existing_path(item)):
            resolved.append(PathSource([item], max_file_bytes=max_file_bytes))
        elif isinstance(item, str) and _looks_like_path(item):
            raise SourceNotFoundError(item)
        elif isinstance(item, str):
            try:
                resolved.append(text_document(item))
            except UnreadableDocumentError as exc:
                resolved.append(Failure(item=str(exc.item), reason=exc.reason))
        else:
            raise InvalidArgumentError(
                f"add: cannot index an item of type {type(item).__name__}; pass Documents, "
                "texts, paths or a Source"
            )
    return DocumentStream(resolved)
