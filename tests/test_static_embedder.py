"""The static tier: a token table distilled here from the shipped MiniLM (no hub), cached once,
recorded in the KB's manifest, and good enough to find the facts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridctx import Pipeline
from hybridctx.embed import StaticEmbedder, resolve_model_path
from hybridctx.embed.base import weights_hash
from hybridctx.errors import EmbeddingModelMismatchError

pytestmark = pytest.mark.slow


def test_the_table_is_distilled_once_keyed_by_the_source_weights(static_embedder, model_cache, monkeypatch):
    tables = sorted(p.name for p in (model_cache / "models").glob("static*"))
    assert tables == [f"static-256-{weights_hash(resolve_model_path('all-MiniLM-L6-v2'))}"]

    import model2vec.distill

    def refuse(**_):
        raise AssertionError("distilled again although the table is cached")

    monkeypatch.setattr(model2vec.distill, "distill", refuse)
    again = StaticEmbedder("all-MiniLM-L6-v2", cache_dir=model_cache)
    texts = ["Tomatoes need sun.", "The client retries seven times."]
    assert np.array_equal(again.embed(texts), static_embedder.embed(texts))


def test_static_vectors_are_unit_float32_and_keep_meaning(static_embedder):
    v = static_embedder.embed([
        "How many times does the client retry a failed request?",
        "The client retries a failed request up to 7 times.",
        "Tomatoes need six to eight hours of direct sunlight.",
    ])
    assert v.dtype == np.float32 and v.shape == (3, 256)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert static_embedder.embed([]).shape == (0, 256)


def test_a_static_kb_finds_facts_and_records_its_embedder(corpus, tmp_path, model_cache):
    kb = tmp_path / "kb"
    with Pipeline.open(kb, embedder="static", cache_dir=model_cache, retrieval="dense", show_progress=False) as pipe:
        assert pipe.add(corpus).documents_added == 4
        assert pipe.retrieve("How many times does the client retry?", k=2)[0].chunk.source.endswith("retries.md")
        assert pipe.retrieve("speed of light in vacuum", k=2)[0].chunk.source.endswith("physics.txt")
    manifest = json.loads((kb / "manifest.json").read_text())
    assert (manifest["embedding_model"], manifest["dimension"]) == ("all-MiniLM-L6-v2@static", 256)
    with pytest.raises(EmbeddingModelMismatchError, match="all-MiniLM-L6-v2@static"):
        Pipeline.open(kb, show_progress=False)  # the transformer tier: other vectors, refused


def test_the_cli_indexes_with_the_static_tier_and_reads_it_back_without_the_flag(corpus, tmp_path, model_cache):
    from typer.testing import CliRunner

    from hybridctx.cli import app

    runner = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1", "HYBRIDCTX_CACHE": str(model_cache)})
    kb = tmp_path / "kb"
    built = runner.invoke(app, ["index", str(corpus), "--kb", str(kb), "--embedder", "static", "--quiet"])
    assert built.exit_code == 0, built.output
    found = runner.invoke(app, ["search", "How many times does the client retry?", "--kb", str(kb), "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)[0]["doc_id"].endswith("retries.md")
    wrong = runner.invoke(app, ["index", str(corpus), "--kb", str(kb), "--embedder", "transformer", "--quiet"])
    assert wrong.exit_code == 2 and "@static" in wrong.output
