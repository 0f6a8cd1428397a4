"""Evaluation tasks: facts invented at run time (seeded), planted into a haystack.

Every task yields `Case`s: a question, the sentences planted for it (needles), the values a
correct answer names, and hard distractors where the task has them. The task definitions
follow RULER (Hsieh et al., 2024, "RULER: What's the Real Context Size of Your Long-Context
Language Models?"): multi-key, multi-value and multi-query needle retrieval, variable
tracking, and common-words aggregation; plus the classic single needle, a multi-needle
question, and the "magic number for city X" family of near-identical keys.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hybridctx.errors import InvalidArgumentError
from hybridctx.schema import Document
from hybridctx.tokens import TokenCounter

TaskName = Literal[
    "needle", "multi_needle", "hard_distractors", "multi_key", "multi_value", "multi_query",
    "variable_tracking", "aggregation",
]
TASKS: tuple[TaskName, ...] = TaskName.__args__  # type: ignore[attr-defined]


@dataclass
class Case:
    task: TaskName
    question: str
    needles: list[str]  # sentences that must reach the model
    values: list[str]  # what a correct answer names
    depths: list[float] = field(default_factory=list)  # where each needle sits in the haystack, 0..1
    distractors: list[str] = field(default_factory=list)  # planted too; their values are wrong answers
    distractor_values: list[str] = field(default_factory=list)

    def context_score(self, prompt: str) -> float:
        """The share of needles present in the prompt."""
        text = _flat(prompt)
        return sum(_flat(n) in text for n in self.needles) / len(self.needles)

    def answer_score(self, answer: str) -> float:
        """The share of expected values the answer names."""
        text = answer.lower()
        return sum(v.lower() in text for v in self.values) / len(self.values)

    def distractor_score(self, answer: str) -> float:
        text = answer.lower()
        return sum(v.lower() in text for v in self.distractor_values) / max(1, len(self.distractor_values))


@dataclass
class AggregationCase(Case):
    """RULER's common-words extraction: the context is a word list; scored by whether the
    prompt still shows the right words as the most frequent ones."""

    vocabulary: list[str] = field(default_factory=list)

    def context_score(self, prompt: str) -> float:
        counts = Counter(w for w in re.findall(r"[a-z]+", prompt.lower()) if w in set(self.vocabulary))
        top = {w for w, _ in counts.most_common(len(self.values))}
        return len(top & set(self.values)) / len(self.values)


def _flat(text: str) -> str:
    return " ".join(text.split())


# -- invented names and numbers --------------------------------------------------------------
_SYLLABLES = "ka lo mi ren tas vo qui bel dor fen gal hus ist jor nal pra".split()


class TaskRandom(random.Random):
    """The seeded randomness of one evaluation run; it never hands out the same name twice,
    so no two facts of a run share a key (unless a task wants near twins)."""

    def __init__(self, seed: int | float | str | None = None) -> None:
        super().__init__(seed)
        self.used: set[str] = set()

    def name(self, syllables: int = 3) -> str:
        for _ in range(10_000):
            name = "".join(self.choice(_SYLLABLES) for _ in range(syllables)).capitalize()
            if name not in self.used:
                self.used.add(name)
                return name
        raise InvalidArgumentError(f"ran out of unused {syllables}-syllable names: evaluate fewer cases per run")


def _number(rng: TaskRandom) -> str:
    return str(rng.randint(1_000_000, 9_999_999))


def _magic(key: str, value: str) -> str:
    return f"The special magic number for {key} is {value}."


def _near_twins(rng: TaskRandom, key: str, n: int) -> list[str]:
    """Names one letter away from `key`."""
    twins: set[str] = set()
    while len(twins) < n:
        i = rng.randrange(1, len(key))
        twin = key[:i] + rng.choice("aeiourlnst") + key[i + 1 :]
        if twin != key and twin not in rng.used:
            twins.add(twin)
    rng.used |= twins
    return sorted(twins)


# -- task generators: (rng, depths) -> Case ------------------------------------------------------
def needle(rng: TaskRandom, depths: Sequence[float]) -> list[Case]:
    """One fact per depth, each its own case (the classic needle in a haystack)."""
    cases = []
    for depth in depths:
        key, value = rng.name(), _number(rng)
        question = f"What is the special magic number for {key}?"
        cases.append(Case("needle", question, [_magic(key, value)], [value], [depth]))
    return cases


def multi_needle(rng: TaskRandom, depths: Sequence[float], n: int = 4) -> list[Case]:
    """Several facts about one subject; the question needs all of them."""
    museum = rng.name()
    items = rng.sample(["lantern", "compass", "anchor", "ledger", "bell", "kettle", "mirror", "spindle"], n)
    values = [_number(rng) for _ in items]
    return [Case(
        "multi_needle", f"What are the inventory numbers of the items in the {museum} museum? Name every item.",
        [f"In the {museum} museum, the {item} has inventory number {v}." for item, v in zip(items, values)],
        values, _spread(rng, n),
    )]


def hard_distractors(rng: TaskRandom, depths: Sequence[float], n: int = 8) -> list[Case]:
    """One needle among facts of the same template about names one letter away."""
    key = rng.name()
    twins = _near_twins(rng, key, n)
    wrong = [_number(rng) for _ in twins]
    value = _number(rng)
    return [Case(
        "hard_distractors", f"What is the special magic number for {key}?", [_magic(key, value)], [value],
        _spread(rng, 1), [_magic(t, v) for t, v in zip(twins, wrong)], wrong,
    )]


def multi_key(rng: TaskRandom, depths: Sequence[float], n: int = 6) -> list[Case]:
    """RULER MK-NIAH: many keys, each with a value; the question asks for one."""
    keys = [rng.name() for _ in range(n)]
    values = [_number(rng) for _ in keys]
    return [Case(
        "multi_key", f"What is the special magic number for {keys[0]}?", [_magic(keys[0], values[0])], [values[0]],
        _spread(rng, 1), [_magic(k, v) for k, v in zip(keys[1:], values[1:])], values[1:],
    )]


def multi_value(rng: TaskRandom, depths: Sequence[float], n: int = 4) -> list[Case]:
    """RULER MV-NIAH: one key with several values; the question asks for all."""
    key = rng.name()
    values = [_number(rng) for _ in range(n)]
    return [Case(
        "multi_value", f"What are all the special magic numbers for {key}?",
        [f"One of the special magic numbers for {key} is: {v}." for v in values], values, _spread(rng, n),
    )]


def multi_query(rng: TaskRandom, depths: Sequence[float], n: int = 4, asked: int = 2) -> list[Case]:
    """RULER MQ-NIAH: several keys planted; one question asks for some of them."""
    keys = [rng.name() for _ in range(n)]
    values = [_number(rng) for _ in keys]
    return [Case(
        "multi_query", f"What are the special magic numbers for {' and '.join(keys[:asked])}?",
        [_magic(k, v) for k, v in zip(keys[:asked], values[:asked])], values[:asked], _spread(rng, asked),
        [_magic(k, v) for k, v in zip(keys[asked:], values[asked:])], values[asked:],
    )]


def variable_tracking(rng: TaskRandom, depths: Sequence[float], hops: int = 4) -> list[Case]:
    """RULER VT: a chain of assignments spread over the context, plus a decoy chain."""
    def chain(value: str) -> tuple[list[str], list[str]]:
        names = ["".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(5)) for _ in range(hops)]
        lines = [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
        return lines, names

    value, decoy = str(rng.randint(10_000, 99_999)), str(rng.randint(10_000, 99_999))
    lines, names = chain(value)
    decoy_lines, decoy_names = chain(decoy)
    return [Case(
        "variable_tracking", f"Which variables are assigned the value {value}, directly or through other variables?",
        lines, names, sorted(_spread(rng, hops)), decoy_lines, decoy_names,
    )]


def aggregation_case(
    rng: TaskRandom, counter: TokenCounter, length: int, top: int = 10
) -> tuple[AggregationCase, Document]:
    """RULER CWE: a numbered word list of about `length` tokens in which `top` words occur
    far more often than the rest; the question asks for the most common ones."""
    vocabulary = [rng.name().lower() for _ in range(60)]
    common = rng.sample(vocabulary, top)
    pool = [w for w in vocabulary for _ in range(30 if w in common else 3)]
    words: list[str] = []
    while True:
        rng.shuffle(pool)
        words += pool
        text = "\n\n".join(
            "\n".join(f"{i + 1}. {w}" for i, w in enumerate(words[start : start + 20], start))
            for start in range(0, len(words), 20)
        )
        if counter.count(text) >= length:
            break
    case = AggregationCase(
        "aggregation", f"What are the {top} most common words in the numbered list?", [], sorted(common),
        vocabulary=vocabulary,
    )
    return case, Document(id="wordlist", text=text, metadata={"source": "wordlist.txt"})


def _spread(rng: TaskRandom, n: int) -> list[float]:
    return [round(rng.random(), 3) for _ in range(n)]


GENERATORS: dict[str, Callable[[TaskRandom, Sequence[float]], list[Case]]] = {
    "needle": needle, "multi_needle": multi_needle, "hard_distractors": hard_distractors, "multi_key": multi_key,
    "multi_value": multi_value, "multi_query": multi_query, "variable_tracking": variable_tracking,
}


# -- haystacks ---------------------------------------------------------------------------------
def cut_haystack(documents: Sequence[Document], counter: TokenCounter, length: int) -> list[Document]:
    """The first `length` tokens of the documents, in order, cut at a paragraph end (at a word
    end when not even the first paragraph fits)."""
    taken: list[Document] = []
    left = length
    for document in documents:
        tokens = counter.count(document.text)
        if tokens <= left:
            taken.append(document)
            left -= tokens
            continue
        text = _longest_prefix(document.text.split("\n\n"), "\n\n", counter, left)
        if not text and not taken:
            text = _longest_prefix(document.text.split(" "), " ", counter, left)
        if text:
            taken.append(document.model_copy(update={"text": text}))
        break
    if not taken:
        raise InvalidArgumentError(f"haystack length {length}: too short for the first word")
    return taken


def _longest_prefix(pieces: list[str], separator: str, counter: TokenCounter, tokens: int) -> str:
    """The most leading pieces, joined, that count at most `tokens` (binary search)."""
    low, high = 0, len(pieces)
    while low < high:
        mid = (low + high + 1) // 2
        if counter.count(separator.join(pieces[:mid])) <= tokens:
            low = mid
        else:
            high = mid - 1
    return separator.join(pieces[:low])


def plant_at_depths(documents: Sequence[Document], sentences: Sequence[tuple[str, float]]) -> list[Document]:
    """Insert each sentence at its depth (0 = start, 1 = end) of the documents read in order,
    after the sentence end nearest that point."""
    texts = [d.text for d in documents]
    total = sum(map(len, texts))
    for sentence, depth in sorted(sentences, key=lambda s: -s[1]):  # from the end: earlier offsets stay valid
        if not 0.0 <= depth <= 1.0:
            raise InvalidArgumentError(f"depth {depth}: must be between 0 and 1")
        position = round(depth * total)
        index = 0
        while index < len(texts) - 1 and position > len(texts[index]):
            position -= len(texts[index])
            index += 1
        text = texts[index]
        boundary = _sentence_end(text, min(position, len(text)))
        texts[index] = f"{text[:boundary]} {sentence} {text[boundary:]}".strip() if text else sentence
    return [d.model_copy(update={"text": t}) for d, t in zip(documents, texts)]


def _sentence_end(text: str, position: int) -> int:
    if position <= 0:
        return 0
    match = re.compile(r"[.!?]\s|\n").search(text, position)
    return match.end() if match else len(text)
