"""The default `ask`: the question mapped over the windows the model reads well."""

from __future__ import annotations

import pytest
from conftest import hits_of

from hybridctx.generate.backend import Generation
from hybridctx.generate.citations import cite
from hybridctx.generate.mapping import about, map_answer, pack_windows
from hybridctx.pack import Packer
from hybridctx.schema import Answer, PackedContext, Usage

PROSE = [
    "Startups grow by making something people want.", "Founders learn most from the users who complain.",
    "A good essay changes the mind of its writer.", "Cities grow where ships once stopped to trade.",
    "The river froze early that winter, and the mill stood still.", "Painters mixed their colours from ground stone.",
    "Most bridges of the old town were rebuilt after the flood.", "A ledger of the harbour lists every cargo.",
    "Bees find their way home by the angle of the sun.", "The violin maker dried his wood for seven years.",
]


def prose(i: int, n: int) -> str:
    """`n` sentences of prose, different for each document (near copies are packed once)."""
    return " ".join(PROSE[(i * 3 + j) % len(PROSE)] + f" It was year {1700 + 13 * i + j}." for j in range(n)) + " "


VALUES = ["9800890", "4951063", "5624373"]
TWINS = {"Lomiest": "5555555", "Lomoist": "6666666"}


def planted() -> list[str]:
    """Each value of Lomiist, and each near twin's, in its own document of prose."""
    facts = [f"One of the special magic numbers for Lomiist is: {v}." for v in VALUES]
    facts += [f"The special magic number for {twin} is {v}." for twin, v in TWINS.items()]
    return [prose(i, 4) + fact + " " + prose(i + 5, 2) for i, fact in enumerate(facts)]


QUESTION = "What are all the special magic numbers for Lomiist?"


def test_the_sentences_about_a_question_share_its_rare_key_not_only_its_common_words(tokenizer):
    windows = pack_windows(Packer(tokenizer), QUESTION, hits_of(planted()), 400, 50, max_windows=10)
    assert len(windows) >= 3  # each planted document fills most of a window
    found = [sentence for window in about(QUESTION, windows) for _, sentence in window]
    assert sorted(found) == sorted(f"One of the special magic numbers for Lomiist is: {v}." for v in VALUES)
    # the twins share "special magic number" but not the rare "Lomiist"; the prose shares nothing rare
    assert about("What is the weather?", windows) == [[] for _ in windows]


def test_other_windows_add_only_the_values_they_take_from_sentences_about_the_question(tokenizer):
    """Answers Gemma 3 270M wrote for these windows: the first counts up from its one value,
    the twin's window names the twin's value."""
    windows = pack_windows(Packer(tokenizer), QUESTION, hits_of(planted()), 400, 50, max_windows=10)
    holding = {v: i for i, w in enumerate(windows) for v in [*VALUES, *TWINS.values()] if v in w.prompt}
    assert holding[VALUES[0]] == 0 and len({holding[v] for v in VALUES}) == 3
    written = {i: f"{v}." for v, i in holding.items() if i}

    class Recorded:
        def generate_many(self, contexts, max_new_tokens, temperature=0.0, stop=None):
            return [Generation(written[windows.index(c)], Usage(prompt_tokens=c.token_count, generated_tokens=4,
                                                               seconds=1.0)) for c in contexts]

    def first(window: PackedContext) -> Answer:
        text = "9800890, 9800891, 9800892 [1]."
        return Answer(text=text, citations=cite(text, window), context=window,
                      usage=Usage(prompt_tokens=window.token_count, generated_tokens=12, seconds=1.0))

    streamed: list[str] = []
    answer = map_answer(QUESTION, windows, first, Recorded(), 50, on_text=streamed.append)  # type: ignore[arg-type]
    assert answer.route == "map" and answer.context is windows[0]
    added = answer.text.split("\n", 1)[1]
    assert all(v in added for v in VALUES[1:]) and VALUES[0] not in added  # the first answer named it
    assert not any(v in added for v in TWINS.values())  # their sentences are not about Lomiist
    assert streamed == [answer.text[len("9800890, 9800891, 9800892 [1]."):]]
    assert [f.text for f in answer.facts] == [
        f"One of the special magic numbers for Lomiist is: {v}." for v in sorted(VALUES[1:], key=lambda v: holding[v])
    ]
    for fact in answer.facts:  # each cites the passage of its window that holds it
        (citation,) = fact.citations
        window = windows[holding[fact.text[-8:-1]]]
        assert fact.text in window.passages[citation.passage - 1].text and citation in answer.citations
    # only the windows holding a sentence about the question were asked (not the twins')
    assert [windows.index(w) for w in answer.windows] == sorted({0, *(holding[v] for v in VALUES)})
    asked = answer.windows[1:]
    assert answer.usage.prompt_tokens == windows[0].token_count + sum(w.token_count for w in asked)
    # the evaluation checks each citation against the window it cites, not the first one
    from hybridctx.evals.runner import _citation_score
    from hybridctx.evals.tasks import Case

    assert _citation_score(Case("multi_value", QUESTION, needles=[], values=VALUES[1:]), answer) == 2 / 3


def test_a_first_window_holding_everything_costs_one_generation(tokenizer):
    hits = hits_of([f"One of the special magic numbers for Lomiist is: {v}." for v in VALUES])
    windows = pack_windows(Packer(tokenizer), QUESTION, hits, 2000, 50, max_windows=10)
    assert len(windows) == 1

    def first(window: PackedContext) -> Answer:
        return Answer(text="9800890 [1].", citations=[], context=window,
                      usage=Usage(prompt_tokens=window.token_count, generated_tokens=4))

    answer = map_answer(QUESTION, windows, first, backend=None, max_new_tokens=50)  # type: ignore[arg-type]
    assert (answer.text, answer.route, answer.windows) == ("9800890 [1].", "map", [])


@pytest.mark.slow
def test_the_default_ask_names_values_spread_over_windows_the_model_reads_one_at_a_time(open_pipe):
    """Gemma 3 270M reading 400 tokens a window: one window holds one planted document."""
    from hybridctx import Document

    pipe = open_pipe(effective_context=400)
    pipe.add([Document(id=f"doc{i}", text=t, metadata={"source": f"doc{i}.md"}) for i, t in enumerate(planted())])
    pieces: list[str] = []
    answer = pipe.ask(QUESTION, budget_tokens=2000, max_new_tokens=32, on_text=pieces.append)
    direct = pipe.ask(QUESTION, budget_tokens=2000, max_new_tokens=32, strategy="direct")
    assert answer.route == "map" and len(answer.windows) >= 2
    named = [v for v in VALUES if v in answer.text]
    assert len(named) >= 2 and len(named) > sum(v in direct.text for v in VALUES), (answer.text, direct.text)
    assert not any(v in answer.text for v in TWINS.values())
    assert "".join(pieces) == answer.text
    assert answer.context.stopped_by == "effective_context" and answer.context.budget_tokens == 400 + 32
    edges = pipe.ask(QUESTION, budget_tokens=2000, max_new_tokens=8, ordering="edges")
    assert {w.ordering for w in [edges.context, *edges.windows]} == {"edges"}
