"""Batched shingling/MinHash and the counting helpers the packer's speed rests on: they must
give exactly what the one-at-a-time versions give."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from hybridctx.pack.dedup import DuplicateFilter, exact_key, shingle_batch, shingles, sketch_batch
from hybridctx.tokens import CachedCounter, RecentValues, TiktokenCounter, count_in_threads

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "",
    "one",
    "two words",
    "Ünïcode wörds, naïve café — déjà vu; 東京 is a city",
    "   \n\t  ",
    "def f(x):\n    return x * 2  # double it\n",
    "The quick brown fox jumps over the lazy dog near the river bank!",
]


def test_a_batch_shingles_each_text_as_it_would_alone():
    batch = shingle_batch(TEXTS)
    assert len(batch) == len(TEXTS)
    for text, hashes in zip(TEXTS, batch, strict=True):
        alone = shingle_batch([text])[0]
        assert np.array_equal(hashes, alone)
        assert np.all(np.diff(hashes.astype(np.int64)) > 0)  # sorted and unique
    words = len("The quick brown fox jumps over the lazy dog near the river bank".split())
    assert len(batch[0]) == words - 2  # word 3-grams
    assert len(batch[1]) == 0 and len(batch[5]) == 0  # no words, no shingles
    assert len(batch[2]) == 1 and len(batch[3]) == 2  # fewer than three words: the words themselves
    assert np.array_equal(batch[0], batch[7])  # punctuation and case do not change the shingles


def test_a_large_batch_sketches_each_text_as_it_would_alone():
    """Index-time sketching goes in bounded steps; the steps must not change a sketch."""
    texts = [f"Record {i}: the pump at station {i % 7} was serviced on day {i % 31}." for i in range(1100)] + TEXTS
    for batch, text in zip(sketch_batch(texts), texts, strict=True):
        alone = sketch_batch([text])[0]
        assert batch.exact == alone.exact == exact_key(text)
        assert np.array_equal(batch.shingles, alone.shingles)
        assert (batch.signature is None) == (alone.signature is None) == (not text.split())
        assert batch.signature is None or np.array_equal(batch.signature, alone.signature)


def test_shingles_ignore_case_but_not_words():
    assert np.array_equal(shingles("Alpha Beta Gamma"), shingles("alpha beta gamma"))
    assert not np.array_equal(shingles("alpha beta gamma"), shingles("alpha beta delta"))


def test_prepared_and_unprepared_texts_get_the_same_decisions():
    base = " ".join(f"w{i}" for i in range(120))
    near = base.replace("w60", "changed")
    far = " ".join(f"v{i}" for i in range(120))
    prepared, lazy = DuplicateFilter(0.8), DuplicateFilter(0.8)
    prepared.prepare([base, near, far])
    for dup in (prepared, lazy):
        dup.add("base", base)
        assert dup.near_copy_of(near) == "base"
        assert dup.near_copy_of(far) is None


def test_sketches_shared_between_filters_are_reused():
    shared: dict = {}
    first = DuplicateFilter(0.8, sketches=shared)
    first.prepare(TEXTS)
    assert set(shared) == set(TEXTS)
    second = DuplicateFilter(0.8, sketches=shared)
    second.add("a", TEXTS[0])
    assert second.near_copy_of(TEXTS[7]) == "a"


def test_recent_values_stay_bounded_and_forget_the_oldest():
    values = RecentValues(limit=100)
    for i in range(1000):
        values[i] = i
    assert len(values) <= 100
    assert 999 in values and 0 not in values


@pytest.fixture(scope="module")
def tiktoken_counter():
    return TiktokenCounter("cl100k_base")


def test_counting_in_threads_gives_the_sequential_counts(tiktoken_counter):
    texts = [f"Passage {i}: " + "naïve tokenisation of words, numbers 12345 and symbols {}[] " * (i % 40 + 1)
             for i in range(400)]
    assert sum(map(len, texts)) > 100_000  # large enough to be counted on all cores
    assert count_in_threads(tiktoken_counter.count, texts) == [tiktoken_counter.count(t) for t in texts]


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_openai_counts_equal_tiktoken_on_code_prose_and_random_unicode(encoding, tiktoken_encoding):
    reference = tiktoken_encoding(encoding)
    counter = TiktokenCounter(encoding)
    texts = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:60]:
        text = path.read_text(encoding="utf-8", errors="replace")
        texts += [text[i : i + 1500] for i in range(0, min(len(text), 15_000), 1500)]
    rng = random.Random(1)
    alphabet = [chr(c) for c in [*range(32, 0x250), *range(0x370, 0x3FF), *range(0x4E00, 0x4E80),
                                 *range(0x1F600, 0x1F650), 0x200D, 0xFE0F, 0x0301]] + [" ", "\n", "\t", "  ", "\r\n"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300))) for _ in range(2000)]
    assert len(texts) > 2400
    assert counter.count_many(texts) == [len(reference.encode_ordinary(t)) for t in texts]


def test_cached_counter_counts_each_text_once(tiktoken_counter):
    calls = []

    class Recording:
        def count_many(self, texts):
            calls.append(list(texts))
            return tiktoken_counter.count_many(texts)

    cached = CachedCounter(Recording())  # type: ignore[arg-type]
    first = cached.count_many(["alpha beta", "gamma", "alpha beta"])
    second = cached.count_many(["gamma", "delta epsilon"])
    assert first == [tiktoken_counter.count("alpha beta"), tiktoken_counter.count("gamma")] * 1 + [first[0]]
    assert second == [first[1], tiktoken_counter.count("delta epsilon")]
    assert calls == [["alpha beta", "gamma"], ["delta epsilon"]]


def test_hf_counts_in_a_batch_equal_a_full_encoding(tokenizer):
    """count_many skips the offsets (encode_batch_fast); the counts must not change."""
    texts = [*TEXTS, "[CLS] [SEP] [MASK] special-looking", "word " * 3000, '<passage id="7" lines="1-9">\n']
    assert tokenizer.count_many(texts) == [len(tokenizer._tok.encode(t, add_special_tokens=False).ids) for t in texts]
