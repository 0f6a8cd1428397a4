"""Multi-needle synthesis: facts with checked citations, map-reduce over windows, self-route."""

from __future__ import annotations

import pytest
from conftest import hits_of

from hybridctx.generate.synthesis import FACTS_TEMPLATE, parse_facts, says_not_found
from hybridctx.pack import Packer
from hybridctx.pack.context import pack_windows
from hybridctx.schema import Chunk, Hit


def test_facts_and_answer_are_parsed_with_their_passage_numbers():
    parsed = parse_facts(
        "- The client retries 7 times [2].\n"
        "* Each attempt times out after 30 seconds [4, 2]\n"
        "3. Unrelated musing\n"
        "\n"
        "Answer: 7 retries of 30 seconds each [2][4].\n\nQuestion: next"
    )
    assert parsed.facts == [
        ("The client retries 7 times [2].", [2]),
        ("Each attempt times out after 30 seconds [4, 2]", [4, 2]),
        ("Unrelated musing", []),
    ]
    assert parsed.answer == "7 retries of 30 seconds each [2][4]."
    cut_short = parse_facts("- Tomatoes need six hours of sun [1].\n- They need water")
    assert cut_short.answer == "Tomatoes need six hours of sun [1]. They need water"


@pytest.mark.parametrize(("answer", "wanting"), [
    ("The documents do not say.", True),
    ("The passages don't mention a timeout.", True),
    ("This is not mentioned in the text.", True),
    ("", True),
    ("The client retries 7 times [1].", False),
    ("Documents say it retries 7 times.", False),
])
def test_self_route_recognises_a_model_saying_the_documents_do_not_say(answer, wanting):
    assert says_not_found(answer) is wanting


def test_material_beyond_one_window_is_split_into_windows_sharing_one_prefix(tokenizer):
    texts = [f"Report {i}. The magic number of the city of Vel{i:02d} is {1000 + 37 * i}. " * 6 for i in range(40)]
    hits = hits_of(texts)
    packer = Packer(tokenizer, FACTS_TEMPLATE)
    windows = pack_windows(packer, "Which magic numbers are odd?", hits, budget_tokens=1200, max_new_tokens=100,
                           max_windows=50)
    assert len(windows) > 3
    shown = [c.id for w in windows for c in w.chunks]
    assert sorted(shown) == sorted(h.chunk.id for h in hits)  # every hit lands in exactly one window
    for window in windows:
        assert window.prompt.startswith(FACTS_TEMPLATE.head)  # the cacheable instruction prefix
        assert window.token_count <= 1200 - 100 == window.budget_tokens - window.max_new_tokens
        assert window.prompt.endswith(FACTS_TEMPLATE.tail("Which magic numbers are odd?"))
    capped = pack_windows(packer, "Which magic numbers are odd?", hits, 1200, 100, max_windows=2)
    assert [w.prompt for w in capped] == [w.prompt for w in windows[:2]]


NEEDLES = {
    "vendors.md": "Vendor notes. The Orvik pump is supplied by Halden Works in Trondheim.",
    "pricing.md": "Price list. One Orvik pump costs 1,840 euros before tax.",
    "shipping.md": "Shipping. Orvik pumps ship from the warehouse in 12 working days.",
    "tomatoes.md": "Tomatoes need six to eight hours of direct sunlight a day.",
    "bread.md": "Knead bread dough for ten minutes, then let it rise for an hour.",
    "mars.md": "Gravity on the surface of Mars is about 38 percent of Earth's gravity.",
}


@pytest.mark.slow
def test_map_reduce_with_the_embedded_model_keeps_only_checked_citations(open_pipe):
    from hybridctx import Document

    pipe = open_pipe(k=50)
    pipe.add([Document(id=name, text=text, metadata={"source": name}) for name, text in NEEDLES.items()])
    question = "Who supplies the Orvik pump, what does it cost, and how long does shipping take?"
    answer = pipe.ask(question, budget_tokens=560, max_new_tokens=120, strategy="synthesis")
    assert answer.route == "map_reduce" and len(answer.windows) >= 2
    window_chunks = {c.id for w in answer.windows for c in w.chunks}
    assert window_chunks == {f"{name}#0" for name in NEEDLES}  # everything retrieved was read once
    assert answer.facts, answer
    for fact in answer.facts:
        assert fact.citations and all(set(c.chunk_ids) <= window_chunks for c in fact.citations)
    # the reduce prompt quotes the facts as its passages, each traced to its source chunks
    assert [p.text for p in answer.context.passages] == [f.text for f in answer.facts]
    assert all(set(c.chunk_ids) <= window_chunks for c in answer.citations)
    assert answer.usage.prompt_tokens == sum(w.token_count for w in answer.windows) + answer.context.token_count
    assert answer.text


