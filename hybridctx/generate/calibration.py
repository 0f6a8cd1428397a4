"""A reading model's effective context, as measured (`hybridctx.evals.calibrate` probes it) and
stored by model in the cache: `Reader` reads at most that many tokens per window. A calibration
also records the strategy that answered best for the model (`Settings.strategy="calibrated"`),
measured on real questions by bench/bench_real_questions.py for the models hybridctx ships.

RULER (Hsieh et al., 2024) found most models' effective context far below their nominal
window; Gemma 3 270M reads 512 of its 8,192 tokens about as well as its best
(bench/RESULTS.md, "calibration").
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, Field

from hybridctx.errors import InvalidArgumentError
from hybridctx.schema import Strategy

# Calibrations measured by bench/bench_calibrate.py for the models hybridctx ships (the
# embedded model), used where the cache has none of its own.
SHIPPED = Path(__file__).with_name("calibrations")


class Calibration(BaseModel):
    """A model's measured effective context, with the measurements behind it."""

    model: str = Field(description="`Backend.model_id` of the model probed")
    window_tokens: int
    lengths: list[int] = Field(description="Prompt lengths probed, in the model's tokens")
    accuracy: dict[str, list[float]] = Field(description="Per probe task, the share answered right at each length")
    effective_tokens: int = Field(description="The longest length the model reads about as well as its best")
    seeds: int
    seconds: float
    measured_at: str
    strategy: Strategy | None = Field(
        None, description="The strategy that answered this model's real questions best; None: not measured"
    )
    strategies: dict[str, float] = Field(default_factory=dict, description="Share right per strategy measured")

    def mean_accuracy(self) -> list[float]:
        """Per length, the accuracy averaged over the probe tasks."""
        return means(self.accuracy)


def means(accuracy: dict[str, list[float]]) -> list[float]:
    """Per probed length, the accuracy averaged over the probe tasks."""
    return [sum(column) / len(column) for column in zip(*accuracy.values(), strict=True)]


def calibration_path(folder: Path, model_id: str) -> Path:
    """Where `model_id`'s calibration is kept in `folder` (a cache's `calibration/`, or `SHIPPED`)."""
    return folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", model_id) + ".json")


def read_calibration(folder: Path, model_id: str) -> Calibration | None:
    """The calibration of `model_id` kept in `folder`, or None."""
    path = calibration_path(folder, model_id)
    try:
        found = Calibration.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise InvalidArgumentError(f"{path}: not a calibration ({exc}); delete it and calibrate again") from exc
    return found if found.model == model_id else None


def load_calibration(cache_dir: Path, model_id: str) -> Calibration | None:
    """The calibration of `model_id` stored in the cache, else the one shipped for it, else None;
    a stored one that records no strategy takes the shipped one's (`calibrate` measures length)."""
    stored, shipped = read_calibration(cache_dir / "calibration", model_id), read_calibration(SHIPPED, model_id)
    if stored is None or shipped is None or stored.strategy is not None:
        return stored or shipped
    return stored.model_copy(update={"strategy": shipped.strategy, "strategies": shipped.strategies})


def save_calibration(cache_dir: Path, calibration: Calibration) -> Path:
    """Store `calibration` in the cache, where `load_calibration` finds it first."""
    return keep_calibration(cache_dir / "calibration", calibration)


def keep_calibration(folder: Path, calibration: Calibration) -> Path:
    """Write `calibration` into `folder` (a cache's `calibration/`, or `SHIPPED`), atomically."""
    path = calibration_path(folder, calibration.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(calibration.model_dump(mode="json"), indent=1), encoding="utf-8")
    tmp.replace(path)
    return path
