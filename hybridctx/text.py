"""Names and sentences: the units the retrieval hops, the map strategy and the evals read text by.

A name is a rare, exact term that chains facts together (an identifier, a code, a number of
three digits or more, an acronym), as opposed to the prose words of a question.
"""

from __future__ import annotations

import re

_NAME = re.compile(
    r"(?<![\w.])(?:[A-Z][A-Z0-9_]{2,}|[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+|[a-z]+[A-Z][A-Za-z0-9]*"
    r"|[A-Z][a-z]+[A-Z][A-Za-z0-9]*|[A-Za-z]*\d{3,}[A-Za-z0-9]*)(?![\w])"
)
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?](?=\s|$))?")


def names(text: str) -> set[str]:
    """The names in `text` (see `_NAME`): what a follow-up retrieval can look for exactly."""
    return set(_NAME.findall(text))


def sentences(text: str) -> list[str]:
    """The sentences (or lines) of `text`, each with the names it ties together."""
    return _SENTENCE.findall(text)
