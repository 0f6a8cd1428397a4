"""`hybridctx demo`: index the Python standard library's own source and ask about it.

Every Python install carries this corpus, so the demo runs anywhere with no download. Each
answer is `ask` choosing among the functions the packed passages define (`defined_symbols`,
reading READ_TOKENS). Answering freely, the embedded Gemma 270M named none of the three right
(bench/RESULTS.md, "code answers"), and the default reader, Qwen2.5-Coder 0.5B Instruct, one in
the lead of its answer (`dedent`; it named the `shlex` module before `shlex.split`, and wrote its
own RGB-to-HSV code); choosing, each names all three.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hybridctx.evals.stdlib import stdlib_files, stdlib_root
from hybridctx.generate.grounded import defined_symbols

if TYPE_CHECKING:
    from hybridctx.pipeline import Pipeline
    from hybridctx.schema import Answer

# Prompt tokens each answer reads. Gemma 270M, choosing, chose right 8 of bench_code_answers'
# 20 questions reading 512 and 9 reading 1,024 (at 512 the colour question's `def` fell out when
# the lexical ranking moved; at 1,024 `textwrap.wrap` drew it from `dedent`); 640 and 768 held.
# Qwen2.5-Coder 0.5B, choosing, names all three reading 768.
READ_TOKENS = 768
# Questions the demo asks, each with the module whose source answers it and the function it names.
QUESTIONS: tuple[tuple[str, str, str], ...] = (
    ("How do I remove the common leading whitespace from every line of a block of text?", "textwrap.py", "dedent"),
    ("How do I split a command line string into tokens like a POSIX shell, respecting quotes?", "shlex.py", "split"),
    ("How do I convert a color from RGB to HSV coordinates?", "colorsys.py", "rgb_to_hsv"),
)


def demo_files(max_files: int | None = 300) -> list[Path]:
    """The standard library files the demo indexes: the smallest `max_files`, plus the
    modules its questions are about."""
    return stdlib_files(max_files, include=[module for _, module, _ in QUESTIONS])


@contextmanager
def one_at_a_time(kb: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Demos sharing a KB take turns (the KB admits one writer): a second `hybridctx demo` waits
    for the first, then finds the corpus indexed and only answers. The lock file sits beside
    the KB, not in it."""
    kb.parent.mkdir(parents=True, exist_ok=True)
    with open(kb.parent / f"{kb.name}.demo.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass
class DemoAnswer:
    """One of the demo's questions, answered, with what it took."""

    question: str
    top_hits: list[str]  # locations of the best three hits, relative to the standard library
    retrieve_ms: float
    answer: Answer


def answers(pipe: Pipeline) -> Iterator[DemoAnswer]:
    """Show the best hits of each of the demo's questions, then answer it."""
    root = str(stdlib_root()) + "/"
    for question, _, _ in QUESTIONS:
        started = time.perf_counter()
        hits = pipe.retrieve(question, k=3)
        yield DemoAnswer(
            question=question,
            top_hits=[h.chunk.location.replace(root, "") for h in hits],
            retrieve_ms=1000 * (time.perf_counter() - started),
            answer=pipe.ask(question, choices=defined_symbols),
        )
