"""A knowledge base's files: their names, the manifest, the write lock, and the checks every
opener makes before touching them (see `kb` for the layout and the commit protocol)."""

from __future__ import annotations

import errno
import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ValidationError

from hybridctx.errors import InvalidArgumentError, KnowledgeBaseFormatError, KnowledgeBaseLockedError
from hybridctx.index.dense import FaissIndex, file_stamp
from hybridctx.index.segments import SegmentInfo

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
STORE = "chunks.sqlite"
LOCK = "write.lock"
LEXICAL = "lexical"


class Manifest(BaseModel):
    format_version: int
    embedding_model: str
    dimension: int
    created_at: str


def seal_segment(info: SegmentInfo, index: FaissIndex, root: Path) -> SegmentInfo:
    """Write a new segment file; its info with the file's checksum and stamp."""
    checksum = index.save(root / info.name)
    return info.model_copy(update={"checksum": checksum, "stamp": file_stamp(root / info.name)})


@contextmanager
def write_lock(root: Path) -> Iterator[None]:
    lock_path = root / LOCK
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise KnowledgeBaseLockedError(
                f"knowledge base {root} is being written by another process ({lock_path})"
            ) from exc
        yield


def check_store_present(root: Path) -> None:
    """Refuse a KB whose chunk store is gone or emptied while its indexes remain: SQLite opened
    it as a new, empty store, and the next add deleted the old dense segments for good."""
    store = root / STORE
    if store.is_file() and store.stat().st_size > 0:
        return
    kept = sorted(p.name for p in root.iterdir() if p.name not in (MANIFEST, LOCK) and not p.name.startswith(STORE))
    if kept:
        raise KnowledgeBaseFormatError(
            f"{store} is missing or empty, but {root} still holds {', '.join(kept[:3])}: not opened, since "
            f"writing would discard them. Restore {STORE} from a backup, or index into a new folder"
        )


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, from any of the stores (SQLite, FAISS, tantivy, plain files), says the disk is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "database or disk is full" in text or "Disk quota exceeded" in text


def checked_root(root: str | Path) -> Path:
    """`root` as a KB folder, refused with a typed error naming it when it cannot be one."""
    if "\x00" in str(root):
        raise InvalidArgumentError(f"knowledge base path {str(root)!r} holds a NUL character")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise KnowledgeBaseFormatError(f"{root} is a file, not a knowledge base folder")
    return root


def built_with(root: str | Path) -> str | None:
    """The embedder name the KB at `root` records (e.g. "all-MiniLM-L6-v2@static"); None if no KB is there."""
    path = checked_root(root) / MANIFEST
    return read_manifest(path).embedding_model if path.exists() else None


def read_manifest(path: Path) -> Manifest:
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
        raise KnowledgeBaseFormatError(f"{path} is not a valid hybridctx manifest: {exc}") from exc
    if manifest.format_version not in READABLE_VERSIONS:
        raise KnowledgeBaseFormatError(
            f"{path} has format version {manifest.format_version}; this hybridctx reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    return manifest


def write_manifest(path: Path, manifest: Manifest) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(manifest.model_dump_json(indent=2))
    tmp.replace(path)
