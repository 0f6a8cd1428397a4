"""Code answers: does the embedded model name the right function, freely or choosing among
the functions the packed passages define (`ask(..., choices=defined_symbols)`)?

Twenty "How do I ...?" questions over the demo corpus (the standard library's ~300 smallest
files plus the demo's modules), the demo's three first, each asked at several reading
lengths (`Settings.effective_context`). Counts, per reading length: answers naming the
right function (freely / choosing), and questions whose packed passages define it at all
(what retrieval and packing leave the model to find). Writes the "code answers" section of
bench/RESULTS.md. A few minutes on 2 cores.

    .venv/bin/python bench/bench_code_answers.py [--max-files 300] [--reads 512 1024 2048]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _results import write_section

from hybridctx import Pipeline
from hybridctx.demo import QUESTIONS, demo_files
from hybridctx.generate.grounded import defined_symbols

# The demo's questions, then 17 more over modules of the demo corpus: (question, module.function).
CODE_QUESTIONS = [(question, f"{module[:-3]}.{function}") for question, module, function in QUESTIONS] + [
    ("How do I check whether a filename matches a shell-style wildcard pattern?", "fnmatch.fnmatch"),
    ("How do I find all the pathnames matching a pattern like *.txt?", "glob.glob"),
    ("How do I insert an item into a sorted list and keep it sorted?", "bisect.insort"),
    ("How do I make a deep copy of an object?", "copy.deepcopy"),
    ("How do I compare two files to see if they are equal?", "filecmp.cmp"),
    ("How do I generate a secure random text token for use in a URL?", "secrets.token_urlsafe"),
    ("How do I read a password from the terminal without echoing it?", "getpass.getpass"),
    ("How do I compile a Python source file to byte-code?", "py_compile.compile"),
    ("How do I sort the nodes of a dependency graph in topological order?", "graphlib.TopologicalSorter"),
    ("How do I put the terminal into raw mode?", "tty.setraw"),
    ("How do I get a line from a file by its line number, with caching?", "linecache.getline"),
    ("How do I parse command line options like Unix getopt?", "getopt.getopt"),
    ("How do I open a persistent dictionary stored in a file?", "shelve.open"),
    ("How do I escape a string so that it is safe to use in a shell command?", "shlex.quote"),
    ("How do I convert a color from HLS to RGB?", "colorsys.hls_to_rgb"),
    ("How do I add a prefix to the beginning of selected lines of text?", "textwrap.indent"),
    ("How do I compute a keyed hash of a message for authentication?", "hmac.new"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-files", type=int, default=300)
    parser.add_argument("--reads", type=int, nargs="+", default=[512, 1024, 2048])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        kb = Path(tmp) / "kb"
        with Pipeline.open(kb, show_progress=False) as pipe:
            pipe.add(demo_files(args.max_files))
        for read in args.reads:
            with Pipeline.open(kb, show_progress=False, effective_context=read,
                               budget_tokens=max(2048, read + 200)) as pipe:
                free = chose = defined = 0
                for question, function in CODE_QUESTIONS:
                    name = function.split(".")[1]
                    grounded = pipe.ask(question, choices=defined_symbols)
                    chose += f"`{function}`" in grounded.text
                    defined += f"`{function}`" in " ".join(defined_symbols(grounded.context))
                    free += name in pipe.ask(question).text
                    print(f"{read:>5} {function:28} chose: {grounded.text}", flush=True)
                rows.append((read, free, chose, defined))
    load = os.getloadavg()[0]
    n = len(CODE_QUESTIONS)
    write_section("code-answers", [
        "## Code answers: naming the right function (embedded Gemma 3 270M, llama.cpp)",
        "",
        f"{n} \"How do I ...?\" questions over the demo corpus ({args.max_files} standard-library files; the "
        "demo's three first), answered by the default `ask` reading N prompt tokens "
        "(`Settings.effective_context`): freely, or choosing among the functions the packed passages define "
        "(`choices=defined_symbols`, constrained decoding). *Defined* is how many questions' packed passages "
        "hold the function at all: what retrieval and packing leave the model to pick. "
        f"`bench/bench_code_answers.py`, {(time.perf_counter() - started) / 60:.1f} min, load {load:.1f}.",
        "",
        "| read (tokens) | free answer names it | choosing names it | defined in the passages |",
        "|---|---|---|---|",
        *(f"| {read:,} | {free}/{n} | **{chose}/{n}** | {defined}/{n} |" for read, free, chose, defined in rows),
    ])


if __name__ == "__main__":
    main()
