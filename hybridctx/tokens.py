"""Token counting with a real tokenizer, shared by the chunker and the packer.

The chunker counts in the embedding model's tokens (so no chunk is truncated at embed
time); the packer counts in the generating model's tokens (so the prompt fits its window):
the GGUF's own tokenizer for the embedded model, the model's HF tokenizer for vLLM, and
tiktoken's encodings for OpenAI-style models.
"""

from __future__ import annotations

import hashlib
import os
from bisect import bisect_left
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, cached_property
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from hybridctx.errors import InvalidArgumentError, ModelUnavailableError

# Batches of at least this many characters are counted on all cores (see `count_in_threads`).
_PARALLEL_CHARS = 16_000
# Long texts are tokenized in pieces of about this many characters, cut at line ends,
# so memory stays bounded on very large files.
_SEGMENT_CHARS = 100_000


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens as one model reads them."""

    def count(self, text: str) -> int:
        """Number of tokens `text` takes as the model reads it."""
        ...

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """`count` of each text; implementations batch it (the packer counts thousands)."""
        ...


@runtime_checkable
class KeyedCounter(TokenCounter, Protocol):
    """A counter that names its tokenizer: `key` is equal only for identical tokenizers, so
    the counts a knowledge base stores at index time are reused by every later packer with
    the same key (`hybridctx.pack.profiles`)."""

    key: str


_COUNTING_THREADS = os.cpu_count() or 1


@cache
def _counting_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_COUNTING_THREADS, thread_name_prefix="hybridctx-count")


def count_in_threads(count: Callable[[str], int], texts: Sequence[str]) -> list[int]:
    """`count` of each text, on all cores for large batches: tokenizers written in Rust or C
    (tiktoken, llama.cpp through ctypes) release the GIL while they tokenize, and the packer
    counts hundreds of thousands of tokens per call."""
    if _COUNTING_THREADS < 2 or sum(map(len, texts)) < _PARALLEL_CHARS:
        return [count(t) for t in texts]
    step = -(-len(texts) // _COUNTING_THREADS)
    parts = [texts[i : i + step] for i in range(0, len(texts), step)]
    return [n for part in _counting_pool().map(lambda part: [count(t) for t in part], parts) for n in part]


class RecentValues(dict):
    """A dict that forgets its oldest quarter when it grows beyond `limit`: bounded memory."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._trim()

    def update(self, items: dict) -> None:  # type: ignore[override]
        """Set many at once (faster than one by one)."""
        super().update(items)
        self._trim()

    def _trim(self) -> None:
        if len(self) > self.limit:
            for old in list(islice(self, len(self) // 4)):
                del self[old]


class CachedCounter:
    """Remembers the counts of recent texts: consecutive questions over one knowledge base
    keep meeting the same chunks, and counting them is the packer's main cost."""

    def __init__(self, counter: TokenCounter, limit: int = 200_000) -> None:
        self.counter = counter
        self._counts = RecentValues(limit)

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        known = {t: self._counts[t] for t in texts if t in self._counts}
        new = [t for t in dict.fromkeys(texts) if t not in known]
        if new:
            counted = dict(zip(new, self.counter.count_many(new), strict=True))
            self._counts.update(counted)
            known.update(counted)
        return [known[t] for t in texts]


class OffsetTokenizer(Protocol):
    """A tokenizer that places its tokens in the text: what the chunker cuts and counts with."""

    def offsets(self, text: str) -> TokenOffsets:
        """Where each of the text's tokens starts."""
        ...


class TokenOffsets:
    """Start offsets of every token of a text: counts any character span by bisection."""

    def __init__(self, starts: Sequence[int]) -> None:
        self._starts = starts

    def count(self, start: int, end: int) -> int:
        return bisect_left(self._starts, end) - bisect_left(self._starts, start)

    def cut(self, start: int, end: int, max_tokens: int) -> int:
        """The character offset after at most `max_tokens` tokens from `start` (before `end`)."""
        first = bisect_left(self._starts, start)
        if first + max_tokens >= len(self._starts):
            return end
        return max(start + 1, min(end, self._starts[first + max_tokens]))


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer loaded from a local `tokenizer.json`.

    `add_special_tokens=True` counts what a model server reads for a plain prompt (e.g. a BOS
    token); the chunker counts text alone.
    """

    def __init__(self, tokenizer_json: Path, add_special_tokens: bool = False) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(tokenizer_json))
        self._tok.no_truncation()
        self._tok.no_padding()
        self._special = add_special_tokens
        self._file = Path(tokenizer_json)

    @cached_property
    def key(self) -> str:
        """The tokenizer file's hash: read only when counts are to be stored or matched, not
        for every tokenizer made (the chunker's needs none)."""
        digest = hashlib.sha256(self._file.read_bytes()).hexdigest()[:32]
        return f"hf:{digest}:{'special' if self._special else 'plain'}"

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=self._special).ids)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        # encode_batch_fast skips the character offsets, which counting does not need: twice as fast.
        return [len(e.ids) for e in self._tok.encode_batch_fast(list(texts), add_special_tokens=self._special)]

    def control_tokens(self) -> frozenset[str]:
        """The added tokens marked special: `tokenizers` (and so vLLM) reads each as one control
        token wherever it appears in a text; the others (Gemma's runs of newlines) are text."""
        return frozenset(t.content for t in self._tok.get_added_tokens_decoder().values() if t.special)

    def offsets(self, text: str) -> TokenOffsets:
        segments = _line_segments(text)
        encodings = self._tok.encode_batch(
            [text[a:b] for a, b in segments], add_special_tokens=False
        )
        starts: list[int] = []
        for (seg_start, _), enc in zip(segments, encodings, strict=True):
            starts.extend(seg_start + s for s, _ in enc.offsets)
        return TokenOffsets(starts)


def _line_segments(text: str) -> list[tuple[int, int]]:
    segments = []
    start = 0
    while start < len(text):
        end = min(len(text), start + _SEGMENT_CHARS)
        if end < len(text):  # cut after a line end, else after a space (a single huge line)
            newline = text.rfind("\n", start, end)
            cut = newline if newline > start else text.rfind(" ", start, end)
            end = cut + 1 if cut > start else end
        segments.append((start, end))
        start = end
    return segments


# Each encoding's special tokens, as tiktoken's `tiktoken_ext/openai_public.py` declares them
# (the bpe crate does not list them, and tiktoken reads them only with the ranks it downloads).
_OPENAI_ENCODINGS = {
    "cl100k_base": ("<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>"),
    "o200k_base": ("<|endoftext|>", "<|endofprompt|>"),
}


class TiktokenCounter:
    """Counts in OpenAI's tiktoken encodings (`cl100k_base`, `o200k_base`), offline.

    It counts with the Rust `bpe` crate (GitHub's rust-gems, through the bpe-openai package,
    which bundles the encodings' files): the same counts as tiktoken, twice as fast here
    (316k tokens in 77 ms against 165 ms), and counting is the cold packer's main cost.
    A test holds the counts equal to tiktoken's on code, prose and random Unicode.
    """

    def __init__(self, encoding: str = "cl100k_base") -> None:
        if encoding not in _OPENAI_ENCODINGS:
            raise InvalidArgumentError(f"tiktoken encoding {encoding!r}: use one of {', '.join(_OPENAI_ENCODINGS)}")
        try:
            from bpe_openai._bindings import tokenizer_for_encoding
        except ImportError as exc:
            raise ModelUnavailableError(
                "counting OpenAI-style tokens needs bpe-openai: pip install 'hybridctx[openai]'"
            ) from exc
        self.name = encoding
        self.key = f"tiktoken:{encoding}"
        self._tokenizer = tokenizer_for_encoding(encoding)

    def count(self, text: str) -> int:
        return self._tokenizer.count(text)

    def control_tokens(self) -> frozenset[str]:
        return frozenset(_OPENAI_ENCODINGS[self.name])

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self._tokenizer.count(t) for t in texts]  # it holds the GIL: threads would not help
