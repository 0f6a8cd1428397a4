"""Answers streamed as they are written, async twins that leave the event loop free, and the
OpenAI-compatible server answered through the official `openai` client (a real server on
127.0.0.1, the embedded model answering)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridctx import Document, Pipeline
from hybridctx.generate.streaming import TrimmedText

QUESTION = "How often is the Wolfram valve serviced?"


def documents() -> list[Document]:
    return [
        Document(id="valves", text="The Wolfram valve is serviced every 14 days by the night shift. "
                 "It closes at 42 bar.", metadata={"source": "valves.md"}),
        Document(id="pumps", text="Pumps are serviced every spring. The Kessler pump runs at 3 bar.",
                 metadata={"source": "pumps.md"}),
        Document(id="secret", text="The Orrin vault code is 7351. Only Alice may read this.", acl={"alice"},
                 metadata={"source": "vault.md"}),
    ]


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder) -> Path:
    root = tmp_path_factory.mktemp("streaming") / "kb"
    with Pipeline.open(root, embedder=embedder, show_progress=False) as pipe:
        pipe.add(documents())
    return root


@pytest.fixture(scope="module")
def pipe(kb, embedder):
    with Pipeline.open(kb, embedder=embedder, show_progress=False, budget_tokens=1024, max_new_tokens=24) as pipe:
        yield pipe


@given(st.lists(st.text(alphabet=" \n\tab.", max_size=6), max_size=12))
def test_streamed_pieces_join_to_the_stripped_answer(pieces):
    shown: list[str] = []
    trimmed = TrimmedText(shown.append)
    for piece in pieces:
        trimmed(piece)
    assert "".join(shown) == "".join(pieces).strip()
    assert all(shown)  # no empty pieces


def test_a_streamed_answer_comes_in_pieces_that_join_to_the_answer(pipe):
    stream = pipe.stream(QUESTION)
    pieces = list(stream)
    answer = stream.answer
    assert answer is not None and len(pieces) >= 2  # token by token, not the whole text at once
    assert "".join(pieces) == answer.text and "14" in answer.text
    assert [c.doc_id for c in answer.citations][:1] == ["valves"]
    assert 0 < answer.usage.first_token_seconds < answer.usage.seconds
    session = pipe.session()  # sessions stream too, and follow-ups reuse the cached prefix
    first = session.stream(QUESTION).text()
    follow_up = session.stream("At what pressure does it close?")
    assert "".join(follow_up) == follow_up.answer.text
    assert follow_up.answer.usage.cached_tokens >= first.usage.prompt_tokens // 2


def test_an_error_in_a_stream_is_raised_by_the_loop(pipe):
    from hybridctx.errors import BudgetTooSmallError

    with pytest.raises(BudgetTooSmallError, match="raise budget_tokens"):  # 42 tokens: not even the instructions
        list(pipe.stream(QUESTION, budget_tokens=8192, max_new_tokens=8150))


async def test_async_twins_give_the_same_results_and_leave_the_event_loop_free(pipe):
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        started = time.perf_counter()
        hits = await pipe.aretrieve(QUESTION, k=3)
        context = await pipe.apack(QUESTION)
        stream = pipe.astream(QUESTION)
        pieces = [piece async for piece in stream]
        seconds = time.perf_counter() - started
        group.cancel_scope.cancel()
    assert [h.chunk.id for h in hits] == [h.chunk.id for h in pipe.retrieve(QUESTION, k=3)]
    assert context.prompt == pipe.pack(QUESTION).prompt
    assert "".join(pieces) == stream.answer.text and len(pieces) >= 2
    assert ticks >= 0.3 * seconds / 0.01  # the loop kept running while the model worked (it ticked 0 times if blocked)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(kb, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    keys.write_text(json.dumps({"key-alice": "alice", "key-bob": "bob"}))
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hybridctx", "serve", "--kb", str(kb), "--port", str(port), "--keys", str(keys),
         # plumbing, on the 270M reader: the 0.5B default said "the documents do not say" to the follow-up
         "--budget", "1024", "--model", "gemma-3-270m"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 120
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(process.stdout.read() if process.stdout else "server did not start")
        time.sleep(0.3)
    yield f"http://127.0.0.1:{port}/v1"
    process.terminate()
    process.wait(timeout=30)


def _client(url: str, key: str):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def test_the_openai_client_chats_with_the_kb_streamed_or_not_with_citations_and_cached_follow_ups(server):
    alice = _client(server, "key-alice")
    [model] = alice.models.list().data
    question = {"role": "user", "content": QUESTION}
    reply = alice.chat.completions.create(model=model.id, messages=[question], max_tokens=24)
    message = reply.choices[0].message
    assert "14" in message.content and re.search(r"\n\nSources:\n\[\d\] valves\.md:1-1", message.content)
    assert message.model_extra["citations"][0]["doc_id"] == "valves"
    first_prompt = reply.usage.prompt_tokens

    follow_up = [question, {"role": "assistant", "content": message.content},
                 {"role": "user", "content": "At what pressure does it close?"}]
    pieces, citations, usage = [], None, None
    for event in alice.chat.completions.create(model=model.id, messages=follow_up, max_tokens=24, stream=True,
                                               stream_options={"include_usage": True}):
        if event.choices:
            pieces.append(event.choices[0].delta.content or "")
            citations = (event.choices[0].delta.model_extra or {}).get("citations", citations)
        usage = event.usage or usage
    content = "".join(pieces)
    assert len([p for p in pieces if p]) >= 3 and "\n\nSources:\n" in content
    assert citations and content.endswith("\n".join(f"[{c['passage']}] {c['location']}" for c in citations))
    # the follow-up continued the first answer's session: its prompt starts with the first one's passages
    assert usage.prompt_tokens_details.cached_tokens >= first_prompt // 2


def test_the_server_takes_the_principal_from_the_api_key_only(server):
    from openai import AuthenticationError

    question = [{"role": "user", "content": "What is the Orrin vault code?"}]
    with pytest.raises(AuthenticationError):
        _client(server, "no-such-key").chat.completions.create(model="any", messages=question, max_tokens=8)
    bob = _client(server, "key-bob").chat.completions.create(
        model="any", messages=question, max_tokens=16, extra_body={"principal": "alice", "user": "alice"})
    assert "7351" not in bob.choices[0].message.content  # the body cannot name a principal
    assert "secret" not in {c["doc_id"] for c in bob.choices[0].message.model_extra["citations"]}
    alice = _client(server, "key-alice").chat.completions.create(model="any", messages=question, max_tokens=16)
    assert "secret" in {c["doc_id"] for c in alice.choices[0].message.model_extra["citations"]}


def test_a_chat_that_goes_on_from_an_answer_continues_its_session(pipe):
    from hybridctx_connectors.openai_server import Message, Sessions

    sessions = Sessions(pipe, max_sessions=2)
    turns = [Message(role="system", content="Be brief."), Message(role="user", content=QUESTION)]
    first = sessions.take("alice", turns[:1])
    answered = [*turns, Message(role="assistant", content=[{"type": "text", "text": "Every 14 days."}])]
    sessions.keep("alice", answered, first)
    as_sent_back = [*turns, Message(role="assistant", content="Every 14 days.")]
    assert sessions.take("bob", as_sent_back) is not first  # another principal never continues it
    assert sessions.take("alice", as_sent_back) is first
    assert sessions.take("alice", as_sent_back) is not first  # taken out: two requests never share one
    kept = [pipe.session() for _ in range(3)]
    for n, session in enumerate(kept):  # the least recently used are forgotten past max_sessions
        sessions.keep("alice", [Message(role="user", content=str(n))], session)
    assert sessions.take("alice", [Message(role="user", content="0")]) is not kept[0]
    assert sessions.take("alice", [Message(role="user", content="2")]) is kept[2]


def test_leaving_a_stream_stops_the_call_at_its_next_piece():
    from concurrent.futures import ThreadPoolExecutor

    from hybridctx.generate.streaming import AnswerStream, StreamClosed

    written: list[int] = []
    stopped = threading.Event()

    def endless(on_text):  # writes until the reader leaves, as a model loop calling on_text does
        try:
            for n in range(10_000):
                written.append(n)
                on_text(f"{n} ")
                time.sleep(0.001)
        except StreamClosed:
            stopped.set()
            raise

    with ThreadPoolExecutor(1) as workers:
        with AnswerStream(endless, workers) as stream:
            assert next(stream) == "0 "
        assert stopped.wait(5) and len(written) < 10_000
        assert list(stream) == [] and stream.answer is None
        with pytest.raises(StreamClosed):
            stream.text()
