"""Token counting with a real tokenizer, shared by the chunker and the packer.

The chunker counts in the embedding model's tokens (so no chunk is truncated at embed
time); the packer counts in the generating model's tokens (so the prompt fits its window).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

# Long texts are tokenized in pieces of about this many characters, cut at line ends,
# so memory stays bounded on very large files.
_SEGMENT_CHARS = 100_000


@runtime_checkable
class TokenCounter(Protocol):
    def count(self, text: str) -> int:
        """Number of tokens `text` takes, without special tokens."""
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
    """A Hugging Face `tokenizers` tokenizer loaded from a local `tokenizer.json`."""

    def __init__(self, tokenizer_json: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(tokenizer_json))
        self._tok.no_truncation()
        self._tok.no_padding()

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

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
        if end < len(text):
            newline = text.rfind("\n", start, end)
            end = newline + 1 if newline > start else end
        segments.append((start, end))
        start = end
    return segments
