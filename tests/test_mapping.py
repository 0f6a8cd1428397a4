"""The default `ask`: the question mapped over the windows the model reads well."""

from __future__ import annotations

import pytest
from conftest import count_retrievals, hits_of

from hybridctx.generate.backend import Generation
from hybridctx.generate.mapping import MapStrategy, about
from hybridctx.generate.reader import Reader
from hybridctx.generate.strategy import Question
from hybridctx.pack import Packer
from hybridctx.pack.context import Candidates, ContextBuilder, Windows, pack_windows
from hybridctx.schema import PackedContext, Reading, Scope, Usage

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


class Recorded:
    """A backend answering each passage read alone as `written` says for the value the passage
    holds (answers Gemma 3 270M wrote), and a window read whole with `first`; it fails on any
    other prompt."""

    context_window = 8192
    model_id = "recorded"

    def __init__(self, written: dict[str, str], first: str | None = None):
        self.written: dict[str, str] = written
        self.first = first
        self.asked: list[PackedContext] = []

    def generate_many(self, contexts, max_new_tokens, temperature=0.0, stop=None):
        self.asked += contexts
        return [Generation(next(a for v, a in self.written.items() if v in c.prompt),
                           Usage(prompt_tokens=c.token_count, generated_tokens=4, seconds=1.0)) for c in contexts]

    def generate(self, context, max_new_tokens, temperature=0.0, on_text=None, choices=None):
        if self.first is None:
            raise AssertionError("a reading named a grounded value: the first window is not answered whole")
        return Generation(self.first, Usage(prompt_tokens=context.token_count, generated_tokens=5))


def strategy(packer: Packer, backend: Recorded, tmp_path) -> MapStrategy:
    """The map strategy over `backend`, reading 400 tokens a window; its retriever is never asked
    (the tests hand it the windows)."""
    builder = ContextBuilder(None, None, packer, k=None, chunk_stride_tokens=96)  # type: ignore[arg-type]
    reader = Reader(backend, effective_context="window", cache_dir=tmp_path,  # type: ignore[arg-type]
                    budget_tokens=400, max_new_tokens=50)
    return MapStrategy(builder, reader, max_windows=8)


def asked_about(query: str, on_text=None) -> Question:
    return Question(query=query, scope=Scope(), reading=Reading(budget_tokens=400, read_tokens=400, max_new_tokens=50),
                    on_text=on_text)


def mapped(tokenizer, tmp_path, written: dict[str, str], first: str | None = None, on_text=None):
    packer, hits = Packer(tokenizer), hits_of(planted())
    windows = pack_windows(packer, QUESTION, hits, 400, 50, max_windows=10)
    assert len(windows) >= 3  # each planted document fills most of a window
    backend = Recorded(written, first)
    found = Windows(Candidates(hits, False), windows)
    answer = strategy(packer, backend, tmp_path).read(asked_about(QUESTION, on_text), found)
    return answer, backend.asked, windows


def test_each_passage_about_the_question_is_read_alone_and_cited_for_the_values_it_grounds(tokenizer, tmp_path):
    lead = f"The special magic number for Lomiist is {VALUES[0]} [1]."
    streamed: list[str] = []
    written = {VALUES[0]: lead, VALUES[1]: f"{VALUES[1]}.", VALUES[2]: f"{VALUES[2]}."}
    answer, asked, _ = mapped(tokenizer, tmp_path, written, on_text=streamed.append)
    # the three passages holding a value for Lomiist, not the twins' (their sentences lack the rare key)
    assert sorted(v for c in asked for v in VALUES if v in c.prompt) == sorted(VALUES)
    assert not any(v in c.prompt for c in asked for v in TWINS.values()) and len(asked) == 3
    assert answer.text == lead + "\nOther passages also name: " + ", ".join(
        f"{v} ({f.citations[0].location})" for v, f in zip(VALUES[1:], answer.facts[1:], strict=True)) + "."
    assert streamed == [answer.text] and answer.route == "map" and answer.windows == asked
    assert answer.context is asked[0]  # the lead's [1] is the passage it read
    for value, fact in zip(VALUES, answer.facts, strict=True):  # each cites the passage holding it
        (citation,) = fact.citations
        assert fact.text == f"One of the special magic numbers for Lomiist is: {value}."
        assert citation.doc_id == f"doc{VALUES.index(value)}" and citation in answer.citations
    assert answer.usage.prompt_tokens == sum(c.token_count for c in asked) and answer.usage.generated_tokens == 12
    from hybridctx.evals.runner import _citation_score, _precision_score
    from hybridctx.evals.tasks import Case

    case = Case("multi_value", QUESTION, needles=[], values=VALUES)
    assert _citation_score(case, answer) == 1.0 and _precision_score(case, answer) == 1.0


