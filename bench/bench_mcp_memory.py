"""Is the MCP HTTP server's memory bounded under many clients?

Starts `hybridctx mcp --http` on a small KB, then runs rounds of 200 concurrent clients (each
opens a streamable-HTTP session, initializes, searches, fetches a context, closes) and reads
the server's resident memory (VmRSS), threads and open chunk-store files after warm-up and after
each round. Rounds are `--pause` seconds apart, longer than the 10 s after which anyio retires an
idle worker thread, so that each round runs on new threads (per-thread state that outlives its
thread shows as open files that grow). Memory that stops growing from round to round is
bounded; growth that continues with every round is a leak.

    .venv/bin/python bench/bench_mcp_memory.py [--rounds 10] [--clients 200] [--pause 12]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import anyio
from _results import rss_mb, served, write_section


def server_state(pid: int) -> tuple[float, int, int]:
    """Resident MB, threads, and open files of the chunk store (database, WAL, shared memory)."""
    threads = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Threads:"))
    fds = Path(f"/proc/{pid}/fd")
    store_files = 0
    for fd in fds.iterdir():
        try:
            store_files += "chunks.sqlite" in os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
    return rss_mb(pid), int(threads.split()[1]), store_files


async def one_client(url: str, n: int, failures: list[str]) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    try:
        async with streamable_http_client(url) as (read, write, *_), ClientSession(read, write) as session:
            await session.initialize()
            await session.call_tool("search", {"query": f"valve {n % 40} pressure", "k": 10})
            question = f"When is valve {n % 40} serviced?"
            await session.call_tool("get_context", {"query": question, "budget_tokens": 1024})
    except Exception as exc:  # noqa: BLE001  (counted, not hidden: the figure reports them)
        failures.append(f"{type(exc).__name__}: {exc}"[:200])


async def round_of(url: str, clients: int, failures: list[str]) -> None:
    async with anyio.create_task_group() as group:
        for n in range(clients):
            group.start_soon(one_client, url, n, failures)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--pause", type=float, default=12.0, help="seconds between rounds")
    args = parser.parse_args()
    from hybridctx import Document, Pipeline

    with tempfile.TemporaryDirectory() as tmp:
        kb = Path(tmp) / "kb"
        with Pipeline.open(kb, show_progress=False) as pipe:
            pipe.add([Document(id=f"valve-{i}", text=f"Valve {i} is serviced every {i + 2} weeks at {10 + i} bar.")
                      for i in range(40)])
        with served(["mcp", "--kb", str(kb), "--http", "127.0.0.1:"], Path(tmp) / "server.log") as (server, port):
            url = f"http://127.0.0.1:{port}/mcp"
            failures: list[str] = []
            anyio.run(round_of, url, 20, failures)  # warm-up: models loaded, first allocations made
            rows = [("warm-up (20 clients)", *server_state(server.pid), 0.0, len(failures))]
            for r in range(args.rounds):
                time.sleep(args.pause)
                started = time.perf_counter()
                anyio.run(round_of, url, args.clients, failures)
                seconds = time.perf_counter() - started
                rows.append((f"round {r + 1} ({args.clients} clients)", *server_state(server.pid), seconds,
                             len(failures)))
                print(rows[-1], flush=True)
    growth = [b[1] - a[1] for a, b in zip(rows[1:], rows[2:])]
    late = sum(growth[len(growth) // 2:]) / max(1, len(growth) - len(growth) // 2)
    load = os.getloadavg()[0]
    lines = [
        "## MCP server memory under many clients",
        "",
        f"Measured {date.today()} by `bench/bench_mcp_memory.py` (load average {load:.1f}): `hybridctx mcp --http` "
        f"on a 40-document KB; rounds of {args.clients} concurrent streamable-HTTP clients, each initializing, "
        f"searching and fetching a 1,024-token context, {args.pause:.0f} s apart (anyio retires idle worker "
        "threads after 10 s, so each round runs on new threads). The server after each round:",
        "",
        "| after | server RSS (MB) | threads | open chunk-store files | round seconds | client failures so far |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {name} | {rss:,.0f} | {threads} | {files} | {seconds:.1f} | {failed} |"
          for name, rss, threads, files, seconds, failed in rows],
        "",
        f"Growth per round over the second half: **{late:+.1f} MB**, {1024 * late / args.clients:+.0f} KB per "
        "client session (the first round's jump is allocator pools and caches). Zero would be bounded; a "
        "steady positive figure is state kept per closed session.",
    ]
    if failures:
        lines += ["", "First client failure: `" + failures[0] + "`"]
    write_section("mcp-memory", lines)


if __name__ == "__main__":
    main()
