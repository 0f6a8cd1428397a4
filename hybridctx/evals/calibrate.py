"""Calibration: measuring how much of its window a reading model really uses.

RULER (Hsieh et al., 2024) found most models' effective context far below their nominal
window: accuracy falls as the context grows, faster with hard distractors. So `calibrate`
probes a backend: a single needle, and a multi-key question among hard distractors (the same
sentence about other keys, one every `KEYS_EVERY` tokens: a window packed by retrieval is
dense with material like the answer), planted at random depths in filler text of lengths
doubling from 512 tokens up to the window, a few seeds each. The model's **effective length**
is the longest probed length up to which every length scores at least `THRESHOLD` of the best
one (a weak model is not cut to nothing for being weak everywhere: it is cut where it gets
worse). It is stored by model (`Backend.model_id`) in the cache (`hybridctx.generate.calibration`),
and `ask` reads at most that many tokens per window.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from tqdm.auto import tqdm

from hybridctx.errors import DatasetUnavailableError, InvalidArgumentError, ModelUnavailableError
from hybridctx.evals.essays import paul_graham_essays
from hybridctx.evals.stdlib import stdlib_files
from hybridctx.evals.tasks import Case, TaskRandom, cut_haystack, multi_key, needle, plant_at_depths
from hybridctx.generate.backend import Backend, template_for
from hybridctx.generate.calibration import Calibration, means
from hybridctx.pack import Packer
from hybridctx.schema import Chunk, Document, Hit, PackedContext
from hybridctx.tokens import TokenCounter

PROBE_TASKS = ("needle", "multi_key")
THRESHOLD = 0.85
FIRST_LENGTH = 512
# One distracting key per this many tokens: the eval's 4k retrieval packs held about 25
# sentences of the asked one's template. With needles alone (no such density), Gemma 3 270M
# calibrated at 4,096 tokens, yet answered 0 of 10 needles in 4k retrieval packs (top-5: 5).
KEYS_EVERY = 160
ANSWER_TOKENS = 24


def probe_lengths(window_tokens: int, max_new_tokens: int = ANSWER_TOKENS, first: int = FIRST_LENGTH) -> list[int]:
    """Lengths doubling from `first`, then the whole window less the answer's room."""
    top = window_tokens - max_new_tokens
    if top < first:
        raise InvalidArgumentError(f"a window of {window_tokens} tokens is too small to calibrate (at least {first})")
    lengths = []
    length = first
    while length < top:
        lengths.append(length)
        length *= 2
    return lengths + [top]


def effective_length(lengths: Sequence[int], accuracy: Sequence[float], threshold: float = THRESHOLD) -> int:
    """The longest length up to which every length scores at least `threshold` of the best."""
    best = max(accuracy)
    effective = lengths[0]
    for length, score in zip(lengths, accuracy, strict=True):
        if best == 0 or score < threshold * best:
            break
        effective = length
    return effective


