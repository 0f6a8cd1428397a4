"""Duplicate detection for the packer: exact copies by a hash of the normalised text, near
copies by MinHash LSH (datasketch's permutations and band layout) over word 3-grams.

Shingles are hashed deterministically (not with Python's salted `hash`), so the same
candidates give the same decisions (and the same prompt, which prefix caching needs) in
every process, and a text's sketch (exact key, shingles, MinHash signature) can be worked
out once, at index time, and stored with its chunk (`sketch_batch`, `remember`). Sketches
and band keys are computed for a whole batch of texts in a few numpy operations, and the
band table is a plain dict probed by one set intersection: per-text numpy and MinHash calls,
and datasketch's per-key band hashing, dominated the packer's time.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from datasketch import MinHash, MinHashLSH

from hybridctx.errors import InvalidArgumentError
from hybridctx.schema import ChunkProfile

_SHINGLE_WORDS = 3
_NUM_PERM = 32
_SEED = 1
_SKETCH_STEP = 512  # texts sketched at once: bounds the memory of a large index-time batch
# LSH proposes candidates from this share of the threshold up (a copy split across two kept
# chunks has about half their Jaccard); exact Jaccard and containment then decide.
_LSH_REACH = 0.4
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))
# Bytes that belong to words after lower-casing: ASCII letters, digits, '_' and all non-ASCII
# (UTF-8 continuation and lead bytes), so a word is what `\w+` finds in most texts.
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[[*range(ord("a"), ord("z") + 1), *range(ord("0"), ord("9") + 1), ord("_"), *range(128, 256)]] = True
# datasketch's affine32 permutations: h -> a*h + b mod 2^32, with odd a.
_PERMUTATIONS = tuple(
    p.astype(np.uint32) for p in MinHash(num_perm=_NUM_PERM, seed=_SEED, scheme="affine32").permutations
)
_NO_SHINGLES = np.empty(0, dtype=np.uint32)  # with near duplicates off, nothing compares them
_POWERS = np.array([pow(1_000_003, k, 1 << 64) for k in range(64)], dtype=np.uint64)


def exact_key(text: str) -> bytes:
    """Equal for texts that differ only in whitespace."""
    return hashlib.blake2b(" ".join(text.split()).encode("utf-8", "replace"), digest_size=16).digest()


def shingles(text: str) -> np.ndarray:
    """32-bit hashes of the lower-cased word 3-grams of `text` (of its words, if fewer), sorted."""
    return shingle_batch([text])[0]


def shingle_batch(texts: Sequence[str]) -> list[np.ndarray]:
    """`shingles` of each text, computed over all of them at once on their UTF-8 bytes
    (a polynomial hash per word, then 3-grams of words within one text)."""
    encoded = [t.lower().encode("utf-8", "replace") for t in texts]
    data = np.frombuffer(b"\n".join(encoded), dtype=np.uint8)  # "\n" is no word byte: texts stay apart
    text_of_byte = np.repeat(np.arange(len(texts)), [len(e) + 1 for e in encoded])[: len(data)]
    in_word = _WORD_BYTE[data]
    positions = np.flatnonzero(in_word)
    if not len(positions):
        return [np.empty(0, dtype=np.uint32) for _ in texts]
    starts_mask = in_word.copy()
    starts_mask[1:] &= ~in_word[:-1]
    starts = np.flatnonzero(starts_mask)
    word_of = np.cumsum(starts_mask)[positions] - 1
    offset = np.minimum(positions - starts[word_of], len(_POWERS) - 1)
    words = np.add.reduceat(data[positions].astype(np.uint64) * _POWERS[offset], np.searchsorted(positions, starts))
    text_of_word = text_of_byte[starts]
    # 3-grams whose three words lie in one text; texts of fewer words are shingled by their words.
    same_text = text_of_word[:-2] == text_of_word[2:]
    grams = ((words[:-2] * _MIX[0]) ^ (words[1:-1] * _MIX[1]) ^ words[2:])[same_text]
    gram_text = text_of_word[:-2][same_text]
    short = np.bincount(text_of_word, minlength=len(texts))[text_of_word] < _SHINGLE_WORDS
    hashes = np.concatenate([grams, words[short]])
    owners = np.concatenate([gram_text, text_of_word[short]]).astype(np.uint64)
    folded = (hashes ^ (hashes >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    keys = np.unique((owners << np.uint64(32)) | folded)  # sorted by text, then hash
    bounds = np.searchsorted(keys >> np.uint64(32), np.arange(len(texts) + 1, dtype=np.uint64))
    values = keys.astype(np.uint32)
    return [values[bounds[i] : bounds[i + 1]] for i in range(len(texts))]


@dataclass
class Sketch:
    """What dedup needs of one text: its exact key, its shingles (for exact comparisons), its
    MinHash signature (None: no words, or near duplicates off) and, once a filter worked them
    out, its LSH band keys."""

    exact: bytes
    shingles: np.ndarray
    signature: np.ndarray | None
    bands: tuple[int, ...] | None = None


def sketch_batch(texts: Sequence[str]) -> list[Sketch]:
    """Exact keys, MinHash signatures and shingles of these texts, in batches of a bounded size
    (the permutation step holds 32 numbers per shingle)."""
    steps = range(0, len(texts), _SKETCH_STEP)
    return [s for start in steps for s in _sketch_step(texts[start : start + _SKETCH_STEP])]


def _sketch_step(texts: Sequence[str]) -> list[Sketch]:
    batch = shingle_batch(texts)
    sizes = np.array([len(h) for h in batch])
    signatures = np.zeros((len(texts), _NUM_PERM), dtype=np.uint32)
    if sizes.any():
        hashes = np.concatenate(batch)
        permuted = hashes[:, None] * _PERMUTATIONS[0] + _PERMUTATIONS[1]  # wraps mod 2^32, as datasketch's affine32
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[sizes > 0]
        signatures[sizes > 0] = np.minimum.reduceat(permuted, starts, axis=0)
    return [
        Sketch(exact_key(text), hashes, signature if size else None)
        for text, hashes, signature, size in zip(texts, batch, signatures, sizes, strict=True)
    ]


class DuplicateFilter:
    """Remembers the texts kept so far and names the one a new text repeats, if any.

    `threshold` is the Jaccard similarity of word 3-grams at or above which two texts count
    as near duplicates; None turns near-duplicate detection off. MinHash LSH proposes
    candidates cheaply (well below the threshold, so neither estimation noise nor a copy cut
    at other chunk boundaries hides a true near copy); exact set comparisons decide.
    """

    def __init__(self, threshold: float | None = 0.8, sketches: dict | None = None) -> None:
        """`sketches`: where to keep the sketches of texts met, by text (pass a bounded dict
        shared between filters of one threshold, so the same chunks are not sketched again for
        each question; a packer also puts the sketches stored at index time there)."""
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise InvalidArgumentError(f"near_duplicate_threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._exact: dict[bytes, str] = {}
        self._keys: dict[str, bytes] = {}
        self._bands, self._rows = (0, 0) if threshold is None else _lsh_bands(min(threshold * _LSH_REACH, 0.9))
        self._table: defaultdict[int, list[str]] = defaultdict(list)  # band key (of any band) -> kept keys
        self._band_keys: dict[str, tuple[int, ...]] = {}  # kept key -> its band keys
        self._texts: dict[str, str] = {}  # kept key -> its text (near duplicates on)
        self._sketches: dict[str, Sketch] = {} if sketches is None else sketches
        self._stored: dict[str, ChunkProfile] = {}

    def remember(self, stored: dict[str, ChunkProfile]) -> None:
        """Profiles stored at index time, by text: `prepare` reads their sketches from them
        rather than hashing the texts."""
        self._stored = stored

    def prepare(self, texts: Sequence[str]) -> None:
        """Sketch these texts (and find their band keys) in one batch, ahead of
        `exact_copy_of`/`near_copy_of`/`add` on them."""
        texts = list(dict.fromkeys(texts))
        new = [t for t in texts if t not in self._sketches]
        stored = [t for t in new if t in self._stored]
        if self.threshold is None:  # exact keys are all it needs
            for text in new:
                exact = self._stored[text].exact if text in self._stored else exact_key(text)
                self._sketches[text] = Sketch(exact, _NO_SHINGLES, None)
            return
        hashed = [t for t in new if t not in self._stored]
        for text, sketch in zip(hashed, sketch_batch(hashed) if hashed else [], strict=True):
            self._sketches[text] = sketch
        signed = [s for t in stored if (s := self._stored[t].signature) is not None]
        signatures = iter(np.frombuffer(b"".join(signed), dtype="<u4").reshape(-1, _NUM_PERM))  # read as one array
        for text in stored:
            profile = self._stored[text]
            signature = None if profile.signature is None else next(signatures)
            self._sketches[text] = Sketch(profile.exact, np.frombuffer(profile.shingles, dtype="<u4"), signature)
        sketches = [self._sketches[t] for t in texts]
        unbanded = [s for s in sketches if self._lacks_bands(s)]
        if unbanded:
            unbanded_signatures = [s.signature for s in unbanded if s.signature is not None]  # all have one
            keys = _band_keys(np.stack(unbanded_signatures), self._bands, self._rows)
            for sketch, bands in zip(unbanded, keys.tolist(), strict=True):
                sketch.bands = tuple(bands)

    def exact_copy_of(self, text: str) -> str | None:
        return self._exact.get(self._sketch(text).exact)

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
        sketch = self._sketch(text)
        if sketch.bands is None:
            return None
        shared = self._table.keys() & sketch.bands  # one C-level pass: most texts share no band
        if not shared:
            return None
        proposed = {key for band in shared for key in self._table[band]}
        candidates = sorted(key for key in proposed if not ignore(key))  # sorted: the same decision in every process
        if not candidates:
            return None
        best, best_similarity = None, 0.0
        mine = sketch.shingles
        for key in candidates:
            theirs = self._shingles(key)
            common = _common(mine, theirs)
            similarity = common / (mine.size + theirs.size - common)  # Jaccard
            if similarity < self.threshold:  # type: ignore[operator]
                similarity = max(similarity, self._containment(mine, key, common, around(key)))
            if similarity >= self.threshold and similarity > best_similarity:  # type: ignore[operator]
                best, best_similarity = key, similarity
        return best

    def _containment(self, mine: np.ndarray, key: str, common: int, nearby: Sequence[str]) -> float:
        """The share of `mine` in the union of the kept texts `nearby` (`key`, which shares
        `common` of them, and its neighbours): exact when it reaches the threshold, else a bound
        below it (the sum of the parts; the union is only built when that could reach it)."""
        members = [k for k in nearby if k in self._texts]
        parts = sum(common if k == key else _common(mine, self._shingles(k)) for k in members)
        if len(members) < 2 or parts < self.threshold * mine.size:  # type: ignore[operator]
            return parts / mine.size
        return _common(mine, np.unique(np.concatenate([self._shingles(k) for k in members]))) / mine.size

    def add(self, key: str, text: str) -> None:
        if key in self._keys:
            return
        sketch = self._sketch(text)
        self._keys[key] = sketch.exact
        self._exact.setdefault(sketch.exact, key)
        if sketch.bands is not None:
            self._texts[key] = text
            self._band_keys[key] = sketch.bands
            for band in sketch.bands:
                self._table[band].append(key)

    def remove(self, key: str) -> None:
        """Forget a kept text (a session evicted its passage)."""
        digest = self._keys.pop(key, None)
        if digest is not None and self._exact.get(digest) == key:
            del self._exact[digest]
        self._texts.pop(key, None)
        for band in self._band_keys.pop(key, ()):
            kept = self._table[band]
            kept.remove(key)
            if not kept:
                del self._table[band]

    def _sketch(self, text: str) -> Sketch:
        sketch = self._sketches.get(text)
        if sketch is None or self._lacks_bands(sketch):
            self.prepare([text])
            sketch = self._sketches[text]
        return sketch

    def _lacks_bands(self, sketch: Sketch) -> bool:
        return self.threshold is not None and sketch.bands is None and sketch.signature is not None

    def _shingles(self, key: str) -> np.ndarray:
        return self._sketch(self._texts[key]).shingles


def _band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per band of each signature (rows x 32 bits folded, seeded with the band's
    number so that keys of different bands differ and can share one table; a rare collision
    only adds a candidate, which the exact comparison then rejects)."""
    keys = np.tile(np.arange(bands, dtype=np.uint64) * _MIX[1], (len(signatures), 1))
    for row in range(rows):
        keys = keys * _MIX[0] ^ signatures[:, row : bands * rows : rows].astype(np.uint64)
    return keys


@cache
def _lsh_bands(threshold: float) -> tuple[int, int]:
    """datasketch's (bands, rows) for `threshold`: found by numerical integration, worth doing once."""
    lsh = MinHashLSH(threshold=threshold, num_perm=_NUM_PERM)
    return lsh.b, lsh.r


def _common(a: np.ndarray, b: np.ndarray) -> int:
    """How many hashes two sorted arrays of unique hashes share (by bisection: no sort)."""
    if not a.size or not b.size:
        return 0
    at = np.minimum(np.searchsorted(b, a), b.size - 1)
    return int(np.count_nonzero(b[at] == a))

