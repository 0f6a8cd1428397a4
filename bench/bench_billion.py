"""A billion-token knowledge base, built and queried on this machine (issue 17).

`build` generates a reproducible corpus offline (essays' paragraphs, the standard library's
functions and generated ticket records, recombined by a seeded generator: document i is the
same in every run), with metadata on every document, ACLs on two thirds of them (four groups:
a principal of one group sees half the corpus), and planted facts with hard distractors (the
same sentence for near-identical keys, in neighbouring documents). It adds the corpus
through `Pipeline.add` with the static embedder in batches, recording after each batch what
is done in `<kb>/../<name>.progress.json`: stopped and started again, it goes on from there
(a batch cut short is skipped where it was committed: `add` skips unchanged documents).

`measure` opens the KB in a fresh process and measures serving: open time, RSS, hybrid
`retrieve` k=1000 plain / with a metadata filter / as a principal who sees half the corpus,
`pack` of 1,000 candidates into 128k, planted facts in the top 1,000 and in the pack, a commit
of 4,096 chunks. `maintain` times a `refresh_profiles` pass and `compact`. Each writes the "billion" section
of bench/RESULTS.md with every figure the progress file holds.

    .venv/bin/python bench/bench_billion.py build --kb ~/hybridctx-billion/kb [--tokens 1_000_000_000]
    .venv/bin/python bench/bench_billion.py measure --kb ~/hybridctx-billion/kb
    .venv/bin/python bench/bench_billion.py maintain --kb ~/hybridctx-billion/kb
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _results import percentile, write_section  # noqa: E402

from hybridctx import Pipeline  # noqa: E402
from hybridctx.evals.essays import paul_graham_essays  # noqa: E402
from hybridctx.evals.stdlib import stdlib_files  # noqa: E402
from hybridctx.schema import Document  # noqa: E402

SEED = 17
BATCH_DOCUMENTS = 2_000
GROUPS = ("red", "green", "blue", "amber")  # ACL groups: each holds 1/6 of the corpus
TEAMS = ("payments", "search", "infra", "mobile", "data", "support", "security", "growth")
FACT_EVERY = 1_000  # documents: document i with i % FACT_EVERY == FACT_AT carries a planted fact
FACT_AT = 500
WARM_UP = 10  # questions `measure` asks before the timed ones (not among them): a fresh process
# reads the index pages a query needs from disk, and after a page cache emptied by other work the
# first queries took up to 548 ms against a p50 of 135
CHARS_PER_TOKEN = 4.3  # MiniLM tokens of this corpus, to size documents (the KB counts exactly)
# The scopes `measure` retrieves with: a team is drawn independently of a document's text; the
# essays are a kind of document unlike the questions (vault codes), so their nearest chunks are
# seldom essays and a search must go far for 1,000 of them: the hard case for a filter.
SCOPES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("plain", {}), ("filtered by team", {"filters": {"team": TEAMS[0]}}),
    ("filtered to essays", {"filters": {"kind": "essay"}}), ("principal", {"principal": GROUPS[0]}),
)


# -- the corpus ---------------------------------------------------------------------------------
@cache
def paragraphs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Prose (the essays' paragraphs) and code (the standard library's top-level blocks)."""
    prose = tuple(p.strip() for d in paul_graham_essays() for p in d.text.split("\n\n") if len(p.strip()) > 80)
    code: list[str] = []
    for path in stdlib_files(None):
        text = path.read_text(encoding="utf-8", errors="replace")
        code += [b.strip() for b in re.split(r"\n(?=def |class )", text) if 200 < len(b) < 6_000]
    return prose, tuple(code)


def fact_key(j: int) -> str:
    return f"KX-{1000 + j:04d}"


def fact_value(j: int, twin: int = 0) -> str:
    return str(random.Random(f"{SEED}-{j}-{twin}").randint(10_000, 99_999))


def fact(j: int) -> str:
    return f"The access code of vault {fact_key(j)} is {fact_value(j)}."


def distractors(j: int) -> list[str]:
    """The same sentence for near-identical keys (one letter changed), with other codes."""
    key = fact_key(j)
    return [f"The access code of vault {twin}{key[2:]} is {fact_value(j, n + 1)}."
            for n, twin in enumerate(("KY", "KZ"))]


