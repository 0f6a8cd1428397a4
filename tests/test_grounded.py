"""Grounded answers: choices offered to the model (constrained decoding), the functions packed
passages define as choices, and multi-hop links ranked below the hit that named them."""

from __future__ import annotations

import pytest

from hybridctx.errors import InvalidArgumentError
from hybridctx.generate.grounded import defined_symbols
from hybridctx.pack import Packer
from hybridctx.retrieve import MultiHopRetriever
from hybridctx.schema import Chunk, Hit, PackedContext, Passage, Scope


def passage(number: int, source: str, text: str) -> Passage:
    return Passage(number=number, doc_id=source, source=source, text=text, start=0, end=len(text), start_line=1,
                   end_line=text.count("\n") + 1, chunk_ids=[f"{source}#0"])


def chunk(chunk_id: str, text: str) -> Chunk:
    return Chunk(id=chunk_id, doc_id=chunk_id, text=text, start=0, end=len(text), start_line=1, end_line=1,
                 token_count=10, metadata={"source": f"{chunk_id}.md"})


def test_the_functions_passages_define_become_choices_citing_their_passage():
    context = PackedContext(query="q", prompt="p", chunks=[], token_count=0, budget_tokens=100, prefix_token_count=0,
                            passages=[
        passage(1, "/lib/python3.11/textwrap.py",
                "def _private():\n    pass\n\ndef dedent(text):\n    '''Remove common leading whitespace.'''\n"
                "    return text  # def not_a_definition"),
        passage(2, "/lib/python3.11/json/__init__.py", "class JSONDecoder:\n    async def decode(self, s): ..."),
        passage(3, "/lib/python3.11/textwrap.py", "def dedent(text):\n    ...\ndef indent(text, prefix):"),
        passage(4, "/notes/readme.md", "No code here; the definition of dedent is elsewhere."),
    ])
    assert defined_symbols(context) == [
        "Use `textwrap.dedent` [1].",  # the first passage defining it; private names are not offered
        "Use `json.JSONDecoder` [2].",  # a package's __init__ is named by its folder
        "Use `json.decode` [2].",
        "Use `textwrap.indent` [3].",
    ]
    assert defined_symbols(context.model_copy(update={"passages": context.passages[3:]})) == []


def test_the_model_answers_with_exactly_one_of_the_choices(backend):
    fact = "Zephyr configuration guide. The Zephyr client retries a failed request up to 7 times."
    hit = Hit(chunk=chunk("guide", fact), score=1.0, rank=1)
    context = Packer(backend.token_counter()).pack("How many times does the Zephyr client retry?", [hit], 1000)
    choices = ["It retries up to three times [1].", "It retries up to 7 times [1].", "The documents do not say."]
    pieces: list[str] = []
    answer = backend.generate(context, max_new_tokens=24, choices=choices, on_text=pieces.append)
    assert answer.text in choices and "".join(pieces).strip() == answer.text  # (which one is the model's pick)
    free = backend.generate(context, max_new_tokens=24)
    assert free.text not in choices  # offered nothing, the model words it its own way
    for bad in ([], ["", "yes"]):
        with pytest.raises(InvalidArgumentError, match="choices"):
            backend.generate(context, max_new_tokens=8, choices=bad)


def test_choices_answer_directly(open_pipe, corpus):
    pipe = open_pipe()
    with pytest.raises(InvalidArgumentError, match="strategy='direct'"):
        pipe.ask("How many times does the client retry?", strategy="synthesis", choices=["7", "3"])


class Ranked:
    """A retriever with fixed answers per query: the ranking arithmetic alone, no index."""

    def __init__(self, answers: dict[str, list[Chunk]]) -> None:
        self.answers = answers

    def retrieve(self, query: str, k: int, scope: Scope | None = None) -> list[Hit]:
        return [Hit(chunk=c, score=1.0 / rank, rank=rank) for rank, c in enumerate(self.answers[query][:k], start=1)]


def test_a_link_two_hops_find_ranks_below_the_hit_that_named_it():
    question = "How do I convert a color from RGB to HSV?"
    docstring = chunk("docstring", "Supported color systems: RGB and HSV.")
    definition = chunk("definition", "def rgb_to_hsv(r, g, b): return convert(r, g, b)")
    chooser = chunk("chooser", "An RGB colour has components from 0 to 255.")
    cache = chunk("cache", "The cache holds codes from 255 down to 240.")
    first = Ranked({question: [docstring, definition, chooser]})
    lexical = Ranked({"HSV RGB": [docstring, chooser], "255": [cache, chooser], "240": [cache]})
    hits = MultiHopRetriever(first, lexical, max_hops=3).retrieve(question, k=10)  # type: ignore[arg-type]
    assert [h.chunk.id for h in hits] == ["docstring", "definition", "chooser", "cache"]
    assert [h.rank for h in hits] == [1, 2, 3, 4] and hits[3].score < hits[2].score


def test_the_chunk_holding_the_questions_name_ranks_just_below_the_best_hit_and_its_chain_below_it():
    """RULER variable tracking at 4k: essays about variables outranked the one chunk naming
    the asked value, and the chain's links, ranked below it, fell out of the pack."""
    question = "Which variables are assigned the value 82517?"
    essays = [chunk(f"essay{i}", f"In Lisp, variables are pointers ({i}).") for i in range(30)]
    anchor = chunk("anchor", "VAR KYSNB = 82517.")
    link = chunk("link", "VAR WMGQU = VAR KYSNB.")
    first = Ranked({question: [*essays[:23], anchor, *essays[23:]]})
    lexical = Ranked({"82517": [anchor], "KYSNB VAR": [anchor, link], "WMGQU": [link]})
    ranked = [h.chunk.id for h in MultiHopRetriever(first, lexical).retrieve(question, k=10)]  # type: ignore[arg-type]
    assert ranked[0] == "essay0" and ranked.index("anchor") <= 2 and ranked.index("link") <= 5 and len(ranked) == 10
    no_names = "Which variables are assigned a value?"
    first.answers[no_names] = first.answers[question]
    assert [h.chunk.id for h in MultiHopRetriever(first, lexical).retrieve(no_names, k=30)][23] == "anchor"
