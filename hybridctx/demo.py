"""`hybridctx demo`: index the Python standard library's own source and ask about it.

Every Python install carries this corpus, so the demo runs anywhere with no download.
"""

from __future__ import annotations

import fcntl
import sysconfig
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybridctx.pipeline import Pipeline
    from hybridctx.schema import Answer

# Questions the demo asks, with the module whose source answers each.
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("How do I remove the common leading whitespace from every line of a block of text?", "textwrap.py"),
    ("How do I split a command line string into tokens like a POSIX shell, respecting quotes?", "shlex.py"),
    ("How do I convert a color from RGB to HSV coordinates?", "colorsys.py"),
)
_SKIPPED_PARTS = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(max_files: int | None = 300) -> list[Path]:
    """The standard library's Python files (tests excluded).

    With `max_files`, the smallest `max_files` files plus the modules the demo asks about,
    so the demo indexes in well under a minute on a laptop CPU.
    """
    root = stdlib_root()
    files = sorted(
        (
            p
            for p in root.rglob("*.py")
            if not _SKIPPED_PARTS & set(p.relative_to(root).parts) and p.stat().st_size > 0
        ),
        key=lambda p: (p.stat().st_size, str(p)),
    )
    if max_files is None:
        return files
    chosen = files[:max_files]
    for _, module in QUESTIONS:
        if (root / module) not in chosen:
            chosen.append(root / module)
    return chosen


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
    pack_ms: float
    answer: Answer


def answers(pipe: Pipeline) -> Iterator[DemoAnswer]:
    """Retrieve, pack and answer each of the demo's questions, timing each step."""
    root = str(stdlib_root()) + "/"
    for question, _ in QUESTIONS:
        started = time.perf_counter()
        hits = pipe.retrieve(question)
        retrieved = time.perf_counter()
        context = pipe.pack(question, hits=hits)
        packed = time.perf_counter()
        yield DemoAnswer(
            question=question,
            top_hits=[h.chunk.location.replace(root, "") for h in hits[:3]],
            retrieve_ms=1000 * (retrieved - started),
            pack_ms=1000 * (packed - retrieved),
            answer=pipe.generate(context),
        )
