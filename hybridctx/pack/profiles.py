"""Chunk profiles: what the packer needs to know of each chunk, worked out at index time.

A profile holds a chunk's exact-duplicate key, MinHash signature and word 3-gram hashes,
and its tokens as a passage body for one reader (a tokenizer and a template, named by a
`ReaderId`). The knowledge base stores it with the chunk (table `chunk_facts`, its on-disk
name) and retrieval brings it back (`Chunk.profile`), so that even a packer's first window
does no tokenizing or hashing of the chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from hybridctx.pack.dedup import sketch_batch
from hybridctx.pack.prompt import PromptTemplate
from hybridctx.schema import ChunkProfile, ReaderId
from hybridctx.tokens import KeyedCounter, TokenCounter


def sketch_profiles(texts: Sequence[str]) -> list[ChunkProfile]:
    """The reader-independent part of chunk profiles: exact keys, MinHash signatures and shingles."""
    return [
        ChunkProfile(
            exact=s.exact, signature=None if s.signature is None else s.signature.astype("<u4").tobytes(),
            shingles=s.shingles.astype("<u4").tobytes(), reader=None, tokens=None, chars=len(text),
        )
        for s, text in zip(sketch_batch(texts), texts, strict=True)
    ]


def reader_id(counter: TokenCounter, template: PromptTemplate) -> ReaderId | None:
    """A 64-bit name for the counts a packer makes: its counter's tokenizer (`KeyedCounter.key`)
    and how its template quotes a body. None when the counter does not name its tokenizer:
    its counts are then never stored."""
    if not isinstance(counter, KeyedCounter):
        return None
    probe = template.body("Probe <passage id=\"1\"> text </passage> <|im_start|> end")
    quoting = f"{type(template).__qualname__}\n{template.control_tokens.key}\n{probe}"
    digest = hashlib.blake2b(f"{counter.key}\n{quoting}".encode(), digest_size=8).digest()
    return ReaderId(int.from_bytes(digest, "little", signed=True))  # SQLite integers are signed 64-bit
