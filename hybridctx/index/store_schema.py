"""The chunk store's SQLite schema, and the upgrades that bring a store made by an earlier
hybridctx up to it (each once, in its own transaction)."""

from __future__ import annotations

import json
import sqlite3
import zlib

from pyroaring import BitMap64

from hybridctx.index.visibility import names_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL,
    acl TEXT,
    n_chunks INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS document_acl (
    doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    principal TEXT NOT NULL,
    PRIMARY KEY (doc_id, principal)
);
CREATE TABLE IF NOT EXISTS chunks (
    vector_id INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    token_count INTEGER NOT NULL,
    text_crc INTEGER  -- CRC-32 of the text's UTF-8, checked on every read (none in older stores)
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id);
-- What the packer needs of each chunk, worked out at index time (schema.ChunkProfile; the
-- table keeps its first name); chunks of a KB made before it simply have none, and the packer
-- works them out itself.
CREATE TABLE IF NOT EXISTS chunk_facts (
    vector_id INTEGER PRIMARY KEY REFERENCES chunks(vector_id) ON DELETE CASCADE,
    exact BLOB NOT NULL,
    signature BLOB,
    shingles BLOB NOT NULL,
    reader INTEGER,
    tokens INTEGER
);
-- Every metadata key a document was ever added with, so that a filter on a key no document
-- has is refused by name instead of matching nothing (kept after the documents go).
CREATE TABLE IF NOT EXISTS metadata_keys (key TEXT PRIMARY KEY) WITHOUT ROWID;
-- Deleted vectors still inside a dense index segment (segments.py): searches skip them.
CREATE TABLE IF NOT EXISTS dead_vectors (vector_id INTEGER PRIMARY KEY);
-- The vector ids of each metadata value, each principal and the public documents (visibility.py).
CREATE TABLE IF NOT EXISTS visibility (name TEXT PRIMARY KEY, ids BLOB NOT NULL) WITHOUT ROWID;
-- Lets every query ask "does any document have an ACL?" without scanning the table.
CREATE INDEX IF NOT EXISTS documents_with_acl ON documents(id) WHERE acl IS NOT NULL;
"""

# Documents, chunks and tokens of the whole KB, kept by triggers in the transaction that
# changes them: "how big is everything" is asked on every pack.
TOTALS = (
    "CREATE TABLE totals (id INTEGER PRIMARY KEY CHECK (id = 0), documents INTEGER NOT NULL,"
    " chunks INTEGER NOT NULL, tokens INTEGER NOT NULL)",
    "CREATE TRIGGER totals_add AFTER INSERT ON documents BEGIN UPDATE totals SET documents = documents + 1,"
    " chunks = chunks + NEW.n_chunks, tokens = tokens + NEW.n_tokens; END",
    "CREATE TRIGGER totals_remove AFTER DELETE ON documents BEGIN UPDATE totals SET documents = documents - 1,"
    " chunks = chunks - OLD.n_chunks, tokens = tokens - OLD.n_tokens; END",
    "INSERT INTO totals SELECT 0, COUNT(*), COALESCE(SUM(n_chunks), 0), COALESCE(SUM(n_tokens), 0) FROM documents",
)
LACKING_PROFILES = (
    "FROM chunks c LEFT JOIN chunk_facts f ON f.vector_id = c.vector_id"
    " WHERE c.vector_id > ? AND (f.vector_id IS NULL OR (? IS NOT NULL AND f.reader IS NOT ?))"
)


def text_crc(text: str) -> int:
    """CRC-32 of a chunk's text as SQLite stores it, UTF-8."""
    return zlib.crc32(text.encode("utf-8"))


def upgrade(db: sqlite3.Connection) -> None:
    """Bring a store made by an earlier hybridctx up to this schema: the chunk text checksum
    column (older rows keep none), the totals (O(documents), once), the metadata keys listed
    (O(documents), once) and the visibility bitmaps (O(chunks), once)."""
    if not any(row[1] == "text_crc" for row in db.execute("PRAGMA table_info(chunks)")):
        db.execute("ALTER TABLE chunks ADD COLUMN text_crc INTEGER")
    has_totals = "SELECT 1 FROM sqlite_master WHERE name = 'totals'"
    if not db.execute(has_totals).fetchone():
        with db:  # the table, its triggers and its first counts in one transaction: no change slips between
            db.execute("BEGIN IMMEDIATE")
            if not db.execute(has_totals).fetchone():
                for statement in TOTALS:
                    db.execute(statement)
    for step, upgrade in (("metadata_keys", _list_metadata_keys), ("visibility", _list_visibility)):
        listed = f"SELECT 1 FROM meta WHERE key = '{step}'"
        if db.execute(listed).fetchone():
            continue
        with db:
            db.execute("BEGIN IMMEDIATE")
            if not db.execute(listed).fetchone():
                upgrade(db)
                db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, 'listed')", (step,))


def _list_metadata_keys(db: sqlite3.Connection) -> None:
    db.execute("INSERT OR IGNORE INTO metadata_keys SELECT DISTINCT j.key FROM documents d, json_each(d.metadata) j")


def _list_visibility(db: sqlite3.Connection) -> None:
    """The visibility bitmaps of every stored document (a document's chunks usually have
    consecutive ids: one range each)."""
    bitmaps: dict[str, BitMap64] = {}
    documents = db.execute(
        "SELECT d.id, d.metadata, d.acl, MIN(c.vector_id), MAX(c.vector_id), COUNT(*)"
        " FROM documents d JOIN chunks c ON c.doc_id = d.id GROUP BY d.id"
    )
    for doc_id, metadata, acl, low, high, count in documents:
        if high - low + 1 == count:
            ids = BitMap64()
            ids.add_range(low, high + 1)
        else:
            ids = BitMap64(row[0] for row in db.execute("SELECT vector_id FROM chunks WHERE doc_id = ?", (doc_id,)))
        for name in stored_names(metadata, acl):
            bitmaps.setdefault(name, BitMap64()).update(ids)
    for name, ids in bitmaps.items():
        write_bitmap(db, name, ids)


def write_bitmap(db: sqlite3.Connection, name: str, ids: BitMap64) -> None:
    """Store a visibility bitmap, run-length compressed; an empty one is dropped."""
    if not ids:
        db.execute("DELETE FROM visibility WHERE name = ?", (name,))
        return
    ids.run_optimize()
    db.execute("INSERT OR REPLACE INTO visibility(name, ids) VALUES (?, ?)", (name, ids.serialize()))


def stored_names(metadata_json: str, acl_json: str | None) -> list[str]:
    """The visibility names of a stored document (visibility.py)."""
    return list(names_of(json.loads(metadata_json), json.loads(acl_json) if acl_json is not None else None))
