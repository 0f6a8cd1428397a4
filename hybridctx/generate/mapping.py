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
   `text.names`) the question does not is read on its own, all in one batch;
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
from collections.abc import Sequence

from hybridctx.generate.backend import total_usage
from hybridctx.generate.citations import citation_of, content_words
from hybridctx.generate.reader import Reader
from hybridctx.generate.strategy import Question
from hybridctx.pack.context import ContextBuilder, Windows
from hybridctx.schema import Answer, Fact, PackedContext, Passage
from hybridctx.text import names, sentences

ABOUT_SHARE = 0.75


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


class MapStrategy:
    """Map over the windows of the budget's recall (`ContextBuilder.windows`), each passage
    about the question read on its own (`ContextBuilder.alone`), at most `max_readings` of them."""

    def __init__(self, builder: ContextBuilder, reader: Reader, max_windows: int = 8) -> None:
        self.builder = builder
        self.reader = reader
        self.max_windows = max_windows

    def answer(self, question: Question) -> Answer:
        return self.read(question, self.builder.windows(
            question.query, question.reading, question.scope, self.max_windows
        ))

    def read(self, question: Question, windows: Windows) -> Answer:
        """Each passage of `windows` holding a sentence about the question that names something
        the question does not is read on its own (the first `max_windows`, in one batch). The
        answer is the values the readings take from those sentences, each citing its passage,
        led by the first such reading's own words where every name they give is grounded so.
        `context` is that reading, `windows` all of them, `facts` their sentences.

        Without such passages, or when no reading names a grounded value, the first window
        answers as `direct` does, streaming to `on_text` if it does; otherwise `on_text`
        receives the answer once it is written."""
        started = time.perf_counter()
        query, reading = question.query, question.reading
        asked = names(query)
        readings: list[tuple[Passage, list[str]]] = []  # a passage, and its sentences about the question naming a value
        for window, found in zip(windows.contexts, about(query, windows.contexts), strict=True):
            by_passage: dict[int, list[str]] = {}
            for number, sentence in found:
                if names(sentence) - asked:
                    by_passage.setdefault(number, []).append(sentence)
            readings += [(window.passages[number - 1], held) for number, held in by_passage.items()]
        readings = readings[:self.max_windows]
        if not readings:
            return self._first(question, windows)
        contexts = [self.builder.alone(query, windows, passage, reading) for passage, _ in readings]
        generations = self.reader.backend.generate_many(contexts, reading.max_new_tokens, question.temperature)
        read: list[tuple[PackedContext, str, Fact]] = []
        where: dict[str, str] = {}  # each grounded value, and the passage it was read in
        for (_, held), context, generation in zip(readings, contexts, generations, strict=True):
            grounded = names(generation.text) & set().union(*map(names, held)) - asked
            if grounded and context.passages:
                citation = citation_of(context, 1, explicit=False)
                read.append((context, generation.text, Fact(text=" ".join(held), citations=[citation])))
                where |= {v: citation.location for v in sorted(grounded) if v not in where}
        if not read:
            answer = self._first(question, windows)
            return answer.model_copy(update={
                "windows": [windows.contexts[0], *contexts],
                "usage": total_usage([*generations, answer], seconds=time.perf_counter() - started),
            })
        lead_context, text, _ = read[0]
        text, given = text.strip(), names(text)
        if not given - asked <= where.keys():  # it names what no sentence about the question holds
            text, given = "", set()
        listed = ", ".join(f"{v} ({location})" for v, location in where.items() if v not in given)
        if listed:
            lead = "\nOther passages also name: " if text else "The passages about the question name: "
            text += lead + listed + "."
        if question.on_text is not None:
            question.on_text(text)
        facts = [fact for *_, fact in read]
        return Answer(
            text=text, citations=[c for f in facts for c in f.citations], context=lead_context,
            usage=total_usage(generations, seconds=time.perf_counter() - started), route="map", facts=facts,
            windows=contexts,
        )

    def _first(self, question: Question, windows: Windows) -> Answer:
        """The first window answered as `direct` would, streamed."""
        reading = question.reading
        answer = self.reader.answer(windows.contexts[0], reading.max_new_tokens, question.temperature, question.on_text)
        return answer.model_copy(update={"route": "map"})


def _stems(text: str) -> set[str]:
    """Content words, plural "s" dropped: "numbers" asks about "number"."""
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in content_words(text)}
