"""An OpenAI-compatible chat server over a knowledge base: any OpenAI client, chat front end or
agent framework asks the KB as if it were a model.

    hybridctx serve --kb kb/ [--host 127.0.0.1 --port 8000] [--keys keys.json]

- `POST /v1/chat/completions` (`stream=true` as server-sent events): the last user message is
  the question, answered from the KB with citations; they come back in the message text (a
  "Sources:" list) and as a structured `citations` field of the message (of the last chunk when
  streamed). `usage` reports the prompt tokens served from the model's prefix cache
  (`prompt_tokens_details.cached_tokens`).
- Earlier turns form a session (`Pipeline.session()`): a chat that goes on from an answer this
  server gave continues that session, so its prompt keeps the passages already shown and the
  model's KV cache of them is reused. Sessions are found by a digest of the principal and the
  messages so far, and the least recently used are forgotten past `max_sessions` (each holds its
  prompt's passages and their duplicate filter: 60 KB at a 1k-token budget, O(budget)).
- `GET /v1/models`: the one model, named after the KB.
- The principal comes from the API key (`Authorization: Bearer KEY`), mapped to principals in
  the `--keys` JSON file (`{"KEY": "alice", ...}`); never from the request body. Without a keys
  file the server takes no key and reads as no principal (documents without an ACL only).

Model work runs off the event loop, on the pipeline's `Settings.max_concurrency` threads
(`Pipeline.astream`); waiting requests hold no thread. Starlette and uvicorn: the `serve` extra.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hybridctx import Pipeline
from hybridctx.errors import HybridCtxError, InvalidArgumentError, ModelUnavailableError
from hybridctx.pipeline import Session
from hybridctx.schema import Answer


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, ...: carried, not read

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (a list of content parts: their text parts joined)."""
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # sampling options this server does not use are ignored

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)


class Sessions:
    """Chats in progress: the session that gave the last answer, keyed by a digest of the principal
    and every message up to and including that answer; the least recently used go first."""

    def __init__(self, pipeline: Pipeline, max_sessions: int) -> None:
        self.pipeline = pipeline
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, principal: str | None, earlier: list[Message]) -> Session:
        """The session these earlier turns ended with, or a new one (a chat this server did not
        answer, or forgotten). It is taken out: two requests never share one."""
        with self._lock:
            session = self._sessions.pop(_digest(principal, earlier), None) if earlier else None
        return session or self.pipeline.session(principal=principal)

    def keep(self, principal: str | None, messages: list[Message], session: Session) -> None:
        with self._lock:
            self._sessions[_digest(principal, messages)] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)


def _digest(principal: str | None, messages: list[Message]) -> str:
    turns = [(m.role, m.text()) for m in messages if m.role in ("user", "assistant")]
    return hashlib.sha256(json.dumps([principal, turns]).encode()).hexdigest()


def content_of(answer: Answer) -> str:
    """The message text: the answer, then its sources."""
    sources = "\n".join(f"[{c.passage}] {c.location}" for c in answer.citations)
    return f"{answer.text}\n\nSources:\n{sources}" if sources else answer.text


def citations_of(answer: Answer) -> list[dict[str, Any]]:
    return [c.model_dump() for c in answer.citations]


def usage_of(answer: Answer) -> dict[str, Any]:
    u = answer.usage
    return {
        "prompt_tokens": u.prompt_tokens, "completion_tokens": u.generated_tokens,
        "total_tokens": u.prompt_tokens + u.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens or 0},
    }


def build_app(pipeline: Pipeline, keys: dict[str, str] | None = None, max_sessions: int = 256) -> Any:
    """The Starlette app serving `pipeline`; `keys` maps API keys to principals (None: no key)."""
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route
    except ImportError as exc:
        raise ModelUnavailableError("the OpenAI-compatible server needs the serve extra: "
                                    "pip install 'hybridctx[serve]'") from exc

    model_name = f"hybridctx:{pipeline.kb.root.name}"
    sessions = Sessions(pipeline, max_sessions)

    def error(status: int, message: str, kind: str = "invalid_request_error") -> Response:
        return JSONResponse({"error": {"message": message, "type": kind, "code": None, "param": None}}, status)

    def principal_of(request: Request) -> tuple[bool, str | None]:
        if keys is None:
            return True, None
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        principal = keys.get(key.strip()) if scheme.lower() == "bearer" else None
        return principal is not None, principal

    async def models(request: Request) -> Response:
        if not principal_of(request)[0]:
            return error(401, "invalid API key", "authentication_error")
        return JSONResponse({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": 0, "owned_by": "hybridctx"}]})

    async def chat(request: Request) -> Response:
        allowed, principal = principal_of(request)
        if not allowed:
            return error(401, "invalid API key", "authentication_error")
        try:
            body = ChatRequest.model_validate(await request.json())
        except (ValidationError, ValueError) as exc:
            return error(400, f"invalid request: {exc}")
        if body.messages[-1].role != "user" or not body.messages[-1].text().strip():
            return error(400, "the last message must be the user's question")
        question, earlier = body.messages[-1].text(), body.messages[:-1]
        session = sessions.take(principal, earlier)
        stream = session.astream(question, max_new_tokens=body.max_completion_tokens or body.max_tokens,
                                 temperature=body.temperature)  # bad arguments surface as the stream's error
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def answered(answer: Answer) -> str:
            """The reply's text; the session is kept under the chat it ends, for a follow-up."""
            content = content_of(answer)
            sessions.keep(principal, [*body.messages, Message(role="assistant", content=content)], session)
            return content

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            event = {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                     "model": model_name, "choices": choices, **extra}
            return f"data: {json.dumps(event)}\n\n"

        def delta(content: dict[str, Any], finish: str | None = None) -> str:
            return chunk([{"index": 0, "delta": content, "finish_reason": finish, "logprobs": None}])

        async def events() -> AsyncIterator[str]:
            yield delta({"role": "assistant", "content": ""})
            try:
                async for piece in stream:
                    yield delta({"content": piece})
                answer = await stream.text()
            except HybridCtxError as exc:
                yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n"
                return
            finally:
                await stream.aclose()
            sources = answered(answer)[len(answer.text):]  # what follows the streamed answer text
            yield delta({"content": sources, "citations": citations_of(answer)}, "stop")
            if (body.stream_options or {}).get("include_usage"):
                yield chunk([], usage=usage_of(answer))
            yield "data: [DONE]\n\n"

        if body.stream:
            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            answer = await stream.text()
        except HybridCtxError as exc:
            return error(400, str(exc))
        content = answered(answer)
        return JSONResponse({
            "id": reply_id, "object": "chat.completion", "created": created, "model": model_name,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
                "role": "assistant", "content": content, "citations": citations_of(answer)}}],
            "usage": usage_of(answer),
        })

    return Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
    ])


def read_keys(path: Path) -> dict[str, str]:
    """The `--keys` file: a JSON object from API key to principal."""
    try:
        keys = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(f"--keys {path}: cannot read it as JSON: {exc}") from exc
    if not isinstance(keys, dict) or not keys or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in keys.items()
    ):
        raise InvalidArgumentError(f"--keys {path}: expected a JSON object from API key to principal name")
    return keys


def serve(
    pipeline: Pipeline, host: str = "127.0.0.1", port: int = 8000, keys: dict[str, str] | None = None,
    max_sessions: int = 256,
) -> None:
    """Serve `pipeline` until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ModelUnavailableError("the OpenAI-compatible server needs the serve extra: "
                                    "pip install 'hybridctx[serve]'") from exc
    uvicorn.run(build_app(pipeline, keys, max_sessions), host=host, port=port, log_level="warning")
