"""Streaming answers: time to the first token against the whole answer, and `hybridctx serve`
under many concurrent streaming clients.

1. In process, the embedded model (Gemma 3 270M, llama.cpp): each question streamed
   (`Pipeline.stream`: time to the first piece and to the end), then each asked whole
   (`Pipeline.ask`), every call following a different prompt, so that llama.cpp's cache of the
   previous prompt helps both passes alike.
2. `hybridctx serve` on 127.0.0.1 and `--clients` concurrent clients (the official `openai` async
   client), each asking one streamed question after another for `--seconds`: errors, time to the
   first content, answers completed, and the server's memory before and after; `--rounds` times
   over, to tell memory the load needs (the first round) from memory that keeps growing.

    .venv/bin/python bench/bench_serve.py [--clients 50] [--seconds 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date
from pathlib import Path

import anyio
from _results import percentile, rss_mb, served, write_section

from hybridctx import Document, Pipeline

BUDGET = 1024
MAX_NEW_TOKENS = 24


def corpus() -> list[Document]:
    return [Document(id=f"valve-{i}", text=f"Valve {i} is serviced every {i + 2} weeks at {10 + i} bar by crew "
                     f"{chr(65 + i % 26)}.", metadata={"source": f"valves/{i}.md"}) for i in range(40)]


def question(n: int) -> str:
    return f"How often is valve {n % 40} serviced?"


def in_process(kb: Path, questions: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {"first": [], "streamed": [], "whole": [], "prompt": [], "generated": []}
    with Pipeline.open(kb, show_progress=False, budget_tokens=BUDGET, max_new_tokens=MAX_NEW_TOKENS) as pipe:
        pipe.ask(question(99))  # load the model
        for n in range(questions):
            started = time.perf_counter()
            first = None
            stream = pipe.stream(question(n))
            for _ in stream:
                first = first or time.perf_counter() - started
            seconds["streamed"].append(time.perf_counter() - started)
            seconds["first"].append(first or seconds["streamed"][-1])
            usage = stream.text().usage
            seconds["prompt"].append(usage.prompt_tokens)
            seconds["generated"].append(usage.generated_tokens)
        for n in range(questions):
            started = time.perf_counter()
            pipe.ask(question(n))
            seconds["whole"].append(time.perf_counter() - started)
    return seconds


async def client(url: str, n: int, until: float, first: list[float], done: list[float], errors: list[str]) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600) as openai:
        while time.perf_counter() < until:
            started = time.perf_counter()
            seen = False
            try:
                stream = await openai.chat.completions.create(
                    model="kb", messages=[{"role": "user", "content": question(n)}], stream=True,
                    max_tokens=MAX_NEW_TOKENS)
                async for event in stream:
                    if not seen and event.choices and event.choices[0].delta.content:
                        first.append(time.perf_counter() - started)
                        seen = True
                done.append(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001  (counted, the figure reports them)
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            n += 7  # this client's next question


async def load(url: str, clients: int, seconds: float) -> tuple[list[float], list[float], list[str]]:
    first: list[float] = []
    done: list[float] = []
    errors: list[str] = []
    until = time.perf_counter() + seconds
    async with anyio.create_task_group() as group:
        for n in range(clients):
            group.start_soon(client, url, n, until, first, done, errors)
    return first, done, errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kb = Path(tmp) / "kb"
        with Pipeline.open(kb, show_progress=False) as pipe:
            pipe.add(corpus())
        local = in_process(kb, args.questions)
        print({k: round(percentile(v, 0.5), 3) for k, v in local.items()}, flush=True)

        arguments = ["serve", "--kb", str(kb), "--budget", str(BUDGET), "--port="]
        with served(arguments, Path(tmp) / "server.log") as (server, port):
            url = f"http://127.0.0.1:{port}/v1"
            anyio.run(load, url, 2, 5.0)  # warm-up: the model loaded
            rss = [rss_mb(server.pid)]
            rounds = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                rounds.append((*anyio.run(load, url, args.clients, args.seconds), time.perf_counter() - started))
                rss.append(rss_mb(server.pid))
                print(f"round: {len(rounds[-1][1])} answers, {len(rounds[-1][2])} errors, RSS {rss[-1]:.0f} MB",
                      flush=True)
    load_average = os.getloadavg()[0]
    first, done, errors, wall = rounds[0]
    p50 = {k: percentile(v, 0.5) for k, v in local.items()}
    lines = [
        "## Streaming answers and the OpenAI-compatible server",
        "",
        f"Measured {date.today()} by `bench/bench_serve.py` (load average {load_average:.1f}), the embedded model "
        f"(Gemma 3 270M, llama.cpp, 2 cores), a 40-document KB, budget {BUDGET} tokens, at most {MAX_NEW_TOKENS} "
        "new tokens.",
        "",
        f"In process, {args.questions} questions (p50 seconds):",
        "",
        "| | first piece | whole answer |",
        "|---|---:|---:|",
        f"| `Pipeline.stream` | {p50['first']:.2f} | {p50['streamed']:.2f} |",
        f"| `Pipeline.ask` (not streamed) | | {p50['whole']:.2f} |",
        "",
        f"A streamed answer shows its first words after {p50['first'] / p50['streamed']:.0%} of the time the whole "
        f"answer takes; streaming costs {p50['streamed'] / p50['whole'] - 1:+.0%} against `ask`. The prompts are "
        f"{p50['prompt']:.0f} tokens and the answers {p50['generated']:.0f} (p50): reading the prompt takes most of "
        "the time, and the longer the answer, the more streaming shows it early.",
        "",
        f"`hybridctx serve` on 127.0.0.1, {args.clients} concurrent clients (the `openai` async client, streamed), "
        f"each asking one question after another for {args.seconds:.0f} s ({wall:.0f} s until the last answer); "
        "the first round:",
        "",
        "| | figure |",
        "|---|---:|",
        f"| answers completed | {len(done)} ({len(done) / wall:.2f} per second) |",
        f"| errors | {len(errors)} |",
        f"| time to first content p50 / p99 | {percentile(first, 0.5):.1f} s / {percentile(first, 0.99):.1f} s |",
        f"| whole answer p50 / p99 | {percentile(done, 0.5):.1f} s / {percentile(done, 0.99):.1f} s |",
        f"| server RSS before, then after each round | {' / '.join(f'{mb:,.0f}' for mb in rss)} MB |",
        f"| errors in later rounds | {sum(len(r[2]) for r in rounds[1:])} |",
        "",
        "One llama.cpp model answers one prompt at a time on this CPU, so the clients queue: the time to the "
        "first content is mostly the wait for the model (answers per second x clients), not the server.",
    ]
    if errors:
        lines += ["", "First error: `" + errors[0] + "`"]
    write_section("serve", lines)


if __name__ == "__main__":
    main()
