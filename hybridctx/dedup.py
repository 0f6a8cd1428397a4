"""Duplicate detection for the packer: exact copies by a hash of the normalised text, near
copies by MinHash LSH (datasketch) over word 3-grams.

Shingles are hashed with CRC-32 rather than Python's salted `hash`, so the same candidates
give the same decisions (and the same prompt, which prefix caching needs) in every process.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable

import numpy as np
from datasketch import MinHash, MinHashLSH

from hybridctx.errors import InvalidArgumentError

_WORD = re.compile(r"\w+")
_SHINGLE_WORDS = 3
_NUM_PERM = 64
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))


def exact_key(text: str) -> str:
    """Equal for texts that differ only in whitespace."""
    return hashlib.blake2b(" ".join(text.split()).encode("utf-8", "replace"), digest_size=16).hexdigest()


def shingles(text: str) -> np.ndarray:
    """32-bit hashes of the lower-cased word 3-grams of `text` (of its words, if fewer)."""
    words = np.fromiter(
        (zlib.crc32(w.encode("utf-8", "replace")) for w in _WORD.findall(text.lower())), dtype=np.uint64
    )
    if len(words) >= _SHINGLE_WORDS:
        words = (words[:-2] * _MIX[0]) ^ (words[1:-1] * _MIX[1]) ^ words[2:]
    return np.unique((words ^ (words >> np.uint64(32))).astype(np.uint32))


class DuplicateFilter:
    """Remembers the texts kept so far and names the one a new text repeats, if any.

    `threshold` is the estimated Jaccard similarity of word 3-grams at or above which two
    texts count as near duplicates; None turns near-duplicate detection off.
    """

    def __init__(self, threshold: float | None = 0.8) -> None:
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise InvalidArgumentError(f"near_duplicate_threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._exact: dict[str, str] = {}
        self._permutations = MinHash(num_perm=_NUM_PERM, seed=1).permutations
        # LSH only proposes candidates (its threshold must be below 1); `jaccard` decides.
        self._lsh = MinHashLSH(threshold=min(threshold, 0.95), num_perm=_NUM_PERM) if threshold is not None else None
        self._signatures: dict[str, MinHash] = {}
        self._keys: dict[str, str] = {}
        self._last: tuple[str, MinHash | None] | None = None

    def exact_copy_of(self, text: str) -> str | None:
        return self._exact.get(exact_key(text))

    def near_copy_of(self, text: str, ignore: Callable[[str], bool] = lambda key: False) -> str | None:
        """The kept text this one nearly repeats (best match first), skipping keys `ignore` accepts."""
        signature = self._signature(text)
        if signature is None:
            return None
        best, best_similarity = None, 0.0
        for key in self._lsh.query(signature):
            similarity = signature.jaccard(self._signatures[key])
            if similarity >= self.threshold and similarity > best_similarity and not ignore(key):
                best, best_similarity = key, similarity
        return best

    def add(self, key: str, text: str) -> None:
        if key in self._keys:
            return
        digest = exact_key(text)
        self._keys[key] = digest
        self._exact.setdefault(digest, key)
        signature = self._signature(text)
        if signature is not None:
            self._signatures[key] = signature
            self._lsh.insert(key, signature)  # type: ignore[union-attr]

    def remove(self, key: str) -> None:
        """Forget a kept text (a session evicted its passage)."""
        digest = self._keys.pop(key, None)
        if digest is not None and self._exact.get(digest) == key:
            del self._exact[digest]
        if key in self._signatures:
            del self._signatures[key]
            self._lsh.remove(key)  # type: ignore[union-attr]

    def _signature(self, text: str) -> MinHash | None:
        """None when near duplicates are off or the text has no words to compare."""
        if self._lsh is None:
            return None
        if self._last is not None and self._last[0] is text:
            return self._last[1]  # near_copy_of then add on the same text: hash it once
        hashes = shingles(text)
        signature = None
        if len(hashes):
            signature = MinHash(num_perm=_NUM_PERM, hashfunc=int, permutations=self._permutations, scheme="affine32")
            signature.update_batch(hashes.tolist())
        self._last = (text, signature)
        return signature