def calibrate(
    backend: Backend, *, seeds: int = 3, max_tokens: int | None = None, show_progress: bool = True,
) -> Calibration:
    """Probe `backend` (see the module docstring): `len(PROBE_TASKS) * seeds` questions per
    length, each a prompt of that length in `ask`'s prompt; `max_tokens` stops the lengths
    below the window."""
    packer = Packer(backend.token_counter(), template_for(backend))
    if seeds < 1:
        raise InvalidArgumentError(f"seeds must be at least 1, got {seeds}")
    window = min(backend.context_window, max_tokens or backend.context_window)
    lengths = probe_lengths(window)
    filler = filler_documents()
    started = time.perf_counter()
    accuracy: dict[str, list[float]] = {task: [] for task in PROBE_TASKS}
    with tqdm(total=len(lengths) * len(PROBE_TASKS) * seeds, desc="calibrate", unit="probe",
              disable=not show_progress) as bar:
        for length in lengths:
            for task in PROBE_TASKS:
                right = 0.0
                for seed in range(seeds):
                    rng = TaskRandom(f"{task}-{length}-{seed}")
                    case = _probe(task, rng, length)
                    planted = [(s, d) for s, d in zip(case.needles, case.depths)]
                    planted += [(s, rng.random()) for s in case.distractors]
                    budget = length + ANSWER_TOKENS
                    # filler cut so that the planted text fits whole: the needles are never cut off
                    room = _room(packer, case.question, budget, ANSWER_TOKENS) - packer.counter.count(
                        " ".join(case.needles + case.distractors)) - 2 * len(planted)
                    text = plant_at_depths(cut_haystack(filler, packer.counter, room), planted)
                    context = _one_passage(packer, case.question, "\n\n".join(d.text for d in text), budget,
                                           ANSWER_TOKENS)  # cut to fit above: not counted again
                    if case.context_score(context.prompt) < 1:
                        raise AssertionError(f"a calibration probe lost its needle at {length} tokens")
                    answer = backend.generate(context, max_new_tokens=ANSWER_TOKENS).text
                    right += case.answer_score(answer)
                    bar.update(1)
                accuracy[task].append(right / seeds)
    return Calibration(
        model=backend.model_id, window_tokens=backend.context_window, lengths=lengths, accuracy=accuracy,
        effective_tokens=effective_length(lengths, means(accuracy)), seeds=seeds,
        seconds=time.perf_counter() - started,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _probe(task: str, rng: TaskRandom, length: int) -> Case:
    if task == "multi_key":
        return multi_key(rng, [], n=max(6, length // KEYS_EVERY))[0]
    return needle(rng, [rng.random()])[0]


def stuffed(packer: Packer, question: str, texts: tuple[str, ...], budget_tokens: int, max_new_tokens: int
            ) -> PackedContext:
    """`texts` joined as one passage, cut to fill the budget: a long-context-only reading."""
    cut = _cut(texts, packer.counter, _room(packer, question, budget_tokens, max_new_tokens))
    return _one_passage(packer, question, cut, budget_tokens, max_new_tokens)


def _one_passage(packer: Packer, question: str, cut: str, budget_tokens: int, max_new_tokens: int
                 ) -> PackedContext:
    chunk = Chunk(id="haystack#0", doc_id="haystack", text=cut, start=0, end=len(cut), start_line=1,
                  end_line=cut.count("\n") + 1, token_count=0, metadata={"source": "haystack"})
    return packer.pack(question, [Hit(chunk=chunk, score=1.0, rank=1)], budget_tokens, max_new_tokens=max_new_tokens)


def _room(packer: Packer, question: str, budget_tokens: int, max_new_tokens: int) -> int:
    """The passage tokens of a stuffed prompt, rounded down so that questions share the cut."""
    skeleton = packer.counter.count(packer.template.render(question, [])) + 64  # header and joins, generously
    return (budget_tokens - max_new_tokens - skeleton) // 64 * 64


@lru_cache(maxsize=64)
def _cut(texts: tuple[str, ...], counter: TokenCounter, tokens: int) -> str:
    """The first `tokens` of the texts joined (cached: every question about a haystack asks it)."""
    return cut_haystack([Document(id="haystack", text="\n\n".join(texts))], counter, tokens)[0].text


def filler_documents() -> list[Document]:
    """Paul Graham's essays (RULER's and the needle test's haystack) when installed, else the
    Python standard library's own module docs, which every install has."""
    try:
        return paul_graham_essays()
    except DatasetUnavailableError:
        return [Document(id=str(p), text=p.read_text(encoding="utf-8", errors="replace")) for p in stdlib_files()]


def plot(calibrations: Sequence[Calibration], path: Path) -> Path:
    """Accuracy against prompt length per probe task, one panel per model, effective length marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ModelUnavailableError("the calibration plot needs matplotlib: pip install 'hybridctx[eval]'") from exc
    figure, axes = plt.subplots(1, len(calibrations), figsize=(5 * len(calibrations), 3.6), squeeze=False)
    for axis, calibration in zip(axes[0], calibrations, strict=True):
        for task, scores in calibration.accuracy.items():
            axis.plot(calibration.lengths, scores, marker="o", label=task)
        axis.axvline(calibration.effective_tokens, color="grey", linestyle="--",
                     label=f"effective: {calibration.effective_tokens:,}")
        axis.set_xscale("log", base=2)
        axis.minorticks_off()
        axis.set_xticks(calibration.lengths, [f"{n / 1024:.3g}k" for n in calibration.lengths])
        axis.set_ylim(-0.05, 1.05)
        axis.set_xlabel("prompt length (tokens)")
        axis.set_ylabel("answered right")
        axis.set_title(calibration.model, fontsize=9)
        axis.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
