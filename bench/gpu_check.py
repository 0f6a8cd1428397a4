"""`make gpu-check`: the GPU path of hybridctx measured in one prepared command.

On a machine with an NVIDIA GPU and this repository it installs what the GPU path needs (from
the package registries, or offline from a folder of wheels: `--wheels`), then measures, each
step within its share of the wall-time budget (default 540 s, under a 10-minute command):

1. environment: device, driver, versions, load;
2. install: faiss with GPU support and vLLM, where they are missing;
3. embedding: all-MiniLM-L6-v2 in fp16 on CUDA (hybridctx's `SentenceTransformerEmbedder`) at
   batch 256 and 1,024 over real text, chunks/s and tokens/s, against the same model on the
   CPU, and what a billion tokens would take; then it embeds as much of the corpus as its
   share allows, for step 4;
4. dense_index: those real embeddings in hybridctx's `FaissIndex` (the type `index_spec`
   picks, on the GPU when faiss has GPU support), k=1000 p50/p99 and recall@1000 against
   exhaustive search;
5. vllm: the embedded Gemma 3 270M (safetensors) on vLLM with prefix caching: a 32k-token
   packed prompt, cold and as a follow-up in a session (cached tokens, time to first token),
   fp8 KV cache on and off (KV-cache capacity and speed), and the multi-needle answer table
   at 8k/32k;
6. pipeline: `Pipeline.add` over at least 50M tokens of real text (or what its share allows),
   then 20 questions, p50 seconds per answer.

Without a GPU (`make gpu-check` here) every GPU step says "no GPU: skipped" and the CPU parts run
small, so the script is rehearsed by the test suite (tests/test_gpu_check.py) and cannot rot.

Each measuring step runs in its own process, killed when it runs over its share (what a step
leaves unused goes to the next), and writes its figures to the state file as soon as it has
them; a rerun skips the steps already measured (`--fresh` redoes them).
At the end a one-screen summary is printed and the "gpu" section of bench/RESULTS.md written
("gpu-rehearsal" without a GPU, so a rehearsal never replaces GPU figures).

    .venv/bin/python bench/gpu_check.py [--budget-s 540] [--wheels DIR] [--fresh] [--small]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT), str(ROOT / "connectors")]  # a bare GPU machine may run it uninstalled
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# (step, share of the budget). The install share is used only where something is missing.
STEPS: list[tuple[str, float]] = [
    ("environment", 0.02), ("install", 0.20), ("embedding", 0.16), ("dense_index", 0.16), ("vllm", 0.30),
    ("pipeline", 0.16),
]
# faiss with GPU support, as the project's `gpu` extra names it (pyproject.toml).
WANTED = {"faiss": "faiss-gpu>=1.15.1,<2"}
# What the GPU steps need, and how to tell it is there.
NEEDED = {"hybridctx": "import hybridctx", "faiss with GPU": "import faiss; assert faiss.get_num_gpus() > 0",
          "vllm": "import vllm"}
CHUNK_TOKENS, CHUNK_STRIDE = 128, 96  # hybridctx's default chunks: 128 tokens, 32 of overlap
TARGET_VECTORS = 10_000_000  # what the issue asks the dense step to index, where time allows
PIPELINE_TOKENS = 50_000_000


# -- what every step shares ------------------------------------------------------------------------------
def has_gpu() -> bool:
    """An NVIDIA GPU that torch can use (CUDA_VISIBLE_DEVICES="" hides one, for a rehearsal)."""
    try:
        import torch
    except ImportError:
        return shutil.which("nvidia-smi") is not None and os.environ.get("CUDA_VISIBLE_DEVICES") != ""
    return bool(torch.cuda.is_available())


def load_state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def save_step(path: Path, step: str, figures: dict[str, Any]) -> None:
    """Merge `figures` into the step's record, at once (a step killed later keeps them)."""
    state = load_state(path)
    state.setdefault(step, {}).update(figures)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def corpus_files(limit_bytes: int) -> list[Path]:
    """Real text nobody here wrote: the interpreter's standard library and installed packages'
    Python sources and docs, in path order, up to `limit_bytes` (walked no further than that)."""
    import sysconfig

    roots = dict.fromkeys(sysconfig.get_paths()[key] for key in ("stdlib", "purelib", "platlib"))
    files, total = [], 0
    for root in roots:
        for folder, subfolders, names in os.walk(root):
            subfolders.sort()
            for name in sorted(names):
                path = Path(folder, name)
                if path.suffix not in (".py", ".md", ".rst", ".txt") or not path.is_file():
                    continue
                size = path.stat().st_size
                if 200 <= size <= 2_000_000:
                    files.append(path)
                    total += size
                    if total >= limit_bytes:
                        return files
    return files


