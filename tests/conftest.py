"""Shared fixtures: real models loaded once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def count_retrievals(pipe) -> list[tuple]:
    """The (query, k) of every retrieval `pipe` makes from now on: its retriever, wrapped (before
    the pack stage is built on it, at the first pack or ask)."""
    inner, calls = pipe.stages.retriever, []

    class Counted:
        def retrieve(self, query, k, scope):
            calls.append((query, k))
            return inner.retrieve(query, k, scope)

    pipe.stages.retriever = Counted()
    return calls


def hits_of(texts: list[str]) -> list:
    """One single-chunk document per text, ranked in order (hits from elsewhere: no profiles)."""
    from hybridctx.schema import Chunk, Hit

    return [
        Hit(chunk=Chunk(id=f"doc{i}#0", doc_id=f"doc{i}", text=t, start=0, end=len(t), start_line=1,
                        end_line=t.count("\n") + 1, token_count=len(t) // 4, metadata={"source": f"doc{i}.md"}),
            score=1.0 / (i + 1), rank=i + 1)
        for i, t in enumerate(texts)
    ]


FACTS = {
    "retries.md": (
        "# Retry policy\n\n"
        "The Zephyr client retries a failed request up to 7 times. Configure retries with the "
        "setting `zephyr.max_retries`; the delay between attempts doubles each time, starting at "
        "250 milliseconds.\n\n"
        "## Timeouts\n\nEach attempt times out after 30 seconds unless `zephyr.timeout` says otherwise.\n"
    ),
    "garden.md": (
        "# Growing tomatoes\n\n"
        "Tomatoes need six to eight hours of direct sunlight a day. Water them deeply twice a week "
        "and stake the plants when they reach knee height.\n"
    ),
    "physics.txt": (
        "The speed of light in vacuum is exactly 299,792,458 metres per second. Nothing carrying "
        "information travels faster.\n\nGravity on the surface of Mars is about 38 percent of "
        "Earth's gravity.\n"
    ),
    "cooking.rst": (
        "Bread baking\n============\n\nKnead the dough for ten minutes, let it rise for an hour, "
        "then bake at 230 degrees Celsius for 35 minutes.\n"
    ),
}


@pytest.fixture(scope="session")
def embedder():
    from hybridctx.embed import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """A cache of its own, so that the derived tiers are really made in this run, once each
    (the static table ~20-110 s, the int8 export ~20 s)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def static_embedder(model_cache):
    from hybridctx.embed import StaticEmbedder

    return StaticEmbedder("all-MiniLM-L6-v2", cache_dir=model_cache)


@pytest.fixture(scope="session")
def onnx_embedder(model_cache):
    from hybridctx.embed import OnnxEmbedder

    return OnnxEmbedder("all-MiniLM-L6-v2", cache_dir=model_cache)


@pytest.fixture(scope="session")
def tokenizer():
    from hybridctx.embed import resolve_model_path
    from hybridctx.tokens import HFTokenizer

    return HFTokenizer(resolve_model_path("all-MiniLM-L6-v2") / "tokenizer.json")


@pytest.fixture(scope="session")
def backend():
    from hybridctx.generate import LlamaCppBackend
    from hybridctx.settings import default_cache_dir

    backend = LlamaCppBackend("gemma-3-270m", cache_dir=default_cache_dir(), context_window=4096)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def llama_counter(backend):
    return backend.token_counter()


@pytest.fixture(scope="session")
def essays_kb(tmp_path_factory, embedder, backend) -> Path:
    """A KB of about 90k tokens of essays: more than the whole-corpus route takes at budgets up to 24k."""
    from hybridctx import Pipeline
    from hybridctx.evals.essays import paul_graham_essays

    path = tmp_path_factory.mktemp("essays") / "kb"
    with Pipeline.open(path, embedder=embedder, backend=backend, show_progress=False) as pipe:
        pipe.add(paul_graham_essays(max_chars=380_000))
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in FACTS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def open_pipe(tmp_path, embedder, backend):
    """Open (or reopen) a pipeline on a KB under tmp_path with the shared real models."""
    from hybridctx import Pipeline

    opened = []

    def make(name: str = "kb", generator=None, **overrides):
        """`generator`: a backend other than the embedded model's."""
        overrides.setdefault("show_progress", False)
        overrides.setdefault("effective_context", "window")  # not a calibration this machine may have stored
        pipe = Pipeline.open(tmp_path / name, embedder=embedder, backend=generator or backend, **overrides)
        opened.append(pipe)
        return pipe

    yield make
    for pipe in opened:
        pipe.close()


@pytest.fixture(scope="session")
def tiktoken_encoding():
    """tiktoken itself, `tiktoken_encoding(name)`, offline: its BPE file placed where
    tiktoken's cache looks for it (keyed by the SHA-1 of the download URL), from the copy
    bundled in bpe-openai."""
    import gzip
    import hashlib
    import tempfile

    import bpe_openai
    import tiktoken

    def load(name: str) -> tiktoken.Encoding:
        return tiktoken.get_encoding(place(name))

    def place(name: str) -> str:
        cache = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or Path(tempfile.gettempdir()) / "data-gym-cache")
        url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        target = cache / hashlib.sha1(url.encode()).hexdigest()
        if not target.exists():
            cache.mkdir(parents=True, exist_ok=True)
            bundled = Path(bpe_openai.__file__).parent / "data" / f"{name}.tiktoken.gz"
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(gzip.decompress(bundled.read_bytes()))
            os.replace(tmp, target)
        return name

    return load
