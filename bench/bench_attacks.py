"""The attack suite, by area: how many attack cases run, how many fail, what is guaranteed.

The attacks are tests (tests/test_*.py, kept so that a regression fails CI). This runs them
with a JUnit report and counts the cases of each area; a parametrized case counts once per
parameter, a hypothesis property once (it tries 80-300 generated inputs).

    .venv/bin/python bench/bench_attacks.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

from _results import write_section

# area -> (the test cases that attack it, as "file::name-pattern"; what is guaranteed)
AREAS: dict[str, tuple[list[str], str]] = {
    "Access control": (
        ["test_access_control.py::", "test_tools.py::", "test_mcp.py::", "test_langchain.py::.*principal"],
        "a forbidden document never reaches a caller (search, pack, ask, sessions, citations, MCP "
        "resources, tools); an add never replaces or reveals another principal's document and answers "
        "alike for a taken and a new id; listed MCP URIs read back for any id; tool results carry no "
        "BM25 score (KB-wide statistics: a documented side channel)",
    ),
    "Damaged knowledge bases": (
        ["test_durability.py::", "test_hostile_input.py::.*store_is_gone", "test_hostile_input.py::.*full_disk"],
        "a kill at any point leaves the last commit, and the same add resumes; a damaged or missing "
        "segment, store, chunk text or lexical meta.json is refused naming the file, never read "
        "silently (memory-mapped segments too, when changed since verified); `hybridctx repair` checks "
        "every file in full, rebuilds the lexical index and re-embeds damaged dense segments; a full "
        "disk is DiskFullError with the KB at its last commit",
    ),
    "Hostile input": (
        ["test_hostile_input.py::.*(hostile_files|fifos|too_deep)", "test_sources.py::",
         "test_pack.py::.*(break_out|control_tokens)", "test_properties.py::"],
        "only regular files are read (FIFOs, devices, symlinks listed with their reason, never opened); "
        "every file not indexed is listed; quoted text cannot close its passage or become a control "
        "token of the reading model (each backend's own list)",
    ),
    "Bad arguments": (
        ["test_hostile_input.py::.*(bad_query|cli_refuses)", "test_cli.py::.*(bad_input|traceback|filter)",
         "test_pipeline.py::.*(filters|metadata_keys)", "test_retrieve.py::.*(k_|bad)"],
        "every bad k, query, filter, path or address is a typed error naming it (CLI: exit 2, no "
        "traceback); k is bounded (MAX_K); reading commands never create a KB; an unknown filter key "
        "is named",
    ),
    "Many clients": (
        ["test_concurrency.py::.*threads_that_come_and_go", "test_concurrency.py::.*readers_see_whole"],
        "concurrent readers see whole commits; a thread's SQLite connection is closed once the thread "
        "has ended, so a server's memory is bounded by its live threads (bench_mcp_memory.py)",
    ),
    "A clean terminal": (
        ["test_cli.py::.*two_demos"],
        "no traceback, leak report or llama.cpp warning at exit; two demos on one KB take turns",
    ),
}


def area_of(case: str) -> str | None:
    for area, (patterns, _) in AREAS.items():
        for pattern in patterns:
            file, name = pattern.split("::")
            if case.startswith(file.removesuffix(".py") + "::") and re.search(name, case):
                return area
    return None


def main() -> None:
    files = sorted({p.split("::")[0] for patterns, _ in AREAS.values() for p in patterns})
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        *[f"tests/{f}" for f in files]], env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
        seconds = time.perf_counter() - started
        cases = ET.parse(report).getroot().iter("testcase")
        counts: dict[str, list[int]] = {area: [0, 0] for area in AREAS}
        for case in cases:
            name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
            area = area_of(name)
            if area is None or case.find("skipped") is not None:
                continue
            counts[area][0] += 1
            counts[area][1] += case.find("failure") is not None or case.find("error") is not None
    lines = [
        "## Attack suite by area",
        "",
        f"Measured {date.today()} by `bench/bench_attacks.py` (load average {os.getloadavg()[0]:.1f}, "
        f"{seconds:.0f} s): the attack cases kept as tests, run and counted by area. A parametrized case "
        "counts once per parameter; a hypothesis property once, for its 80-300 generated inputs.",
        "",
        "| area | attack cases | failures | guaranteed |",
        "|---|---:|---:|---|",
        *[f"| {area} | {tries} | {failed} | {AREAS[area][1]} |" for area, (tries, failed) in counts.items()],
    ]
    write_section("attacks", lines)


if __name__ == "__main__":
    main()