@pytest.mark.slow
def test_self_route_escalates_only_when_the_cheap_answer_says_the_documents_do_not_say(
    open_pipe, corpus, tmp_path, monkeypatch
):
    # Added by a relative path, so the prompt's sources ("corpus/retries.md") do not carry the
    # test's temporary folder: the 270M model's greedy answer flipped to "30 times." with its
    # number (pytest-N), as test_roundtrip's once did.
    monkeypatch.chdir(tmp_path)
    pipe = open_pipe()
    pipe.add([corpus.name])
    cheap = pipe.ask("How many times does the Zephyr client retry?", budget_tokens=700, max_new_tokens=24,
                     strategy="self_route")
    assert not cheap.escalated and cheap.route == "direct"
    assert "7" in cheap.text or "seven" in cheap.text.lower()


def test_self_route_escalates_over_the_whole_window_and_adds_up_the_usage_of_both_tries():
    from hybridctx.generate.strategy import Question
    from hybridctx.generate.synthesis import SelfRouteStrategy
    from hybridctx.schema import Answer, PackedContext, Reading, Scope, Usage

    def answer(text: str, tokens: int) -> Answer:
        context = PackedContext(query="q", prompt="p", chunks=[], token_count=tokens, budget_tokens=tokens * 2,
                                prefix_token_count=0)
        return Answer(text=text, citations=[], context=context,
                      usage=Usage(prompt_tokens=tokens, generated_tokens=5, cached_tokens=0, seconds=1.0))

    calls: list[tuple[str, Reading, bool]] = []

    class Scripted:  # an answering strategy that says what it was asked
        def __init__(self, name: str, written: Answer) -> None:
            self.name, self.written = name, written

        def answer(self, question: Question) -> Answer:
            calls.append((self.name, question.reading, question.on_text is None))
            return self.written

    cheap = Scripted("cheap", answer("The documents do not say.", 500))
    thorough = Scripted("thorough", answer("It is 7 [1].", 8000).model_copy(update={"route": "synthesis"}))
    reading = Reading(budget_tokens=2048, read_tokens=712, max_new_tokens=200)
    streamed: list[str] = []
    question = Question(query="q", scope=Scope(), reading=reading, on_text=streamed.append)
    routed = SelfRouteStrategy(cheap, thorough, window_tokens=8192).answer(question)
    assert [(name, quiet) for name, _, quiet in calls] == [("cheap", True), ("thorough", True)]
    assert calls[0][1] == reading  # the cheap try reads what the model reads well of the caller's budget
    assert (calls[1][1].budget_tokens, calls[1][1].read_tokens) == (8192, 712)  # recall for the whole window
    assert (routed.text, routed.route, routed.escalated) == ("It is 7 [1].", "synthesis", True)
    assert (routed.usage.prompt_tokens, routed.usage.seconds) == (8500, 2.0)
    assert streamed == ["It is 7 [1]."]  # the answer once chosen, not the cheap try's words
    calls.clear()
    settled = SelfRouteStrategy(Scripted("cheap", answer("Seven [1].", 500)), thorough, 8192).answer(question)
    assert settled.escalated is False and [name for name, *_ in calls] == ["cheap"]


def test_facts_come_from_passages_only_not_from_the_prompts_example(llama_counter):
    """What Gemma 3 270M wrote for a real question: the one-shot example's fact came first,
    cited to a passage about something else."""
    from hybridctx.generate.backend import Generation
    from hybridctx.generate.synthesis import FACTS_TEMPLATE, Synthesizer
    from hybridctx.pack import Packer
    from hybridctx.schema import Usage

    texts = ["The Zephyr client retries a failed request 7 times.", "Backoff doubles after every retry."]
    hits = [
        Hit(chunk=Chunk(id=f"d{i}#0", doc_id=f"d{i}", text=t, start=0, end=len(t), start_line=1, end_line=1,
                        token_count=12, metadata={"source": f"d{i}.md"}), score=1.0, rank=i + 1)
        for i, t in enumerate(texts)
    ]
    packer = Packer(llama_counter, FACTS_TEMPLATE)
    context = packer.pack("How often does the client retry?", hits, 1000, max_new_tokens=100)
    written = ("- The office is closed on Sundays [2].\n- The Zephyr client retries a failed request 7 times [1].\n"
               "Answer: On Sundays it is closed; the client retries 7 times [1, 2].")
    synthesizer = Synthesizer(builder=None, reader=None)  # type: ignore[arg-type]  # no packing nor model call here
    answer = synthesizer._synthesis_answer(context, Generation(text=written, usage=Usage(prompt_tokens=1,
                                                                                            generated_tokens=1)))
    assert [f.text for f in answer.facts] == ["The Zephyr client retries a failed request 7 times."]
    assert [c.passage for c in answer.facts[0].citations] == [1]
    assert [c.doc_id for c in answer.citations] == ["d0"]  # [2] backs neither the answer nor a kept fact