def bytes_for(chunks: int) -> int:
    """Bytes of text that make about `chunks` chunks (a token is about 4 bytes; twice that, for margin)."""
    return chunks * CHUNK_STRIDE * 8


def chunk_texts(files: list[Path], tokenizer_path: Path, most: int) -> tuple[list[str], list[int]]:
    """Up to `most` windows of `CHUNK_TOKENS` tokens of the files (tokenized in Rust, in parallel),
    and each one's token count: the chunk size hybridctx embeds, without its per-chunk Python work."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_truncation()
    texts: list[str] = []
    counts: list[int] = []
    for start in range(0, len(files), 256):
        batch = [p.read_text(encoding="utf-8", errors="replace") for p in files[start : start + 256]]
        for text, encoding in zip(batch, tokenizer.encode_batch(batch, add_special_tokens=False), strict=True):
            offsets = encoding.offsets
            for first in range(0, max(1, len(offsets) - CHUNK_TOKENS + CHUNK_STRIDE), CHUNK_STRIDE):
                window = offsets[first : first + CHUNK_TOKENS]
                if window:
                    texts.append(text[window[0][0] : window[-1][1]])
                    counts.append(len(window))
                    if len(texts) >= most:
                        return texts, counts
    return texts, counts


# -- the steps ---------------------------------------------------------------------------------------------
def step_environment(args: argparse.Namespace, gpu: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "gpu": gpu, "python": sys.version.split()[0], "cpus": os.cpu_count(), "load": os.getloadavg()[0],
        "versions": {p: version(p) for p in ("torch", "sentence-transformers", "faiss-cpu", "faiss-gpu",
                                             "faiss-gpu-cu12", "vllm", "transformers", "hybridctx")},
    }
    if shutil.which("nvidia-smi"):
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )
        figures["nvidia_smi"] = query.stdout.strip() or query.stderr.strip()
    if gpu:
        import torch

        figures["device"] = torch.cuda.get_device_name(0)
        figures["cuda"] = torch.version.cuda
    return figures


def importable(code: str) -> bool:
    """Whether `code` runs in a fresh interpreter (after an install, this process's imports are stale)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode == 0


def step_install(args: argparse.Namespace, gpu: bool, seconds: float) -> dict[str, Any]:
    """What the GPU steps need and lack, installed: offline from the wheels in `--wheels` (a
    machine that reaches no registry), else from the registry: the project with its `vllm` and
    `gpu` extras (vLLM brings its CUDA torch), then faiss-gpu in place of faiss-cpu, which
    provides the same `faiss` module (pyproject.toml, the `gpu` extra)."""
    if not gpu:
        return {"skipped": "no GPU: skipped"}
    missing = [name for name, code in NEEDED.items() if not importable(code)]
    if not missing:
        return {"installed": [], "note": "everything was there"}
    started, pip = time.perf_counter(), [sys.executable, "-m", "pip", "install", "-q"]
    if args.wheels:
        commands = [[*pip, "--no-index", "--no-deps", *map(str, sorted(args.wheels.glob("*.whl")))]]
    else:
        commands = [[*pip, "-e", f"{ROOT}[vllm,gpu]"],
                    [sys.executable, "-m", "pip", "uninstall", "-y", "-q", "faiss-cpu"],
                    [*pip, "--force-reinstall", "--no-deps", WANTED["faiss"]]]
    errors = []
    for command in commands:
        left = seconds - (time.perf_counter() - started) - 5
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=max(10.0, left))
        except subprocess.TimeoutExpired:
            errors.append(f"{' '.join(command[3:5])}: ran over the step's share")
            break
        if done.returncode != 0:
            errors.append((done.stderr.strip().splitlines() or ["?"])[-1])
    still = [name for name in missing if not importable(NEEDED[name])]
    return {"missing": missing, "still_missing": still, "seconds": round(time.perf_counter() - started, 1),
            "from": str(args.wheels) if args.wheels else "the registry", "errors": errors}


