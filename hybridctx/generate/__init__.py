"""Generate stage: a packed context to an answer with checked citations.

- `backend`: the `Backend` interface, `Generation` and the window check every backend makes;
- `llama_cpp`: the embedded default (any GGUF on the CPU, Qwen2.5-Coder 0.5B Instruct unless
  named; `models` assembles the packaged ones, `chat` reads an instruct model's turns);
- `vllm`: the vLLM engine (prefix caching, RoPE scaling, fp8 KV cache);
- `openai_compatible`: any OpenAI-compatible server (a running vLLM, a hosted API);
- `reader`: `Reader`, the model as a question meets it (what it reads well per window, answers
  with checked citations);
- `citations`: `[n]` markers read back and checked against the prompt's passages;
- `strategy`: the `AnswerStrategy` interface and the `Question` it answers; implementations in
  `direct`, `mapping` (map, the default: passages about the question read on their own) and
  `synthesis` (multi-needle: facts first, map-reduce over windows; self-routing); `strategies`
  builds them by name;
- `session`: follow-up questions sharing one growing prompt; `streaming`: answers as written;
- `calibration`: the model's effective context, stored per model (`evals.calibrate` measures it);
- `grounded`: answers chosen among what the passages hold (`ask(..., choices=defined_symbols)`).
"""

from hybridctx.generate.backend import DEFAULT_STOP, Backend, Generation, check_choices, check_fits
from hybridctx.generate.citations import citation_of, cite, markers, unsupported_citations
from hybridctx.generate.llama_cpp import LlamaCppBackend, LlamaCppSettings, LlamaTokenCounter
from hybridctx.generate.openai_compatible import OpenAICompatibleBackend, OpenAISettings
from hybridctx.generate.synthesis import FACTS_TEMPLATE, Synthesizer
from hybridctx.generate.vllm import RopeScaling, VLLMBackend, VLLMSettings

__all__ = [
    "DEFAULT_STOP", "FACTS_TEMPLATE", "Backend", "Generation", "LlamaCppBackend", "LlamaCppSettings",
    "LlamaTokenCounter",
    "OpenAICompatibleBackend", "OpenAISettings", "RopeScaling", "Synthesizer", "VLLMBackend", "VLLMSettings",
    "check_choices", "check_fits", "citation_of", "cite", "markers", "unsupported_citations",
]
