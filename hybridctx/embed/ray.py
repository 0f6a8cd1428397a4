"""Embed stage on a Ray cluster: the same model, one copy per GPU (or per CPU slot) of the cluster.

`RayEmbedder` is an `Embedder`: the indexer hands it each commit's chunk texts, split into
batches for a pool of actors that each hold the model, and the vectors come back in order.
The pool is made on the first call and kept until the `add` ends (`release`): the model
loads once per actor for the whole run, not once per commit (a Ray Data `map_batches` per
call made a new pool each time).
Everything else in `add` (reading, chunking, the one writer and its resumable commits) stays
on the driver, so a Ray run leaves the same knowledge base as a local one.

    pipe = Pipeline.open("kb/", embedder=RayEmbedder(actors=8, gpus_per_actor=1))   # or
    hybridctx index docs/ --kb kb/ --ray [--ray-address auto] [--ray-actors 8]

On one machine `ray.init()` starts a local Ray; on a cluster, start Ray on each node
(`ray start --head` / `ray start --address HEAD:6379`) and pass `address="auto"` (or
`--ray-address auto`) from the driver. Install with the `ray` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridctx.embed.factory import build_embedder, embedder_name, prepare
from hybridctx.errors import ModelUnavailableError

# Texts per batch sent to one actor; each actor encodes it in model batches of `batch_size`.
_RAY_BATCH = 512


class _EmbedActor:
    """Holds one copy of the model; the pool hands it batches of texts."""

    def __init__(self, tier: str, model: str, device: str | None, batch_size: int, cache_dir: Path | None) -> None:
        self.embedder = build_embedder(tier, model, device=device, batch_size=batch_size, cache_dir=cache_dir)
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return self.embedder.embed(texts)

    def loaded_once(self) -> tuple[int, int]:
        """(this actor's process id, batches it embedded): how a test sees the pool kept."""
        import os

        return os.getpid(), self.calls


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
        self._pool: Any = None
        self._handles: list[Any] = []
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, include_dashboard=False)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batches = [list(texts[start : start + _RAY_BATCH]) for start in range(0, len(texts), _RAY_BATCH)]
        parts = list(self._actor_pool().map(lambda actor, batch: actor.embed.remote(batch), batches))  # in order
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _actor_pool(self) -> Any:
        """The actors, made on first use and kept for every later call."""
        if self._pool is None:
            import ray
            from ray.util import ActorPool

            remote = ray.remote(num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor)(_EmbedActor)
            device = "cuda" if self.gpus_per_actor else "cpu"
            self._handles = [remote.remote(self.tier, self.model, device, self.batch_size, self.cache_dir)
                             for _ in range(self.actors)]
            self._pool = ActorPool(self._handles)
        return self._pool

    def actor_calls(self) -> list[tuple[int, int]]:
        """(process id, batches embedded) of each actor of the pool."""
        import ray

        return sorted(ray.get([handle.loaded_once.remote() for handle in self._handles]))

    def release(self) -> None:
        """Stop the actors (the end of an `add`): their CPUs or GPUs go back to the cluster."""
        import ray

        for handle in self._handles:
            ray.kill(handle)
        self._pool, self._handles = None, []

    def shutdown(self) -> None:
        import ray

        self.release()
        ray.shutdown()

