"""Index stage: chunks and their vectors into a persistent knowledge base, and searches over it.

- `kb`: `KnowledgeBase`, the directory on disk (manifest, store, dense and lexical indexes kept
  consistent; one writer, readers on snapshots); start reading here;
- `layout`: the files' names, the manifest, the write lock, the checks made before opening;
- `writer`: `KnowledgeBaseWriter`, the one writer, and its commit;
- `indexer`: the `add` flow (skip unchanged documents, chunk, embed, commit resumably);
- `repair`: every file checked in full, the lexical index and damaged segments rebuilt;
- `store`: the SQLite chunk store (texts, offsets, metadata, ACLs, chunk profiles);
- `dense`: FAISS indexes, their type chosen by size;
- `segments`: the dense index as immutable segments merged by size tier;
- `lexical`: the BM25 index (tantivy).
"""