def step_embedding(args: argparse.Namespace, gpu: bool, deadline: float, state: Path) -> dict[str, Any]:
    import numpy as np

    from hybridctx.embed import SentenceTransformerEmbedder, resolve_model_path

    model = resolve_model_path(args.model)
    sample_size = 64 if args.small else 512 if not gpu else 100_000
    texts, counts = chunk_texts(corpus_files(bytes_for(sample_size)), model / "tokenizer.json", sample_size)
    cpu_texts = texts[: 64 if args.small else 256]
    cpu = SentenceTransformerEmbedder(str(model), device="cpu", batch_size=64)
    cpu.embed(cpu_texts[:16])  # warm
    started = time.perf_counter()
    cpu.embed(cpu_texts)
    cpu_rate = len(cpu_texts) / (time.perf_counter() - started)
    mean_tokens = sum(counts[: len(cpu_texts)]) / len(cpu_texts)
    figures: dict[str, Any] = {"cpu_chunks_per_s": round(cpu_rate, 1), "chunk_tokens_mean": round(mean_tokens, 1),
                               "cpu_threads": os.cpu_count()}
    save_step(state, "embedding", figures)
    vectors_path = state.with_name("gpu_check_vectors.npy")
    if not gpu:
        np.save(vectors_path, cpu.embed(texts).astype(np.float16))  # the dense step's small rehearsal
        return {**figures, "gpu": "no GPU: skipped", "vectors": len(texts)}
    import torch

    for batch in (256, 1024):
        # sentence-transformers encodes in the model's dtype: .half() is fp16 (SentenceTransformer.encode,
        # https://sbert.net/docs/package_reference/sentence_transformer/SentenceTransformer.html)
        embedder = SentenceTransformerEmbedder(str(model), device="cuda", batch_size=batch)
        embedder.embed(texts[: batch * 2])  # warm: kernels chosen, memory allocated
        torch.cuda.synchronize()
        started = time.perf_counter()
        embedder.embed(texts)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        rate = len(texts) / seconds
        figures[f"batch_{batch}"] = {
            "chunks_per_s": round(rate), "tokens_per_s": round(sum(counts) / seconds),
            "x_cpu": round(rate / cpu_rate, 1), "billion_tokens_hours": round(1e9 / (sum(counts) / seconds) / 3600, 2),
        }
        save_step(state, "embedding", figures)
    # Real embeddings for the dense step: as many chunks as the rest of the share allows.
    rate = figures["batch_1024"]["chunks_per_s"]
    wanted = min(TARGET_VECTORS, int(rate * max(0.0, deadline - time.time() - 30) * 0.6))
    more, _ = chunk_texts(corpus_files(bytes_for(max(wanted, len(texts)))), model / "tokenizer.json",
                          max(wanted, len(texts)))
    parts, started = [], time.perf_counter()
    for start in range(0, len(more), 262_144):
        if time.time() > deadline - 20:
            break
        parts.append(embedder.embed(more[start : start + 262_144]).astype(np.float16))
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dimension), np.float16)
    np.save(vectors_path, vectors)
    rate = len(vectors) / (time.perf_counter() - started)
    return {**figures, "vectors": len(vectors), "corpus_chunks_per_s": round(rate)}


