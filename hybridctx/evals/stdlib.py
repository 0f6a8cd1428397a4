"""The Python standard library's own source: a corpus every Python install carries, so the
demo, the calibration's filler and the benches run anywhere with no download."""

from __future__ import annotations

import sysconfig
from collections.abc import Iterable
from pathlib import Path

_SKIPPED_PARTS = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(max_files: int | None = 300, include: Iterable[str] = ()) -> list[Path]:
    """The standard library's Python files (tests excluded).

    With `max_files`, the smallest `max_files` files plus the modules named in `include`
    (paths relative to the standard library), so a demo indexes in well under a minute on a
    laptop CPU.
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
    for module in include:
        if (root / module) not in chosen:
            chosen.append(root / module)
    return chosen
