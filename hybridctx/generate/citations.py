"""Citations read back from what a model wrote: its `[n]` markers, checked against the
passages its prompt showed, or (when it wrote none) the passage its words come from."""

from __future__ import annotations

import re

from hybridctx.schema import Citation, PackedContext, Passage

_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_WORD = re.compile(r"\w{3,}")
_LEAD = re.compile(r"(?<=[.!?])\s+|\n")  # where an answer's first sentence ends
# Words too common to show that a text comes from a passage.
_COMMON = frozenset(
    "the and for are was were with that this from into its has have had not but you your they them their "
    "there then than which what when where who how does did can will would should could also only each per "
    "all any one two some more most other such these those about after before over under".split()
)


def cite(answer: str, context: PackedContext, min_overlap: float = 0.5, checked: bool = False) -> list[Citation]:
    """Citations of an answer: the `[n]` markers it wrote that name a passage in the context.

    When it wrote none (small models often don't), the passage sharing the most words with
    the answer's first sentence (its claim; an instruction-tuned model explains after it) is
    attributed, if it shares at least `min_overlap` of them; such citations are marked
    `explicit=False`. Markers naming no passage are dropped; with `checked`, so
    are markers naming a passage the text shares no content word with (`supports`): a small
    model copies the prompt's one-shot example, markers included, as if it were a passage's.
    """
    numbers = [
        n for n in markers(answer)
        if (passage := context.passage(n)) is not None and (not checked or supports(answer, passage))
    ]
    if numbers:
        return [citation_of(context, n, explicit=True) for n in numbers]
    words = set(_WORD.findall(_LEAD.split(answer.strip(), maxsplit=1)[0].lower()))
    if not words or not context.passages:
        return []
    overlaps = [len(words & set(_WORD.findall(p.text.lower()))) for p in context.passages]
    best = max(range(len(overlaps)), key=overlaps.__getitem__)
    if overlaps[best] / len(words) < min_overlap:
        return []
    return [citation_of(context, best + 1, explicit=False)]


def content_words(text: str) -> set[str]:
    """The words of a text that can tie it to a passage: three letters or more, not common ones."""
    return {w for w in _WORD.findall(_MARKER.sub(" ", text).lower()) if w not in _COMMON}


def supports(text: str, passage: Passage) -> bool:
    """Whether `passage` can back `text`: they share a content word. A text with none ("It is
    7.") cannot be checked this way and passes."""
    words = content_words(text)
    return not words or not words.isdisjoint(content_words(passage.text))


def markers(text: str) -> list[int]:
    """The passage numbers a text cites as `[n]` or `[n, m]`, each once, in order."""
    numbers = (int(part) for match in _MARKER.finditer(text) for part in match.group(1).split(","))
    return list(dict.fromkeys(numbers))


def unsupported_citations(answer: str, context: PackedContext) -> list[int]:
    """Passage numbers the answer cites that its prompt did not show (a model's invention)."""
    return [n for n in markers(answer) if context.passage(n) is None]


def citation_of(context: PackedContext, number: int, explicit: bool) -> Citation:
    passage = context.passages[number - 1]
    return Citation(
        passage=number, chunk_ids=passage.chunk_ids, doc_id=passage.doc_id, location=passage.location,
        explicit=explicit,
    )