def document(i: int) -> Document:
    """Document i of the corpus: the same in every run."""
    rng = random.Random(SEED * 1_000_003 + i)
    prose, code = paragraphs()
    kind = rng.choices(("essay", "code", "tickets"), weights=(5, 3, 2))[0]
    tokens = int(min(60_000, max(60, rng.lognormvariate(math.log(1_200), 1.0))))
    target = tokens * CHARS_PER_TOKEN
    parts: list[str] = []
    size = 0
    while size < target:
        if kind == "essay":
            part = rng.choice(prose)
        elif kind == "code":
            part = rng.choice(code)
        else:
            part = (f"Ticket {rng.randint(100_000, 999_999)} ({rng.choice(TEAMS)}, priority P{rng.randint(1, 4)}): "
                    f"{rng.choice(prose)[:300]} Status: {rng.choice(('open', 'closed', 'waiting'))}.")
        parts.append(part)
        size += len(part) + 2
    j, at = divmod(i, FACT_EVERY)
    if at == FACT_AT:
        parts.insert(rng.randint(0, len(parts)), fact(j))
    elif at in (FACT_AT + 1, FACT_AT + 2):
        parts.insert(rng.randint(0, len(parts)), distractors(j)[at - FACT_AT - 1])
    acl = None if at in (FACT_AT, FACT_AT + 1, FACT_AT + 2) or rng.random() < 1 / 3 else frozenset({rng.choice(GROUPS)})
    metadata = {"kind": kind, "team": rng.choice(TEAMS), "year": 2015 + i % 12}
    return Document(id=f"doc-{i:08d}", text="\n\n".join(parts), metadata=metadata, acl=acl)


def documents(start: int, stop: int) -> Iterator[Document]:
    return (document(i) for i in range(start, stop))


# -- the build ------------------------------------------------------------------------------------
@dataclass
class Progress:
    """What is committed, kept beside the KB: the build goes on from `next_document`."""

    next_document: int = 0
    tokens: int = 0
    chunks: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, summed over batches
    wall_seconds: float = 0.0
    peak_rss_gib: float = 0.0
    runs: int = 0
    serving: dict[str, Any] | None = None  # the last `measure`
    maintenance: dict[str, Any] | None = None  # the last `maintain`

    @staticmethod
    def path(kb: Path) -> Path:
        return kb.parent / f"{kb.name}.progress.json"

    @classmethod
    def load(cls, kb: Path) -> Progress:
        path = cls.path(kb)
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def save(self, kb: Path) -> None:
        temporary = self.path(kb).with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        temporary.replace(self.path(kb))  # whole or not at all


