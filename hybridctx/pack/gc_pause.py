"""`gc_paused`: packing runs without Python's cyclic garbage collector."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_gc_lock = threading.Lock()
_gc_pauses = 0  # packs in progress, in all threads
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while packs run (in any thread), and restore it
    as the caller had it when the last one ends. A window allocates thousands of objects that
    survive, which sets off full collections: each walks every object of the process (the
    hits, the packer's memory, the application's), and they took a third of a 1M-token pack.
    Packing makes no reference cycles of its own; any the process makes meanwhile are
    collected when the collector is back."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()
