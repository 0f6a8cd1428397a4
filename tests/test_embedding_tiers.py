"""The CPU tiers derived here from the shipped MiniLM (no hub): the int8 ONNX export and the
static table. Each is made once and cached, keeps the meaning of texts, is recorded in the
KB's manifest, and is good enough to find the facts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridctx import Pipeline
from hybridctx.embed import OnnxEmbedder, StaticEmbedder, resolve_model_path
from hybridctx.embed.base import weights_hash
from hybridctx.errors import EmbeddingModelMismatchError, ModelUnavailableError

pytestmark = pytest.mark.slow



TEXTS = [
    "How many times does the client retry a failed request?",
    "The client retries a failed request up to 7 times.",
    "Tomatoes need six to eight hours of direct sunlight.",
    "shlex.split splits a string using shell-like syntax.",
    "apple " * 300,  # longer than the model reads (256 tokens): cut where torch cuts it
]


def test_the_export_is_made_once_keyed_by_the_source_weights(onnx_embedder, model_cache, monkeypatch):
    exports = sorted(p.name for p in (model_cache / "models").glob("onnx*"))
    assert exports == [f"onnx-int8-{weights_hash(resolve_model_path('all-MiniLM-L6-v2'))}"]

    import hybridctx.embed.onnx

    def refuse(*_):
        raise AssertionError("exported again although the export is cached")

    monkeypatch.setattr(hybridctx.embed.onnx, "_export", refuse)
    again = OnnxEmbedder("all-MiniLM-L6-v2", cache_dir=model_cache)
    assert np.array_equal(again.embed(TEXTS), onnx_embedder.embed(TEXTS))


def test_int8_vectors_stay_close_to_torch_and_do_not_depend_on_their_neighbours(onnx_embedder, embedder):
    v = onnx_embedder.embed(TEXTS)
    assert v.dtype == np.float32 and v.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert (np.sum(v * embedder.embed(TEXTS), axis=1) > 0.97).all()
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    # A text's vector is the same alone and among others (batched int8 scaled them together).
    assert np.allclose(onnx_embedder.embed(TEXTS[1:2])[0], v[1], atol=1e-6)
    # Past 128 tokens (where the saved tokenizer would cut) the text still counts, up to 256.
    a, b = onnx_embedder.embed(["apple " * 150 + "banana " * 50, "apple " * 150 + "cherry " * 50])
    assert a @ b < 0.999
    assert onnx_embedder.embed([]).shape == (0, 384)


def test_an_interrupted_export_leaves_nothing_and_a_damaged_one_names_its_folder(tmp_path, monkeypatch):
    import onnxruntime.quantization

    def fail(*_, **__):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(onnxruntime.quantization, "quantize_dynamic", fail)
        with pytest.raises(KeyboardInterrupt):
            OnnxEmbedder("all-MiniLM-L6-v2", cache_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []  # no half-made export for the next run to trust

    OnnxEmbedder("all-MiniLM-L6-v2", cache_dir=tmp_path)
    (folder,) = (tmp_path / "models").iterdir()
    (folder / "model.int8.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelUnavailableError, match=str(folder)):
        OnnxEmbedder("all-MiniLM-L6-v2", cache_dir=tmp_path)



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


@pytest.mark.parametrize(("tier", "dimension"), [("onnx", 384), ("static", 256)])
def test_a_kb_of_a_cpu_tier_finds_facts_and_records_its_embedder(tier, dimension, corpus, tmp_path, model_cache):
    kb = tmp_path / "kb"
    with Pipeline.open(kb, embedder=tier, cache_dir=model_cache, retrieval="dense", show_progress=False) as pipe:
        assert pipe.add(corpus).documents_added == 4
        assert pipe.retrieve("How many times does the client retry?", k=2)[0].chunk.source.endswith("retries.md")
        assert pipe.retrieve("speed of light in vacuum", k=2)[0].chunk.source.endswith("physics.txt")
    manifest = json.loads((kb / "manifest.json").read_text())
    assert (manifest["embedding_model"], manifest["dimension"]) == (f"all-MiniLM-L6-v2@{tier}", dimension)
    with pytest.raises(EmbeddingModelMismatchError, match=f"all-MiniLM-L6-v2@{tier}"):
        Pipeline.open(kb, show_progress=False)  # the transformer tier: other vectors, refused
