"""Span geometry: the visible pieces of documents a window shows, merged and ordered.

A `Span` is the uncovered part of a chunk, or neighbouring chunks of one document merged
back into one passage in their original order; `Span.passage` is the one place a `Passage`
is made. Chunks separated by at most `MAX_JOIN_GAP` whitespace characters are one passage.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from hybridctx.schema import Chunk, Ordering, Passage

MAX_JOIN_GAP = 2


@dataclass
class Span:
    """A visible piece of one document: the uncovered part of a chunk, or a merged passage."""

    doc_id: str
    source: str
    start: int
    end: int
    start_line: int
    text: str
    rank: int
    chunks: list[Chunk]

    @property
    def end_line(self) -> int:
        return self.start_line + self.text.count("\n")

    @property
    def whole_chunk(self) -> Chunk | None:
        """The chunk this span shows entirely and alone, if it does (its body count is known)."""
        if len(self.chunks) == 1 and self.text == self.chunks[0].text.strip():
            return self.chunks[0]
        return None

    def touches(self, other: Span) -> bool:
        """Same document, and overlapping or at most a small whitespace gap apart."""
        return (
            self.doc_id == other.doc_id
            and other.start - self.end <= MAX_JOIN_GAP
            and self.start - other.end <= MAX_JOIN_GAP
        )

    def passage(self, number: int) -> Passage:
        """This span shown as passage `[number]`."""
        return Passage(
            number=number, doc_id=self.doc_id, source=self.source, text=self.text, start=self.start,
            end=self.end, start_line=self.start_line, end_line=self.end_line, chunk_ids=[c.id for c in self.chunks],
        )


def sample_span(text: str, source: str = "docs/sample.md", line: int = 1) -> Span:
    """A span of no real document: what the prompt's token joins and header sizes are measured on."""
    return Span("d", source, 0, len(text), line, text, 0, [])


class DocSpans:
    """The spans one document shows, kept sorted: they never overlap, so their starts and
    their ends are both sorted, and the ones near a chunk are found by bisection (a window
    shows many spans of a long document)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, span: Span) -> None:
        i = bisect.bisect_left(self._starts, span.start)
        self.spans.insert(i, span)
        self._starts.insert(i, span.start)
        self._ends.insert(i, span.end)

    def remove(self, span: Span) -> None:
        i = [s is span for s in self.spans].index(True)
        del self.spans[i], self._starts[i], self._ends[i]

    def near(self, start: int, end: int) -> list[Span]:
        """Spans overlapping [start, end) or at most MAX_JOIN_GAP characters away from it."""
        low = bisect.bisect_left(self._ends, start - MAX_JOIN_GAP)
        high = bisect.bisect_right(self._starts, end + MAX_JOIN_GAP)
        return self.spans[low:high]


def neighbours(a: Chunk, b: Chunk) -> bool:
    """Overlapping or touching chunks of one document share text by design: they merge, not dedup."""
    return a.doc_id == b.doc_id and b.start - a.end <= MAX_JOIN_GAP and a.start - b.end <= MAX_JOIN_GAP


def uncovered(chunk: Chunk, shown: list[Span], rank: int) -> list[Span]:
    """The parts of `chunk` not already shown, whitespace-trimmed (none if fully covered)."""
    if not shown and chunk.text == chunk.text.strip():  # the common case, made cheap
        return [Span(chunk.doc_id, chunk.source, chunk.start, chunk.end, chunk.start_line, chunk.text, rank, [chunk])]
    parts, cursor = [], chunk.start
    for s in sorted(shown, key=lambda s: s.start):
        if s.start > cursor:
            parts.append((cursor, s.start))
        cursor = max(cursor, s.end)
    if cursor < chunk.end:
        parts.append((cursor, chunk.end))
    spans = []
    for a, b in parts:
        text = chunk.text[a - chunk.start : b - chunk.start]
        stripped = text.strip()
        if not stripped:
            continue
        lead = len(text) - len(text.lstrip())
        a += lead
        line = chunk.start_line + chunk.text.count("\n", 0, a - chunk.start)
        spans.append(Span(chunk.doc_id, chunk.source, a, a + len(stripped), line, stripped, rank, [chunk]))
    return spans


def merge(spans: list[Span]) -> list[Span]:
    """Overlapping or touching spans of one document become one, in document order."""
    merged: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.doc_id, s.start)):
        last = merged[-1] if merged else None
        if last is None or not last.touches(s):
            merged.append(Span(s.doc_id, s.source, s.start, s.end, s.start_line, s.text, s.rank, list(s.chunks)))
            continue
        if s.end > last.end:
            if s.start >= last.end:
                gap_lines = s.start_line - last.end_line
                last.text += "\n" * gap_lines if gap_lines > 0 else " " if s.start > last.end else ""
                last.text += s.text
            else:
                last.text += s.text[last.end - s.start :]
            last.end = s.end
        last.rank = min(last.rank, s.rank)
        last.chunks += [c for c in s.chunks if c not in last.chunks]
    return merged


def order(spans: list[Span], ordering: Ordering) -> list[Span]:
    """Passages in the window's order (module docstring of `hybridctx.pack.packer`)."""
    if ordering == "canonical":
        return spans  # `merge` leaves them by document and offset
    by_rank = sorted(spans, key=lambda s: s.rank)
    if ordering == "relevance":
        return by_rank
    return by_rank[0::2] + by_rank[1::2][::-1]  # edges: 1, 3, 5, ... 6, 4, 2
