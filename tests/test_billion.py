"""`bench/bench_billion.py`, small: its corpus is the same in every run, its build goes on
where a stopped one left off (ending where one run would), and its planted facts are found."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import bench_billion  # noqa: E402

pytestmark = pytest.mark.slow


def test_the_corpus_is_reproducible_with_metadata_acls_and_planted_facts(monkeypatch):
    monkeypatch.setattr(bench_billion, "FACT_AT", 5)
    first = [bench_billion.document(i) for i in range(60)]
    assert first == [bench_billion.document(i) for i in range(60)]
    assert all({"kind", "team", "year"} <= set(d.metadata) for d in first)
    assert 0.4 < sum(d.acl is not None for d in first) / len(first) < 0.9
    assert bench_billion.fact(0) in first[5].text and first[5].acl is None  # the needle, and its near twins
    for twin, document in zip(bench_billion.distractors(0), first[6:8], strict=True):
        assert twin in document.text and bench_billion.fact(0) not in document.text
        key = twin.split(" is ")[0]  # the same sentence, one letter of the key changed
        assert key != bench_billion.fact(0).split(" is ")[0] == key.replace(key[25:27], "KX")
    sizes = sorted(len(d.text) for d in first)
    assert sizes[0] * 3 < sizes[len(sizes) // 2] < sizes[-1] / 3  # varied sizes


def test_a_stopped_build_goes_on_and_ends_where_one_run_ends(tmp_path, static_embedder, backend, monkeypatch):
    monkeypatch.setattr(bench_billion, "FACT_AT", 5)
    opened = {"embedder": static_embedder, "backend": backend}
    stopped = bench_billion.build(tmp_path / "a" / "kb", 600_000, batch=40, stop_after_batches=1, **opened)
    assert stopped.next_document == 40 and stopped.tokens < 600_000
    resumed = bench_billion.build(tmp_path / "a" / "kb", 600_000, batch=40, **opened)
    whole = bench_billion.build(tmp_path / "b" / "kb", 600_000, batch=40, **opened)
    assert resumed.runs == 2 and whole.runs == 1
    assert (resumed.next_document, resumed.tokens, resumed.chunks) == (whole.next_document, whole.tokens, whole.chunks)
    assert resumed.tokens >= 600_000 and bench_billion.Progress.load(tmp_path / "a" / "kb") == resumed

    measured = bench_billion.measure(tmp_path / "a" / "kb", embedder=static_embedder)  # its reader: a 131k window
    assert measured["questions"] >= 1 and measured["found_top1000"] == measured["found_pack128k"] == 1.0
    assert set(measured["retrieve_ms"]) == {name for name, _ in bench_billion.SCOPES}
    assert 3_000 < measured["commit"][1] < 6_000  # about one commit of chunks, added and taken out again

    kept = bench_billion.maintain(tmp_path / "a" / "kb", embedder=static_embedder)
    assert kept["refreshed"] == 0  # the build stored every chunk's profile
    assert " x " not in kept["segments_after"] and "+" not in kept["segments_after"]  # one segment
    again = bench_billion.measure(tmp_path / "a" / "kb", embedder=static_embedder, commit=False)
    assert again["found_top1000"] == 1.0 and again["segments"] == kept["segments_after"]
