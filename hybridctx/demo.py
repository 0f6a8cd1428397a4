"""`hybridctx demo`: index the Python standard library's own source and ask about it.

Every Python install carries this corpus, so the demo runs anywhere with no download.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

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