def peak_rss_gib() -> float:
    """This process's peak resident memory (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def reader() -> Any:
    """The reader every chunk profile here is counted for, and packs are sized by: Gemma 3 270M
    at a 131k window, as the figures in RESULTS were measured (packing only: it never loads)."""
    from hybridctx.generate import LlamaCppBackend

    return LlamaCppBackend("gemma-3-270m", context_window=131_072)


def build(
    kb: Path, tokens: int, batch: int = BATCH_DOCUMENTS, stop_after_batches: int | None = None, **opened: Any
) -> Progress:
    """Add documents until the KB holds `tokens` embedding-model tokens, resumably.
    `opened`: for `Pipeline.open` (default: the static embedder, and the dense index mapped,
    not read: segment files never change, and a writer of 3M vectors held 4.7 GB of them)."""
    kb.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress.load(kb)
    progress.runs += 1
    batches = 0
    with Pipeline.open(kb, **{"embedder": "static", "backend": reader(), "show_progress": False, "mmap_index": True,
                              **opened}) as pipe:
        while progress.tokens < tokens and (stop_after_batches is None or batches < stop_after_batches):
            started = time.perf_counter()
            first = progress.next_document
            report = pipe.add(documents(first, first + batch))
            progress.next_document = first + batch
            _, progress.chunks, progress.tokens = pipe.kb.store.totals()  # a batch cut short counts too
            for stage, seconds in report.seconds.items():
                progress.seconds[stage] = progress.seconds.get(stage, 0.0) + seconds
            progress.wall_seconds += time.perf_counter() - started
            progress.peak_rss_gib = max(progress.peak_rss_gib, peak_rss_gib())
            progress.save(kb)
            batches += 1
            rate = progress.tokens / max(progress.wall_seconds, 1e-9)
            print(f"{progress.next_document:,} documents, {progress.tokens:,} tokens, {progress.chunks:,} chunks, "
                  f"{rate:,.0f} tokens/s, peak RSS {progress.peak_rss_gib:.2f} GiB, load {os.getloadavg()[0]:.1f}",
                  flush=True)
    return progress


# -- serving --------------------------------------------------------------------------------------
def questions(progress: Progress) -> list[tuple[str, str]]:
    """The planted facts the built part of the corpus holds: (question, value)."""
    facts = range(0, max(0, progress.next_document - FACT_AT - 3) // FACT_EVERY + 1)
    if progress.next_document <= FACT_AT + 2:
        return []
    return [(f"What is the access code of vault {fact_key(j)}?", fact_value(j)) for j in facts]


def disk_gib(kb: Path) -> dict[str, float]:
    """Bytes on disk per component of the KB."""
    parts: dict[str, float] = {}
    for path in kb.rglob("*"):
        if path.is_file():
            name = path.name
            part = ("dense index" if name.startswith("dense-") else "lexical index" if "lexical" in str(path)
                    else "chunk store" if name.startswith("store") or name.endswith((".db", ".sqlite", "-wal"))
                    else "other")
            parts[part] = parts.get(part, 0.0) + path.stat().st_size / 2**30
    return parts


def measure(kb: Path, queries: int = 30, commit: bool = True, **opened: Any) -> dict[str, Any]:
    """Serving figures, in this (fresh) process; `opened` as for `build`. `commit`: also time
    adding about one commit of chunks (needs the write lock: not while a build runs)."""

    progress = Progress.load(kb)
    load = os.getloadavg()[0]
    asked = questions(progress)
    started = time.perf_counter()
    pipe = Pipeline.open(kb, **{"embedder": "static", "backend": reader(), "show_progress": False, "mmap_index": True,
                                **opened})
    pipe.retrieve("warm up", k=10)
    open_seconds = time.perf_counter() - started
    rng = random.Random(SEED)
    picked = rng.sample(asked, min(queries + WARM_UP, len(asked)))
    warm_up, sample = picked[:-queries] if len(picked) > queries else [], picked[-queries:]
    for question, _ in warm_up:  # other questions first, as a server has answered some before
        for _, scope in SCOPES:
            pipe.retrieve(question, k=1000, **scope)
    timings: dict[str, list[float]] = {name: [] for name, _ in SCOPES}
    found_top, found_pack, pack_seconds = 0, 0, []
    for question, value in sample:
        for name, scope in SCOPES:
            t0 = time.perf_counter()
            hits = pipe.retrieve(question, k=1000, **scope)
            timings[name].append(time.perf_counter() - t0)
            if name == "plain":
                found_top += any(value in h.chunk.text for h in hits)
                t0 = time.perf_counter()
                context = pipe.pack(question, 128_000, hits=hits)
                pack_seconds.append(time.perf_counter() - t0)
                found_pack += value in context.prompt
    rss = peak_rss_gib()
    segments = pipe.kb.index.spec
    committed = None
    if commit:
        extra = [d.id for d in documents(10**9, 10**9 + 120)]  # about 4,096 chunks more, then taken out again
        started = time.perf_counter()
        added = pipe.add(documents(10**9, 10**9 + 120))
        committed = (time.perf_counter() - started, added.chunks_added)
        pipe.delete(extra)
    pipe.close()
    n = max(1, len(sample))
    return {
        "open_seconds": open_seconds, "rss_gib": rss, "questions": len(sample),
        "retrieve_ms": {k: (1000 * percentile(v, 0.5), 1000 * percentile(v, 0.99)) for k, v in timings.items() if v},
        "pack_ms_p50": 1000 * statistics.median(pack_seconds) if pack_seconds else None,
        "found_top1000": found_top / n, "found_pack128k": found_pack / n,
        "commit": committed, "disk_gib": disk_gib(kb), "tokens": progress.tokens, "chunks": progress.chunks,
        "segments": segments, "load": load,
    }


def maintain(kb: Path, compact: bool = True, **opened: Any) -> dict[str, Any]:
    """Time the upkeep of the built KB: the lexical index rebuilt from the stored texts (when
    it is stale: a KB from an older hybridctx), a `refresh_profiles` pass (every chunk's profile
    is stored by the build: it finds nothing to do) and `compact` (all dense segments merged
    into one index trained afresh), with this process's peak RSS; recorded in the progress file."""
    figures: dict[str, Any] = {}
    with Pipeline.open(kb, **{"embedder": "static", "backend": reader(), "show_progress": True, "mmap_index": True,
                              **opened}) as pipe:
        if not pipe.kb.lexical_current:
            started = time.perf_counter()
            with pipe.kb.writer():  # a writer rebuilds a stale lexical index first
                figures["lexical_rebuild_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        figures["refreshed"] = pipe.refresh_profiles()
        figures["refresh_seconds"] = time.perf_counter() - started
        if compact:
            figures["segments_before"] = pipe.kb.index.spec
            started = time.perf_counter()
            figures["segments_after"] = pipe.rebuild_index()
            figures["compact_seconds"] = time.perf_counter() - started
    progress = Progress.load(kb)
    figures["peak_rss_gib"] = max(peak_rss_gib(), (progress.maintenance or {}).get("peak_rss_gib", 0.0))
    progress.maintenance = {**(progress.maintenance or {}), **figures}
    progress.save(kb)
    return progress.maintenance


def report(kb: Path, write: bool = True) -> None:
    progress = Progress.load(kb)
    measured, kept = progress.serving, progress.maintenance
    total = sum(progress.seconds.values())
    lines = [
        f"## A billion-token knowledge base on this machine ({date.today()})",
        "",
        f"`bench/bench_billion.py`: {progress.next_document:,} generated documents, **{progress.tokens:,} MiniLM "
        f"tokens** in {progress.chunks:,} chunks, static embedder, built in {progress.runs} run(s) "
        f"(resumable); load {os.getloadavg()[0]:.1f} when written.",
        "",
        "| build | figure |",
        "|---|---|",
        f"| wall time | {progress.wall_seconds / 3600:.2f} h |",
        f"| tokens/s end to end | {progress.tokens / max(progress.wall_seconds, 1e-9):,.0f} |",
        *(f"| {stage} | {seconds / 60:.1f} min ({seconds / max(total, 1e-9):.0%}) |"
          for stage, seconds in sorted(progress.seconds.items(), key=lambda s: -s[1])),
        f"| peak RSS of the build | {progress.peak_rss_gib:.2f} GiB |",
    ]
    if measured:
        lines += [
            "",
            "| serving | figure |",
            "|---|---|",
            f"| open | {measured['open_seconds']:.1f} s |",
            f"| RSS after {measured['questions']} questions ({WARM_UP} others asked first) | "
            f"{measured['rss_gib']:.2f} GiB |",
            *(f"| retrieve k=1000 {name} p50 / p99 | {p50:.0f} / {p99:.0f} ms |"
              for name, (p50, p99) in measured["retrieve_ms"].items()),
            f"| pack 1,000 candidates into 128k p50 | {measured['pack_ms_p50']:.0f} ms |",
            f"| planted facts in the top 1,000 / in the 128k pack | {measured['found_top1000']:.2f} / "
            f"{measured['found_pack128k']:.2f} |",
            *([f"| adding {measured['commit'][1]:,} chunks (about one commit) | {measured['commit'][0]:.1f} s |"]
              if measured["commit"] else []),
            *(f"| disk: {part} | {gib:.2f} GiB |" for part, gib in sorted(measured["disk_gib"].items())),
            f"| dense index when measured | {measured['segments']} |",
            *([f"| load average when measured | {measured['load']:.1f} |"] if "load" in measured else []),
        ]
    if kept:
        lines += [
            "",
            "| upkeep | figure |",
            "|---|---|",
            *([f"| lexical index rebuilt from the stored texts | {kept['lexical_rebuild_seconds'] / 60:.1f} min |"]
              if "lexical_rebuild_seconds" in kept else []),
            f"| `refresh_profiles` ({kept['refreshed']:,} chunks lacked a profile) | {kept['refresh_seconds']:.0f} s |",
            *([f"| `compact`: {kept['segments_before']} into {kept['segments_after']} | "
               f"{kept['compact_seconds'] / 60:.1f} min |"] if "compact_seconds" in kept else []),
            f"| peak RSS of the upkeep | {kept['peak_rss_gib']:.2f} GiB |",
        ]
    if write:
        write_section("billion", lines)
    else:
        print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("build", "measure", "maintain"))
    parser.add_argument("--kb", type=Path, required=True)
    parser.add_argument("--tokens", type=lambda s: int(s.replace("_", "")), default=1_000_000_000)
    parser.add_argument("--batch", type=int, default=BATCH_DOCUMENTS, help="Documents per add (and progress record)")
    parser.add_argument("--stop-after-batches", type=int, default=None)
    parser.add_argument("--in-process", action="store_true", help="measure here, not in a fresh process")
    parser.add_argument("--no-results", action="store_true", help="print the figures, leave RESULTS.md alone")
    parser.add_argument("--no-commit", action="store_true", help="measure no commit (a build holds the lock)")
    parser.add_argument("--no-compact", action="store_true", help="maintain without compacting")
    args = parser.parse_args()
    if args.command == "build":
        build(args.kb, args.tokens, args.batch, args.stop_after_batches)
    elif args.command == "maintain":
        maintain(args.kb, compact=not args.no_compact)
    elif args.in_process:
        print(json.dumps(measure(args.kb, commit=not args.no_commit)))
        return
    else:
        done = subprocess.run([sys.executable, __file__, "measure", "--kb", str(args.kb), "--in-process",
                               *(["--no-commit"] if args.no_commit else [])], capture_output=True, text=True,
                              check=True)
        progress = Progress.load(args.kb)
        progress.serving = json.loads(done.stdout.strip().splitlines()[-1])
        progress.save(args.kb)
    report(args.kb, write=not args.no_results)


if __name__ == "__main__":
    main()
