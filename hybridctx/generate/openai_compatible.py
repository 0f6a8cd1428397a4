"""A client for any OpenAI-compatible server: a running vLLM (`python -m
vllm.entrypoints.openai.api_server`), or a hosted API.

It streams every request (`/v1/completions` for a plain prompt, `/v1/chat/completions` for
a chat model), which times the first token, and reads prompt, cached and generated token
counts from the final usage record. vLLM reports cached tokens when started with
`--enable-prompt-tokens-details`; providers with context caching report them the same way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from hybridctx.errors import BackendError, ModelUnavailableError
from hybridctx.generate.backend import Generation, check_choices, check_fits, stops
from hybridctx.pack.prompt import ChatTurns
from hybridctx.schema import PackedContext, Usage
from hybridctx.tokens import HFTokenizer, TiktokenCounter


class OpenAISettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["openai"] = "openai"
    base_url: str = Field(description="The server's API root, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="The model name the server knows")
    endpoint: Literal["completions", "chat"] = Field(
        "completions", description="completions: the packed prompt as is; chat: it becomes one user message"
    )
    tokenizer: str | None = Field(
        None, description="How to count prompt tokens: 'cl100k_base'/'o200k_base', or a folder or tokenizer.json "
        "of the served model; None: `model`, if it is a local folder",
    )
    context_window: int = Field(8192, ge=256)
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key, if any")
    timeout_s: float = Field(600.0, gt=0)
    max_concurrency: int = Field(8, ge=1, description="Requests in flight at once in generate_many")


class OpenAICompatibleBackend:
    name = "openai-compatible"

    def __init__(self, settings: OpenAISettings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.context_window = settings.context_window
        key = os.environ.get(settings.api_key_env)
        self._client = httpx.Client(
            base_url=settings.base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(settings.timeout_s, connect=10.0),
            transport=transport,
        )
        self._counter: HFTokenizer | TiktokenCounter | None = None

    @property
    def model_id(self) -> str:
        return f"openai/{self.settings.model}@{self.settings.base_url}"

    def control_tokens(self) -> frozenset[str]:
        """The counting tokenizer's: the served model's when `tokenizer` names its folder."""
        return self.token_counter().control_tokens()

    def chat_turns(self) -> ChatTurns | None:
        """None: the completions endpoint continues the prompt as it is, and the chat endpoint
        sends it as one user message that the server frames with its own template."""
        return None

    def token_counter(self) -> HFTokenizer | TiktokenCounter:
        if self._counter is None:
            self._counter = _counter_for(self.settings.tokenizer or self.settings.model)
        return self._counter

    def generate(
        self, context: PackedContext, max_new_tokens: int = 200, temperature: float = 0.0,
        stop: Sequence[str] | None = None, on_text: Callable[[str], None] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Generation:
        """One streamed request; `on_text` receives each piece of the answer as it arrives.

        The prompt is counted first and refused if the answer would not fit the window (a chat
        template adds a few tokens more on the server). `choices` go as vLLM's
        `structured_outputs` field: a server that does not know it may answer freely."""
        chosen = check_choices(choices)
        s = self.settings
        check_fits(self.token_counter().count(context.prompt), max_new_tokens, self.context_window)
        body: dict[str, Any] = {
            "model": s.model,
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "stop": stops(stop, self.chat_turns()),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if chosen is not None:
            body["structured_outputs"] = {"choice": chosen}
        if s.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": context.prompt}]
        else:
            body["prompt"] = context.prompt
        path = "chat/completions" if s.endpoint == "chat" else "completions"
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        first_token: float | None = None
        started = time.perf_counter()
        for event in self._events(path, body):
            for choice in event.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") if s.endpoint == "chat" else choice.get("text")
                if text:
                    if first_token is None:
                        first_token = time.perf_counter() - started
                    pieces.append(text)
                    if on_text is not None:
                        on_text(text)
            usage = event.get("usage") or usage
        if "prompt_tokens" not in usage:
            raise BackendError(f"{s.base_url}: the server sent no usage record (it must honour stream_options)")
        details = usage.get("prompt_tokens_details") or {}
        return Generation(
            text="".join(pieces).strip(),
            usage=Usage(
                prompt_tokens=usage["prompt_tokens"],
                generated_tokens=usage.get("completion_tokens", 0),
                cached_tokens=details.get("cached_tokens"),
                seconds=time.perf_counter() - started,
                first_token_seconds=first_token,
            ),
        )

    def generate_many(
        self, contexts: Sequence[PackedContext], max_new_tokens: int = 200, temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Concurrent requests: the server batches them and shares their cached prefix."""
        with ThreadPoolExecutor(max_workers=min(self.settings.max_concurrency, max(1, len(contexts)))) as pool:
            return list(pool.map(lambda c: self.generate(c, max_new_tokens, temperature, stop), contexts))

    def close(self) -> None:
        self._client.close()

    def _events(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The server-sent events of one streamed request, as dicts."""
        url = f"{self.settings.base_url.rstrip('/')}/{path}"
        try:
            with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise BackendError(f"{url} answered {response.status_code}: {_server_message(response)}")
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        event = json.loads(data)
                    except json.JSONDecodeError as exc:
                        raise BackendError(f"{url} sent a malformed event ({exc}): {data[:200]!r}") from exc
                    if not isinstance(event, dict):
                        raise BackendError(f"{url} sent an event that is not an object: {data[:200]!r}")
                    if "error" in event:
                        raise BackendError(f"{url} failed mid-stream: {event['error']}")
                    yield event
        except httpx.HTTPError as exc:
            raise BackendError(f"{url}: {type(exc).__name__}: {exc}") from exc


def _server_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", response.text)
        return error.get("message", str(error)) if isinstance(error, dict) else str(error)
    except ValueError:
        return response.text[:500]


def _counter_for(tokenizer: str) -> HFTokenizer | TiktokenCounter:
    if tokenizer in ("cl100k_base", "o200k_base"):
        return TiktokenCounter(tokenizer)
    path = Path(tokenizer)
    tokenizer_json = path / "tokenizer.json" if path.is_dir() else path
    if tokenizer_json.name != "tokenizer.json" or not tokenizer_json.is_file():
        raise ModelUnavailableError(
            f"cannot count tokens for {tokenizer!r}: set OpenAISettings.tokenizer to 'cl100k_base', "
            "'o200k_base' or the served model's folder or tokenizer.json"
        )
    return HFTokenizer(tokenizer_json, add_special_tokens=True)
