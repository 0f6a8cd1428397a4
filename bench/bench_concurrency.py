"""Queries per second a knowledge base serves while one writer adds documents.

Indexes part of the standard library, then runs reader threads (hybrid `retrieve`, k=100)
for a fixed time with no writer, and again while a writer process adds the rest of the
standard library (embedding included, on the same 2 cores), and prints and records the
queries/s held, the p50/p99 latency and the commits that landed meanwhile.

    .venv/bin/python bench/bench_concurrency.py [--seconds 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

from _results import percentile, write_section

from hybridctx import Pipeline

STDLIB = Path(sysconfig.get_paths()["stdlib"])
QUERIES = ["how are retries configured", "parse command line options", "TimeoutError", "format a date",
           "json decoding error", "thread pool executor shutdown", "read a zip archive", "HTTP status codes"]
WRITER = """
import sys
from hybridctx import Pipeline
with Pipeline.open(sys.argv[1], show_progress=False, commit_every_chunks=256) as pipe:
    pipe.add(sys.argv[2:])
"""


def serve(pipe: Pipeline, seconds: float, threads: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    def loop(offset: int) -> None:
        n = offset
        while time.monotonic() < deadline:
            started = time.perf_counter()
            pipe.retrieve(QUERIES[n % len(QUERIES)], k=100)
            latencies.append(time.perf_counter() - started)
            n += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(latencies) / (time.monotonic() - started), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    first = [str(STDLIB / name) for name in ("json", "email", "http", "asyncio")]
    rest = [str(STDLIB / name) for name in ("concurrent", "logging", "xml", "importlib", "urllib", "unittest")]
    with tempfile.TemporaryDirectory() as tmp:
        kb = Path(tmp) / "kb"
        with Pipeline.open(kb, show_progress=True) as pipe:
            pipe.add(first)
            chunks_before = pipe.stats()["chunks"]
            pipe.retrieve("warm up", k=100)
            idle_qps, idle = serve(pipe, args.seconds, args.threads)
            script = Path(tmp) / "writer.py"
            script.write_text(WRITER)
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            writer = subprocess.Popen([sys.executable, str(script), str(kb), *rest], env=env)
            time.sleep(10)  # the writer's model load, so that the window measures adds
            generation = pipe.kb.generation
            busy_qps, busy = serve(pipe, args.seconds, args.threads)
            commits = pipe.kb.generation - generation
            chunks_during = pipe.stats()["chunks"] - chunks_before
            writer.kill()  # the window is measured; an interrupted add keeps its commits
            writer.wait()
    ms = 1000
    lines = [
        "## Queries during a concurrent add",
        "",
        f"Measured {date.today()} on this machine (2 cores, no GPU) by `bench/bench_concurrency.py`: {args.threads} "
        f"reader threads run hybrid `retrieve` (k=100) for {args.seconds:.0f} s over a KB of {chunks_before:,} chunks "
        "(standard-library json, email, http, asyncio), first alone, then while a writer process adds more of "
        "the standard library (embedding on the same 2 cores, commits every 256 chunks).",
        "",
        "| | queries/s | p50 | p99 |",
        "|---|---|---|---|",
        f"| no writer | {idle_qps:.1f} | {percentile(idle, 0.5) * ms:.0f} ms | {percentile(idle, 0.99) * ms:.0f} ms |",
        f"| during `add` ({commits} commits, {chunks_during:,} chunks landed in the window) | {busy_qps:.1f} | "
        f"{percentile(busy, 0.5) * ms:.0f} ms | {percentile(busy, 0.99) * ms:.0f} ms |",
    ]
    write_section("concurrency", lines)


if __name__ == "__main__":
    main()