def test_a_lead_naming_what_no_sentence_about_the_question_holds_gives_way_to_the_values(tokenizer, tmp_path):
    """Gemma counted up from the value it read; the passage holds only the first number."""
    counting = f"{VALUES[0]}, 9800891, 9800892 [1]."
    answer, *_ = mapped(tokenizer, tmp_path, {VALUES[0]: counting, VALUES[1]: f"{VALUES[1]}.", VALUES[2]: "Lomiist."})
    assert answer.text.startswith("The passages about the question name: " + VALUES[0])
    assert VALUES[1] in answer.text and "9800891" not in answer.text and "9800892" not in answer.text
    assert VALUES[2] not in answer.text  # its reading named nothing the passage grounds
    assert [f.citations[0].doc_id for f in answer.facts] == ["doc0", "doc1"]
    from hybridctx.evals.runner import _precision_score
    from hybridctx.evals.tasks import Case

    case = Case("multi_value", QUESTION, needles=[], values=VALUES)
    counted = answer.model_copy(update={"text": counting, "citations": []})
    assert _precision_score(case, answer) == 1.0 and _precision_score(case, counted) == 1 / 3


def test_readings_grounding_nothing_leave_the_answer_to_the_first_window(tokenizer, tmp_path):
    answer, asked, windows = mapped(tokenizer, tmp_path, {v: "The documents do not say." for v in VALUES},
                                    first="I do not know.")
    assert answer.text == "I do not know." and answer.context is windows[0] and answer.facts == []
    assert answer.windows == [windows[0], *asked] and len(asked) == 3  # every prompt it read, and paid for
    assert answer.usage.prompt_tokens == windows[0].token_count + sum(c.token_count for c in asked)


def test_a_question_no_sentence_answers_with_a_name_costs_one_generation(tokenizer, tmp_path):
    hits = hits_of([prose(i, 4) for i in range(3)])
    question = "What do founders learn from?"
    packer = Packer(tokenizer)
    windows = pack_windows(packer, question, hits, 2000, 50, max_windows=10)
    assert any(about(question, windows))  # "Founders learn most from the users who complain."
    backend = Recorded({}, first="From users [1].")
    answer = strategy(packer, backend, tmp_path).read(asked_about(question), Windows(Candidates(hits, False), windows))
    assert (answer.text, answer.route, answer.windows, answer.context) == ("From users [1].", "map", [], windows[0])
    assert backend.asked == []  # no passage read on its own


@pytest.mark.slow
def test_the_default_ask_names_values_spread_over_windows_the_model_reads_one_at_a_time(open_pipe):
    """Gemma 3 270M reading 400 tokens a window: one window holds one planted document, and each
    passage holding a value is read on its own."""
    from hybridctx import Document

    pipe = open_pipe(effective_context=400)
    pipe.add([Document(id=f"doc{i}", text=t, metadata={"source": f"doc{i}.md"}) for i, t in enumerate(planted())])
    retrievals = count_retrievals(pipe)
    pieces: list[str] = []
    answer = pipe.ask(QUESTION, budget_tokens=2000, max_new_tokens=32, on_text=pieces.append)
    assert len(retrievals) == 1  # the windows and every passage read on its own come from one retrieval
    direct = pipe.ask(QUESTION, budget_tokens=2000, max_new_tokens=32, strategy="direct")
    assert answer.route == "map" and len(answer.windows) >= 2
    named = [v for v in VALUES if v in answer.text]
    assert len(named) >= 2 and len(named) > sum(v in direct.text for v in VALUES), (answer.text, direct.text)
    assert not any(v in answer.text for v in TWINS.values())
    assert "".join(pieces) == answer.text
    assert direct.context.stopped_by == "effective_context" and answer.context.budget_tokens == 400 + 32
    edges = pipe.ask(QUESTION, budget_tokens=2000, max_new_tokens=8, ordering="edges")
    assert {w.ordering for w in [edges.context, *edges.windows]} == {"edges"}


def test_an_effective_context_with_no_room_for_a_passage_is_refused_not_answered_from_nothing(open_pipe):
    """Gemma's prompt head is 207 tokens: 256 leave no room for a 128-token chunk."""
    from hybridctx import Document
    from hybridctx.errors import InvalidArgumentError

    pipe = open_pipe(effective_context=256)
    pipe.add([Document(id=f"doc{i}", text=t, metadata={"source": f"doc{i}.md"}) for i, t in enumerate(planted())])
    for strategy in ("map", "direct"):
        with pytest.raises(InvalidArgumentError, match="raise Settings.effective_context"):
            pipe.ask(QUESTION, budget_tokens=2000, max_new_tokens=32, strategy=strategy)
    packed = pipe.pack(QUESTION, budget_tokens=256 + 32, max_new_tokens=32)  # pack packs what it is asked
    assert packed.passages == [] and packed.stopped_by == "budget"


def test_the_cli_says_an_answer_was_read_passage_by_passage(tokenizer, tmp_path):
    from hybridctx.cli import out, print_answer

    answer, asked, _ = mapped(tokenizer, tmp_path, {v: f"{v}." for v in VALUES})
    with out.capture() as printed:
        print_answer(answer)
    shown = " ".join(printed.get().split())
    assert f"(map over {len(asked)} passages read on their own)" in shown
    assert all(f"- {f.text} ({f.citations[0].location})" in shown for f in answer.facts)
