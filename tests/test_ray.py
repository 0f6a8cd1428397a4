"""Indexing with the embedding model on a Ray actor pool (Ray started locally, as on a
cluster of one): the knowledge base comes out as a local run makes it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray")

from hybridctx import Pipeline  # noqa: E402
from hybridctx.embed.ray import RayEmbedder  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_embedder():
    embedder = RayEmbedder("all-MiniLM-L6-v2", actors=2, cpus_per_actor=0.5)
    yield embedder
    embedder.shutdown()


def test_ray_embeddings_equal_local_ones(ray_embedder, embedder):
    texts = [f"Sentence number {i} about {topic}." for i, topic in enumerate(["tomatoes", "retries", "Mars"] * 300)]
    assert ray_embedder.dimension == embedder.dimension == 384
    on_ray = ray_embedder.embed(texts)  # 900 texts: two batches, order must survive
    assert on_ray.shape == (900, 384)
    assert np.allclose(on_ray, embedder.embed(texts), atol=1e-5)
    before = ray_embedder.actor_calls()
    assert np.array_equal(ray_embedder.embed(texts[:600]), on_ray[:600])  # a second commit's texts
    after = ray_embedder.actor_calls()
    assert [pid for pid, _ in after] == [pid for pid, _ in before] and len(after) == 2  # the same actors: loaded once
    assert sum(calls for _, calls in after) == sum(calls for _, calls in before) + 2


def test_a_kb_indexed_on_ray_answers_like_a_local_one(ray_embedder, embedder, corpus, tmp_path):
    with Pipeline.open(tmp_path / "ray-kb", embedder=ray_embedder, show_progress=False) as pipe:
        report = pipe.add(corpus)
        assert report.documents_added == 4 and not report.failed
        assert ray_embedder.actor_calls() == []  # the add's end gave the actors' CPUs back
    with Pipeline.open(tmp_path / "ray-kb", embedder=embedder, show_progress=False) as reopened:
        hits = reopened.retrieve("How many times does the client retry?", k=3)
        assert hits[0].chunk.source.endswith("retries.md")
        ids, vectors = reopened.kb.index.vectors()
        by_id = dict(zip(ids.tolist(), vectors))
        chunks = reopened.kb.store.chunks(ids.tolist())
        local = embedder.embed([chunks[i].text for i in ids.tolist()])
        assert np.allclose(np.stack([by_id[i] for i in ids.tolist()]), local, atol=1e-5)


def test_the_cli_indexes_on_ray(ray_embedder, corpus, tmp_path):
    from typer.testing import CliRunner

    from hybridctx.cli import app

    result = CliRunner().invoke(app, ["index", str(corpus), "--kb", str(tmp_path / "kb"), "--ray", "--quiet"])
    assert result.exit_code == 0, result.output
    added = next(line for line in result.stdout.splitlines() if "documents added" in line)
    assert added.split("│")[2].strip() == "4"


@pytest.mark.parametrize(("tier", "dimension"), [("static", 256), ("onnx", 384)])
def test_the_cpu_tiers_run_on_ray_as_locally(tier, dimension, model_cache, request):
    local = request.getfixturevalue(f"{tier}_embedder")
    texts = [f"Note {i}: {topic}." for i, topic in enumerate(["tomatoes need sun", "the client retries"] * 400)]
    on_ray = RayEmbedder("all-MiniLM-L6-v2", tier=tier, actors=2, cpus_per_actor=0.5, cache_dir=model_cache)
    assert on_ray.name == local.name == f"all-MiniLM-L6-v2@{tier}"
    assert on_ray.dimension == local.dimension == dimension
    assert np.allclose(on_ray.embed(texts), local.embed(texts), atol=1e-6)
