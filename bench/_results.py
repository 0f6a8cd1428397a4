"""Helpers shared by the bench scripts: percentiles, their section of RESULTS.md, and a
`hybridctx` server started on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def write_section(name: str, lines: list[str]) -> None:
    """Print `lines` and put them in RESULTS.md between `<!-- name:begin/end -->`, replacing the old ones."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = "\n".join([begin, *lines, end])
    print(block)
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


@contextmanager
def served(arguments: list[str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`python -m hybridctx ARGUMENTS... PORT` (the last argument completed with a free port) until
    the block ends, once it accepts connections; its output goes to `log`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    *command, last = arguments
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "hybridctx", *command, f"{last}{port}"],
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=out, stderr=out)
        try:
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                if server.poll() is not None:
                    raise SystemExit(log.read_text()[-2000:])
                time.sleep(0.5)
            yield server, port
        finally:
            server.terminate()
            server.wait(timeout=30)


def rss_mb(pid: int) -> float:
    """A process's resident memory (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")
