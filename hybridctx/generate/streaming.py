"""Streaming an answer: its text piece by piece as the model writes it, then the whole `Answer`.

Backends hand pieces to an `on_text` callback (llama.cpp and OpenAI-compatible servers token by
token, vLLM's offline engine as its step loop produces them). `AnswerStream` runs the call on a
worker thread (the pipeline's pool) and hands the pieces to a `for` loop, `AsyncAnswerStream` to
an `async for` loop, so that a caller iterates instead of passing a callback and an event loop
never waits on model work (`Workers`: the pool). `Reader.answer` passes the pieces through `TrimmedText`, so that
joined they are exactly `Answer.text`.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from hybridctx.schema import Answer

Call = Callable[[Callable[[str], None]], Answer]  # runs the answer, handing pieces to its argument
_T = TypeVar("_T")


class StreamClosed(Exception):
    """Raised into the model's loop when the reader has left, to stop generating."""


class TrimmedText:
    """Passes pieces on so that, joined, they equal the stripped answer (`Answer.text`): leading
    whitespace is dropped, and whitespace is held back until text follows it."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._started = False
        self._held = ""

    def __call__(self, piece: str) -> None:
        if not self._started:
            piece = piece.lstrip()
            self._started = bool(piece)
        text = self._held + piece
        body = text.rstrip()
        self._held = text[len(body):]
        if body:
            self._sink(body)


def _start(call: Call, post: Callable[[tuple[str, Any]], None], closed: threading.Event, workers: Executor) -> None:
    """Run `call` on a worker, posting ("text", piece)... then ("done", answer) or ("failed", exc)."""

    def text(piece: str) -> None:
        if closed.is_set():
            raise StreamClosed("the reader left the stream")
        post(("text", piece))

    def run() -> None:
        try:
            answer = call(text)
        except BaseException as exc:  # noqa: BLE001  (handed to the reader, who raises it)
            with suppress(Exception):  # the reader's loop is gone: nobody to tell
                post(("failed", exc))
            return
        with suppress(Exception):
            post(("done", answer))

    def dropped(future: Future[None]) -> None:
        if future.cancelled():  # the pool was shut down (Pipeline.close) before the call started
            with suppress(Exception):
                post(("failed", StreamClosed("the pipeline was closed before the answer started")))

    workers.submit(run).add_done_callback(dropped)


class _Reader:
    """What the two streams share: the items posted by `_start`, read in order."""

    answer: Answer | None
    _closed: threading.Event

    def _finished(self) -> bool:
        return self.answer is not None or self._closed.is_set()

    def _take(self, item: tuple[str, Any]) -> str | None:
        """The piece an item carries; None once the answer is in. The call's error is raised."""
        kind, value = item
        if kind == "text":
            return str(value)
        if kind == "failed":
            self._closed.set()
            raise value
        self.answer = value
        return None

    def _whole(self) -> Answer:
        if self.answer is None:
            raise StreamClosed("the stream was closed before the answer was complete")
        return self.answer


class AnswerStream(_Reader, Iterator[str]):
    """`for piece in stream` gives the answer's text as the model writes it; then `stream.answer`
    is the whole `Answer` (citations, usage). Leaving early (`close()`, or the end of a `with`
    block) stops the model at its next piece. An error of the call is raised by the loop."""

    def __init__(self, call: Call, workers: Executor) -> None:
        self.answer = None
        self._closed = threading.Event()
        self._items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        _start(call, self._items.put, self._closed, workers)

    def __next__(self) -> str:
        piece = None if self._finished() else self._take(self._items.get())
        if piece is None:
            raise StopIteration
        return piece

    def text(self) -> Answer:
        """Read the rest of the stream and return the whole answer."""
        for _ in self:
            pass
        return self._whole()

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> AnswerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAnswerStream(_Reader, AsyncIterator[str]):
    """`async for piece in stream`: `AnswerStream` for async code. The model runs on its own
    thread and posts each piece to the event loop, which only awaits; make it inside a running loop."""

    def __init__(self, call: Call, workers: Executor) -> None:
        self.answer = None
        self._closed = threading.Event()
        token = anyio.lowlevel.current_token()
        send, self._receive = anyio.create_memory_object_stream[tuple[str, Any]](math.inf)

        def post(item: tuple[str, Any]) -> None:
            anyio.from_thread.run_sync(send.send_nowait, item, token=token)

        _start(call, post, self._closed, workers)

    async def __anext__(self) -> str:
        piece = None if self._finished() else self._take(await self._receive.receive())
        if piece is None:
            raise StopAsyncIteration
        return piece

    async def text(self) -> Answer:
        """Read the rest of the stream and return the whole answer."""
        async for _ in self:
            pass
        return self._whole()

    async def aclose(self) -> None:
        self._closed.set()

    async def __aenter__(self) -> AsyncAnswerStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def result_of(future: Future[Any]) -> Any:
    """Await a worker's `future` without blocking the event loop (asyncio, trio: anyio's token)."""
    done = anyio.Event()
    token = anyio.lowlevel.current_token()

    def wake(_: Future[Any]) -> None:
        with suppress(RuntimeError):  # the loop is gone: nobody is waiting
            anyio.from_thread.run_sync(done.set, token=token)

    future.add_done_callback(wake)
    await done.wait()
    return future.result()


class Workers:
    """The threads that async and streamed calls run on (`Settings.max_concurrency` of them),
    shared by a pipeline and its sessions: waiting calls queue, holding no thread, and the
    threads keep their SQLite connections warm."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="hybridctx")

    def stream(self, call: Call) -> AnswerStream:
        """`call` on a worker, its pieces handed to a `for` loop."""
        return AnswerStream(call, self.pool)

    def astream(self, call: Call) -> AsyncAnswerStream:
        """`call` on a worker, its pieces handed to an `async for` loop."""
        return AsyncAnswerStream(call, self.pool)

    async def run(self, work: Callable[[], _T]) -> _T:
        """`work` on a worker, awaited."""
        result: _T = await result_of(self.pool.submit(work))
        return result

    def close(self) -> None:
        """Calls not started are dropped; running ones finish."""
        self.pool.shutdown(cancel_futures=True)
