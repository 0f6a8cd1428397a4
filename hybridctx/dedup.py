"""Duplicate detection for the packer: exact copies by a hash of the normalised text, near
copies by MinHash LSH (datasketch) over word 3-grams.

Shingles are hashed deterministically (not with Python's salted `hash`), so the same
candidates give the same decisions (and the same prompt, which prefix caching needs) in
every process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

from hybridctx.errors import InvalidArgumentError

_SHINGLE_WORDS = 3
_NUM_PERM = 32
# LSH proposes candidates from this share of the threshold up (a copy split across two kept
# chunks has about half their Jaccard); exact Jaccard and containment then decide.
_LSH_REACH = 0.4
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))
# Bytes that belong to words after lower-casing: ASCII letters, digits, '_' and all non-ASCII
# (UTF-8 continuation and lead bytes), so a word is what `\w+` finds in most texts.
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[[*range(ord("a"), ord("z") + 1), *range(ord("0"), ord("9") + 1), ord("_"), *range(128, 256)]] = True
_POWERS = np.array([pow(1_000_003, k, 1 << 64) for k in range(64)], dtype=np.uint64)


def exact_key(text: str) -> str:
    """Equal for texts that differ only in whitespace."""
    return hashlib.blake2b(" ".join(text.split()).encode("utf-8", "replace"), digest_size=16).hexdigest()


def shingles(text: str) -> np.ndarray:
    """32-bit hashes of the lower-cased word 3-grams of `text` (of its words, if fewer).

    Vectorised over the UTF-8 bytes (a polynomial hash per word), since the packer
    shingles every passage it keeps and a Python loop over words dominated its time.
    """
    data = np.frombuffer(text.lower().encode("utf-8", "replace"), dtype=np.uint8)
    in_word = _WORD_BYTE[data]
    positions = np.flatnonzero(in_word)
    if not len(positions):
        return np.empty(0, dtype=np.uint32)
    starts_mask = in_word.copy()
    starts_mask[1:] &= ~in_word[:-1]
    starts = np.flatnonzero(starts_mask)
    word_of = np.cumsum(starts_mask)[positions] - 1
    offset = np.minimum(positions - starts[word_of], len(_POWERS) - 1)
    words = np.add.reduceat(data[positions].astype(np.uint64) * _POWERS[offset], np.searchsorted(positions, starts))
    if len(words) >= _SHINGLE_WORDS:
        words = (words[:-2] * _MIX[0]) ^ (words[1:-1] * _MIX[1]) ^ words[2:]
    return np.unique((words ^ (words >> np.uint64(32))).astype(np.uint32))


class DuplicateFilter:
    """Remembers the texts kept so far and names the one a new text repeats, if any.

    `threshold` is the Jaccard similarity of word 3-grams at or above which two texts count
    as near duplicates; None turns near-duplicate detection off. MinHash LSH proposes
    candidates cheaply (well below the threshold, so neither estimation noise nor a copy cut
    at other chunk boundaries hides a true near copy); exact set comparisons decide.
    """

    def __init__(self, threshold: float | None = 0.8) -> None:
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise InvalidArgumentError(f"near_duplicate_threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._exact: dict[str, str] = {}
        self._keys: dict[str, str] = {}
        self._permutations = MinHash(num_perm=_NUM_PERM, seed=1, scheme="affine32").permutations
        self._lsh = None
        if threshold is not None:
            self._lsh = MinHashLSH(threshold=min(threshold * _LSH_REACH, 0.9), num_perm=_NUM_PERM)
        self._shingles: dict[str, np.ndarray] = {}
        self._last: tuple[str, np.ndarray, MinHash | None] | None = None

    def exact_copy_of(self, text: str) -> str | None:
        return self._exact.get(exact_key(text))

    def near_copy_of(
        self,
        text: str,
        ignore: Callable[[str], bool] = lambda key: False,
        around: Callable[[str], Sequence[str]] = lambda key: [key],
    ) -> str | None:
        """The kept text this one nearly repeats (most similar first), skipping keys `ignore` accepts.

        A text also counts as a near copy when at least `threshold` of its shingles are in
        the kept texts `around` a match (e.g. its neighbours in one passage): a copy whose
        chunk boundaries fell elsewhere overlaps two kept chunks, each only in part.
        """
        hashes, signature = self._sketch(text)
        if signature is None:
            return None
        best, best_similarity = None, 0.0
        for key in self._lsh.query(signature):  # type: ignore[union-attr]
            if ignore(key):
                continue
            similarity = _jaccard(hashes, self._shingles[key])
            if similarity < self.threshold:  # type: ignore[operator]
                nearby = [self._shingles[k] for k in around(key) if k in self._shingles]
                similarity = max(similarity, _containment(hashes, np.unique(np.concatenate(nearby))))
            if similarity >= self.threshold and similarity > best_similarity:  # type: ignore[operator]
                best, best_similarity = key, similarity
        return best

    def add(self, key: str, text: str) -> None:
        if key in self._keys:
            return
        digest = exact_key(text)
        self._keys[key] = digest
        self._exact.setdefault(digest, key)
        hashes, signature = self._sketch(text)
        if signature is not None:
            self._shingles[key] = hashes
            self._lsh.insert(key, signature)  # type: ignore[union-attr]

    def remove(self, key: str) -> None:
        """Forget a kept text (a session evicted its passage)."""
        digest = self._keys.pop(key, None)
        if digest is not None and self._exact.get(digest) == key:
            del self._exact[digest]
        if self._shingles.pop(key, None) is not None:
            self._lsh.remove(key)  # type: ignore[union-attr]

    def _sketch(self, text: str) -> tuple[np.ndarray, MinHash | None]:
        """Shingles and MinHash of `text`; no MinHash when near duplicates are off or the text
        has no words. `near_copy_of` then `add` on the same text computes them once."""
        if self._last is not None and self._last[0] is text:
            return self._last[1], self._last[2]
        if self._lsh is None:
            return np.empty(0, dtype=np.uint32), None
        hashes = shingles(text)
        signature = None
        if len(hashes):
            signature = MinHash(num_perm=_NUM_PERM, hashfunc=int, permutations=self._permutations, scheme="affine32")
            signature.update_batch(hashes.tolist())
        self._last = (text, hashes, signature)
        return hashes, signature


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted arrays of unique hashes."""
    common = np.intersect1d(a, b, assume_unique=True).size
    return common / (a.size + b.size - common)


def _containment(a: np.ndarray, b: np.ndarray) -> float:
    """The share of `a`'s hashes that are in `b` (both sorted and unique)."""
    return np.intersect1d(a, b, assume_unique=True).size / a.size