def step_dense_index(args: argparse.Namespace, gpu: bool, deadline: float, state: Path) -> dict[str, Any]:
    import numpy as np

    from hybridctx.index.dense import FaissIndex, faiss, index_spec

    vectors = np.load(state.with_name("gpu_check_vectors.npy")).astype(np.float32)
    if len(vectors) < 64:
        return {"skipped": f"only {len(vectors)} embeddings from the embedding step"}
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    queries = vectors[rng.choice(len(vectors), min(1000, len(vectors) // 4), replace=False)]
    queries = queries + rng.normal(0, 0.05, queries.shape).astype(np.float32)  # near, not equal, to a stored vector
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    # index_spec: IVF-Flat up to 2M vectors, IVF-SQ8 to 20M (the billion-token KB's type); a rehearsal's few
    # thousand would be exact, so it builds a small IVF to run the same code.
    spec = index_spec(len(vectors), vectors.shape[1]) if len(vectors) >= 200_000 else "IVF16,Flat"
    ids = np.arange(len(vectors), dtype=np.int64)
    started = time.perf_counter()
    index = FaissIndex.build(spec, ids, vectors)
    gpus = int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0  # faiss-cpu has no GPU functions
    figures: dict[str, Any] = {"vectors": len(vectors), "spec": spec, "faiss_gpus": gpus,
                               "build_s": round(time.perf_counter() - started, 1)}
    save_step(state, "dense_index", figures)
    k = min(1000, len(vectors))
    # Exhaustive ground truth: IndexFlatIP, on the GPU where faiss has one (faiss wiki, "Faiss on the GPU":
    # index_cpu_to_gpu / StandardGpuResources, https://github.com/facebookresearch/faiss/wiki/Faiss-on-the-GPU).
    exact: Any = faiss.IndexFlatIP(vectors.shape[1])
    if figures["faiss_gpus"]:
        exact = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, exact)
    exact.add(vectors)
    _, truth = exact.search(queries, k)
    latencies, recalls = [], []
    index.search(queries[0], k)  # warm: the GPU copy is made on the first search
    for query, expected in zip(queries, truth, strict=True):
        if time.time() > deadline - 5:
            break
        started = time.perf_counter()
        _, found = index.search(query, k)
        latencies.append(1000 * (time.perf_counter() - started))
        recalls.append(len(set(found.tolist()) & set(expected.tolist())) / k)
    latencies.sort()
    return {**figures, "k": k, "queries": len(latencies), "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
            "recall_at_k": round(sum(recalls) / len(recalls), 3),
            "where": "GPU" if figures["faiss_gpus"] else "CPU (faiss without GPU support)"}


def step_vllm(args: argparse.Namespace, gpu: bool, deadline: float, state: Path) -> dict[str, Any]:
    if not gpu:
        return {"skipped": "no GPU: skipped"}
    if version("vllm") is None:
        return {"skipped": "vllm is not installed (see the install step)"}
    from hybridctx import Pipeline
    from hybridctx.evals.stdlib import stdlib_files
    from hybridctx.settings import Settings

    reader = reader_settings()  # Gemma 3 270M: 32k context
    kb = state.with_name("gpu_check_kb_vllm")
    figures: dict[str, Any] = {"model": "gemma-3-270m (embedded, safetensors)"}
    questions = ["How does the standard library's json module encode floats?",
                 "And how does it decode them?", "What does json.dumps do with a NaN?"]
    for kv_cache in ("auto", "fp8"):
        if time.time() > deadline - 60:
            figures[f"kv_{kv_cache}"] = "ran over the step's share: skipped"
            break
        # fp8 KV cache: https://docs.vllm.ai/en/latest/features/quantization/quantized_kvcache.html
        settings = Settings(backend=reader.model_copy(update={"kv_cache_dtype": kv_cache}), budget_tokens=32_000,
                            max_new_tokens=64, effective_context="window",
                            show_progress=False)
        started = time.perf_counter()
        with Pipeline.open(kb, settings) as pipe:
            pipe.add(stdlib_files(None)[:400])
            session = pipe.session()
            answers = [session.ask(q, max_new_tokens=64) for q in questions]
            cold, *follow = [a.usage for a in answers]
            figures[f"kv_{kv_cache}"] = {
                "prompt_tokens": cold.prompt_tokens, "cold_ttft_s": cold.first_token_seconds,
                "follow_up_ttft_s": [u.first_token_seconds for u in follow],
                "follow_up_cached_share": [round((u.cached_tokens or 0) / u.prompt_tokens, 3) for u in follow],
                "decode_tokens_per_s": round(sum(u.generated_tokens for u in follow) / max(
                    1e-9, sum(u.seconds - (u.first_token_seconds or 0) for u in follow)), 1),
                "kv_cache_blocks_and_block_tokens": getattr(pipe.backend, "kv_cache_blocks", lambda: None)(),
                "seconds": round(time.perf_counter() - started, 1),
            }
        save_step(state, "vllm", figures)
    if time.time() < deadline - 90:
        from hybridctx.evals import EvalConfig, eval_settings, run_eval, summary
        from hybridctx.pipeline import shared_pipelines

        config = EvalConfig(tasks=["multi_needle"], lengths=[48_000], budgets=[8_000, 32_000], answers=True,
                            answer_budgets=[8_000, 32_000], repeats=3)
        with shared_pipelines(eval_settings(config, Settings(backend=reader))) as open_kb:
            result = run_eval(config, open_kb, show_progress=False)
        figures["multi_needle"] = {f"{strategy}@{budget}": round(score, 2)
                                   for (_, strategy, budget), score in summary(result, "answer").items()}
    return figures


def reader_settings() -> Any:
    """The reader the GPU steps use: the embedded Gemma 3 270M on vLLM where vLLM is installed
    (32k context), else None: the embedded llama.cpp model."""
    if version("vllm") is None:
        return None
    from hybridctx.cache import default_cache_dir
    from hybridctx.generate.models import safetensors_folder
    from hybridctx.generate.vllm import VLLMSettings

    # LLM(enable_prefix_caching=..., kv_cache_dtype=..., gpu_memory_utilization=...): vLLM's engine
    # arguments, https://docs.vllm.ai/en/latest/configuration/engine_args.html. 0.3 of the GPU each, so
    # that engines of one process fit even where vLLM has not yet freed the last one's memory.
    return VLLMSettings(model=str(safetensors_folder("gemma-3-270m", default_cache_dir())), max_model_len=32_768,
                        enable_prefix_caching=True, gpu_memory_utilization=0.3)


def step_pipeline(args: argparse.Namespace, gpu: bool, deadline: float, state: Path) -> dict[str, Any]:
    from hybridctx import Pipeline
    from hybridctx.errors import HybridCtxError
    from hybridctx.settings import Settings

    kb = state.with_name("gpu_check_kb")
    settings = Settings(show_progress=False, embedding_model=args.model, embedding_batch_size=1024 if gpu else 64,
                        commit_every_chunks=65_536, budget_tokens=2048,
                        **({"backend": reader_settings()} if gpu else {}))
    files = corpus_files(12 * 4 * PIPELINE_TOKENS // 10 if gpu else 60_000)  # about 4 bytes a token
    figures: dict[str, Any] = {}
    seconds: list[float] = []
    with Pipeline.open(kb, settings) as pipe:
        started, batch, last = time.perf_counter(), 2_000 if gpu else 8, 0.0
        for start in range(0, len(files), batch):  # resumable: a rerun skips what was committed
            if time.time() + 2 * last > deadline - 60:
                figures["stopped"] = "ran out of the step's share before the whole corpus"
                break
            began = time.perf_counter()
            pipe.add(files[start : start + batch])
            last = time.perf_counter() - began
            documents, chunks, tokens = pipe.kb.store.totals()
            figures |= {"documents": documents, "chunks": chunks, "tokens": tokens,
                        "tokens_per_s": round(tokens / (time.perf_counter() - started))}
            save_step(state, "pipeline", figures)
        names = [Path(f).stem for f in files[:: max(1, len(files) // 20)]][: 20 if gpu else 2]
        for name in names:
            if time.time() > deadline - 10:
                break
            question = f"What is the module {name} for?"
            began = time.perf_counter()
            try:
                pipe.ask(question, max_new_tokens=48)
                figures["reader"] = pipe.backend.model_id
            except HybridCtxError as exc:  # no reader on this machine: time what every answer reads first
                pipe.retrieve(question, k=1000)
                figures["reader"] = f"none ({exc}): retrieve k=1000 only"
            seconds.append(time.perf_counter() - began)
    if seconds:
        figures |= {"questions": len(seconds), "p50_s_per_answer": round(statistics.median(seconds), 2)}
    return figures


# What the lent GPU machines' image lacks of hybridctx's dependencies (device tool's KINDS.md): carried as
# wheels for its Python 3.12.
CARRIED = ["pydantic>=2.7,<3", "pydantic-core", "annotated-types", "typing-inspection", "tantivy>=0.22,<1",
           "pyroaring>=1.0,<2", "datasketch>=1.6,<3", "faiss-cpu>=1.8,<2"]


def prepare_carry(folder: Path, model: str) -> None:
    """DIR/whl and DIR/model for a GPU machine that reaches no registry, and their sizes."""
    import torch

    from hybridctx.embed import resolve_model_path

    wheels = folder / "whl"
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                             "manylinux_2_24_x86_64", "manylinux_2_17_x86_64")]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version=3.12", "--implementation=cp", *platforms, "-d", str(wheels), *CARRIED],
                   check=True)
    from sentence_transformers import SentenceTransformer

    source = resolve_model_path(model)
    SentenceTransformer(str(source), device="cpu", local_files_only=True).to(torch.float16).save(str(folder / "model"))
    for part in (wheels, folder / "model"):
        size = sum(f.stat().st_size for f in part.rglob("*") if f.is_file())
        print(f"{part}: {size / 2**20:.1f} MiB")


MEASURING = {"embedding": step_embedding, "dense_index": step_dense_index, "vllm": step_vllm,
             "pipeline": step_pipeline}


# -- the run -------------------------------------------------------------------------------------------------
def run_step(args: argparse.Namespace, name: str, seconds: float) -> tuple[str, float]:
    """A measuring step in its own process, killed past `seconds`; what came of it, and how long it took."""
    started = time.perf_counter()
    command = [sys.executable, __file__, "--step", name, "--deadline", str(time.time() + seconds),
               "--state", str(args.state), "--model", args.model, *(["--small"] if args.small else [])]
    try:
        done = subprocess.run(command, timeout=seconds, capture_output=True, text=True)
        outcome = "measured" if done.returncode == 0 else "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    except subprocess.TimeoutExpired:
        outcome = f"ran over its share ({seconds:.0f} s): the rest of it skipped"
    if not outcome.startswith("measured"):
        save_step(args.state, name, {"outcome": outcome})
    return outcome, time.perf_counter() - started


def summary_lines(state: dict[str, Any], gpu: bool) -> list[str]:
    env = state.get("environment", {})
    lines = [
        f"## GPU check ({time.strftime('%Y-%m-%d')}, {env.get('device') or 'no GPU: a rehearsal on the CPU'}, "
        f"load {env.get('load', 0):.1f})",
        "",
        f"`make gpu-check` (bench/gpu_check.py): {env.get('nvidia_smi') or 'no nvidia-smi'}; "
        f"python {env.get('python')}, {env.get('cpus')} CPUs; versions: "
        + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v) + ".",
        "",
        "| step | figures |",
        "|---|---|",
    ]
    for name, _ in STEPS[1:]:
        figures = state.get(name, {})
        shown = "; ".join(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in figures.items())
        lines.append(f"| {name} | {shown or 'not run'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=540.0, help="Wall time for everything, install included")
    parser.add_argument("--wheels", type=Path, help="Install offline from this folder of wheels")
    parser.add_argument("--state", type=Path, help="Figures of each step, kept (default: bench/gpu_check.json on a "
                        "GPU, bench/gpu_check_rehearsal.json without one: a rehearsal never touches GPU figures)")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="Where the section goes")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="The embedding model: its packaged name, or a "
                        "sentence-transformers folder (a machine without the package: --prepare-carry makes one)")
    parser.add_argument("--prepare-carry", type=Path, metavar="DIR", help="Only write, for a GPU machine that "
                        "reaches no registry, DIR/whl (Python 3.12 wheels of what the image lacks) and DIR/model "
                        "(the embedding model in fp16), and say their sizes")
    parser.add_argument("--fresh", action="store_true", help="Measure again the steps already measured")
    parser.add_argument("--small", action="store_true", help="The smallest CPU rehearsal (the test suite's)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare_carry:
        prepare_carry(args.prepare_carry, args.model)
        return
    gpu = has_gpu()
    args.state = (args.state or HERE / ("gpu_check.json" if gpu else "gpu_check_rehearsal.json")).resolve()
    if args.step:  # one measuring step, in its own process
        save_step(args.state, args.step, MEASURING[args.step](args, gpu, args.deadline, args.state))
        return
    started = time.time()
    if args.fresh:
        args.state.unlink(missing_ok=True)
    save_step(args.state, "environment", step_environment(args, gpu))
    spare = 0.0
    for name, share in STEPS[1:]:
        seconds = share * args.budget_s + spare
        measured = load_state(args.state).get(name, {})
        if measured and "outcome" not in measured and not args.fresh:
            print(f"{name}: measured before, kept (--fresh measures it again)", flush=True)
            continue
        if name == "install":
            began = time.perf_counter()
            figures = step_install(args, gpu, seconds)
            save_step(args.state, name, figures)
            used, outcome = time.perf_counter() - began, figures.get("skipped", "done")
        else:
            outcome, used = run_step(args, name, seconds)
        spare = max(0.0, seconds - used)
        print(f"{name}: {outcome} in {used:.0f} s (share {seconds:.0f} s)", flush=True)
    state = load_state(args.state)
    lines = summary_lines(state, gpu) + ["", f"The whole check took {time.time() - started:.0f} s."]
    import _results

    _results.RESULTS = args.results
    _results.write_section("gpu" if gpu else "gpu-rehearsal", lines)


if __name__ == "__main__":
    main()
