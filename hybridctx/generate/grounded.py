"""Answers grounded by construction: the model picks among what the passages hold.

A small model reading code names things that are not there ("Use the quote() method." for a
question `shlex.split` answers) or nothing at all. Offered as `choices` (constrained
decoding), the functions and classes the packed passages define leave it only the pick,
each choice citing the passage that defines it. On 20 "How do I ...?" questions over the
standard library, Gemma 3 270M named the right function 12 times this way and 4 times
answering freely (`bench/bench_code_answers.py`, bench/RESULTS.md).
"""

from __future__ import annotations

import re
from pathlib import PurePath

from hybridctx.schema import PackedContext, Passage

# A definition at the start of a line: Python `def`/`class`, JavaScript `function`, Go `func`,
# Rust `fn`. Names starting with `_` are private and not offered.
_DEFINITION = re.compile(r"^[ \t]*(?:async[ \t]+|pub[ \t]+|export[ \t]+)*(?:def|class|function|func|fn)[ \t]+"
                         r"([A-Za-z]\w*)", re.MULTILINE)


def defined_symbols(context: PackedContext) -> list[str]:
    """One answer per public function or class the context's passages define, in passage
    order, each naming it with its module and citing its passage: "Use `textwrap.dedent` [2]."
    Empty when the passages define nothing (then answer freely)."""
    found: dict[str, int] = {}
    for passage in context.passages:
        module = _module(passage)
        for name in _DEFINITION.findall(passage.text):
            found.setdefault(f"{module}.{name}" if module else name, passage.number)
    return [f"Use `{symbol}` [{number}]." for symbol, number in found.items()]


def _module(passage: Passage) -> str:
    """`textwrap` for .../textwrap.py, `json` for .../json/__init__.py."""
    path = PurePath(passage.source)
    return path.parent.name if path.stem == "__init__" else path.stem
