"""Embed stage on a Ray cluster: the same model, one copy per GPU (or per CPU slot) of the cluster.

`RayEmbedder` is an `Embedder`: the indexer hands it each commit's chunk texts, Ray Data
splits them into batches and `map_batches` runs them through a pool of actors that each
hold the model (loaded once per actor), and the vectors come back in order. Everything else
in `add` (reading, chunking, the one writer and its resumable commits) stays on the driver,
so a Ray run leaves the same knowledge base as a local one.

    pipe = Pipeline.open("kb/", embedder=RayEmbedder(actors=8, gpus_per_actor=1))   # or
    hybridctx index docs/ --kb kb/ --ray [--ray-address auto] [--ray-actors 8]

On one machine `ray.init()` starts a local Ray; on a cluster, start Ray on each node
(`ray start --head` / `ray start --address HEAD:6379`) and pass `address="auto"` (or
`--ray-address auto`) from the driver. Install with the `ray` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybridctx.embed.factory import build_embedder, embedder_name, prepare
from hybridctx.errors import ModelUnavailableError

# Texts per batch sent to one actor; each actor encodes it in model batches of `batch_size`.
_RAY_BATCH = 512


class _EmbedActor:
    """Holds one copy of the model; Ray Data calls it with batches of texts."""

    def __init__(self, tier: str, model: str, device: str | None, batch_size: int, cache_dir: Path | None) -> None:
        self.embedder = build_embedder(tier, model, device=device, batch_size=batch_size, cache_dir=cache_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.embedder.embed([str(t) for t in batch["text"]])
        return {"position": batch["position"], "vector": vectors}


class RayEmbedder:
    """Embeds with a pool of Ray actors (`actors` copies of the model).

    `gpus_per_actor=1` puts one actor on each GPU; with 0, actors run on CPUs
    (`cpus_per_actor` each). The dimension is read from the model folder without loading it.
    `tier="static"` or `"onnx"` runs that tier in the actors (each node derives it once into
    its own cache; on one machine they share the driver's).
    """

    # The indexer hands over whole commits rather than small steps: each call is one Ray Data job.
    texts_per_call = 65_536

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        tier: str = "transformer",
        actors: int = 2,
        gpus_per_actor: float = 0,
        cpus_per_actor: float = 1,
        batch_size: int = 64,
        address: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ModelUnavailableError("embedding on Ray needs the ray extra: pip install 'hybridctx[ray]'") from exc
        self.model, self.tier = model, tier
        self.name = embedder_name(tier, model)
        self.dimension = prepare(tier, model, cache_dir)  # derived here once, not by every actor at once
        self.cache_dir = cache_dir
        self.actors = actors
        self.gpus_per_actor = gpus_per_actor
        self.cpus_per_actor = cpus_per_actor
        self.batch_size = batch_size
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, include_dashboard=False)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import ray.data

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows = ray.data.from_items([{"position": i, "text": t} for i, t in enumerate(texts)])
        device = "cuda" if self.gpus_per_actor else "cpu"
        vectors = rows.map_batches(
            _EmbedActor,
            fn_constructor_args=(self.tier, self.model, device, self.batch_size, self.cache_dir),
            batch_size=_RAY_BATCH,
            concurrency=self.actors,
            num_gpus=self.gpus_per_actor or None,
            num_cpus=self.cpus_per_actor,
        )
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for batch in vectors.iter_batches(batch_size=None, batch_format="numpy"):
            out[batch["position"]] = np.stack(list(batch["vector"]))
        return out

    def shutdown(self) -> None:
        import ray

        ray.shutdown()

