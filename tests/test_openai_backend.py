"""The OpenAI-compatible client against scripted server answers (httpx.MockTransport): the
window check before any request, server-sent events read piece by piece, and what a broken
server sends turned into BackendError. The real server is tested in test_vllm.py."""

from __future__ import annotations

import json

import httpx
import pytest

from hybridctx.errors import BackendError, InvalidArgumentError
from hybridctx.generate import OpenAICompatibleBackend, OpenAISettings
from hybridctx.schema import PackedContext

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}


def context(prompt: str) -> PackedContext:
    return PackedContext(query="q", prompt=prompt, chunks=[], token_count=0, budget_tokens=256, prefix_token_count=0)


def server(*lines: str, requests: list[httpx.Request] | None = None) -> httpx.MockTransport:
    """A server that answers every request with these server-sent event lines."""

    def answer(request: httpx.Request) -> httpx.Response:
        if requests is not None:
            requests.append(request)
        return httpx.Response(200, text="".join(f"{line}\n\n" for line in lines))

    return httpx.MockTransport(answer)


def event(payload: object) -> str:
    return "data: " + json.dumps(payload)


def client(transport: httpx.MockTransport, **settings: object) -> OpenAICompatibleBackend:
    options = {"base_url": "http://llm.test/v1", "model": "m", "tokenizer": "cl100k_base", "context_window": 256}
    return OpenAICompatibleBackend(OpenAISettings(**{**options, **settings}), transport=transport)


def test_the_answer_streams_piece_by_piece_with_the_servers_usage():
    requests: list[httpx.Request] = []
    transport = server(
        event({"choices": [{"text": " It"}]}), event({"choices": [{"text": " is 7"}]}),
        event({"choices": [{"text": " [1]."}]}), event({"choices": [], "usage": USAGE}), "data: [DONE]",
        requests=requests,
    )
    pieces: list[str] = []
    generation = client(transport).generate(context("Question: what is it?\nAnswer:"), 16, on_text=pieces.append)
    assert pieces == [" It", " is 7", " [1]."] and generation.text == "It is 7 [1]."
    assert (generation.usage.prompt_tokens, generation.usage.generated_tokens) == (7, 3)
    assert generation.usage.cached_tokens == 4
    body = json.loads(requests[0].content)
    assert requests[0].url.path == "/v1/completions" and body["max_tokens"] == 16 and body["stream"] is True


def test_choices_go_as_vllms_structured_outputs_and_must_be_non_empty():
    requests: list[httpx.Request] = []
    transport = server(event({"choices": [{"text": "yes"}]}), event({"choices": [], "usage": USAGE}), "data: [DONE]",
                       requests=requests)
    assert client(transport).generate(context("Is it?\nAnswer:"), 4, choices=["yes", "no", "yes"]).text == "yes"
    assert json.loads(requests[0].content)["structured_outputs"] == {"choice": ["yes", "no"]}
    for bad in ([], ["yes", ""]):
        with pytest.raises(InvalidArgumentError, match="choices"):
            client(transport).generate(context("Is it?\nAnswer:"), 4, choices=bad)
    assert len(requests) == 1


def test_a_prompt_that_would_overflow_the_window_is_refused_before_any_request():
    requests: list[httpx.Request] = []
    backend = client(server(event({"choices": [], "usage": USAGE}), requests=requests))
    long_prompt = "word " * 300  # 300 cl100k tokens: more than the 256-token window
    with pytest.raises(InvalidArgumentError, match=r"exceeds the model's context window \(256\)"):
        backend.generate(context(long_prompt), max_new_tokens=8)
    fits = "word " * 200
    with pytest.raises(InvalidArgumentError, match="max_new_tokens"):  # the prompt fits, the answer does not
        backend.generate(context(fits), max_new_tokens=100)
    assert requests == []


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["data: {\"choices\": [{\"text\": \"cut off"], "malformed event"),
        (["data: [1, 2]"], "not an object"),
        ([event({"error": {"message": "engine died"}})], "failed mid-stream.*engine died"),
        ([event({"choices": [{"text": "hi"}]}), "data: [DONE]"], "no usage record"),
    ],
)
def test_what_a_broken_server_sends_becomes_a_backend_error_naming_it(lines, reason):
    with pytest.raises(BackendError, match=reason) as raised:
        client(server(*lines)).generate(context("Hello"), max_new_tokens=4)
    assert "llm.test" in str(raised.value)


def test_a_server_error_status_carries_its_message():
    transport = httpx.MockTransport(lambda request: httpx.Response(400, json={"error": {"message": "bad stop"}}))
    with pytest.raises(BackendError, match=r"completions answered 400: bad stop"):
        client(transport).generate(context("Hello"), max_new_tokens=4)
