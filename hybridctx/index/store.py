"""Index stage, text half: the SQLite chunk store.

Holds documents (content hash, metadata, ACL) and their chunks (text, offsets, lines).
A chunk's `vector_id` is its id in the FAISS index; AUTOINCREMENT keeps ids of deleted
chunks from ever being reused, so a stale vector can never point at a new chunk.
Filters and access control are evaluated here, before the vector search: a search gets the
vector ids its scope sees from bitmaps kept per metadata value and per reader (visibility.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pyroaring import BitMap64

from hybridctx.errors import InvalidArgumentError, KnowledgeBaseFormatError
from hybridctx.index.store_schema import LACKING_PROFILES, SCHEMA, stored_names, text_crc, upgrade, write_bitmap
from hybridctx.index.visibility import PUBLIC, VisibleIds, principal_name, value_name, wanted_values
from hybridctx.schema import Chunk, ChunkProfile, Document, DocumentInfo, ReaderId, Scope

SUMMED_AT_MOST = 20_000  # visible chunks whose token counts `visible_size` sums one by one


class ChunkStore:
    """The SQLite chunk store, with one connection per thread (a sqlite3 connection must not
    serve two threads at once). A writer uses its own instance, inside `begin()`/`commit()`.

    Servers run queries on pools whose threads come and go (anyio retires a worker idle for
    10 s), so the connections of threads that ended are closed as new ones open: keeping them
    all (for `close`) held one SQLite connection and its page cache per thread ever seen, what
    the MCP server's memory grew by under many clients."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: dict[sqlite3.Connection, threading.Thread] = {}  # -> the thread it serves
        self._connections_lock = threading.Lock()
        # name -> (ids added, ids removed) in the open write transaction, written at commit:
        # a bitmap is read and written once a commit, not once a document
        self._visibility_changes: dict[str, tuple[BitMap64, BitMap64]] = {}
        self._local.db = self._connect(create=True)

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            if create:  # once per store: creating the tables takes SQLite's write lock
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                upgrade(db)
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            raise KnowledgeBaseFormatError(f"chunk store {self.path} is damaged or not SQLite: {exc}") from exc
        with self._connections_lock:
            for ended in [old for old, thread in self._connections.items() if not thread.is_alive()]:
                ended.close()
                del self._connections[ended]
            self._connections[db] = threading.current_thread()
        return db

    @property
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def close(self) -> None:
        with self._connections_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one committed state of the store (a read transaction; nested
        snapshots of one thread join the outer one)."""
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self._db.execute("BEGIN")
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                self._db.execute("COMMIT")

    def begin(self) -> None:
        """Start a write transaction (taking SQLite's write lock at once, not on first write)."""
        self._db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        for name, (added, removed) in self._visibility_changes.items():
            write_bitmap(self._db, name, (self._bitmap(name) | added) - removed)
        self._visibility_changes.clear()
        self._db.execute("COMMIT")

    def rollback(self) -> None:
        self._visibility_changes.clear()
        self._db.execute("ROLLBACK")

    def _bitmap(self, name: str) -> BitMap64:
        row = self._db.execute("SELECT ids FROM visibility WHERE name = ?", (name,)).fetchone()
        return BitMap64.deserialize(row[0]) if row else BitMap64()

    def _change_visibility(self, names: Sequence[str], ids: Sequence[int], add: bool) -> None:
        changed = BitMap64(ids)
        for name in names:
            added, removed = self._visibility_changes.setdefault(name, (BitMap64(), BitMap64()))
            (added if add else removed).update(changed)
            (removed if add else added).difference_update(changed)

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def index_state(self) -> tuple[int, str | None, np.ndarray]:
        """The committed generation, its segment list (JSON) and the dead vector ids, read
        from one snapshot."""
        with self.snapshot():
            generation = int(self.get_meta("generation") or 0)
            segments = self.get_meta("segments")
            rows = self._db.execute("SELECT vector_id FROM dead_vectors").fetchall()
        return generation, segments, np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def update_dead_vectors(self, added: np.ndarray, cleared: Sequence[tuple[int, int]]) -> None:
        """Forget the dead ids in the `cleared` ranges (their segments were rewritten), record `added`."""
        self._db.executemany("DELETE FROM dead_vectors WHERE vector_id BETWEEN ? AND ?", cleared)
        self._db.executemany("INSERT INTO dead_vectors(vector_id) VALUES (?)", ((int(i),) for i in added))

    def max_vector_id(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
        return int(row[0]) if row else 0

    def document_hash(self, doc_id: str) -> str | None:
        row = self._db.execute("SELECT content_hash FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return row[0] if row else None

    def replace_document(
        self, document: Document, content_hash: str, chunks: Sequence[Chunk],
        profiles: Sequence[ChunkProfile] | None = None,
    ) -> tuple[list[int], list[int], list[str]]:
        """Store `document` and its chunks (with what the packer needs to know of each, if
        given) in place of any earlier version.

        Returns the vector ids removed, the vector ids given to the new chunks, and the
        document's visibility names (read from what is stored, for the lexical index too).
        """
        removed = self.delete_documents([document.id])
        acl = json.dumps(sorted(document.acl)) if document.acl is not None else None
        metadata = json.dumps(document.metadata, sort_keys=True, default=str)
        self._db.execute(
            "INSERT INTO documents(id, content_hash, metadata, acl, n_chunks, n_tokens, added_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                document.id,
                content_hash,
                metadata,
                acl,
                len(chunks),
                sum(c.token_count for c in chunks),
                time.time(),
            ),
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO metadata_keys(key) VALUES (?)", [(str(key),) for key in document.metadata]
        )
        if document.acl:
            self._db.executemany(
                "INSERT INTO document_acl(doc_id, principal) VALUES (?, ?)",
                [(document.id, principal) for principal in sorted(document.acl)],
            )
        added = []
        for c in chunks:
            cursor = self._db.execute(
                'INSERT INTO chunks(id, doc_id, text, start, "end", start_line, end_line, token_count, text_crc)'
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (c.id, c.doc_id, c.text, c.start, c.end, c.start_line, c.end_line, c.token_count, text_crc(c.text)),
            )
            added.append(int(cursor.lastrowid))  # type: ignore[arg-type]
        names = stored_names(metadata, acl)
        self._change_visibility(names, added, add=True)
        if profiles is not None:
            self.put_profiles(added, profiles)
        return removed, added, names

    def put_profiles(self, vector_ids: Sequence[int], profiles: Sequence[ChunkProfile]) -> None:
        """Store the packer's profiles of these chunks, in place of any they had."""
        self._db.executemany(
            "INSERT OR REPLACE INTO chunk_facts(vector_id, exact, signature, shingles, reader, tokens)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (v, p.exact, p.signature, p.shingles, p.reader, p.tokens)
                for v, p in zip(vector_ids, profiles, strict=True)
            ],
        )

    def chunks_lacking_profiles(
        self, reader: ReaderId | None, after: int = 0, limit: int = -1
    ) -> list[tuple[int, str]]:
        """(vector id, text) of the chunks after vector id `after` that have no stored profile, or
        (when `reader` is given) whose counts are another reader's, by vector id."""
        return self._db.execute(
            f"SELECT c.vector_id, c.text {LACKING_PROFILES} ORDER BY c.vector_id LIMIT ?",
            (after, reader, reader, limit),
        ).fetchall()

    def count_lacking_profiles(self, reader: ReaderId | None) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) {LACKING_PROFILES}", (0, reader, reader)).fetchone()[0])

    def delete_documents(self, doc_ids: Sequence[str]) -> list[int]:
        """Delete documents and their chunks; returns the vector ids of the deleted chunks."""
        removed: list[int] = []
        for doc_id in doc_ids:
            found = self._db.execute("SELECT metadata, acl FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if found is None:
                continue
            ids = [row[0] for row in self._db.execute("SELECT vector_id FROM chunks WHERE doc_id = ?", (doc_id,))]
            self._change_visibility(stored_names(*found), ids, add=False)
            removed += ids
            self._db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
            self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        return removed

    def chunks(self, vector_ids: Sequence[int]) -> dict[int, Chunk]:
        """Chunks by vector id (ids deleted meanwhile are absent from the result)."""
        found: dict[int, Chunk] = {}
        ids = [int(i) for i in vector_ids]
        for offset in range(0, len(ids), 500):
            batch = ids[offset : offset + 500]
            rows = self._db.execute(
                'SELECT c.vector_id, c.id, c.doc_id, CAST(c.text AS BLOB), c.start, c."end", c.start_line,'
                " c.end_line, c.token_count, d.metadata, f.exact, f.signature, f.shingles, f.reader, f.tokens,"
                " c.text_crc FROM chunks c JOIN documents d ON d.id = c.doc_id LEFT JOIN chunk_facts f"
                f" ON f.vector_id = c.vector_id WHERE c.vector_id IN ({','.join('?' * len(batch))})",
                batch,
            )
            for row in rows:
                text = self._checked_text(row[1], row[2], row[3], row[15])
                profile = None if row[10] is None else ChunkProfile(
                    exact=row[10], signature=row[11], shingles=row[12], reader=row[13], tokens=row[14],
                    chars=len(text),
                )
                found[row[0]] = Chunk(
                    id=row[1], doc_id=row[2], text=text, start=row[4], end=row[5],
                    start_line=row[6], end_line=row[7], token_count=row[8],
                    metadata=json.loads(row[9]), profile=profile,
                )
        return found

    def _checked_text(self, chunk_id: str, doc_id: str, data: bytes, crc: int | None) -> str:
        """A chunk's text, refused if it is not what was stored (the CRC is checked on the
        bytes, before decoding, so a byte that breaks UTF-8 is caught the same way)."""
        try:
            if crc is not None and zlib.crc32(data) != crc:
                raise ValueError("its text does not match its checksum")
            return data.decode("utf-8")
        except ValueError as exc:
            raise KnowledgeBaseFormatError(
                f"chunk {chunk_id!r} in {self.path} is damaged ({exc}): delete its document and add it "
                f"again (hybridctx delete {doc_id!r}, then index it)"
            ) from exc

    def visible_names(self, scope: Scope) -> list[list[str]] | None:
        """The scope as groups of visibility names: a chunk is visible if it has a name of each
        group (one per filter key: its wanted values; one for the readers when any document has
        an ACL: the public documents and the principal's); None if it sees everything. A value
        matches a metadata value equal to it or, for list-valued metadata, contained in it."""
        groups = [[value_name(key, v) for v in values] for key, values in self._checked_filters(scope).items()]
        if self._has_acl():
            groups.append([PUBLIC] if scope.principal is None else [PUBLIC, principal_name(scope.principal)])
        return groups or None

    def visible_ids(self, scope: Scope) -> VisibleIds | None:
        """The vector ids `scope` sees (`visible_names`); None if it sees everything. Unions and
        intersections of the stored bitmaps: milliseconds for a scope of 2M chunks, where listing
        them took 3.9 s."""
        groups = self.visible_names(scope)
        if groups is None:
            return None
        ids = BitMap64.intersection(
            *(BitMap64.union(BitMap64(), *(self._bitmap(name) for name in group)) for group in groups)
        )
        return VisibleIds(ids, key=json.dumps(groups))

    def visible_size(self, scope: Scope, tokens_above: int | None = None) -> tuple[int, int]:
        """Chunks, and their embedding-model tokens, that `scope` sees; with `tokens_above`,
        counted only until the tokens pass it (beyond, the counts are lower bounds).

        Everything: the totals kept as documents come and go (O(1); a COUNT and SUM over the
        chunks ran on every pack). A scope that sees few chunks (`SUMMED_AT_MOST`): their token
        counts summed by vector id (a filter matching 4,618 of 9.8M chunks took 147 ms through
        the documents, 5 ms so). One that sees more: its documents' counts, read until
        `tokens_above` is passed, so the cost follows the budget asking, not the corpus."""
        visible = self.visible_ids(scope)
        if visible is None:
            return self.totals()[1:]
        if len(visible) <= SUMMED_AT_MOST:
            chunks, tokens = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(token_count), 0) FROM chunks WHERE vector_id IN"
                " (SELECT value FROM json_each(?))", (json.dumps(list(visible.ids)),),
            ).fetchone()
            return int(chunks), int(tokens)
        clauses, params = self._visibility(scope)
        cursor = self._db.execute(
            "SELECT d.n_chunks, d.n_tokens FROM documents d WHERE " + " AND ".join(clauses), params
        )
        chunks = tokens = 0
        while rows := cursor.fetchmany(1_000):
            chunks += sum(row[0] for row in rows)
            tokens += sum(row[1] for row in rows)
            if tokens_above is not None and tokens > tokens_above:
                break
        cursor.close()
        return chunks, tokens

    def _visibility(self, scope: Scope) -> tuple[list[str], list[Any]]:
        """The scope as SQL clauses over documents `d`: for listing documents (a search uses `visible_ids`)."""
        clauses: list[str] = []
        params: list[Any] = []
        for key, values in self._checked_filters(scope).items():
            clauses.append(
                f"EXISTS (SELECT 1 FROM json_each(d.metadata, ?) WHERE value IN ({','.join('?' * len(values))}))"
            )
            params += [f'$."{key}"', *values]
        if self._has_acl():
            if scope.principal is None:
                clauses.append("d.acl IS NULL")
            else:
                clauses.append(
                    "(d.acl IS NULL OR EXISTS (SELECT 1 FROM document_acl a"
                    " WHERE a.doc_id = d.id AND a.principal = ?))"
                )
                params.append(scope.principal)
        return clauses, params

    def _checked_filters(self, scope: Scope) -> dict[str, list[Any]]:
        """Each filter key's wanted values (`visibility.wanted_values`); InvalidArgumentError names
        a key no document was added with (it would match nothing, silently)."""
        filters = wanted_values(scope.filters)
        for key in filters:
            if not self._db.execute("SELECT 1 FROM metadata_keys WHERE key = ?", (key,)).fetchone():
                raise InvalidArgumentError(
                    f"filters: no document in this knowledge base has the metadata key {key!r}"
                    " (filters match the metadata documents were added with)"
                )
        return filters

    def _has_acl(self) -> bool:
        return self._db.execute("SELECT 1 FROM documents WHERE acl IS NOT NULL LIMIT 1").fetchone() is not None

    def chunk_texts(
        self, damaged: list[tuple[str, str]] | None = None, between: tuple[int, int] | None = None
    ) -> Iterator[tuple[int, str, list[str]]]:
        """(vector id, text, visibility names) of every chunk (with a vector id in `between`, both
        ends included), checked, to rebuild an index from. A damaged text is
        KnowledgeBaseFormatError; given a `damaged` list, its (chunk id, document id) is appended
        there instead and the chunk left out: one pass for `repair`, O(corpus)."""
        low, high = between if between is not None else (0, 2**63 - 1)
        rows = self._db.execute(
            "SELECT c.vector_id, c.id, c.doc_id, CAST(c.text AS BLOB), c.text_crc, d.metadata, d.acl FROM chunks c"
            " JOIN documents d ON d.id = c.doc_id WHERE c.vector_id BETWEEN ? AND ? ORDER BY c.vector_id", (low, high),
        )
        names: tuple[str, list[str]] = ("", [])  # a document's chunks come one after another: named once
        for vector_id, chunk_id, doc_id, data, crc, metadata, acl in rows:
            if names[0] != doc_id:
                names = (doc_id, stored_names(metadata, acl))
            try:
                yield vector_id, self._checked_text(chunk_id, doc_id, data, crc), names[1]
            except KnowledgeBaseFormatError:
                if damaged is None:
                    raise
                damaged.append((chunk_id, doc_id))

    def integrity_problems(self) -> list[str]:
        """SQLite's own `PRAGMA integrity_check` (pages, indexes, constraints): O(store)."""
        return [row[0] for row in self._db.execute("PRAGMA integrity_check") if row[0] != "ok"]

    def visible_documents(self, principal: str | None) -> list[tuple[str, str]]:
        """(id, source) of every document `principal` may read, by id."""
        clauses, params = self._visibility(Scope(principal=principal))
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        rows = self._db.execute(f"SELECT d.id, d.metadata FROM documents d{where} ORDER BY d.id", params)
        return [(doc_id, str(json.loads(metadata).get("source", doc_id))) for doc_id, metadata in rows]

    def document_chunks(self, doc_id: str, principal: str | None) -> list[Chunk]:
        """The chunks of one document in text order; none if it is absent or `principal` may not read it."""
        clauses, params = self._visibility(Scope(principal=principal))
        rows = self._db.execute(
            "SELECT c.vector_id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE "
            + " AND ".join(["c.doc_id = ?", *clauses]) + " ORDER BY c.start",
            [doc_id, *params],
        ).fetchall()
        chunks = self.chunks([r[0] for r in rows])
        return [chunks[r[0]] for r in rows if r[0] in chunks]

    def documents_between(self, min_id: int, max_id: int) -> list[str]:
        """Ids of the documents with a chunk whose vector id is in [min_id, max_id]."""
        rows = self._db.execute(
            "SELECT DISTINCT doc_id FROM chunks WHERE vector_id BETWEEN ? AND ? ORDER BY doc_id", (min_id, max_id)
        )
        return [row[0] for row in rows]

    def document_ids(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT id FROM documents ORDER BY id")]

    def matching_ids(self, exact: Sequence[str] = (), under: Sequence[str] = ()) -> list[str]:
        """Ids of the stored documents equal to one of `exact` or starting with one of `under`
        (a folder's path ending in its separator): range scans on the id, O(what matches)."""
        found: list[str] = []
        for doc_id in exact:
            if self._db.execute("SELECT 1 FROM documents WHERE id = ?", (doc_id,)).fetchone():
                found.append(doc_id)
        for prefix in under:
            rows = self._db.execute(
                "SELECT id FROM documents WHERE id >= ? AND id < ? ORDER BY id", (prefix, prefix + "\U0010ffff")
            )
            found += [row[0] for row in rows]
        return list(dict.fromkeys(found))

    def document_list(self, under: str | None = None) -> list[DocumentInfo]:
        """Every document (or those whose id starts with `under`), by id: O(documents listed)."""
        prefix = under or ""
        rows = self._db.execute(
            "SELECT id, metadata, n_chunks, n_tokens, acl IS NOT NULL FROM documents WHERE id >= ? AND id < ?"
            " ORDER BY id",
            (prefix, prefix + "\U0010ffff"),
        )
        return [
            DocumentInfo(id=doc_id, source=str(json.loads(metadata).get("source", doc_id)), chunks=chunks,
                         tokens=tokens, restricted=bool(restricted))
            for doc_id, metadata, chunks, tokens, restricted in rows
        ]

    def totals(self) -> tuple[int, int, int]:
        """Documents, chunks and their tokens in the whole KB (kept as they change: O(1))."""
        documents, chunks, tokens = self._db.execute("SELECT documents, chunks, tokens FROM totals").fetchone()
        return int(documents), int(chunks), int(tokens)
