"""The `hybridctx` command line: index, delete, list, stats, search, pack, ask, eval, mcp, serve, compact, repair,
demo.

`--json` on index, delete, list, stats, search and ask prints the result as JSON for scripts.

Exit codes: 0 success; 1 indexing finished but some items failed (listed); 2 bad input or
an unusable knowledge base (message on stderr, no traceback).
"""

from hybridctx.cli import kb, measuring, serving  # noqa: F401  (each registers its commands on `app`)
from hybridctx.cli.common import app, out
from hybridctx.cli.output import print_answer

__all__ = ["app", "main", "out", "print_answer"]


def main() -> None:
    app()
