"""Where hybridctx keeps what it prepares once on this machine (assembled model files, derived
tiers, calibrations): the ground floor, so that every stage can find it without the settings."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """`$HYBRIDCTX_CACHE`, else `$XDG_CACHE_HOME/hybridctx`, else `~/.cache/hybridctx`."""
    root = os.environ.get("HYBRIDCTX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hybridctx"
    )
    return Path(root)
