"""The default `ask`: each passage about the question read on its own.

A small model reads a few hundred tokens well (Gemma 3 270M: 512, `calibrate`), and, asked
for several values, names one and counts up from it ("4951063, 4951064, 4951065, ...") even
with all of them in its prompt: packed with the four needles' sentences alone, Gemma named 0.25
of RULER's multi-value needles, as it did reading one window of whole passages (10 questions).
Even a window of its effective size holds other numbers to confuse it with: asked of the
passage holding the needle alone, it named the needle in 10 of 10 needle and hard-distractor
questions of a probe, against 6 of 10 reading the window (SmolLM2-135M: 10 against 3). So:

1. the candidates are packed into consecutive windows of the size the model reads well;
2. the sentences *about the question* (below) are found in them;
3. each passage holding such a sentence that names something (a number, code or identifier:
   `names`) the question does not is read on its own, all in one batch;
4. the answer is the values each reading takes from its passage's sentences about the
   question, each citing that passage. A number a reading gives that no such sentence holds
   (counted up, or taken from a neighbouring fact) is not an answer.

A question no sentence answers with a name (how, why) is answered from the first window, as
`direct` would, in one generation.

A sentence is about the question when it shares at least `ABOUT_SHARE` of the best sentence's
question words, each weighted by its rarity among the windows' sentences (IDF). The near
twins of a hard-distractor key ("Kalemi" for "Kalomi") share the common words but not the
rare key, and fall below it; the facts of a multi-value or multi-key question share all.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence

from hybridctx.generate.backend import Backend, total_usage
from hybridctx.generate.citations import citation_of, content_words
from hybridctx.pack import Packer
from hybridctx.retrieve import names, sentences
from hybridctx.schema import Answer, Fact, Hit, Ordering, PackedContext, Passage

ABOUT_SHARE = 0.75


def pack_windows(
    packer: Packer, query: str, hits: Sequence[Hit], budget_tokens: int, max_new_tokens: int, max_windows: int,
    ordering: Ordering = "canonical",
) -> list[PackedContext]:
    """The hits packed into consecutive windows of `budget_tokens`, each taking what the
    previous ones left over (at least one window, empty when there are no hits)."""
    windows: list[PackedContext] = []
    remaining = list(hits)
    while remaining and len(windows) < max_windows:
        window = packer.pack(query, remaining, budget_tokens, max_new_tokens=max_new_tokens, ordering=ordering)
        if not window.passages:
            break
        windows.append(window)
        over = {d.chunk_id for d in window.dropped if d.reason == "over_budget"}
        remaining = [h for h in remaining if h.chunk.id in over]
    return windows or [packer.pack(query, hits, budget_tokens, max_new_tokens=max_new_tokens, ordering=ordering)]


def pack_alone(
    packer: Packer, query: str, hits: Sequence[Hit], passage: Passage, budget_tokens: int, max_new_tokens: int,
    ordering: Ordering = "canonical",
) -> PackedContext:
    """`passage` packed on its own from the hits it was made of: one reading's prompt."""
    ids = set(passage.chunk_ids)
    return packer.pack(
        query, [h for h in hits if h.chunk.id in ids], budget_tokens, max_new_tokens=max_new_tokens, ordering=ordering
    )


def about(query: str, windows: Sequence[PackedContext], share: float = ABOUT_SHARE) -> list[list[tuple[int, str]]]:
    """Per window, its sentences about the question, as (passage number, sentence): those whose
    IDF-weighted question words reach `share` of the best sentence's."""
    asked = _stems(query)
    found = [
        [(p.number, s.strip(), _stems(s) & asked) for p in w.passages for s in sentences(p.text)] for w in windows
    ]
    counts = Counter(word for window in found for *_, words in window for word in words)
    total = sum(len(window) for window in found)
    weight = {word: math.log((total + 1) / (n + 0.5)) for word, n in counts.items()}
    scores = [[sum(weight[w] for w in words) for *_, words in window] for window in found]
    best = max((s for window in scores for s in window), default=0.0)
    if best <= 0:
        return [[] for _ in windows]
    return [
        [(number, sentence) for (number, sentence, _), score in zip(window, window_scores, strict=True)
         if score >= share * best]
        for window, window_scores in zip(found, scores, strict=True)
    ]


def map_answer(
    query: str, windows: Sequence[PackedContext], first: Callable[[PackedContext], Answer],
    alone: Callable[[Passage], PackedContext], backend: Backend, max_new_tokens: int, max_readings: int,
    temperature: float = 0.0, on_text: Callable[[str], None] | None = None,
) -> Answer:
    """Each passage of `windows` holding a sentence about the question that names something
    the question does not is read on its own (`alone(passage)`; the first `max_readings`, in
    one batch). The answer is the values the readings take from those sentences, each citing
    its passage, led by the first such reading's own words where every name they give is
    grounded so. `context` is that reading, `windows` all of them, `facts` their sentences.

    Without such passages, or when no reading names a grounded value, `first(windows[0])`
    answers as `direct` does, streaming to `on_text` if it does; otherwise `on_text` receives
    the answer once it is written."""
    started = time.perf_counter()
    asked = names(query)
    readings: list[tuple[Passage, list[str]]] = []  # a passage, and its sentences about the question naming a value
    for window, found in zip(windows, about(query, windows), strict=True):
        by_passage: dict[int, list[str]] = {}
        for number, sentence in found:
            if names(sentence) - asked:
                by_passage.setdefault(number, []).append(sentence)
        readings += [(window.passages[number - 1], held) for number, held in by_passage.items()]
    readings = readings[:max_readings]
    if not readings:
        return first(windows[0]).model_copy(update={"route": "map"})
    contexts = [alone(passage) for passage, _ in readings]
    generations = backend.generate_many(contexts, max_new_tokens, temperature)
    read: list[tuple[PackedContext, str, Fact]] = []
    where: dict[str, str] = {}  # each grounded value, and the passage it was read in
    for (_, held), context, generation in zip(readings, contexts, generations, strict=True):
        grounded = names(generation.text) & set().union(*map(names, held)) - asked
        if grounded and context.passages:
            citation = citation_of(context, 1, explicit=False)
            read.append((context, generation.text, Fact(text=" ".join(held), citations=[citation])))
            where |= {v: citation.location for v in sorted(grounded) if v not in where}
    if not read:
        answer = first(windows[0])
        return answer.model_copy(update={
            "route": "map", "windows": [windows[0], *contexts],
            "usage": total_usage([*generations, answer], seconds=time.perf_counter() - started),
        })
    lead_context, text, _ = read[0]
    text, given = text.strip(), names(text)
    if not given - asked <= where.keys():  # it names what no sentence about the question holds
        text, given = "", set()
    listed = ", ".join(f"{v} ({location})" for v, location in where.items() if v not in given)
    if listed:
        text += ("\nOther passages also name: " if text else "The passages about the question name: ") + listed + "."
    if on_text is not None:
        on_text(text)
    facts = [fact for *_, fact in read]
    return Answer(
        text=text, citations=[c for f in facts for c in f.citations], context=lead_context,
        usage=total_usage(generations, seconds=time.perf_counter() - started), route="map", facts=facts,
        windows=contexts,
    )


def _stems(text: str) -> set[str]:
    """Content words, plural "s" dropped: "numbers" asks about "number"."""
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in content_words(text)}
