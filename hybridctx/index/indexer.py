"""The `add` flow: documents -> chunk -> embed -> knowledge base, in resumable commits.

Unchanged documents (same content hash) are skipped; changed ones replace their old
chunks. New chunks are embedded and committed in groups of about `commit_every_chunks`,
so an interrupted run keeps what it committed and a re-run finishes the rest. With a
`profile` function (the packer's `chunk_profiles`), each chunk is stored with what the
packer needs to know of it (its duplicate keys and its tokens for the reading model), so
that packing does no tokenizing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from hybridctx.chunk import Chunker
from hybridctx.embed import Embedder
from hybridctx.errors import UnreadableDocumentError
from hybridctx.index.kb import KnowledgeBase
from hybridctx.index.writer import KnowledgeBaseWriter
from hybridctx.schema import AddReport, Chunk, ChunkProfile, Document, Failure, ReaderId
from hybridctx.sources import DocumentStream, document_id, folder_prefix

Profiler = Callable[[Sequence[str]], list[ChunkProfile]]  # chunk texts -> their profiles


def content_hash(document: Document) -> str:
    """Hash of everything that, if changed, must re-index the document."""
    payload = json.dumps(
        [document.text, document.metadata, sorted(document.acl) if document.acl is not None else None],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class _Pending:
    document: Document
    content_hash: str
    chunks: list[Chunk]


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class Indexer:
    def __init__(
        self,
        kb: KnowledgeBase,
        chunker: Chunker,
        embedder: Embedder,
        commit_every_chunks: int = 4096,
        show_progress: bool = True,
        profile: Profiler | None = None,
    ) -> None:
        self.kb = kb
        self.chunker = chunker
        self.embedder = embedder
        self.profile = profile
        self.commit_every_chunks = commit_every_chunks
        self.show_progress = show_progress

    def add(self, items: Iterable[Document | Failure]) -> AddReport:
        """Index `items`. When they list folders in full (a `DocumentStream` of folder walks),
        stored documents under those folders that the walk no longer met (their files are gone)
        are removed at the end: the ids met are kept in memory meanwhile, O(files added)."""
        try:
            return self._add(items)
        finally:
            self.embedder.release()  # what only indexing holds (a Ray actor pool) goes back

    def _add(self, items: Iterable[Document | Failure]) -> AddReport:
        report = AddReport()
        folders = items.folders if isinstance(items, DocumentStream) else []
        met: set[str] = set()
        timer = _Timer()
        pending: list[_Pending] = []
        pending_chunks = 0
        with self.kb.writer() as writer, tqdm(
            desc="documents", unit="doc", total=getattr(items, "total", None), disable=not self.show_progress
        ) as docs_bar, tqdm(desc="chunks embedded", unit="chunk", disable=not self.show_progress) as chunk_bar:
            for item in _timed(items, timer, "read"):
                docs_bar.update(1)
                if isinstance(item, Failure):
                    report.failed.append(item)
                    met.add(document_id(item.item))  # still there, only unreadable now: kept
                    continue
                met.add(item.id)
                with timer.stage("chunk"):
                    entry = self._prepare(item, writer, report)
                if entry is None:
                    continue
                pending.append(entry)
                pending_chunks += len(entry.chunks)
                chunk_bar.total = (chunk_bar.total or 0) + len(entry.chunks)
                if pending_chunks >= self.commit_every_chunks:
                    self._commit(pending, writer, report, timer, chunk_bar)
                    pending, pending_chunks = [], 0
            self._commit(pending, writer, report, timer, chunk_bar)
            if folders:
                under = [folder_prefix(f) for f in folders]
                gone = [i for i in self.kb.store.matching_ids(under=under) if i not in met]
                if gone:
                    writer.delete_documents(gone)
                    writer.commit()
                    report.documents_removed = len(gone)
        report.seconds = timer.seconds
        return report

    def _prepare(self, document: Document, writer: KnowledgeBaseWriter, report: AddReport) -> _Pending | None:
        digest = content_hash(document)
        previous = writer.document_hash(document.id)
        if previous == digest:
            report.documents_unchanged += 1
            return None
        try:
            chunks = self.chunker.chunk(document)
        except UnreadableDocumentError as exc:
            report.failed.append(Failure(item=str(exc.item), reason=exc.reason))
            return None
        if previous is None:
            report.documents_added += 1
        else:
            report.documents_replaced += 1
        return _Pending(document, digest, chunks)

    def _commit(
        self,
        pending: list[_Pending],
        writer: KnowledgeBaseWriter,
        report: AddReport,
        timer: _Timer,
        chunk_bar: tqdm,
    ) -> None:
        if not pending:
            return
        texts = [c.text for p in pending for c in p.chunks]
        step = self.embedder.texts_per_call
        with timer.stage("embed"):
            parts = []
            for start in range(0, len(texts), step):
                parts.append(self.embedder.embed(texts[start : start + step]))
                chunk_bar.update(len(parts[-1]))
            vectors = np.concatenate(parts) if parts else np.zeros((0, self.embedder.dimension), np.float32)
        profiles = None
        if self.profile is not None:
            with timer.stage("profile"):
                profiles = self.profile(texts)
        with timer.stage("write"):
            offset = 0
            for p in pending:
                end = offset + len(p.chunks)
                writer.replace_document(
                    p.document, p.content_hash, p.chunks, vectors[offset:end],
                    profiles[offset:end] if profiles else None,
                )
                offset = end
            writer.commit()
        report.chunks_added += len(texts)
        report.tokens_added += sum(c.token_count for p in pending for c in p.chunks)


def refresh_profiles(
    kb: KnowledgeBase,
    profile: Profiler,
    reader: ReaderId | None,
    show_progress: bool = True,
    step: int = 4096,
) -> int:
    """Store profiles of the chunks that lack them (a KB indexed before hybridctx stored them)
    or whose counts are for another reader than `reader`; returns how many. Each step commits:
    an interrupted run keeps what it did, and a re-run does the rest."""
    done = after = 0
    with kb.writer() as writer, tqdm(
        total=kb.store.count_lacking_profiles(reader), desc="chunk profiles", unit="chunk", disable=not show_progress
    ) as bar:
        while rows := kb.store.chunks_lacking_profiles(reader, after, step):
            vector_ids = [v for v, _ in rows]
            writer.put_profiles(vector_ids, profile([text for _, text in rows]))
            after, done = vector_ids[-1], done + len(rows)
            bar.update(len(rows))
    return done


def _timed(items: Iterable[Document | Failure], timer: _Timer, stage: str) -> Iterator[Document | Failure]:
    """Charge the time spent producing each item (reading files) to `stage`."""
    iterator = iter(items)
    while True:
        with timer.stage(stage):
            item = next(iterator, None)
        if item is None:
            return
        yield item
