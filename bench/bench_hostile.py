"""Peak memory of `hybridctx index` over a folder of hostile files.

The folder holds a 200 MB single-line file, a binary file, a Latin-1 file, an empty file, a
symlink loop, 300 nested folders and the standard library's `json` package as the good
files. The CLI runs in a child process; its peak resident memory (VmHWM) and the failures it
lists are printed and recorded.

    .venv/bin/python bench/bench_hostile.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import date
from pathlib import Path

from _results import write_section

PEAK = r"""
import resource, runpy, sys
sys.argv = ["hybridctx", *sys.argv[1:]]
try:
    runpy.run_module("hybridctx", run_name="__main__")
finally:
    print("peak_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        shutil.copytree(Path(sysconfig.get_paths()["stdlib"]) / "json", corpus / "json")
        with open(corpus / "one-line.txt", "wb") as handle:
            for _ in range(200):
                handle.write(b"lorem ipsum dolor " * 58254)  # about 1 MB, no newline
        (corpus / "binary.txt").write_bytes(bytes(range(256)) * 64)
        (corpus / "latin1.txt").write_bytes("naïve façade".encode("latin-1"))
        (corpus / "empty.md").write_bytes(b"")
        (corpus / "loop").symlink_to(corpus, target_is_directory=True)
        deep = corpus.joinpath(*[f"d{i}" for i in range(300)])
        deep.mkdir(parents=True)
        (deep / "note.md").write_text("A note at the bottom of 300 folders.\n")
        script = Path(tmp) / "peak.py"
        script.write_text(PEAK)
        started = time.perf_counter()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
        run = subprocess.run([sys.executable, str(script), "index", str(corpus), "--kb", str(Path(tmp) / "kb")],
                             capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
    peak_mb = int(run.stderr.split("peak_kib")[-1].split()[0]) / 1024
    failed = [line.strip() for line in run.stderr.splitlines()
              if any(name in line for name in ("one-line", "binary", "latin1", "empty"))]
    print(run.stdout[-3000:], run.stderr[-3000:])
    lines = [
        "## Hostile input: peak memory",
        "",
        f"Measured {date.today()} by `bench/bench_hostile.py`: `hybridctx index` over the standard library's "
        "`json` package plus a 200 MB single-line file, a binary file, a Latin-1 file, an empty file, a symlink "
        f"loop and a note under 300 nested folders. Exit code {run.returncode} (1: some files failed, listed), "
        f"{seconds:.0f} s, **peak resident memory {peak_mb:,.0f} MB** (most of it the embedding model and torch); "
        f"{len(failed)} failures listed:",
        "",
        *[f"- `{line}`" for line in failed],
    ]
    write_section("hostile", lines)


if __name__ == "__main__":
    main()
