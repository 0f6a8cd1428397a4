"""Chunk stage: split a document into token-bounded chunks at natural boundaries.

Boundaries are tried from coarse to fine: blocks (paragraphs, headings, fenced code),
then sentences, then lines, then a hard cut at a token boundary. Source code (by the
document's `suffix` metadata) is cut into top-level units instead (a definition with its
decorators, comments and inner blank lines), then lines. Every chunk keeps its
character offsets and line numbers in the source document, so citations can point back.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from hybridctx.errors import InvalidArgumentError, UnreadableDocumentError
from hybridctx.schema import Chunk, Document
from hybridctx.tokens import OffsetTokenizer, TokenOffsets

Span = tuple[int, int]

_FENCE = re.compile(r"[ \t]*(```|~~~)")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}[ \t]")
_SENTENCE_GAP = re.compile(r"(?<=[.!?;])\s+")
# "12." or "b." alone at the start of a line numbers a list item: it does not end a sentence.
_ENUMERATOR = re.compile(r"[ \t]*(?:\d{1,9}|[A-Za-z])\.")
_LINE_GAP = re.compile(r"\s*\n\s*")
CODE_SUFFIXES = frozenset(
    ".py .pyi .js .jsx .ts .tsx .java .kt .scala .c .h .cc .cpp .hpp .cs .go .rs .rb .php .swift .sh .bash"
    " .sql .r .jl .lua .pl .el .hs .ml .proto".split()
)


class Chunker(Protocol):
    def chunk(self, document: Document) -> list[Chunk]: ...


class StructuredChunker:
    """Token-aware chunker; overlap repeats whole trailing units (sentences or blocks)."""

    def __init__(self, tokenizer: OffsetTokenizer, max_tokens: int = 200, overlap_tokens: int = 32):
        if overlap_tokens >= max_tokens:
            raise InvalidArgumentError(
                f"overlap_tokens ({overlap_tokens}) must be smaller than max_tokens ({max_tokens})"
            )
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    def chunk(self, document: Document) -> list[Chunk]:
        text = document.text
        if not text.strip():
            raise UnreadableDocumentError(document.metadata.get("source", document.id), "empty document")
        offsets = self.tokenizer.offsets(text)
        code = document.metadata.get("suffix") in CODE_SUFFIXES
        blocks, finest = (code_blocks(text), 1) if code else (structural_blocks(text), 0)  # code: no sentences
        pieces = [piece for block in blocks for piece in _fit(text, block, offsets, self.max_tokens, finest)]
        counts = [offsets.count(*piece) for piece in pieces]
        headings = [not code and _HEADING.match(text, start) is not None for start, _ in pieces]
        newlines = [m.start() for m in re.finditer("\n", text)]
        chunks = []
        for number, (first, last) in enumerate(
            _windows(counts, headings, self.max_tokens, self.overlap_tokens)
        ):
            start, end = pieces[first][0], pieces[last - 1][1]
            chunks.append(
                Chunk(
                    id=f"{document.id}#{number}",
                    doc_id=document.id,
                    text=text[start:end],
                    start=start,
                    end=end,
                    start_line=bisect_left(newlines, start) + 1,
                    end_line=bisect_left(newlines, end - 1) + 1,
                    token_count=offsets.count(start, end),
                    metadata=dict(document.metadata),
                )
            )
        return chunks


def structural_blocks(text: str) -> list[Span]:
    """Spans of paragraphs, heading-led sections and whole fenced code blocks."""
    blocks: list[Span] = []
    block_start: int | None = None
    in_fence = False
    pos = 0
    for line in text.splitlines(keepends=True):
        line_start, pos = pos, pos + len(line)
        is_fence = _FENCE.match(line) is not None
        if in_fence:
            if is_fence:
                blocks.append((block_start, pos))  # type: ignore[arg-type]
                block_start, in_fence = None, False
            continue
        starts_block = is_fence or _HEADING.match(line) is not None
        if not line.strip() or starts_block:
            if block_start is not None:
                blocks.append((block_start, line_start))
                block_start = None
        if line.strip() and block_start is None:
            block_start = line_start
        in_fence = is_fence
    if block_start is not None:
        blocks.append((block_start, len(text)))
    return [span for span in (_trim(text, s) for s in blocks) if span[0] < span[1]]


def code_blocks(text: str) -> list[Span]:
    """Spans of top-level units of source code: a unit starts at an unindented line after a
    blank one (a closing bracket continues the unit), so a definition keeps its decorators,
    comments and inner blank lines."""
    starts, pos, after_blank = [0], 0, True
    for line in text.splitlines(keepends=True):
        if line.strip():
            if after_blank and pos and not line[0].isspace() and line[0] not in ")]}":
                starts.append(pos)
            after_blank = False
        else:
            after_blank = True
        pos += len(line)
    bounds = [*starts, len(text)]
    return [span for span in (_trim(text, (a, b)) for a, b in zip(bounds, bounds[1:])) if span[0] < span[1]]


def _trim(text: str, span: Span) -> Span:
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


Gaps = Callable[[str, int, int], Iterable[re.Match[str]]]  # (text, start, end): `Pattern.finditer`'s shape


def _sentence_gaps(text: str, start: int, end: int) -> Iterator[re.Match[str]]:
    """Gaps after a sentence, not after a list item's number: split there, a long numbered
    list came apart into pieces like "volonal / 1221.", an item's number in one chunk and its
    text in the next."""
    for gap in _SENTENCE_GAP.finditer(text, start, end):
        line_start = max(start, text.rfind("\n", start, gap.start()) + 1)
        if not _ENUMERATOR.fullmatch(text, line_start, gap.start()):
            yield gap


def _split_by(gaps: Gaps) -> Callable[[str, Span], list[Span]]:
    def split(text: str, span: Span) -> list[Span]:
        start, end = span
        parts, cursor = [], start
        for gap in gaps(text, start, end):
            parts.append((cursor, gap.start()))
            cursor = gap.end()
        parts.append((cursor, end))
        return [p for p in (_trim(text, p) for p in parts) if p[0] < p[1]]

    return split


_FINER_SPLITS = (_split_by(_sentence_gaps), _split_by(_LINE_GAP.finditer))


def _fit(text: str, span: Span, offsets: TokenOffsets, max_tokens: int, level: int = 0) -> list[Span]:
    """Split `span` at the coarsest boundary that makes every part fit in `max_tokens`."""
    if offsets.count(*span) <= max_tokens:
        return [span]
    for depth in range(level, len(_FINER_SPLITS)):
        parts = _FINER_SPLITS[depth](text, span)
        if len(parts) > 1:
            return [p for part in parts for p in _fit(text, part, offsets, max_tokens, depth)]
    return _hard_split(text, span, offsets, max_tokens)


def _hard_split(text: str, span: Span, offsets: TokenOffsets, max_tokens: int) -> list[Span]:
    parts, (start, end) = [], span
    while start < end:
        cut = offsets.cut(start, end, max_tokens)
        parts.append(_trim(text, (start, cut)))
        start = cut
    return [p for p in parts if p[0] < p[1]]


def _windows(counts: list[int], headings: list[bool], max_tokens: int, overlap_tokens: int) -> list[Span]:
    """Group consecutive pieces into windows of at most `max_tokens`, with unit overlap.

    A heading never ends a window that has more text after it: it moves on to lead the next.
    Every window adds a piece the previous one did not show (no window of overlap alone).
    """

    def end_of(first: int) -> int:
        last, total = first, 0
        while last < len(counts) and total + counts[last] <= max_tokens:
            total += counts[last]
            last += 1
        while last < len(counts) and last - 1 > first and headings[last - 1]:
            last -= 1
        return max(last, first + 1)

    windows: list[Span] = []
    first, shown = 0, 0  # shown: pieces before this index are in some window already
    while first < len(counts):
        last = end_of(first)
        if last <= shown:  # the overlap left no room for a new piece: start after it
            first = shown
            last = end_of(first)
        windows.append((first, last))
        shown = last
        if last == len(counts):
            break
        back, repeated = last, 0
        while back - 1 > first and repeated + counts[back - 1] <= overlap_tokens:
            repeated += counts[back - 1]
            back -= 1
        first = back
    return windows
